"""Backfill jobs: one image per run (sensors, retries), or the whole registry in one run (on demand)."""

from typing import Any

import dagster as dg
from pydantic import Field

from pipelines.backfill.assets import BACKFILL_ASSET, REGISTRY_IMAGES_NAME, soci_index_backfill
from pipelines.metadata import backfill_record_metadata, counts_table
from pipelines.resource_defs.backfill import SociBackfillResource
from pipelines.resource_defs.base import RegistryResource
from resources import defaults
from resources.release.backfill import ImageStatus, StatusRecord
from resources.release.batch import run_backfill
from resources.release.scan import ScannedImage, ScanResult

soci_index_image_job = dg.define_asset_job(
    "soci_index_image_job", selection=[soci_index_backfill],
    description="Index one registry image (one partition of soci_index_backfill).",
)


class BackfillNowConfig(dg.Config):
    """On-demand backfill of the whole registry in one run."""

    max_images: int | None = Field(default=None, description="stop after this many images (None = all)")


@dg.op(pool=defaults.SOCI_POOL, description="Scan the registry and index every image without a SOCI index, with one "
                                            "converter so shared layers are decompressed once.")
def soci_backfill_all(context: dg.OpExecutionContext, config: BackfillNowConfig, registry: RegistryResource,
                      soci_backfill: SociBackfillResource) -> dg.Output[dict]:
    """Adds a partition per image it indexes and records each outcome as that partition's materialization."""
    instance = context.instance

    def planned(scan: ScanResult, todo: list[ScannedImage]) -> None:
        for err in scan.errors:
            context.log.warning(err)
        instance.add_dynamic_partitions(REGISTRY_IMAGES_NAME, [i.key for i in todo])
        context.log.info(f"{len(scan.images)} image(s) match, {len(scan.pending)} lack a SOCI index, "
                         f"{len(todo)} to do")

    def finished(rec: StatusRecord) -> None:
        if rec.status is ImageStatus.FAILED:
            context.log.error(f"{rec.image}: {rec.reason}")
        else:
            context.log_event(dg.AssetMaterialization(asset_key=BACKFILL_ASSET, partition=rec.key,
                                                      metadata=backfill_record_metadata(rec)))

    with soci_backfill.client(registry) as client:
        report = run_backfill(client, soci_backfill.image_catalog(client), soci_backfill.settings(),
                              skip_keys=set(instance.get_materialized_partitions(BACKFILL_ASSET)),
                              verify=soci_backfill.verifier(client), log=context.log.info,
                              max_images=config.max_images, on_planned=planned, on_record=finished,
                              scan=lambda: soci_backfill.scan(client, soci_backfill.settings()),
                              ztoc_catalog=soci_backfill.ztoc_catalog(client, context.log.info))
    counts = report.by_status()
    summary = {"images": len(report.records), "layers_built": report.layers_built, **counts}
    metadata: dict[str, Any] = {"dagster/row_count": len(report.records), "layers_built": report.layers_built,
                                "outcomes": counts_table(counts)}
    failed = [r for r in report.records if r.status is ImageStatus.FAILED]
    if failed:
        raise dg.Failure(description=f"{len(failed)} image(s) failed (retried by the nightly schedule): "
                                     + "; ".join(f"{r.image}: {r.reason}" for r in failed[:5]), metadata=metadata)
    return dg.Output(summary, metadata=metadata)


@dg.job(name="soci_backfill_job",
        description="On demand: scan the registry and index every image lacking a SOCI index.")
def soci_backfill_job() -> None:
    """One op: scan and index the whole registry."""
    soci_backfill_all()
