"""Shared fixtures: the real local stack (dockerd + registry), registries per test; helpers in tests/support/."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.docker import DockerEngine
from tests.support.net import free_port
from tests.support.registry import RunningRegistry, start_registry

STACK_DIR = Path(os.environ.get("STREAMABLE_STACK_DIR", "/var/lib/streamable-stack"))
STACK_REGISTRY = os.environ.get("STREAMABLE_REGISTRY", "127.0.0.1:5055")
STACK_DOCKER_HOST = os.environ.get("DOCKER_HOST", f"unix://{STACK_DIR / 'docker.sock'}")

pytest_plugins = ["tests.support.git", "tests.support.cloud"]
__all__ = ["DockerEngine", "RunningRegistry", "free_port", "start_registry"]  # older tests import them from here


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[RunningRegistry]:
    """A fresh, empty registry without auth, for one test."""
    reg = start_registry(tmp_path / "registry")
    yield reg
    reg.stop()


@pytest.fixture
def auth_registry(tmp_path: Path) -> Iterator[RunningRegistry]:
    """A fresh registry with htpasswd Basic auth (user `streamable`, a random password)."""
    reg = start_registry(tmp_path / "auth-registry", username="streamable", password=os.urandom(12).hex())
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def stack_registry() -> str:
    """Address of the local stack's registry (started by `scripts/stack.sh up`)."""
    try:
        httpx.get(f"http://{STACK_REGISTRY}/v2/", timeout=2).raise_for_status()
    except httpx.HTTPError as exc:
        pytest.fail(f"local stack registry {STACK_REGISTRY} is not reachable ({exc}); run `bash scripts/stack.sh up`")
    return STACK_REGISTRY


@pytest.fixture(scope="session")
def docker_engine() -> DockerEngine:
    """The stack's dockerd; fails (not skips) when it is not running."""
    from resources.builders.docker_detect import find_buildkit_docker

    docker_bin = find_buildkit_docker()
    eng = DockerEngine(docker_bin=docker_bin, host=STACK_DOCKER_HOST)
    res = eng.run("version", "--format", "{{.Server.Version}}", check=False)
    if res.returncode != 0:
        pytest.fail(
            f"local stack dockerd at {STACK_DOCKER_HOST} is not running: {res.stderr.strip()}; "
            "run `bash scripts/stack.sh up`"
        )
    return eng
