"""Registries for tests and benchmarks: Debian's docker-registry on a free loopback port, with optional htpasswd."""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.net import free_port


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
