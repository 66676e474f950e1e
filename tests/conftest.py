"""Shared fixtures: the real local stack (dockerd + registry) and registries started per test."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

STACK_DIR = Path(os.environ.get("STREAMABLE_STACK_DIR", "/var/lib/streamable-stack"))
STACK_REGISTRY = os.environ.get("STREAMABLE_REGISTRY", "127.0.0.1:5055")
STACK_DOCKER_HOST = os.environ.get("DOCKER_HOST", f"unix://{STACK_DIR / 'docker.sock'}")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RunningRegistry:
    """A CNCF distribution registry process on loopback."""

    addr: str
    root: Path
    username: str | None = None
    password: str | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.addr}"

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def start(self) -> None:
        """(Re)start the process with the same config and storage."""
        self.stop()
        self.process = subprocess.Popen(
            ["docker-registry", "serve", str(self.root / "config.yml")],
            stdout=open(self.root / "registry.log", "ab"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                r = httpx.get(f"{self.url}/v2/", timeout=1)
                if r.status_code in (200, 401):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"registry on {self.addr} did not start; see {self.root / 'registry.log'}")


def start_registry(root: Path, *, username: str | None = None, password: str | None = None) -> RunningRegistry:
    """Start docker-registry on a free loopback port, with htpasswd auth when credentials are given."""
    if not shutil.which("docker-registry"):
        raise RuntimeError("docker-registry is not installed: run `bash scripts/stack.sh install`")
    root.mkdir(parents=True, exist_ok=True)
    addr = f"127.0.0.1:{free_port()}"
    auth = ""
    if username is not None:
        assert password is not None
        subprocess.run(
            ["htpasswd", "-Bbc", str(root / "htpasswd"), username, password],
            check=True,
            capture_output=True,
        )
        auth = f"auth:\n  htpasswd:\n    realm: streamable-test\n    path: {root / 'htpasswd'}\n"
    (root / "config.yml").write_text(
        "version: 0.1\nlog:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: {addr}\n{auth}"
    )
    reg = RunningRegistry(addr=addr, root=root, username=username, password=password)
    reg.start()
    return reg


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


@dataclass(frozen=True)
class DockerEngine:
    """The local stack's Docker engine (embedded BuildKit)."""

    docker_bin: str
    host: str

    def env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": self.host, "DOCKER_BUILDKIT": "1"}

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.docker_bin, *args], env=self.env(), check=check, capture_output=True, text=True)


@pytest.fixture(scope="session")
def docker_engine() -> DockerEngine:
    """The stack's dockerd; fails (not skips) when it is not running."""
    from resources.builders.docker_detect import find_buildkit_docker  # noqa: PLC0415

    docker_bin = find_buildkit_docker()
    eng = DockerEngine(docker_bin=docker_bin, host=STACK_DOCKER_HOST)
    res = eng.run("version", "--format", "{{.Server.Version}}", check=False)
    if res.returncode != 0:
        pytest.fail(f"local stack dockerd at {STACK_DOCKER_HOST} is not running: {res.stderr.strip()}; run `bash scripts/stack.sh up`")
    return eng
