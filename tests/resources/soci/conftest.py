"""Fixtures for the SOCI tests: images pushed to real registries, hand-made or built by BuildKit."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import tarfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from resources.oci import media_types as mt
from resources.oci.refs import ImageRef
from resources.registry import RegistryClient

if TYPE_CHECKING:
    from tests.conftest import DockerEngine, RunningRegistry

MiB = 1 << 20


def random_bytes(size: int, seed: int) -> bytes:
    """Incompressible, reproducible bytes."""
    return random.Random(seed).randbytes(size)


def text_bytes(size: int, seed: int) -> bytes:
    """Compressible, reproducible text."""
    rng = random.Random(seed)
    words = [b"alpha", b"beta", b"gamma", b"delta", b"soci", b"span", b"layer", b"zt0c"]
    out = bytearray()
    while len(out) < size:
        out += rng.choice(words) + (b"\n" if rng.random() < 0.1 else b" ")
    return bytes(out[:size])


def tar_bytes(files: dict[str, bytes], *, mtime: int = 1_700_000_000) -> bytes:
    """A PAX tar of regular files (parent dirs included), deterministic."""
    buf = io.BytesIO()
    seen_dirs: set[str] = set()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            parts = name.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i])
                if d not in seen_dirs:
                    seen_dirs.add(d)
                    info = tarfile.TarInfo(d + "/")
                    info.type = tarfile.DIRTYPE
                    info.mode = 0o755
                    info.mtime = mtime
                    tar.addfile(info)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755 if name.endswith(".sh") else 0o644
            info.mtime = mtime
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Layer:
    """A layer blob with its mediaType and the files it holds."""

    blob: bytes
    media_type: str
    diff_id: str
    files: dict[str, bytes]

    @property
    def digest(self) -> str:
        return sha256(self.blob)

    @property
    def size(self) -> int:
        return len(self.blob)

    def descriptor(self) -> dict[str, object]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


def gzip_layer(files: dict[str, bytes], media_type: str = mt.OCI_LAYER_GZIP, level: int = 6) -> Layer:
    tar = tar_bytes(files)
    return Layer(gzip.compress(tar, compresslevel=level, mtime=0), media_type, sha256(tar), files)


def tar_layer(files: dict[str, bytes]) -> Layer:
    tar = tar_bytes(files)
    return Layer(tar, mt.OCI_LAYER_TAR, sha256(tar), files)


def zstd_layer(files: dict[str, bytes]) -> Layer:
    import zstandard

    tar = tar_bytes(files)
    return Layer(zstandard.ZstdCompressor(level=3).compress(tar), mt.OCI_LAYER_ZSTD, sha256(tar), files)


@dataclass
class PushedImage:
    """An image (manifest or index) as pushed."""

    ref: ImageRef
    digest: str
    media_type: str
    data: bytes
    layers: list[Layer] = field(default_factory=list)
    platform: tuple[str, str, str] = ("linux", "amd64", "")
    children: list[PushedImage] = field(default_factory=list)

    def descriptor(self, with_platform: bool = True) -> dict[str, object]:
        d: dict[str, object] = {"mediaType": self.media_type, "digest": self.digest, "size": len(self.data)}
        if with_platform:
            os_name, arch, variant = self.platform
            p = {"architecture": arch, "os": os_name}
            if variant:
                p["variant"] = variant
            d["platform"] = p
        return d


class ImageFactory:
    """Pushes hand-made images (Docker or OCI media types) to one registry."""

    def __init__(self, registry: RunningRegistry) -> None:
        self.registry = registry
        self.client = RegistryClient(registry.addr, username=registry.username, password=registry.password, retries=1)

    def ref(self, repo: str, tag: str) -> ImageRef:
        return ImageRef(self.registry.addr, repo, tag)

    def push_image(
        self,
        repo: str,
        tag: str | None,
        layers: list[Layer],
        *,
        docker: bool = False,
        platform: tuple[str, str, str] = ("linux", "amd64", ""),
        entrypoint: list[str] | None = None,
        config_media_type: str | None = None,
        annotations: dict[str, str] | None = None,
        extra: dict[str, object] | None = None,
    ) -> PushedImage:
        for layer in layers:
            self.client.push_blob(repo, layer.blob)
        os_name, arch, variant = platform
        config: dict[str, object] = {
            "architecture": arch,
            "os": os_name,
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
            "config": {"Entrypoint": entrypoint} if entrypoint else {},
        }
        if variant:
            config["variant"] = variant
        config_blob = json.dumps(config, sort_keys=True).encode()
        self.client.push_blob(repo, config_blob)
        media_type = mt.DOCKER_MANIFEST if docker else mt.OCI_MANIFEST
        manifest: dict[str, object] = {
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": {
                "mediaType": config_media_type or (mt.DOCKER_CONFIG if docker else mt.OCI_CONFIG),
                "size": len(config_blob),  # size before digest, like dockerd writes it
                "digest": sha256(config_blob),
            },
            "layers": [layer.descriptor() for layer in layers],
        }
        if annotations:
            manifest["annotations"] = annotations
        if extra:
            manifest.update(extra)
        data = json.dumps(manifest, indent=3).encode()  # pretty, like dockerd: not Go-canonical
        digest = sha256(data)
        self.client.put_manifest(repo, tag or digest, data, media_type)
        return PushedImage(self.ref(repo, tag or "untagged"), digest, media_type, data, list(layers), platform)

    def push_index(
        self,
        repo: str,
        tag: str,
        images: list[PushedImage],
        *,
        docker: bool = False,
        extra_entries: list[dict[str, object]] | None = None,
    ) -> PushedImage:
        media_type = mt.DOCKER_MANIFEST_LIST if docker else mt.OCI_INDEX
        index = {
            "schemaVersion": 2,
            "mediaType": media_type,
            "manifests": [img.descriptor() for img in images] + list(extra_entries or []),
        }
        data = json.dumps(index, indent=2).encode()
        self.client.put_manifest(repo, tag, data, media_type)
        return PushedImage(self.ref(repo, tag), sha256(data), media_type, data, children=list(images))

    def tags(self, repo: str) -> list[str]:
        from resources.registry import RegistryNotFoundError

        try:
            return sorted(self.client.list_tags(repo))
        except RegistryNotFoundError:
            return []


@pytest.fixture
def images(registry: RunningRegistry) -> Iterator[ImageFactory]:
    """Hand-made images in a fresh registry."""
    factory = ImageFactory(registry)
    yield factory
    factory.client.close()


@pytest.fixture
def client(registry: RunningRegistry) -> Iterator[RegistryClient]:
    """A registry client for the per-test registry."""
    c = RegistryClient(registry.addr, retries=1)
    yield c
    c.close()


# ---- a real BuildKit build --------------------------------------------------------------------

BUILD_FILES: dict[str, bytes] = {
    # One layer >= 10 MiB after compression, with several files over several 4 MiB spans.
    "data/model-0.bin": random_bytes(5 * MiB, 1),
    "data/model-1.bin": random_bytes(4 * MiB + 12345, 2),
    "data/tokens.txt": text_bytes(300_000, 3),
    "data/small.json": b'{"hello": "world"}\n',
    "data/model-2.bin": random_bytes(2 * MiB, 4),
    # Small layers.
    "run.sh": b"#!/bin/sh\nexec cat /app/data/small.json\n",
    "etc/app.conf": b"threads = 4\n",
}
DOCKERFILE = """\
FROM scratch
COPY data/ /app/data/
COPY run.sh /app/run.sh
COPY etc/app.conf /etc/app/app.conf
ENTRYPOINT ["/app/run.sh"]
"""


@dataclass
class BuiltImage:
    """An image built once per session by the stack's BuildKit, pushable to any test registry."""

    engine: DockerEngine
    local_tag: str
    files: dict[str, bytes]

    def push(self, registry: RunningRegistry, repo: str, tag: str) -> ImageRef:
        remote = f"{registry.addr}/{repo}:{tag}"
        self.engine.run("tag", self.local_tag, remote)
        try:
            result = self.engine.run("push", remote, check=False)
            if result.returncode != 0:
                raise RuntimeError(f"docker push {remote} failed: {result.stderr.strip()}")
        finally:
            self.engine.run("rmi", remote, check=False)
        return ImageRef.parse(remote)


@pytest.fixture(scope="session")
def buildkit_image(docker_engine: DockerEngine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BuiltImage]:
    """FROM scratch + COPY of generated files (one >=10 MiB layer, two small ones), built with --network=none."""
    ctx: Path = tmp_path_factory.mktemp("soci-buildkit-context")
    for name, data in BUILD_FILES.items():
        path = ctx / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (ctx / "run.sh").chmod(0o755)
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    tag = f"streamable-soci-test:{uuid.uuid4().hex[:12]}"
    result = docker_engine.run("build", "--network=none", "-t", tag, str(ctx), check=False)
    if result.returncode != 0:
        pytest.fail(f"docker build failed: {result.stderr[-2000:]}")
    files = {
        f"app/{k}" if not k.startswith("etc/") else f"etc/app/{k.split('/', 1)[1]}": v for k, v in BUILD_FILES.items()
    }
    yield BuiltImage(docker_engine, tag, files)
    docker_engine.run("rmi", "-f", tag, check=False)
