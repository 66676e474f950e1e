"""The automation definitions load inside the code location (merged by pipelines/definitions.py)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from tests.support.git import write_targets


def test_code_location_with_automation_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMABLE_TARGETS", str(write_targets(tmp_path / "targets.yaml", [
        {"name": "app", "repo": str(tmp_path / "repo"), "context": "svc"}])))
    monkeypatch.setenv("STREAMABLE_PUSH_QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/123456789012/ecr-push")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    from pipelines.definitions import defs

    d = defs()
    dg.Definitions.validate_loadable(d)
    repo = d.get_repository_def()
    assert {s.name for s in repo.sensor_defs} >= {
        "git_push_sensor",
        "registry_image_scan_sensor",
        "ecr_push_event_sensor",
    }
    assert {s.name for s in repo.schedule_defs} >= {"soci_backfill_retry_schedule", "builder_cache_gc_schedule"}
    assert {"soci_index_image_job", "soci_backfill_job", "builder_cache_gc_job", "build_and_release"} <= {
        j.name for j in repo.get_all_jobs()}
    git_sensor = repo.get_sensor_def("git_push_sensor")
    assert git_sensor.job_name == "build_and_release"
