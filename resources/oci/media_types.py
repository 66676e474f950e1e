"""Media types, artifact types and annotation keys used by SOCI and OCI images: the one place they are defined
(docs/soci-format.md section 2)."""

from __future__ import annotations

from enum import Enum

# OCI image spec.
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_PREFIX = "application/vnd.oci.image.layer."
OCI_NONDISTRIBUTABLE_PREFIX = "application/vnd.oci.image.layer.nondistributable."

# Docker image manifest v2 schema 2.
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_ZSTD = "application/vnd.docker.image.rootfs.diff.tar.zstd"
DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar"
DOCKER_FOREIGN_LAYER_GZIP = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

IMAGE_MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
IMAGE_INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
IMAGE_CONFIG_TYPES = frozenset({OCI_CONFIG, DOCKER_CONFIG})
# What a registry client asks for (Accept) when it fetches a manifest, in order of preference.
MANIFEST_MEDIA_TYPES: tuple[str, ...] = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST)
OCTET_STREAM = "application/octet-stream"

# SOCI (soci-snapshotter soci/soci_index.go).
SOCI_INDEX_V1 = "application/vnd.amazon.soci.index.v1+json"
SOCI_INDEX_V2 = "application/vnd.amazon.soci.index.v2+json"
SOCI_ARTIFACT_TYPES = frozenset({SOCI_INDEX_V1, SOCI_INDEX_V2})
SOCI_ZTOC = OCTET_STREAM
SOCI_PREFETCH = "application/vnd.amazon.soci.prefetch.v1+json"

ANNOTATION_LAYER_DIGEST = "com.amazon.soci.image-layer-digest"
ANNOTATION_LAYER_MEDIA_TYPE = "com.amazon.soci.image-layer-mediaType"
ANNOTATION_SPAN_SIZE = "com.amazon.soci.span-size"
ANNOTATION_DISABLE_XATTRS = "com.amazon.soci.disable-xattrs"
ANNOTATION_BUILD_TOOL = "com.amazon.soci.build-tool-identifier"
ANNOTATION_INDEX_DIGEST = "com.amazon.soci.index-digest"
ANNOTATION_MANIFEST_DIGEST = "com.amazon.soci.image-manifest-digest"

EMPTY_CONFIG = b"{}"
EMPTY_CONFIG_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
WHITEOUT_OPAQUE = ".wh..wh..opq"


class LayerCompression(str, Enum):
    """How a layer blob is stored, from its mediaType (containerd images.DiffCompression)."""

    GZIP = "gzip"
    UNCOMPRESSED = "uncompressed"
    ZSTD = "zstd"
    OTHER = "other"


def is_layer_type(media_type: str) -> bool:
    """containerd's images.IsLayerType: OCI layer types and the Docker rootfs diff types."""
    if media_type.startswith(OCI_LAYER_PREFIX):
        return True
    base = media_type.split("+", 1)[0]
    return base in {
        DOCKER_LAYER,
        DOCKER_LAYER_GZIP,
        DOCKER_FOREIGN_LAYER,
        DOCKER_FOREIGN_LAYER_GZIP,
        DOCKER_LAYER_ZSTD,
    }


def is_nondistributable(media_type: str) -> bool:
    """Layers that registries may not serve (Windows base layers with `urls`)."""
    return media_type.startswith((OCI_NONDISTRIBUTABLE_PREFIX, "application/vnd.docker.image.rootfs.foreign."))


def layer_compression(media_type: str) -> LayerCompression:
    """The compression of a layer mediaType; OTHER for encrypted or unknown suffixes."""
    if media_type in (DOCKER_LAYER_GZIP, DOCKER_FOREIGN_LAYER_GZIP):
        return LayerCompression.GZIP
    if media_type == DOCKER_LAYER_ZSTD:
        return LayerCompression.ZSTD
    if media_type in (DOCKER_LAYER, DOCKER_FOREIGN_LAYER):
        return LayerCompression.UNCOMPRESSED
    if media_type.startswith(OCI_LAYER_PREFIX):
        base, _, suffix = media_type.partition("+")
        if base.endswith(".tar"):
            if suffix == "":
                return LayerCompression.UNCOMPRESSED
            if suffix == "gzip":
                return LayerCompression.GZIP
            if suffix == "zstd":
                return LayerCompression.ZSTD
    return LayerCompression.OTHER
