"""A run launched the way the UI does: `dg dev` started by the test, submitted through Dagster's GraphQL client."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from dagster_graphql import DagsterGraphQLClient

from tests.pipelines.conftest import Project
from tests.support.docker import DockerEngine
from tests.ui.dg_dev import local_dagster_home, running_dg_dev

NASTY_ARG = "ui-arg;$(echo nope)|`x`"

LOGS_QUERY = """
query Logs($runId: ID!) {
  logsForRun(runId: $runId) {
    __typename
    ... on EventConnection {
      events {
        __typename
        ... on MessageEvent { message stepKey }
        ... on MaterializationEvent { assetKey { path } metadataEntries { label
            ... on TextMetadataEntry { text } ... on IntMetadataEntry { intValue } } }
        ... on ExecutionStepFailureEvent { error { message } }
        ... on RunFailureEvent { error { message } }
        ... on EngineEvent { error { message } }
      }
    }
  }
}
"""


@pytest.fixture
def webserver(project: Project, docker_engine: DockerEngine, tmp_path: Path) -> Iterator[int]:
    env = {
        "DAGSTER_HOME": str(local_dagster_home(tmp_path / "ui_home")),
        "STREAMABLE_TARGETS": str(project.targets_file),
        "STREAMABLE_STATE_DIR": str(project.state_dir),
        "STREAMABLE_DOCKER_HOST": docker_engine.host,
        "STREAMABLE_DOCKER_BIN": docker_engine.docker_bin,
        "STREAMABLE_ENV": "local",
    }
    with running_dg_dev(env, tmp_path / "dg-dev.log") as port:
        yield port


def test_ui_launched_run_succeeds_with_metadata(project: Project, webserver: int) -> None:
    client = DagsterGraphQLClient("127.0.0.1", port_number=webserver)
    sha = project.commit({"svc/app/ui.txt": "from the UI\n"})
    run_id = client.submit_job_execution(
        "build_and_release",
        run_config={
            "ops": {
                "image": {
                    "config": {
                        "commit": sha,
                        "ref": "refs/heads/main",
                        "build_args": {"MSG": NASTY_ARG},
                        "extra_tags": ["ui-try"],
                    }
                }
            }
        },
        tags={"dagster/partition": "svc"},
    )
    deadline = time.monotonic() + 420
    status = None
    while time.monotonic() < deadline:
        status = client.get_run_status(run_id).value
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            break
        time.sleep(2)
    res = httpx.post(
        f"http://127.0.0.1:{webserver}/graphql", json={"query": LOGS_QUERY, "variables": {"runId": run_id}}, timeout=60
    )
    events = res.json()["data"]["logsForRun"]["events"]
    failures = [e["error"]["message"] for e in events if e["__typename"] == "ExecutionStepFailureEvent"]
    failures += [
        e["message"] for e in events if e["__typename"] in ("RunFailureEvent", "EngineEvent") and e.get("message")
    ]
    assert status == "SUCCESS", f"run {run_id} ended {status}: {failures}"
    mats = {
        "/".join(e["assetKey"]["path"]): {m["label"]: m.get("text", m.get("intValue")) for m in e["metadataEntries"]}
        for e in events
        if e["__typename"] == "MaterializationEvent"
    }
    assert set(mats) == {"image", "startup_profile", "soci_index", "release"}
    assert "startup.enabled is false" in mats["startup_profile"]["status"]  # the target records no profile, and says so
    assert mats["image"]["commit"] == sha
    assert mats["soci_index"]["image_index_digest"].startswith("sha256:")
    # build args other than targets.yaml's: only the explicit extra tag moves, and the run says so
    assert mats["release"]["released_refs"].endswith("/team/svc:ui-try")
    assert (
        f"sha-{sha[:7]}" in mats["release"]["tags_not_moved"]
        and "MSG" in mats["release"]["release_rule"] + mats["image"]["build_args_overridden"]
    )
