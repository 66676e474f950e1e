"""OCI Descriptor, Platform, Manifest and Index as Go declares them (image-spec v1.1 specs-go).

Field order and `omitempty` follow the Go structs, so `gojson.marshal` of a decoded document
is exactly what soci-snapshotter (or any Go tool) writes for it, unknown fields dropped.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from resources.soci import gojson
from resources.soci.gojson import go_field


@dataclass
class Platform:
    """specs-go/v1 Platform."""

    architecture: str = go_field("architecture", default="")
    os: str = go_field("os", default="")
    os_version: str = go_field("os.version", omitempty=True, default="")
    os_features: list[str] | None = go_field("os.features", omitempty=True, default=None)
    variant: str = go_field("variant", omitempty=True, default="")

    def __str__(self) -> str:
        text = f"{self.os}/{self.architecture}"
        return f"{text}/{self.variant}" if self.variant else text


@dataclass
class Descriptor:
    """specs-go/v1 Descriptor."""

    media_type: str = go_field("mediaType", default="")
    digest: str = go_field("digest", default="")
    size: int = go_field("size", default=0)
    urls: list[str] | None = go_field("urls", omitempty=True, default=None)
    annotations: dict[str, str] | None = go_field("annotations", omitempty=True, default=None)
    data: bytes | None = go_field("data", omitempty=True, default=None)
    platform: Platform | None = go_field("platform", omitempty=True, default=None)
    artifact_type: str = go_field("artifactType", omitempty=True, default="")


@dataclass
class Manifest:
    """specs-go/v1 Manifest (specs.Versioned embedded first)."""

    schema_version: int = go_field("schemaVersion", default=0)
    media_type: str = go_field("mediaType", omitempty=True, default="")
    artifact_type: str = go_field("artifactType", omitempty=True, default="")
    config: Descriptor = go_field("config", default_factory=Descriptor)
    layers: list[Descriptor] | None = go_field("layers", default=None)
    subject: Descriptor | None = go_field("subject", omitempty=True, default=None)
    annotations: dict[str, str] | None = go_field("annotations", omitempty=True, default=None)


@dataclass
class ImageIndex:
    """specs-go/v1 Index (specs.Versioned embedded first)."""

    schema_version: int = go_field("schemaVersion", default=0)
    media_type: str = go_field("mediaType", omitempty=True, default="")
    artifact_type: str = go_field("artifactType", omitempty=True, default="")
    manifests: list[Descriptor] | None = go_field("manifests", default=None)
    subject: Descriptor | None = go_field("subject", omitempty=True, default=None)
    annotations: dict[str, str] | None = go_field("annotations", omitempty=True, default=None)


def sha256_digest(data: bytes) -> str:
    """`sha256:<hex>` of some bytes."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Encoded:
    """A document serialized the Go way, with its digest."""

    data: bytes
    digest: str

    @property
    def size(self) -> int:
        return len(self.data)


def encode(document: Manifest | ImageIndex) -> Encoded:
    """Serialize a manifest or index with Go's json.Marshal and digest it."""
    data = gojson.marshal(document)
    return Encoded(data=data, digest=sha256_digest(data))


def parse_manifest(data: bytes) -> Manifest:
    """Decode manifest bytes into the Go Manifest struct (unknown fields dropped)."""
    return gojson.unmarshal(data, Manifest)


def parse_index(data: bytes) -> ImageIndex:
    """Decode image index / manifest list bytes into the Go Index struct."""
    return gojson.unmarshal(data, ImageIndex)
