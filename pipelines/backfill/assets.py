"""The backfill asset: the SOCI index of one image already in the registry (partition = image)."""

import dagster as dg

from pipelines.metadata import backfill_record_metadata
from pipelines.resource_defs.backfill import SociBackfillResource
from pipelines.resource_defs.base import RegistryResource
from resources import defaults
from resources.release.backfill import ImageStatus, index_image

REGISTRY_IMAGES_NAME = "registry_images"
REGISTRY_IMAGES = dg.DynamicPartitionsDefinition(name=REGISTRY_IMAGES_NAME)
BACKFILL_ASSET = dg.AssetKey("soci_index_backfill")
BACKFILL_GROUP = "soci_backfill"
IMAGE_TAG = "streamable/image"
IMAGE_DIGEST_TAG = "streamable/image-digest"


@dg.asset(
    key=BACKFILL_ASSET,
    partitions_def=REGISTRY_IMAGES,
    pool=defaults.SOCI_POOL,
    group_name=BACKFILL_GROUP,
    kinds={"soci", "oci"},
    description="SOCI index for one image already in the registry (partition = image; full reference in metadata).",
)
def soci_index_backfill(context: dg.AssetExecutionContext, registry: RegistryResource,
                        soci_backfill: SociBackfillResource) -> dg.MaterializeResult:
    """Index one image; outcomes other than FAILED are recorded (and not retried), FAILED fails the run."""
    settings = soci_backfill.settings()
    with soci_backfill.client(registry) as client:
        rec = index_image(client, settings.converter(client, context.log.info), context.partition_key, settings,
                          catalog=soci_backfill.image_catalog(client), verify=soci_backfill.verifier(client),
                          expected_digest=context.run.tags.get(IMAGE_DIGEST_TAG), log=context.log.info,
                          ztoc_catalog=soci_backfill.ztoc_catalog(client, context.log.info))
    if rec.status is ImageStatus.FAILED:
        raise dg.Failure(description=f"{rec.image}: {rec.reason}", metadata=backfill_record_metadata(rec))
    context.log.info(f"{rec.image}: {rec.status.value} {rec.reason}".rstrip())
    return dg.MaterializeResult(metadata=backfill_record_metadata(rec))


def image_run(key: str, ref: str, digest: str, trigger: str, run_key: str | None) -> dg.RunRequest:
    """A run of the backfill asset for one image, tagged with its reference and digest."""
    return dg.RunRequest(partition_key=key, run_key=run_key,
                         tags={IMAGE_TAG: ref, IMAGE_DIGEST_TAG: digest, "streamable/trigger": trigger})
