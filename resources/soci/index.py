"""SOCI index manifests (v1 and v2) and the v2 "SOCI-enabled" image index, as plain values.

Everything here is pure: in-memory OCI documents in, OCI documents out (docs/soci-format.md sections 2 and 4).
`convert.py` does the registry I/O around it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum

from resources.errors import StreamableError
from resources.oci import media_types as mt
from resources.oci import platforms
from resources.oci.manifest import Descriptor, Encoded, ImageIndex, Manifest, Platform, parse_manifest, sha256_digest
from resources.soci.gojson import GoJSONError


class SociIndexError(StreamableError, ValueError):
    """A document that is not a usable SOCI index (message names it)."""


class SociVersion(str, Enum):
    """Which SOCI index flavour to build (docs/soci-format.md section 1)."""

    V1 = "v1"
    V2 = "v2"

    @property
    def artifact_type(self) -> str:
        """The SOCI index artifact type, also the config mediaType of the index manifest."""
        return mt.SOCI_INDEX_V1 if self is SociVersion.V1 else mt.SOCI_INDEX_V2

    @classmethod
    def from_artifact_type(cls, artifact_type: str) -> SociVersion:
        """The version whose artifact type is `artifact_type`; SociIndexError otherwise."""
        for version in cls:
            if version.artifact_type == artifact_type:
                return version
        raise SociIndexError(f"unknown SOCI index version: config mediaType {artifact_type!r}")


def config_descriptor(version: SociVersion) -> Descriptor:
    """The descriptor of the 2-byte `{}` config blob, typed with the SOCI artifact type."""
    return Descriptor(media_type=version.artifact_type, digest=mt.EMPTY_CONFIG_DIGEST, size=len(mt.EMPTY_CONFIG))


def ztoc_descriptor(
    *,
    ztoc_digest: str,
    ztoc_size: int,
    layer_digest: str,
    layer_media_type: str,
    span_size: int,
    disable_xattrs: bool,
) -> Descriptor:
    """The `layers` entry for one zTOC, annotated with the layer it indexes."""
    annotations = {
        mt.ANNOTATION_LAYER_DIGEST: layer_digest,
        mt.ANNOTATION_LAYER_MEDIA_TYPE: layer_media_type,
        mt.ANNOTATION_SPAN_SIZE: str(span_size),
    }
    if disable_xattrs:
        annotations[mt.ANNOTATION_DISABLE_XATTRS] = "true"
    return Descriptor(media_type=mt.SOCI_ZTOC, digest=ztoc_digest, size=ztoc_size, annotations=annotations)


def build_soci_index(
    ztocs: Sequence[Descriptor],
    *,
    version: SociVersion,
    build_tool_identifier: str,
    subject: Descriptor | None = None,
    prefetch: Sequence[Descriptor] = (),
) -> Manifest:
    """The SOCI index manifest: zTOC descriptors in image layer order, then prefetch descriptors."""
    if not ztocs:
        raise SociIndexError("a SOCI index needs at least one zTOC")
    if version is SociVersion.V1 and subject is None:
        raise SociIndexError("a v1 SOCI index needs a subject (the image manifest descriptor)")
    if version is SociVersion.V2 and subject is not None:
        raise SociIndexError("a v2 SOCI index has no subject")
    return Manifest(
        schema_version=2,
        media_type=mt.OCI_MANIFEST,
        config=config_descriptor(version),
        layers=[copy.deepcopy(d) for d in ztocs] + [copy.deepcopy(d) for d in prefetch],
        subject=copy.deepcopy(subject),
        annotations={mt.ANNOTATION_BUILD_TOOL: build_tool_identifier},
    )


def subject_descriptor(media_type: str, digest: str, size: int) -> Descriptor:
    """The v1 `subject`: the image manifest's mediaType, digest and size only (as soci writes it)."""
    return Descriptor(media_type=media_type, digest=digest, size=size)


@dataclass(frozen=True)
class SociIndex:
    """A parsed SOCI index manifest."""

    manifest: Manifest
    version: SociVersion
    digest: str

    @property
    def ztocs(self) -> list[Descriptor]:
        """zTOC descriptors (mediaType application/octet-stream with a layer digest annotation)."""
        return [d for d in self.manifest.layers or [] if d.media_type == mt.SOCI_ZTOC]

    def ztoc_for_layer(self, layer_digest: str) -> Descriptor | None:
        """The zTOC a node picks for a layer: the last one naming it (fs/fs.go populateImageLayerToSociMapping)."""
        found = None
        for d in self.ztocs:
            if (d.annotations or {}).get(mt.ANNOTATION_LAYER_DIGEST) == layer_digest:
                found = d
        return found


def soci_version_of(manifest: Manifest) -> SociVersion | None:
    """The SOCI version when `manifest` is a SOCI index manifest, else None."""
    for version in SociVersion:
        if manifest.config.media_type == version.artifact_type or manifest.artifact_type == version.artifact_type:
            return version
    return None


def parse_soci_index(data: bytes, *, name: str) -> SociIndex:
    """Decode SOCI index manifest bytes the way the snapshotter does (UnmarshalIndex/fromManifest)."""
    try:
        manifest = parse_manifest(data)
    except GoJSONError as exc:
        raise SociIndexError(f"SOCI index {name} is not valid JSON for an OCI manifest: {exc}") from None
    try:
        version = SociVersion.from_artifact_type(manifest.config.media_type)
    except SociIndexError as exc:
        raise SociIndexError(f"SOCI index {name}: {exc}") from None
    return SociIndex(manifest=manifest, version=version, digest=sha256_digest(data))


# ---------------------------------------------------------------------------------------------
# v2: rewritten image manifests and the SOCI-enabled image index (docs/soci-format.md section 4)
# ---------------------------------------------------------------------------------------------


def rewrite_image_manifest(manifest: Manifest, soci_index_digest: str | None) -> Manifest:
    """The image manifest as soci's annotateImages writes it: OCI types, plus the index annotation.

    Layer mediaTypes are kept as they are (Docker ones included); the config content is not
    touched, only its descriptor's mediaType. Unknown fields already dropped out when the
    manifest was decoded into the Go struct.
    """
    out = copy.deepcopy(manifest)
    out.media_type = mt.OCI_MANIFEST
    out.config.media_type = mt.OCI_CONFIG
    if soci_index_digest is not None:
        annotations = dict(out.annotations or {})
        annotations[mt.ANNOTATION_INDEX_DIGEST] = soci_index_digest
        out.annotations = annotations
    return out


def soci_index_entry(soci_index: Encoded, platform: Platform, rewritten_manifest_digest: str) -> Descriptor:
    """The image index entry for a v2 SOCI index: artifactType, platform, manifest-digest annotation."""
    return Descriptor(
        media_type=mt.OCI_MANIFEST,
        digest=soci_index.digest,
        size=soci_index.size,
        annotations={mt.ANNOTATION_MANIFEST_DIGEST: rewritten_manifest_digest},
        platform=copy.deepcopy(platform),
        artifact_type=mt.SOCI_INDEX_V2,
    )


DOCKER_REFERENCE_DIGEST = "vnd.docker.reference.digest"


def new_image_index(entry: Descriptor) -> ImageIndex:
    """A one-entry OCI index around a single-manifest image (its entry carries the platform)."""
    return ImageIndex(schema_version=2, media_type=mt.OCI_INDEX, manifests=[copy.deepcopy(entry)])


def is_soci_v2_entry(d: Descriptor) -> bool:
    """True for an image index entry that is a v2 SOCI index."""
    return d.artifact_type == mt.SOCI_INDEX_V2


@dataclass(frozen=True)
class RewrittenManifest:
    """One image manifest of the index, before and after the v2 rewrite."""

    original_digest: str
    manifest: Manifest
    encoded: Encoded


def soci_enabled_index(
    base: ImageIndex,
    rewritten: Iterable[RewrittenManifest],
    soci_entries: Iterable[Descriptor],
) -> ImageIndex:
    """The SOCI-enabled image index (soci Convert: newOciIndex + annotateImages + addSociIndexes).

    `base` is the original index (or the one-entry index of a single-manifest image). Every
    entry listed in `rewritten` gets the new digest, size, OCI manifest mediaType, and the
    manifest's full annotation map as its annotations. Each SOCI entry replaces an existing
    v2 SOCI entry of the same platform, or is appended. Unlike soci, entries that are not
    rewritten (BuildKit attestations) are kept, with their `vnd.docker.reference.digest`
    pointed at the rewritten manifest.
    """
    out = copy.deepcopy(base)
    out.media_type = mt.OCI_INDEX
    if out.schema_version == 0:
        out.schema_version = 2
    by_digest = {r.original_digest: r for r in rewritten}
    entries: list[Descriptor] = []
    for entry in out.manifests or []:
        r = by_digest.get(entry.digest)
        if r is not None and not is_soci_v2_entry(entry):
            entry.digest = r.encoded.digest
            entry.size = r.encoded.size
            entry.media_type = mt.OCI_MANIFEST
            entry.annotations = dict(r.manifest.annotations) if r.manifest.annotations else None
        elif entry.annotations and entry.annotations.get(DOCKER_REFERENCE_DIGEST) in by_digest:
            # A BuildKit attestation manifest names the image it describes; follow the rewrite.
            annotations = dict(entry.annotations)
            annotations[DOCKER_REFERENCE_DIGEST] = by_digest[annotations[DOCKER_REFERENCE_DIGEST]].encoded.digest
            entry.annotations = annotations
        entries.append(entry)
    for soci_entry in soci_entries:
        assert soci_entry.platform is not None
        wanted = soci_entry.platform
        for i, existing in enumerate(entries):
            if (
                is_soci_v2_entry(existing)
                and existing.platform is not None
                and platforms.matches(wanted, existing.platform)
            ):
                entries[i] = copy.deepcopy(soci_entry)
                break
        else:
            entries.append(copy.deepcopy(soci_entry))
    out.manifests = entries
    return out
