"""The registry scan sensor: resumes where the last tick stopped, requests a run per new un-indexed image."""

import json
import time

import dagster as dg

from pipelines.backfill.assets import REGISTRY_IMAGES, REGISTRY_IMAGES_NAME, image_run
from pipelines.backfill.jobs import soci_index_image_job
from pipelines.resource_defs.backfill import SociBackfillResource
from pipelines.resource_defs.base import RegistryResource


@dg.sensor(
    name="registry_image_scan_sensor",
    job=soci_index_image_job,
    minimum_interval_seconds=3600,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Scans the registry (resuming where the last tick stopped) and indexes images without a SOCI index.",
)
def registry_image_scan_sensor(context: dg.SensorEvaluationContext, registry: RegistryResource,
                               soci_backfill: SociBackfillResource) -> dg.SensorResult:
    """Adds a partition per new un-indexed image and requests its run; the cursor is where to resume."""
    state = json.loads(context.cursor) if context.cursor else {}
    settings = soci_backfill.settings()
    with soci_backfill.client(registry) as client:
        scan = soci_backfill.scan(client, settings, deadline=time.monotonic() + soci_backfill.scan_budget_s,
                                  resume_after=state.get("resume_after"))
    for err in scan.errors:
        context.log.warning(err)
    known = set(context.instance.get_dynamic_partitions(REGISTRY_IMAGES_NAME))
    new = [i for i in scan.pending if i.key not in known][: soci_backfill.max_runs_per_tick]
    runs = [image_run(i.key, i.ref, i.digest, "registry-scan", f"scan:{i.key}") for i in new]
    progress = "pass complete" if scan.complete else f"resuming after {scan.resume_after}"
    summary = (f"scanned {scan.repositories} repositories ({progress}), {len(scan.images)} image(s), "
               f"{len(scan.pending)} without a SOCI index, {len(new)} new")
    context.log.info(summary)
    return dg.SensorResult(
        run_requests=runs,
        dynamic_partitions_requests=[REGISTRY_IMAGES.build_add_request([i.key for i in new])] if new else [],
        cursor=json.dumps({"resume_after": scan.resume_after}),
        skip_reason=None if runs else summary,
    )
