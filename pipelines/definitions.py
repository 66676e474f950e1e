"""The code location: settings read once, resources per environment, and the areas merged.

Areas (one folder each): supply_chain (build -> SOCI index -> verify -> release), git_push, backfill,
push_events, builder_gc. Resources live in pipelines/resource_defs/, settings in pipelines/settings.py.
"""

import dagster as dg

from pipelines.backfill.assets import soci_index_backfill
from pipelines.backfill.jobs import soci_backfill_job, soci_index_image_job
from pipelines.backfill.schedules import soci_backfill_retry_schedule
from pipelines.backfill.sensors import registry_image_scan_sensor
from pipelines.builder_gc.jobs import make_gc_job
from pipelines.builder_gc.schedules import gc_schedule
from pipelines.git_push.sensors import git_push_sensor
from pipelines.push_events.sensors import ecr_push_event_sensor
from pipelines.resource_defs import resources_for
from pipelines.resource_defs.startup import startup_resources
from pipelines.settings import Settings, load_settings
from pipelines.supply_chain.assets import build_supply_chain
from pipelines.supply_chain.jobs import BUILD_JOB, build_job
from resources.release.targets import load_targets

__all__ = ["BUILD_JOB", "defs", "definitions_for"]


def definitions_for(settings: Settings) -> dg.Definitions:
    """Every area's definitions with the resources of the configured environment."""
    assets, checks, partitions = build_supply_chain(load_targets(settings.targets))
    gc_job = make_gc_job(settings.gc_policy_file_list)
    sensors = [git_push_sensor, registry_image_scan_sensor]
    if settings.push_queue_url:
        sensors.append(ecr_push_event_sensor)
    return dg.Definitions(
        assets=[*assets, soci_index_backfill],
        asset_checks=checks,
        jobs=[build_job(partitions), soci_index_image_job, soci_backfill_job, gc_job],
        sensors=sensors,
        schedules=[soci_backfill_retry_schedule, gc_schedule(gc_job)],
        resources={**resources_for(settings), **startup_resources(settings)},
    )


@dg.definitions
def defs() -> dg.Definitions:
    """Read the settings and the targets file, and build the definitions for the selected environment."""
    return definitions_for(load_settings())
