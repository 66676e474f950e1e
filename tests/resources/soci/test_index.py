"""SOCI index manifests, the v2 image-index rewrite, platforms and media types (pure, in memory)."""

from __future__ import annotations

import json

import pytest

from resources.oci import media_types as mt
from resources.oci import platforms as plat
from resources.oci.manifest import Descriptor, ImageIndex, Platform, encode, parse_index, parse_manifest
from resources.soci import gojson
from resources.soci.index import (
    RewrittenManifest,
    SociIndexError,
    SociVersion,
    build_soci_index,
    config_descriptor,
    new_image_index,
    parse_soci_index,
    rewrite_image_manifest,
    soci_enabled_index,
    soci_index_entry,
    soci_version_of,
    subject_descriptor,
    ztoc_descriptor,
)

D = "sha256:" + "d" * 64


def _ztoc(i: int, *, xattrs_off: bool = False, media_type: str = mt.OCI_LAYER_GZIP) -> Descriptor:
    return ztoc_descriptor(
        ztoc_digest=f"sha256:{i:064x}",
        ztoc_size=100 + i,
        layer_digest=f"sha256:{i + 1000:064x}",
        layer_media_type=media_type,
        span_size=4194304,
        disable_xattrs=xattrs_off,
    )


def test_config_blob_constants() -> None:
    assert gojson.marshal({}) == mt.EMPTY_CONFIG
    from resources.oci.manifest import sha256_digest

    assert sha256_digest(mt.EMPTY_CONFIG) == mt.EMPTY_CONFIG_DIGEST
    assert config_descriptor(SociVersion.V1) == Descriptor(mt.SOCI_INDEX_V1, mt.EMPTY_CONFIG_DIGEST, 2)
    assert config_descriptor(SociVersion.V2) == Descriptor(mt.SOCI_INDEX_V2, mt.EMPTY_CONFIG_DIGEST, 2)


def test_ztoc_descriptor_annotations() -> None:
    d = _ztoc(1, media_type=mt.DOCKER_LAYER_GZIP)
    assert d.media_type == "application/octet-stream"
    assert d.annotations == {
        "com.amazon.soci.image-layer-digest": f"sha256:{1001:064x}",
        "com.amazon.soci.image-layer-mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "com.amazon.soci.span-size": "4194304",
    }
    assert (_ztoc(1, xattrs_off=True).annotations or {})["com.amazon.soci.disable-xattrs"] == "true"


def test_soci_index_keeps_layer_order_then_prefetch() -> None:
    prefetch = Descriptor(mt.SOCI_PREFETCH, D, 10, annotations={mt.ANNOTATION_LAYER_DIGEST: f"sha256:{1002:064x}"})
    index = build_soci_index(
        [_ztoc(3), _ztoc(1), _ztoc(2)], version=SociVersion.V2, build_tool_identifier="t", prefetch=[prefetch]
    )
    assert [d.digest for d in index.layers or []] == [f"sha256:{i:064x}" for i in (3, 1, 2)] + [D]
    data = gojson.marshal(index)
    assert data.startswith(b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":')
    assert data.endswith(b'"annotations":{"com.amazon.soci.build-tool-identifier":"t"}}')
    assert b"subject" not in data and b"artifactType" not in data


def test_soci_index_rules() -> None:
    with pytest.raises(SociIndexError, match="at least one zTOC"):
        build_soci_index([], version=SociVersion.V2, build_tool_identifier="t")
    with pytest.raises(SociIndexError, match="needs a subject"):
        build_soci_index([_ztoc(1)], version=SociVersion.V1, build_tool_identifier="t")
    with pytest.raises(SociIndexError, match="no subject"):
        build_soci_index(
            [_ztoc(1)],
            version=SociVersion.V2,
            build_tool_identifier="t",
            subject=subject_descriptor(mt.OCI_MANIFEST, D, 1),
        )


def test_parse_soci_index_round_trip_and_errors() -> None:
    index = build_soci_index(
        [_ztoc(1), _ztoc(2)],
        version=SociVersion.V1,
        build_tool_identifier="t",
        subject=subject_descriptor(mt.DOCKER_MANIFEST, D, 9),
    )
    data = gojson.marshal(index)
    parsed = parse_soci_index(data, name="x")
    assert parsed.version is SociVersion.V1 and parsed.manifest == index
    assert parsed.ztoc_for_layer(f"sha256:{1002:064x}") == _ztoc(2)
    assert parsed.ztoc_for_layer(D) is None
    assert soci_version_of(parsed.manifest) is SociVersion.V1
    image = parse_manifest(b'{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json"}}')
    assert soci_version_of(image) is None
    with pytest.raises(SociIndexError, match=r"SOCI index y: unknown SOCI index version.*image.config"):
        parse_soci_index(gojson.marshal(image), name="y")
    with pytest.raises(SociIndexError, match="SOCI index z is not valid JSON"):
        parse_soci_index(b"{", name="z")


DOCKER_MANIFEST = b"""{
   "schemaVersion": 2,
   "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
   "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 5, "digest": "sha256:cfg"},
   "layers": [
      {"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 7, "digest": "sha256:l1"},
      {"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 8, "digest": "sha256:l2"}
   ],
   "x-unknown": true
}"""


def test_rewrite_image_manifest_like_soci() -> None:
    original = parse_manifest(DOCKER_MANIFEST)
    rewritten = rewrite_image_manifest(original, "sha256:soci")
    assert gojson.marshal(rewritten) == (
        b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",'
        b'"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:cfg","size":5},'
        b'"layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"sha256:l1","size":7},'
        b'{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"sha256:l2","size":8}],'
        b'"annotations":{"com.amazon.soci.index-digest":"sha256:soci"}}'
    )
    assert original.media_type == mt.DOCKER_MANIFEST, "the input must not be modified"
    # Without an index (a platform that was not indexed) only the types change.
    assert rewrite_image_manifest(original, None).annotations is None
    # Existing annotations are kept, and a previous index digest is replaced.
    again = rewrite_image_manifest(rewrite_image_manifest(original, "sha256:old"), "sha256:new")
    assert again.annotations == {mt.ANNOTATION_INDEX_DIGEST: "sha256:new"}


def _image_entry(digest: str, arch: str, annotations: dict[str, str] | None = None) -> Descriptor:
    return Descriptor(
        mt.DOCKER_MANIFEST, digest, 100, annotations=annotations, platform=Platform(architecture=arch, os="linux")
    )


def test_soci_enabled_index_for_multi_platform() -> None:
    base = parse_index(
        gojson.marshal(
            ImageIndex(
                schema_version=2,
                media_type=mt.DOCKER_MANIFEST_LIST,
                manifests=[
                    _image_entry("sha256:amd", "amd64", {"org.example": "kept? no"}),
                    _image_entry("sha256:arm", "arm64"),
                    Descriptor(
                        mt.OCI_MANIFEST,
                        "sha256:att",
                        50,
                        annotations={"vnd.docker.reference.digest": "sha256:amd"},
                        platform=Platform(architecture="unknown", os="unknown"),
                    ),
                ],
                annotations={"org.opencontainers.image.created": "x"},
            )
        )
    )
    amd = rewrite_image_manifest(parse_manifest(DOCKER_MANIFEST), "sha256:soci-amd")
    amd.annotations = {**(amd.annotations or {}), "org.example": "from manifest"}
    arm = rewrite_image_manifest(parse_manifest(DOCKER_MANIFEST.replace(b"sha256:l2", b"sha256:l3")), None)
    amd_enc, arm_enc = encode(amd), encode(arm)
    soci_enc = encode(build_soci_index([_ztoc(1)], version=SociVersion.V2, build_tool_identifier="t"))
    entry = soci_index_entry(soci_enc, Platform(architecture="amd64", os="linux"), amd_enc.digest)
    out = soci_enabled_index(
        base,
        [RewrittenManifest("sha256:amd", amd, amd_enc), RewrittenManifest("sha256:arm", arm, arm_enc)],
        [entry],
    )
    assert out.media_type == mt.OCI_INDEX and out.annotations == {"org.opencontainers.image.created": "x"}
    first, second, att, soci = out.manifests or []
    assert (first.digest, first.size, first.media_type) == (amd_enc.digest, amd_enc.size, mt.OCI_MANIFEST)
    assert first.annotations == amd.annotations  # the manifest's full annotation map replaces the entry's
    assert first.platform == Platform(architecture="amd64", os="linux")
    assert (second.digest, second.annotations) == (arm_enc.digest, None)
    assert (att.annotations or {})["vnd.docker.reference.digest"] == amd_enc.digest
    assert gojson.marshal(soci) == (
        b'{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"'
        + soci_enc.digest.encode()
        + b'","size":'
        + str(soci_enc.size).encode()
        + b',"annotations":{"com.amazon.soci.image-manifest-digest":"'
        + amd_enc.digest.encode()
        + b'"},'
        b'"platform":{"architecture":"amd64","os":"linux"},"artifactType":"application/vnd.amazon.soci.index.v2+json"}'
    )
    # Converting again replaces the SOCI entry of the same platform instead of adding one.
    newer = soci_index_entry(encode(build_soci_index([_ztoc(2)], version=SociVersion.V2, build_tool_identifier="t")),
                             Platform(architecture="x86_64", os="Linux"), amd_enc.digest)
    again = soci_enabled_index(out, [], [newer])
    assert len(again.manifests or []) == 4 and (again.manifests or [])[3].digest == newer.digest
    # A SOCI entry for another platform is appended.
    arm_entry = soci_index_entry(soci_enc, Platform(architecture="arm64", os="linux"), arm_enc.digest)
    assert len(soci_enabled_index(out, [], [arm_entry]).manifests or []) == 5


def test_single_manifest_gets_a_new_one_entry_index() -> None:
    manifest = rewrite_image_manifest(parse_manifest(DOCKER_MANIFEST), "sha256:soci")
    enc = encode(manifest)
    entry = Descriptor(mt.DOCKER_MANIFEST, "sha256:orig", 1234, platform=Platform(architecture="amd64", os="linux"))
    out = soci_enabled_index(new_image_index(entry), [RewrittenManifest("sha256:orig", manifest, enc)], [])
    data = gojson.marshal(out)
    assert json.loads(data) == {
        "schemaVersion": 2,
        "mediaType": mt.OCI_INDEX,
        "manifests": [
            {
                "mediaType": mt.OCI_MANIFEST,
                "digest": enc.digest,
                "size": enc.size,
                "annotations": {mt.ANNOTATION_INDEX_DIGEST: "sha256:soci"},
                "platform": {"architecture": "amd64", "os": "linux"},
            }
        ],
    }
    assert data.startswith(b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[')


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("linux/amd64", "linux/amd64"),
        ("linux/x86_64", "linux/amd64"),
        ("Linux/AMD64/v1", "linux/amd64"),
        ("linux/amd64/v3", "linux/amd64/v3"),
        ("linux/aarch64", "linux/arm64"),
        ("linux/arm64/v8", "linux/arm64"),
        ("linux/arm", "linux/arm/v7"),
        ("linux/armhf", "linux/arm/v7"),
        ("linux/armel", "linux/arm/v6"),
        ("linux/arm/6", "linux/arm/v6"),
        ("linux/i386", "linux/386"),
        ("arm64", "linux/arm64"),
        ("macos/arm64", "darwin/arm64"),
    ],
)
def test_platform_parse_normalizes_like_containerd(spec: str, expected: str) -> None:
    assert str(plat.parse(spec)) == expected


@pytest.mark.parametrize("bad", ["", "linux/", "/amd64", "a/b/c/d", " "])
def test_platform_parse_errors(bad: str) -> None:
    with pytest.raises(plat.PlatformError, match="invalid platform"):
        plat.parse(bad)


def test_platform_matching() -> None:
    assert plat.matches(plat.parse("linux/arm64"), Platform(architecture="arm64", os="linux", variant="v8"))
    assert not plat.matches(plat.parse("linux/arm64"), Platform(architecture="amd64", os="linux"))
    assert not plat.matches(plat.parse("linux/arm/v6"), Platform(architecture="arm", os="linux"))
    assert plat.is_unknown(Platform(architecture="unknown", os="unknown")) and plat.is_unknown(None)
    assert [
        str(p) for p in plat.dedupe([plat.parse("linux/x86_64"), plat.parse("linux/amd64"), plat.parse("linux/arm64")])
    ] == [
        "linux/amd64",
        "linux/arm64",
    ]
    assert plat.host_default().os == "linux"


@pytest.mark.parametrize(
    ("media_type", "compression", "is_layer"),
    [
        (mt.OCI_LAYER_GZIP, mt.LayerCompression.GZIP, True),
        (mt.OCI_LAYER_TAR, mt.LayerCompression.UNCOMPRESSED, True),
        (mt.OCI_LAYER_ZSTD, mt.LayerCompression.ZSTD, True),
        ("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", mt.LayerCompression.GZIP, True),
        ("application/vnd.oci.image.layer.v1.tar+gzip+encrypted", mt.LayerCompression.OTHER, True),
        (mt.DOCKER_LAYER_GZIP, mt.LayerCompression.GZIP, True),
        (mt.DOCKER_FOREIGN_LAYER_GZIP, mt.LayerCompression.GZIP, True),
        (mt.DOCKER_LAYER, mt.LayerCompression.UNCOMPRESSED, True),
        (mt.DOCKER_LAYER_ZSTD, mt.LayerCompression.ZSTD, True),
        ("application/vnd.in-toto+json", mt.LayerCompression.OTHER, False),
        (mt.OCI_CONFIG, mt.LayerCompression.OTHER, False),
    ],
)
def test_layer_media_types(media_type: str, compression: mt.LayerCompression, is_layer: bool) -> None:
    assert mt.layer_compression(media_type) is compression
    assert mt.is_layer_type(media_type) is is_layer
