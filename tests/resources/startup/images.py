"""Real OCI images for the recorder tests: hand-made tar layers (whiteouts, opaque dirs, symlinks), pushed."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from resources.oci import media_types as mt
from resources.registry import RegistryClient

BUSYBOX = Path("/bin/busybox")
APPLETS = ("sh", "cat", "echo", "sleep", "nc", "head", "dd", "true", "ls", "id")


@dataclass(frozen=True)
class Entry:
    """A tar entry: a file (data), a directory, or a symlink (link)."""

    name: str
    data: bytes | None = None
    mode: int = 0o644
    link: str | None = None
    is_dir: bool = False


@dataclass(frozen=True)
class Layer:
    blob: bytes
    diff_id: str

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.blob).hexdigest()


def layer(entries: list[Entry]) -> Layer:
    """A gzip tar layer with the entries in the given order (deterministic bytes)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            info = tarfile.TarInfo(e.name)
            info.mtime = 1700000000
            info.mode = e.mode
            if e.is_dir:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif e.link is not None:
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, e.link, 0o777
                tar.addfile(info)
            else:
                data = e.data or b""
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    return Layer(gzip.compress(raw, compresslevel=1, mtime=0), "sha256:" + hashlib.sha256(raw).hexdigest())


def busybox_layer() -> Layer:
    """The host's static busybox with a few applet links, /etc/passwd and /tmp (like streamable/busybox:local)."""
    if subprocess.run(["ldd", str(BUSYBOX)], capture_output=True, check=False).returncode == 0:
        raise RuntimeError("/bin/busybox is dynamically linked; install busybox-static (scripts/stack.sh install)")
    entries = [Entry("bin", is_dir=True), Entry("bin/busybox", BUSYBOX.read_bytes(), 0o755)]
    entries += [Entry(f"bin/{a}", link="busybox") for a in APPLETS]
    entries += [
        Entry("etc", is_dir=True),
        Entry("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n"),
        Entry("tmp", is_dir=True),
    ]
    return layer(entries)


def push_image(client: RegistryClient, repo: str, tag: str, layers: list[Layer], *, config: dict | None = None) -> str:
    """Push layers, an image config (`config` is its run config) and an OCI manifest; returns the manifest digest."""
    for lay in layers:
        client.push_blob(repo, lay.blob, digest=lay.digest)
    blob = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": config or {},
            "rootfs": {"type": "layers", "diff_ids": [lay.diff_id for lay in layers]},
        }
    ).encode()
    config_digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    client.push_blob(repo, blob, digest=config_digest)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": {"mediaType": mt.OCI_CONFIG, "digest": config_digest, "size": len(blob)},
            "layers": [{"mediaType": mt.OCI_LAYER_GZIP, "digest": lay.digest, "size": len(lay.blob)} for lay in layers],
        }
    ).encode()
    return client.put_manifest(repo, tag, manifest, mt.OCI_MANIFEST)
