"""The nightly retry of images whose indexing failed."""

import dagster as dg

from pipelines.backfill.assets import BACKFILL_ASSET, REGISTRY_IMAGES_NAME
from pipelines.backfill.jobs import soci_index_image_job
from pipelines.resource_defs.backfill import SociBackfillResource

IN_PROGRESS = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED,
               dg.DagsterRunStatus.CANCELING, dg.DagsterRunStatus.SUSPENDED]
"""Runs that still hold a partition (Dagster's in-progress statuses, plus queued runs waiting to start)."""


def retryable_keys(instance: dg.DagsterInstance, limit: int) -> list[str]:
    """Partitions never materialized (their runs failed or never ran) and with no run in flight."""
    keys = instance.get_dynamic_partitions(REGISTRY_IMAGES_NAME)
    done = instance.get_materialized_partitions(BACKFILL_ASSET)
    in_flight = {r.tags.get("dagster/partition") for r in instance.get_runs(
        dg.RunsFilter(job_name=soci_index_image_job.name, statuses=IN_PROGRESS))}
    return [k for k in keys if k not in done and k not in in_flight][:limit]


@dg.schedule(
    name="soci_backfill_retry_schedule",
    cron_schedule="0 3 * * *",
    job=soci_index_image_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Nightly: retry images whose indexing failed (not-indexable ones are recorded and left alone).",
)
def soci_backfill_retry_schedule(context: dg.ScheduleEvaluationContext,
                                 soci_backfill: SociBackfillResource) -> dg.SkipReason | list[dg.RunRequest]:
    """One run per retryable partition, run_key per night so a retry is not swallowed by yesterday's key."""
    night = context.scheduled_execution_time.strftime("%Y-%m-%d")
    keys = retryable_keys(context.instance, soci_backfill.max_runs_per_tick)
    if not keys:
        return dg.SkipReason("no failed image to retry")
    return [dg.RunRequest(partition_key=k, run_key=f"retry:{night}:{k}", tags={"streamable/trigger": "nightly-retry"})
            for k in keys]
