"""OCI Descriptor, Platform, Manifest and Index as Go declares them (image-spec v1.1 specs-go), and
RawManifest: a manifest's exact bytes as stored or pushed. The one set of these types in streamable.

Field order and `omitempty` follow the Go structs, so `gojson.marshal` of a decoded document
is exactly what soci-snapshotter (or any Go tool) writes for it, unknown fields dropped.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from resources.oci.media_types import IMAGE_INDEX_TYPES
from resources.oci.refs import compute_digest, validate_digest
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

    def to_dict(self) -> dict[str, Any]:
        """The JSON form Go writes (`mediaType`, `digest`, `size`, then the non-empty optional fields)."""
        value: dict[str, Any] = json.loads(gojson.marshal(self))
        return value

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Descriptor:
        """A descriptor from its JSON form; ValueError naming the document unless digest and size are valid."""
        try:
            desc = gojson.unmarshal(json.dumps(dict(data)), cls)
            validate_digest(desc.digest)
            if not desc.media_type or desc.size < 0 or "size" not in data:
                raise ValueError("mediaType, digest and a size >= 0 are required")
        except (TypeError, ValueError) as exc:
            raise ValueError(f"invalid descriptor {dict(data)!r}: {exc}") from None
        return desc


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
class RawManifest:
    """A manifest (or index) exactly as stored: media type, digest and raw bytes."""

    media_type: str
    digest: str
    data: bytes

    @classmethod
    def from_data(cls, data: bytes, media_type: str) -> RawManifest:
        """A manifest for bytes to push, with its sha256 digest computed."""
        return cls(media_type=media_type, digest=compute_digest(data), data=data)

    @property
    def size(self) -> int:
        """Length of the bytes."""
        return len(self.data)

    def json(self) -> dict[str, Any]:
        """The parsed JSON document."""
        value = json.loads(self.data)
        if not isinstance(value, dict):
            raise ValueError(f"manifest {self.digest} is not a JSON object")
        return value

    def descriptor(self) -> Descriptor:
        """Descriptor of this manifest."""
        return Descriptor(media_type=self.media_type, digest=self.digest, size=len(self.data))

    @property
    def is_index(self) -> bool:
        """True for an OCI index or a Docker manifest list."""
        return self.media_type in IMAGE_INDEX_TYPES


Encoded = RawManifest  # what `encode` returns (the name soci/index.py uses)


def encode(document: Manifest | ImageIndex) -> RawManifest:
    """Serialize a manifest or index with Go's json.Marshal and digest it."""
    data = gojson.marshal(document)
    return RawManifest(media_type=document.media_type, digest=sha256_digest(data), data=data)


def parse_manifest(data: bytes) -> Manifest:
    """Decode manifest bytes into the Go Manifest struct (unknown fields dropped)."""
    return gojson.unmarshal(data, Manifest)


def parse_index(data: bytes) -> ImageIndex:
    """Decode image index / manifest list bytes into the Go Index struct."""
    return gojson.unmarshal(data, ImageIndex)
