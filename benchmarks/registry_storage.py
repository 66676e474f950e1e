"""Write images straight into a CNCF distribution registry's filesystem storage, then serve it on loopback.

Pushing 20,000 tags or gigabytes of layers over HTTP takes longer than the thing a benchmark measures;
the filesystem driver's layout is simple and stable (distribution `registry/storage/paths.go`):

    docker/registry/v2/blobs/sha256/<2 hex>/<hex>/data
    docker/registry/v2/repositories/<name>/_layers/sha256/<hex>/link                      "sha256:<hex>"
    docker/registry/v2/repositories/<name>/_manifests/revisions/sha256/<hex>/link
    docker/registry/v2/repositories/<name>/_manifests/tags/<tag>/current/link
    docker/registry/v2/repositories/<name>/_manifests/tags/<tag>/index/sha256/<hex>/link

Write everything before the registry starts (it caches nothing we rely on, but keep it simple).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class RegistryStorage:
    """The filesystem storage under `data_root` (the config's `rootdirectory`)."""

    def __init__(self, data_root: Path) -> None:
        self.v2 = data_root / "docker" / "registry" / "v2"
        self._blobs_written: set[str] = set()

    def _blob_path(self, digest: str) -> Path:
        hexd = digest.split(":", 1)[1]
        return self.v2 / "blobs" / "sha256" / hexd[:2] / hexd / "data"

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def put_blob(self, data: bytes) -> str:
        """Store a blob (once) and return its digest."""
        digest = digest_of(data)
        if digest not in self._blobs_written:
            self._write(self._blob_path(digest), data)
            self._blobs_written.add(digest)
        return digest

    def adopt_blob_file(self, path: Path, digest: str) -> None:
        """Move an already-written blob file (digest computed by the caller) into place."""
        target = self._blob_path(digest)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
        self._blobs_written.add(digest)

    def link_blob(self, repo: str, digest: str) -> None:
        """Make a stored blob (layer or config) part of `repo`."""
        self._write(
            self.v2 / "repositories" / repo / "_layers" / "sha256" / digest.split(":", 1)[1] / "link", digest.encode()
        )

    def put_manifest(self, repo: str, data: bytes, tags: tuple[str, ...] = ()) -> str:
        """Store a manifest in `repo` (revision link) and point `tags` at it; returns its digest."""
        digest = self.put_blob(data)
        hexd = digest.split(":", 1)[1]
        manifests = self.v2 / "repositories" / repo / "_manifests"
        self._write(manifests / "revisions" / "sha256" / hexd / "link", digest.encode())
        for tag in tags:
            self._write(manifests / "tags" / tag / "current" / "link", digest.encode())
            self._write(manifests / "tags" / tag / "index" / "sha256" / hexd / "link", digest.encode())
        return digest


class ServedRegistry:
    """docker-registry serving a storage directory on a free loopback port."""

    def __init__(self, root: Path) -> None:
        if not shutil.which("docker-registry"):
            raise SystemExit("docker-registry is not installed: run `bash scripts/stack.sh install`")
        self.root = root
        self.data = root / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.storage = RegistryStorage(self.data)
        self.proc: subprocess.Popen[bytes] | None = None
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.addr = f"127.0.0.1:{s.getsockname()[1]}"

    def start(self) -> str:
        (self.root / "config.yml").write_text(
            "version: 0.1\nlog:\n  level: error\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.data}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: {self.addr}\n")
        self.proc = subprocess.Popen(["docker-registry", "serve", str(self.root / "config.yml")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(300):
            try:
                httpx.get(f"http://{self.addr}/v2/", timeout=1)
                return self.addr
            except httpx.HTTPError:
                time.sleep(0.1)
        self.stop()
        raise SystemExit(f"registry on {self.addr} did not start")

    def cpu_seconds(self) -> float:
        """User + system CPU the registry process used so far."""
        if self.proc is None:
            return 0.0
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().strip()
