"""The backfill in Dagster: scan sensor adds partitions, per-image runs record their status, failed ones are retried
nightly, and the on-demand job indexes everything in one run."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from pipelines.backfill.assets import BACKFILL_ASSET, REGISTRY_IMAGES, soci_index_backfill
from pipelines.backfill.jobs import soci_backfill_job
from pipelines.backfill.schedules import soci_backfill_retry_schedule
from pipelines.backfill.sensors import registry_image_scan_sensor
from pipelines.resource_defs.backfill import SociBackfillResource
from pipelines.resource_defs.base import RegistryResource
from resources.registry import RegistryClient
from resources.release.backfill import ImageStatus, StatusRecord
from resources.release.catalog import parse_image_key
from tests.support.images import corrupt_gzip_layer, gzip_layer, push_image, random_files, zstd_layer
from tests.support.registry import RunningRegistry
from tests.support.sensors import SensorHarness

KIB = 1024


def _resources(registry: RunningRegistry) -> dict:
    return {"registry": RegistryResource(),
            "soci_backfill": SociBackfillResource(registry=registry.addr, span_size=64 * KIB, min_layer_size=64 * KIB,
                                                  verify_sample=2)}


def _status(instance: dg.DagsterInstance, key: str) -> StatusRecord:
    ev = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=BACKFILL_ASSET, asset_partitions=[key]), limit=1).records[0]
    return StatusRecord.from_metadata(key, ev.asset_materialization.metadata)


@pytest.fixture
def images(registry: RunningRegistry) -> dict[str, str]:
    client = RegistryClient(registry.addr)
    base = gzip_layer(random_files("base", 160 * KIB))
    push_image(client, "team/app", "v1", [base, gzip_layer(random_files("a", 96 * KIB))])
    push_image(client, "team/zstd", "1", [zstd_layer(random_files("z", 160 * KIB))])
    push_image(client, "team/broken", "1", [corrupt_gzip_layer(96 * KIB)])
    return {"app": "team/app", "zstd": "team/zstd", "broken": "team/broken"}


def test_scan_sensor_runs_and_nightly_retry(tmp_path: Path, registry: RunningRegistry, images: dict[str, str]) -> None:
    resources = _resources(registry)
    h = SensorHarness(tmp_path / "home", registry_image_scan_sensor, resources, job_name="soci_index_image_job")
    t = h.tick()
    keys = {parse_image_key(r.partition_key).repository: r.partition_key for r in t.requested}
    assert set(keys) == {"team/app", "team/zstd", "team/broken"}
    assert all(r.tags["streamable/image"].startswith(f"{registry.addr}/") for r in t.requested)

    with dg.instance_for_test(temp_dir=str(tmp_path / "home")) as instance:
        assert set(instance.get_dynamic_partitions(REGISTRY_IMAGES.name)) == set(keys.values())
        for req in t.requested:
            dg.materialize(
                [soci_index_backfill],
                partition_key=req.partition_key,
                instance=instance,
                resources=resources,
                tags=req.tags,
                raise_on_error=False,
            )
        assert instance.get_materialized_partitions(BACKFILL_ASSET) == {keys["team/app"], keys["team/zstd"]}
        app, zstd = _status(instance, keys["team/app"]), _status(instance, keys["team/zstd"])
        assert app.status is ImageStatus.INDEXED and app.layers_built == 2 and app.soci_image.startswith(registry.addr)
        assert zstd.status is ImageStatus.NOT_INDEXABLE and "zstd" in zstd.reason

        # Nightly: only the failed image is retried; finished and not-indexable ones are left alone.
        with dg.build_schedule_context(instance=instance, resources=resources,
                                       scheduled_execution_time=datetime(2026, 1, 2, 3, 0, tzinfo=UTC)) as ctx:
            retries = soci_backfill_retry_schedule(ctx)
        assert [(r.partition_key, r.run_key) for r in retries] == [
            (keys["team/broken"], f"retry:2026-01-02:{keys['team/broken']}")
        ]

    # The next scan finds nothing new (the app image now has its -soci index; the others have partitions).
    assert h.tick().raw_keys == []


def test_on_demand_job_indexes_everything_in_one_run(
    tmp_path: Path, registry: RunningRegistry, images: dict[str, str]
) -> None:
    resources = _resources(registry)
    with dg.instance_for_test() as instance:
        result = soci_backfill_job.execute_in_process(instance=instance, resources=resources, raise_on_error=False)
        assert not result.success  # the broken image fails the run, after the others were recorded
        done = instance.get_materialized_partitions(BACKFILL_ASSET)
        assert {parse_image_key(k).repository for k in done} == {"team/app", "team/zstd"}
        assert len(instance.get_dynamic_partitions(REGISTRY_IMAGES.name)) == 3
        # Run again: finished images are not redone, the failed one is tried again.
        again = soci_backfill_job.execute_in_process(instance=instance, resources=resources, raise_on_error=False)
        tried = [e for e in again.all_events if e.event_type_value == "ASSET_MATERIALIZATION"]
        assert tried == [] and not again.success
        assert "team/broken" in str(again.failure_data_for_node("soci_backfill_all").error)
