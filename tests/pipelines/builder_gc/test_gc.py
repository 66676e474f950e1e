"""Builder cache GC: policy checks on real config files, and a prune on the local stack's BuildKit."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import dagster as dg
import pytest

from pipelines.builder_gc.jobs import builder_cache_gc_job
from pipelines.metadata import sized
from pipelines.resource_defs.local import LocalBuilderResource
from resources.builders.base import PruneResult
from resources.builders.gc import (
    GcConfigError,
    check_gc_files,
    check_policy,
    load_gc_policies,
    policies_from_buildkitd_toml,
    policies_from_docker_daemon_json,
    prune_builders,
)
from tests.support.docker import DockerEngine

REPO = Path(__file__).resolve().parents[3]

NO_CATCH_ALL = """
[worker.oci]
  enabled = true
  gc = true
  [[worker.oci.gcpolicy]]
    filters = ["type==source.local"]
    keepDuration = "48h"
    keepBytes = "512MB"
  [[worker.oci.gcpolicy]]
    reservedSpace = "10%"
    maxUsedSpace = "60%"
"""


def test_policy_without_a_final_catch_all_tier_is_flagged() -> None:
    (policy,) = policies_from_buildkitd_toml(NO_CATCH_ALL, "bad.toml")
    (warning,) = check_policy(policy)
    assert "bad.toml (worker.oci)" in warning and "no final catch-all tier" in warning
    fixed = NO_CATCH_ALL + '  [[worker.oci.gcpolicy]]\n    all = true\n    maxUsedSpace = "70%"\n'
    assert check_policy(policies_from_buildkitd_toml(fixed)[0]) == []
    # A catch-all that is not last, or one narrowed by filters or keepDuration, does not count.
    narrowed = fixed + '  [[worker.oci.gcpolicy]]\n    All = true\n    keepDuration = "24h"\n'
    assert check_policy(policies_from_buildkitd_toml(narrowed)[0])


def test_defaults_disabled_gc_and_docker_daemon_json() -> None:
    assert [check_policy(p) for p in policies_from_buildkitd_toml("[worker.oci]\n  gc = true\n")] == [[]]
    (off,) = policies_from_buildkitd_toml("[worker.containerd]\n  enabled = true\n  gc = false\n")
    assert "disabled" in check_policy(off)[0]
    assert policies_from_buildkitd_toml("[worker.oci]\n  enabled = false\n") == []
    daemon = {"builder": {"gc": {"enabled": True, "policy": [
        {"keepStorage": "10GB", "filter": ["unused-for=2200h"]}, {"keepStorage": "50GB", "all": True}]}}}
    assert check_policy(policies_from_docker_daemon_json(json.dumps(daemon))[0]) == []
    daemon["builder"]["gc"]["policy"] = daemon["builder"]["gc"]["policy"][:1]
    assert check_policy(policies_from_docker_daemon_json(json.dumps(daemon))[0])
    with pytest.raises(GcConfigError, match="broken.toml"):
        policies_from_buildkitd_toml("[worker.oci\n", "broken.toml")


def test_the_shipped_builder_config_has_a_catch_all_tier() -> None:
    path = REPO / "deploy/builder/etc/buildkit/buildkitd.toml"
    assert load_gc_policies(path), f"{path} configures no worker"
    assert check_gc_files([path]) == []
    assert "cannot read" in check_gc_files([REPO / "no-such.toml"])[0]


class _FlakyPool:
    """A builder pool where one builder fails (raises like resources.builders.pool.PruneError)."""

    name = "pool"

    def prune(self, **_: object) -> list[PruneResult]:
        from resources.builders.pool import PruneError

        raise PruneError([PruneResult("buildkitd-0", 100, 40, 60)], {"buildkitd-1": "RuntimeError: connection refused"})


def test_one_builder_failing_keeps_the_others_results() -> None:
    report = prune_builders(_FlakyPool(), keep_duration_s=60, log=lambda _m: None)
    assert report.freed_bytes == 60 and report.failures == {"buildkitd-1": "RuntimeError: connection refused"}


def _cache_ids(engine: DockerEngine) -> dict[str, int]:
    out = engine.run("system", "df", "-v", "--format", "{{json .BuildCache}}").stdout
    return {r["ID"]: r for r in json.loads(out or "[]")}


@pytest.mark.stack
def test_gc_job_prunes_the_local_builder_and_records_freed_bytes(tmp_path: Path, docker_engine: DockerEngine) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / f"blob-{os.urandom(6).hex()}.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY *.bin /\n")
    before_ids = set(_cache_ids(docker_engine))
    docker_engine.run("build", "--network=none", "--output", f"type=tar,dest={tmp_path / 'out.tar'}", str(ctx))
    ours = set(_cache_ids(docker_engine)) - before_ids
    assert ours, "the build created no build cache record"
    time.sleep(12)  # our cache must be older than keep_duration; other engineers' fresh cache is left alone
    policy = tmp_path / "buildkitd.toml"
    policy.write_text(NO_CATCH_ALL)
    resources = {"builder": LocalBuilderResource(docker_host=docker_engine.host, docker_bin=docker_engine.docker_bin)}
    with dg.instance_for_test() as instance:
        result = builder_cache_gc_job.execute_in_process(
            resources=resources,
            instance=instance,
            run_config={
                "ops": {"builder_cache_gc": {"config": {"keep_duration_s": 10, "policy_files": [str(policy)]}}}
            },
        )
        logs = [e.user_message for e in instance.all_logs(result.run_id)]
    assert result.success
    value = result.output_for_node("builder_cache_gc")
    (pruned,) = value["results"]
    assert pruned["bytes_before"] >= 3 * 1024 * 1024
    out = next(e for e in result.all_node_events if e.event_type_value == "STEP_OUTPUT")
    md = {k: getattr(v, "value", v) for k, v in out.event_specific_data.metadata.items()}
    assert md["freed_bytes"] == pruned["freed_bytes"] and md["builders_pruned"] == 1 and md["policy_warnings"] == 1
    assert md["bytes_before"] == pruned["bytes_before"] and md["bytes_after"] == pruned["bytes_after"]
    assert not ours & set(_cache_ids(docker_engine)), "our build cache survived the prune"
    assert any("no final catch-all tier" in m and str(policy) in m for m in logs)
    assert "no final catch-all tier" in md["policy_warning_text"]
    (row,) = md["builders"].records
    assert row.data == {"builder": "local-dockerd", "status": "pruned", "bytes_before": pruned["bytes_before"],
                        "bytes_freed": pruned["freed_bytes"], "bytes_after": pruned["bytes_after"], "error": "",
                        "before": sized(pruned["bytes_before"]), "freed": sized(pruned["freed_bytes"]),
                        "after": sized(pruned["bytes_after"])}
    assert [c.name for c in md["builders"].schema.columns] == [
        "builder", "status", "before", "freed", "after", "bytes_before", "bytes_freed", "bytes_after", "error"]


def test_gc_job_table_on_replayed_buildctl_transcripts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Three builders replaying real buildctl v0.23.2 du/prune transcripts: one pruned, one empty, one stopped."""
    from pipelines.resource_defs.eks import BuilderPoolResource
    from tests.fakes.buildctl_cases import TRANSCRIPTS, output, tls_files

    a, b, c = "tcp://127.0.0.1:5092", "tcp://127.0.0.1:5093", "tcp://127.0.0.1:5094"
    state = tmp_path / "state"
    state.mkdir()
    config = tmp_path / "buildctl.json"
    config.write_text(json.dumps({"state_dir": str(state), "script": {
        a: ["du-json-after-partial-prune", "prune-json", "du-json-after-prune"],
        b: ["du-json-empty", "prune-json-empty", "du-json-empty"],
        c: ["du-json-builder-stopped"]}}))
    monkeypatch.setenv("FAKE_BUILDCTL_CONFIG", str(config))
    tls = tls_files(tmp_path / "certs")
    builder = BuilderPoolResource(discovery="static", static_addrs=[a, b, c], tls="files", tls_ca_file=str(tls.ca_cert),
                                  tls_cert_file=str(tls.cert), tls_key_file=str(tls.key), probe_timeout_s=None,
                                  buildctl_bin=str(REPO / "tests/fakes/buildctl"))
    with dg.instance_for_test() as instance:
        result = builder_cache_gc_job.execute_in_process(
            resources={"builder": builder}, instance=instance, raise_on_error=False,
            run_config={"ops": {"builder_cache_gc": {"config": {"keep_duration_s": None, "policy_files": []}}}})
    assert not result.success  # the stopped builder fails the run, after the others were pruned
    failure = next(e for e in result.all_node_events if e.event_type_value == "STEP_FAILURE")
    md = failure.event_specific_data.user_failure_data.metadata
    before = sum(r["size"] for r in json.loads((TRANSCRIPTS / "du-json-after-partial-prune.stdout").read_text()))
    freed = sum(json.loads(ln)["size"] for ln in output("prune-json").splitlines() if ln.strip())
    rows = [r.data for r in md["builders"].value.records]
    assert rows[:2] == [
        {
            "builder": "127.0.0.1:5092",
            "status": "pruned",
            "bytes_before": before,
            "bytes_freed": freed,
            "bytes_after": 0,
            "error": "",
            "before": sized(before),
            "freed": sized(freed),
            "after": sized(0),
        },
        {
            "builder": "127.0.0.1:5093",
            "status": "pruned",
            "bytes_before": 0,
            "bytes_freed": 0,
            "bytes_after": 0,
            "error": "",
            "before": sized(0),
            "freed": sized(0),
            "after": sized(0),
        },
    ]
    assert rows[2]["before"] is None and rows[2]["freed"] is None
    assert rows[2]["builder"] == "127.0.0.1:5094" and rows[2]["status"] == "failed"
    assert "connection refused" in rows[2]["error"] and rows[2]["bytes_before"] is None
    assert md["freed_bytes"].value == freed and md["builders_failed"].value == 1
