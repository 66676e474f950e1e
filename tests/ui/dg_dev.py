"""`dg dev` started by a test on a free loopback port, waited for until the code location has loaded."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
LOCATION_QUERY = ("{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus "
                  "locationOrLoadError { __typename ... on PythonError { message } } } } } }")


def local_dagster_home(home: Path) -> Path:
    """A DAGSTER_HOME with the local stack's instance config (deploy/local/dagster.yaml), as `make ui` uses."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text((ROOT / "deploy" / "local" / "dagster.yaml").read_text())
    return home


def _loaded(port: int) -> bool:
    """True once every code location is LOADED; fails the test when one failed to load."""
    try:
        ws = httpx.post(f"http://127.0.0.1:{port}/graphql", json={"query": LOCATION_QUERY}, timeout=5).json()
        entries = ws["data"]["workspaceOrError"]["locationEntries"]
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return False
    if not entries or not all(e["loadStatus"] == "LOADED" for e in entries):
        return False
    errors = [e["locationOrLoadError"] for e in entries if e["locationOrLoadError"]["__typename"] == "PythonError"]
    assert not errors, f"code location failed to load: {errors}"
    return True


@contextmanager
def running_dg_dev(env: dict[str, str], log_path: Path, *, timeout_s: float = 180) -> Iterator[int]:
    """Run `dg dev` from the repository root with `env` over os.environ; yields its port, stops it on exit."""
    port = free_port()
    log = open(log_path, "wb")  # closed below, after the process ended
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "dg"), "dev", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + timeout_s
        while not _loaded(port):
            if proc.poll() is not None:
                pytest.fail(f"dg dev exited early:\n{log_path.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"dg dev did not come up in {timeout_s:.0f}s:\n{log_path.read_text()[-3000:]}")
            time.sleep(1)
        yield port
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        log.close()
