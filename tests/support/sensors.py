"""A daemon-like sensor harness: ticks a sensor against a persistent instance, as the Dagster daemon does."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg


@dataclass
class Tick:
    """What one sensor tick produced."""

    result: dg.SensorResult
    requested: list[dg.RunRequest]
    """Requests that survive run_key de-duplication against runs already in the instance (what the daemon launches)."""

    @property
    def keys(self) -> list[str]:
        return sorted(r.run_key or "" for r in self.requested)

    @property
    def raw_keys(self) -> list[str]:
        return sorted(r.run_key or "" for r in self.result.run_requests or [])


@dataclass
class SensorHarness:
    """Evaluates a sensor the way the daemon does: the cursor lives in a persistent instance (opened anew every
    tick, i.e. a restart each time), dynamic partition requests are applied, and a run_key that already has a run
    in the instance is not launched again."""

    home: Path
    sensor: dg.SensorDefinition
    resources: dict
    job_name: str = "build_and_release"
    ticks: list[Tick] = field(default_factory=list)

    @property
    def _cursor_key(self) -> str:
        return f"test-sensor-cursor:{self.sensor.name}"

    def tick(self, *, store_cursor: bool = True) -> Tick:
        """One evaluation; `store_cursor=False`: a daemon that launched the runs and died before saving the cursor."""
        from dagster._core.storage.dagster_run import RunsFilter
        from dagster._core.test_utils import create_run_for_test

        self.home.mkdir(parents=True, exist_ok=True)
        with dg.instance_for_test(temp_dir=str(self.home)) as instance:
            cursor = instance.run_storage.get_cursor_values({self._cursor_key}).get(self._cursor_key)
            with dg.build_sensor_context(instance=instance, cursor=cursor, resources=self.resources) as ctx:
                result = self.sensor(ctx)
            assert isinstance(result, dg.SensorResult)
            for preq in result.dynamic_partitions_requests or []:
                if isinstance(preq, dg.AddDynamicPartitionsRequest):
                    instance.add_dynamic_partitions(preq.partitions_def_name, list(preq.partition_keys))
                else:
                    for key in preq.partition_keys:
                        instance.delete_dynamic_partition(preq.partitions_def_name, key)
            fresh = []
            for req in result.run_requests or []:
                if req.run_key and instance.get_runs(RunsFilter(tags={"dagster/run_key": req.run_key}), limit=1):
                    continue
                tags = {**req.tags, "dagster/run_key": req.run_key or "", "dagster/sensor_name": self.sensor.name}
                if req.partition_key:
                    tags["dagster/partition"] = req.partition_key
                create_run_for_test(instance, job_name=self.job_name, run_config=req.run_config, tags=tags)
                fresh.append(req)
            new_cursor = result.cursor if result.cursor is not None else ctx.cursor
            if new_cursor is not None and store_cursor:
                instance.run_storage.set_cursor_values({self._cursor_key: new_cursor})
        tick = Tick(result=result, requested=fresh)
        self.ticks.append(tick)
        return tick

    def stored_cursor(self) -> str | None:
        with dg.instance_for_test(temp_dir=str(self.home)) as instance:
            return instance.run_storage.get_cursor_values({self._cursor_key}).get(self._cursor_key)
