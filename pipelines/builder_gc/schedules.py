"""The nightly builder cache GC."""

import dagster as dg


def gc_schedule(job: dg.JobDefinition) -> dg.ScheduleDefinition:
    """Nightly run of the GC job."""
    return dg.ScheduleDefinition(
        name="builder_cache_gc_schedule", cron_schedule="30 2 * * *", job=job,
        default_status=dg.DefaultScheduleStatus.RUNNING, description="Nightly builder cache GC.",
    )
