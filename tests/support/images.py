"""Build small but real OCI images in a registry for the backfill tests (gzip/zstd tar layers, indexes)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from dataclasses import dataclass

from resources.oci import media_types as mt
from resources.registry import RegistryClient


@dataclass(frozen=True)
class Layer:
    """A layer blob and what its manifest entry says."""

    blob: bytes
    media_type: str
    diff_id: str

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.blob).hexdigest()


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1700000000
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def random_files(prefix: str, total: int, *, count: int = 4) -> dict[str, bytes]:
    """`count` files of random (incompressible) bytes adding up to `total` bytes."""
    return {f"{prefix}/f{i}.bin": os.urandom(total // count) for i in range(count)}


def gzip_layer(files: dict[str, bytes]) -> Layer:
    raw = _tar(files)
    return Layer(gzip.compress(raw, mtime=0), mt.OCI_LAYER_GZIP, "sha256:" + hashlib.sha256(raw).hexdigest())


def zstd_layer(files: dict[str, bytes]) -> Layer:
    """A real zstd-compressed tar layer (via the zstd CLI)."""
    zstd = shutil.which("zstd")
    if zstd is None:
        raise RuntimeError("the zstd CLI is needed to make a zstd layer (apt-get install zstd)")
    raw = _tar(files)
    blob = subprocess.run([zstd, "-q", "-c", "-3"], input=raw, capture_output=True, check=True).stdout
    return Layer(blob, mt.OCI_LAYER_ZSTD, "sha256:" + hashlib.sha256(raw).hexdigest())


def corrupt_gzip_layer(size: int) -> Layer:
    """Bytes that are not gzip, announced as a gzip layer (indexing must fail for it)."""
    return Layer(os.urandom(size), mt.OCI_LAYER_GZIP, "sha256:" + "0" * 64)


def push_image(
    client: RegistryClient, repo: str, tag: str | None, layers: list[Layer], *, arch: str = "amd64"
) -> tuple[str, int]:
    """Push layers, a config and an OCI image manifest; returns (manifest digest, size)."""
    for layer in layers:
        client.push_blob(repo, layer.blob, digest=layer.digest)
    config = json.dumps({"architecture": arch, "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]}}).encode()
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    client.push_blob(repo, config, digest=config_digest)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": {"mediaType": mt.OCI_CONFIG, "digest": config_digest, "size": len(config)},
            "layers": [
                {"mediaType": layer.media_type, "digest": layer.digest, "size": len(layer.blob)} for layer in layers
            ],
        }
    ).encode()
    digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    client.put_manifest(repo, digest, manifest, mt.OCI_MANIFEST)
    if tag:
        client.put_manifest(repo, tag, manifest, mt.OCI_MANIFEST)
    return digest, len(manifest)


def push_index(client: RegistryClient, repo: str, tag: str, manifests: list[tuple[str, int, str]]) -> str:
    """Push an OCI image index over already pushed manifests [(digest, size, arch)]; returns its digest."""
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_INDEX,
            "manifests": [
                {"mediaType": mt.OCI_MANIFEST, "digest": d, "size": s, "platform": {"architecture": a, "os": "linux"}}
                for d, s, a in manifests
            ],
        }
    ).encode()
    client.put_manifest(repo, tag, index, mt.OCI_INDEX)
    return "sha256:" + hashlib.sha256(index).hexdigest()
