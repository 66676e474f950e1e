"""A run launched the way the UI does: `dg dev` started by the test, submitted through Dagster's GraphQL client."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from dagster_graphql import DagsterGraphQLClient

from tests.conftest import DockerEngine, free_port
from tests.pipelines.conftest import Project

ROOT = Path(__file__).resolve().parents[2]
NASTY_ARG = "ui-arg;$(echo nope)|`x`"

LOCATION_QUERY = "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }"

LOGS_QUERY = """
query Logs($runId: ID!) {
  logsForRun(runId: $runId) {
    __typename
    ... on EventConnection {
      events {
        __typename
        ... on MessageEvent { message stepKey }
        ... on MaterializationEvent { assetKey { path } metadataEntries { label ... on TextMetadataEntry { text } ... on IntMetadataEntry { intValue } } }
        ... on ExecutionStepFailureEvent { error { message } }
        ... on RunFailureEvent { error { message } }
        ... on EngineEvent { error { message } }
      }
    }
  }
}
"""


@pytest.fixture
def webserver(project: Project, docker_engine: DockerEngine, tmp_path: Path):
    port = free_port()
    home = tmp_path / "ui_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((ROOT / "deploy" / "local" / "dagster.yaml").read_text())
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "STREAMABLE_TARGETS": str(project.targets_file),
        "STREAMABLE_STATE_DIR": str(project.state_dir),
        "STREAMABLE_DOCKER_HOST": docker_engine.host,
        "STREAMABLE_DOCKER_BIN": docker_engine.docker_bin,
        "STREAMABLE_ENV": "local",
    }
    log = open(tmp_path / "dg-dev.log", "wb")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "dg"), "dev", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            ws = httpx.post(f"http://127.0.0.1:{port}/graphql", json={"query": LOCATION_QUERY}, timeout=5).json()
            entries = ws["data"]["workspaceOrError"]["locationEntries"]
            if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                errors = [e["locationOrLoadError"] for e in entries if e["locationOrLoadError"]["__typename"] == "PythonError"]
                assert not errors, f"code location failed to load: {errors}"
                break
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            pass
        if proc.poll() is not None:
            pytest.fail(f"dg dev exited early:\n{(tmp_path / 'dg-dev.log').read_text()[-3000:]}")
        time.sleep(1)
    else:
        pytest.fail(f"dg dev did not come up:\n{(tmp_path / 'dg-dev.log').read_text()[-3000:]}")
    yield port
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def test_ui_launched_run_succeeds_with_metadata(project: Project, webserver: int) -> None:
    client = DagsterGraphQLClient("127.0.0.1", port_number=webserver)
    sha = project.commit({"svc/app/ui.txt": "from the UI\n"})
    run_id = client.submit_job_execution(
        "build_and_release",
        run_config={"ops": {"image": {"config": {"commit": sha, "ref": "refs/heads/main", "build_args": {"MSG": NASTY_ARG}}}}},
        tags={"dagster/partition": "svc"},
    )
    deadline = time.monotonic() + 420
    status = None
    while time.monotonic() < deadline:
        status = client.get_run_status(run_id).value
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            break
        time.sleep(2)
    res = httpx.post(f"http://127.0.0.1:{webserver}/graphql", json={"query": LOGS_QUERY, "variables": {"runId": run_id}}, timeout=60)
    events = res.json()["data"]["logsForRun"]["events"]
    failures = [e["error"]["message"] for e in events if e["__typename"] == "ExecutionStepFailureEvent"]
    failures += [e["message"] for e in events if e["__typename"] in ("RunFailureEvent", "EngineEvent") and e.get("message")]
    assert status == "SUCCESS", f"run {run_id} ended {status}: {failures}"
    mats = {"/".join(e["assetKey"]["path"]): {m["label"]: m.get("text", m.get("intValue")) for m in e["metadataEntries"]}
            for e in events if e["__typename"] == "MaterializationEvent"}
    assert set(mats) == {"image", "startup_profile", "soci_index", "release"}
    assert "startup.enabled is false" in mats["startup_profile"]["status"]  # the target records no profile, and says so
    assert mats["image"]["commit"] == sha
    assert mats["soci_index"]["image_index_digest"].startswith("sha256:")
    assert f"sha-{sha[:7]}" in mats["release"]["released_refs"]
