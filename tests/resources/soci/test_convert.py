"""SOCI conversion against real registries (CNCF distribution 2.8 processes started per test)."""

from __future__ import annotations

import json

import httpx
import pytest

from resources.oci import media_types as mt
from resources.oci.manifest import ImageIndex, Manifest, parse_index, parse_manifest
from resources.oci.refs import ImageRef
from resources.registry import (
    RegistryAuthError,
    RegistryClient,
    RegistryNotFoundError,
    RegistryUnavailableError,
    referrers_tag,
)
from resources.soci import gojson
from resources.soci.convert import (
    ConvertResult,
    EmptySociIndexError,
    LayerIndexError,
    NotAnImageError,
    PlatformNotFoundError,
    SociConverter,
)
from resources.soci.node import NodeConfig
from resources.soci.verify import verify_image
from resources.soci.ztoc.builder import ZtocBuilder
from resources.soci.ztoc.flatbuf import parse_ztoc
from tests.conftest import free_port

from .conftest import ImageFactory, MiB, gzip_layer, random_bytes, tar_layer, text_bytes, zstd_layer

SMALL = 64 * 1024  # min layer size used with hand-made images, to keep them small


def _index(client: RegistryClient, ref: ImageRef, reference: str | None = None) -> tuple[bytes, ImageIndex]:
    raw = client.get_manifest(ref.repository, reference or ref.reference)
    assert raw.media_type == mt.OCI_INDEX
    return raw.data, parse_index(raw.data)


def _manifest(client: RegistryClient, repo: str, digest: str) -> tuple[bytes, Manifest]:
    raw = client.get_manifest(repo, digest)
    return raw.data, parse_manifest(raw.data)


def _check_soci_v2_image(client: RegistryClient, dst: ImageRef, result: ConvertResult) -> None:
    """Every spec statement about a v2 SOCI-enabled image, checked on what the registry serves."""
    index_bytes, index = _index(client, dst)
    assert index_bytes == gojson.marshal(index), "image index is not Go-canonical"
    assert result.image_digest == client.head_manifest(dst.repository, dst.tag or "latest").digest
    assert index.media_type == mt.OCI_INDEX and index.schema_version == 2
    soci_entries = [e for e in index.manifests or [] if e.artifact_type == mt.SOCI_INDEX_V2]
    indexed = [p for p in result.platforms if p.soci_index_digest]
    assert len(soci_entries) == len(indexed)
    for p in indexed:
        entry = next(e for e in soci_entries if e.digest == p.soci_index_digest)
        assert entry.media_type == mt.OCI_MANIFEST
        assert entry.annotations == {mt.ANNOTATION_MANIFEST_DIGEST: p.manifest_digest}
        assert entry.platform is not None and str(entry.platform) == p.platform
        # The rewritten image manifest: OCI types, Go bytes, the index-digest annotation.
        m_bytes, m = _manifest(client, dst.repository, p.manifest_digest)
        assert m_bytes == gojson.marshal(m)
        assert m.media_type == mt.OCI_MANIFEST and m.config.media_type == mt.OCI_CONFIG
        assert (m.annotations or {})[mt.ANNOTATION_INDEX_DIGEST] == p.soci_index_digest
        image_entry = next(e for e in index.manifests or [] if e.digest == p.manifest_digest)
        assert image_entry.media_type == mt.OCI_MANIFEST
        assert image_entry.size == len(m_bytes)
        assert image_entry.annotations == m.annotations
        # The SOCI index manifest.
        s_bytes, s = _manifest(client, dst.repository, p.soci_index_digest)
        assert s_bytes == gojson.marshal(s) and len(s_bytes) == entry.size
        assert s.media_type == mt.OCI_MANIFEST and s.artifact_type == "" and s.subject is None
        assert (s.config.media_type, s.config.digest, s.config.size) == (mt.SOCI_INDEX_V2, mt.EMPTY_CONFIG_DIGEST, 2)
        assert client.get_blob(dst.repository, mt.EMPTY_CONFIG_DIGEST) == b"{}"
        assert s.annotations == {mt.ANNOTATION_BUILD_TOOL: "streamable"}
        layer_order = [d.digest for d in m.layers or []]
        ztoc_layers = [(d.annotations or {})[mt.ANNOTATION_LAYER_DIGEST] for d in s.layers or []]
        assert ztoc_layers == [r.layer_digest for r in p.ztocs]
        assert ztoc_layers == sorted(ztoc_layers, key=layer_order.index), "zTOCs not in image layer order"
        for d, row in zip(s.layers or [], p.ztocs):
            assert d.media_type == mt.SOCI_ZTOC and d.digest == row.ztoc_digest and d.size == row.ztoc_size
            layer = next(x for x in m.layers or [] if x.digest == row.layer_digest)
            annotations = d.annotations or {}
            assert annotations[mt.ANNOTATION_LAYER_MEDIA_TYPE] == layer.media_type
            assert annotations[mt.ANNOTATION_SPAN_SIZE] == str(result.span_size)
            ztoc = parse_ztoc(client.get_blob(dst.repository, d.digest))
            assert ztoc.compressed_archive_size == layer.size
            assert ztoc.build_tool_identifier == "streamable" and ztoc.version == "0.9"
            xattrs = any(x.key.startswith("SCHILY.xattr.") for e in ztoc.entries for x in e.xattrs)
            assert (annotations.get(mt.ANNOTATION_DISABLE_XATTRS) == "true") == (not xattrs)


# ---- the BuildKit round trip ------------------------------------------------------------------


def test_buildkit_image_round_trip_and_rerun_changes_nothing(buildkit_image, registry, client) -> None:
    src = buildkit_image.push(registry, "team/app", "build-1")
    source = client.get_manifest(src.repository, src.reference)
    assert source.media_type == mt.DOCKER_MANIFEST  # dockerd pushes Docker media types

    dst = src.with_tag("build-1-soci")
    converter = SociConverter(client)
    first = converter.convert(src, dst)

    assert first.format == "v2" and first.layers_built == 1 and first.layers_reused == 0
    (p,) = first.platforms
    assert p.platform == "linux/amd64"
    (row,) = p.ztocs
    assert row.media_type == mt.DOCKER_LAYER_GZIP and row.layer_size >= 10 * MiB and not row.reused
    assert row.files == 7 and row.spans >= 3  # app/, app/data/ and 5 files, over >= 3 spans of 4 MiB
    assert len(p.skipped_layers) == 2
    assert all("below the min layer size 10485760" in s.reason for s in p.skipped_layers)
    _check_soci_v2_image(client, dst, first)
    # The source tag is untouched.
    assert client.head_manifest(src.repository, "build-1").digest == source.digest

    report = verify_image(client, dst, sample=4, required_files=["/app/data/small.json"])
    assert report.passed, report.failure
    checked = {f.name: f for f in report.platforms[0].files}
    assert checked["app/data/model-0.bin"].why == "largest"
    assert checked["app/data/small.json"].sha256 == checked["app/data/small.json"].stream_sha256
    assert checked["app/data/small.json"].spans_fetched == 1

    # Same converter again: nothing is decompressed, every digest is the same.
    again = converter.convert(src, dst)
    assert again.layers_built == 0 and again.layers_reused == 1
    assert again.image_digest == first.image_digest
    assert [q.soci_index_digest for q in again.platforms] == [q.soci_index_digest for q in first.platforms]
    assert again.platforms[0].ztocs[0].reused and again.platforms[0].ztocs[0].ztoc_digest == row.ztoc_digest

    # A fresh converter (no memory cache) finds the zTOC by scanning the repository.
    cold = SociConverter(client).convert(src, src.with_tag("build-1-soci-again"))
    assert cold.layers_built == 0 and cold.layers_reused == 1
    assert cold.image_digest == first.image_digest


def test_in_place_conversion_converges(buildkit_image, registry, client) -> None:
    ref = buildkit_image.push(registry, "team/inplace", "v1")
    first = SociConverter(client).convert(ref, ref)
    second = SociConverter(client).convert(ref, ref)  # now the source is the SOCI-enabled index
    assert second.image_digest == first.image_digest
    assert second.layers_built == 0 and second.layers_reused == 1
    _, index = _index(client, ref)
    assert sum(1 for e in index.manifests or [] if e.artifact_type == mt.SOCI_INDEX_V2) == 1
    assert verify_image(client, ref).passed


# ---- media types and layer selection ----------------------------------------------------------


def test_oci_gzip_and_uncompressed_layers(images: ImageFactory, client) -> None:
    gz = gzip_layer({"srv/model.bin": random_bytes(300_000, 10), "srv/readme.txt": text_bytes(5000, 11)})
    plain = tar_layer({"srv/vocab.txt": text_bytes(200_000, 12)})
    src = images.push_image("oci/app", "1", [gz, plain], entrypoint=["/srv/readme.txt"]).ref
    result = SociConverter(client, min_layer_size=SMALL, span_size=65536).convert(src, src.with_tag("1-soci"))
    rows = result.platforms[0].ztocs
    assert [r.media_type for r in rows] == [mt.OCI_LAYER_GZIP, mt.OCI_LAYER_TAR]
    assert result.layers_built == 2
    _check_soci_v2_image(client, src.with_tag("1-soci"), result)
    uncompressed = parse_ztoc(client.get_blob("oci/app", rows[1].ztoc_digest))
    assert uncompressed.compression.algorithm.name == "UNCOMPRESSED"
    report = verify_image(client, src.with_tag("1-soci"), sample=10)
    assert report.passed, report.failure
    assert {f.name for f in report.platforms[0].files} == {"srv/model.bin", "srv/readme.txt", "srv/vocab.txt"}


def test_docker_media_types_keep_layer_types_and_index_is_oci(images: ImageFactory, client) -> None:
    layer = gzip_layer({"a/b.bin": random_bytes(100_000, 20)}, media_type=mt.DOCKER_LAYER_GZIP)
    src = images.push_image("docker/app", "1", [layer], docker=True).ref
    result = SociConverter(client, min_layer_size=SMALL).convert(src, src.with_tag("soci"))
    _, m = _manifest(client, "docker/app", result.platforms[0].manifest_digest)
    assert m.media_type == mt.OCI_MANIFEST and m.config.media_type == mt.OCI_CONFIG
    assert [d.media_type for d in m.layers or []] == [mt.DOCKER_LAYER_GZIP]
    _check_soci_v2_image(client, src.with_tag("soci"), result)


def test_layer_under_min_size_is_skipped_and_at_min_size_is_indexed(images: ImageFactory, client) -> None:
    big = gzip_layer({"big.bin": random_bytes(200_000, 30)})
    small = gzip_layer({"small.bin": random_bytes(100_000, 31)})
    src = images.push_image("min/app", "1", [small, big]).ref
    result = SociConverter(client, min_layer_size=big.size).convert(src, src.with_tag("soci"))
    p = result.platforms[0]
    assert [r.layer_digest for r in p.ztocs] == [big.digest]
    (skipped,) = p.skipped_layers
    assert skipped.layer_digest == small.digest
    assert skipped.reason == f"size {small.size} is below the min layer size {big.size}"


def test_all_layers_skipped_is_an_empty_index_error_and_nothing_is_pushed(images: ImageFactory, client) -> None:
    layers = [gzip_layer({"x.txt": b"tiny"}), gzip_layer({"y.txt": b"small"})]
    src = images.push_image("empty/app", "1", layers).ref
    before_tags = images.tags("empty/app")
    with pytest.raises(EmptySociIndexError) as err:
        SociConverter(client).convert(src, src.with_tag("1-soci"))
    message = str(err.value)
    assert str(src) in message and "not lazily loadable" in message and "nothing was pushed" in message
    assert all(layer.digest in message for layer in layers)
    assert len(err.value.skipped) == 2
    assert images.tags("empty/app") == before_tags == ["1"]
    assert client.blob_size("empty/app", mt.EMPTY_CONFIG_DIGEST) is None
    assert client.catalog() == ["empty/app"]


def test_zstd_layer_is_skipped_with_a_reason(images: ImageFactory, client) -> None:
    zst = zstd_layer({"z.bin": random_bytes(150_000, 40)})
    gz = gzip_layer({"g.bin": random_bytes(150_000, 41)})
    src = images.push_image("zstd/app", "1", [zst, gz]).ref
    result = SociConverter(client, min_layer_size=SMALL).convert(src, src.with_tag("soci"))
    p = result.platforms[0]
    assert [r.layer_digest for r in p.ztocs] == [gz.digest]
    (skipped,) = p.skipped_layers
    assert skipped.layer_digest == zst.digest and skipped.media_type == mt.OCI_LAYER_ZSTD
    assert "zstd" in skipped.reason
    report = verify_image(client, src.with_tag("soci"))
    assert report.passed, report.failure
    assert report.platforms[0].layers_skipped == 1

    only_zstd = images.push_image("zstd/only", "1", [zst]).ref
    with pytest.raises(EmptySociIndexError, match="zstd"):
        SociConverter(client, min_layer_size=SMALL).convert(only_zstd, only_zstd.with_tag("soci"))
    assert images.tags("zstd/only") == ["1"]


# ---- multi-platform ---------------------------------------------------------------------------


def _two_platform_image(images: ImageFactory, repo: str, *, docker: bool = False):
    amd = images.push_image(
        repo,
        None,
        [gzip_layer({"bin/app": random_bytes(120_000, 50)}, mt.DOCKER_LAYER_GZIP if docker else mt.OCI_LAYER_GZIP)],
        docker=docker,
        platform=("linux", "amd64", ""),
    )
    arm = images.push_image(
        repo,
        None,
        [gzip_layer({"bin/app": random_bytes(130_000, 51)}, mt.DOCKER_LAYER_GZIP if docker else mt.OCI_LAYER_GZIP)],
        docker=docker,
        platform=("linux", "arm64", "v8"),
    )
    return amd, arm


def test_multi_platform_all_platforms_indexes_every_platform(images: ImageFactory, client) -> None:
    amd, arm = _two_platform_image(images, "multi/app")
    # A BuildKit-style attestation entry (unknown/unknown) that refers to the amd64 manifest.
    attestation = images.push_image(
        "multi/app", None, [gzip_layer({"sbom.json": b"{}"})], platform=("unknown", "unknown", "")
    )
    att_entry = attestation.descriptor()
    att_entry["annotations"] = {
        "vnd.docker.reference.digest": amd.digest,
        "vnd.docker.reference.type": "attestation-manifest",
    }
    src = images.push_index("multi/app", "1", [amd, arm], extra_entries=[att_entry]).ref
    dst = src.with_tag("1-soci")
    result = SociConverter(client, min_layer_size=SMALL, all_platforms=True).convert(src, dst)
    assert [p.platform for p in result.platforms] == ["linux/amd64", "linux/arm64"]
    assert all(p.soci_index_digest for p in result.platforms) and result.layers_built == 2
    _check_soci_v2_image(client, dst, result)
    _, index = _index(client, dst)
    # Original order kept, SOCI entries appended; the attestation follows the rewritten amd64 manifest.
    amd_new = result.platforms[0].manifest_digest
    assert [e.digest for e in index.manifests or []][:3] == [
        amd_new,
        result.platforms[1].manifest_digest,
        attestation.digest,
    ]
    att = next(e for e in index.manifests or [] if e.digest == attestation.digest)
    assert (att.annotations or {})["vnd.docker.reference.digest"] == amd_new
    for platform in ("linux/amd64", "linux/arm64"):
        report = verify_image(client, dst, platform=platform)
        assert report.passed, report.failure


def test_multi_platform_default_is_host_platform_and_others_are_rewritten(images: ImageFactory, client) -> None:
    amd, arm = _two_platform_image(images, "multi/docker", docker=True)
    src = images.push_index("multi/docker", "1", [amd, arm], docker=True).ref
    result = SociConverter(client, min_layer_size=SMALL).convert(src, src.with_tag("soci"))
    assert [p.platform for p in result.platforms] == ["linux/amd64"]
    _, index = _index(client, src.with_tag("soci"))
    assert index.media_type == mt.OCI_INDEX
    arm_entry = next(
        e for e in index.manifests or [] if e.platform and e.platform.architecture == "arm64" and not e.artifact_type
    )
    _, arm_manifest = _manifest(client, "multi/docker", arm_entry.digest)
    assert arm_manifest.media_type == mt.OCI_MANIFEST
    assert mt.ANNOTATION_INDEX_DIGEST not in (arm_manifest.annotations or {})
    assert verify_image(client, src.with_tag("soci"), platform="linux/amd64").passed
    arm_report = verify_image(client, src.with_tag("soci"), platform="linux/arm64")
    assert not arm_report.passed and "no SOCI index found" in (arm_report.failure or "")

    one = SociConverter(client, min_layer_size=SMALL, platforms=["linux/arm64/v8"]).convert(src, src.with_tag("arm"))
    assert [p.platform for p in one.platforms] == ["linux/arm64"]
    with pytest.raises(PlatformNotFoundError, match=r"linux/s390x.*linux/amd64, linux/arm64"):
        SociConverter(client, platforms=["linux/s390x"]).convert(src, src.with_tag("nope"))
    assert "nope" not in images.tags("multi/docker")


def test_platform_without_indexable_layers_is_reported(images: ImageFactory, client) -> None:
    amd = images.push_image("multi/partial", None, [gzip_layer({"a": random_bytes(100_000, 60)})])
    arm = images.push_image("multi/partial", None, [gzip_layer({"a": b"tiny"})], platform=("linux", "arm64", ""))
    src = images.push_index("multi/partial", "1", [amd, arm]).ref
    result = SociConverter(client, min_layer_size=SMALL, all_platforms=True).convert(src, src.with_tag("soci"))
    amd_result, arm_result = result.platforms
    assert amd_result.soci_index_digest and arm_result.soci_index_digest is None
    assert arm_result.skipped_reason and "below the min layer size" in arm_result.skipped_reason
    _check_soci_v2_image(client, src.with_tag("soci"), result)


# ---- v1 -------------------------------------------------------------------------------------


def test_v1_pushes_subject_index_and_referrers_tag_fallback(images: ImageFactory, client) -> None:
    layer = gzip_layer({"app.bin": random_bytes(200_000, 70)})
    pushed = images.push_image("v1/app", "1", [layer])
    src = pushed.ref
    dst = src.with_tag("1-soci-v1")
    assert not client.supports_referrers("v1/app")  # distribution 2.8 has no referrers API
    result = SociConverter(client, min_layer_size=SMALL, format="v1").convert(src, dst)
    assert result.format == "v1" and result.image_digest == pushed.digest
    assert client.head_manifest("v1/app", "1-soci-v1").digest == pushed.digest
    (p,) = result.platforms
    s_bytes, s = _manifest(client, "v1/app", p.soci_index_digest)
    assert s_bytes == gojson.marshal(s)
    assert s.config.media_type == mt.SOCI_INDEX_V1
    assert s.subject is not None
    assert (s.subject.media_type, s.subject.digest, s.subject.size) == (
        mt.OCI_MANIFEST,
        pushed.digest,
        len(pushed.data),
    )
    tag_index = json.loads(client.get_manifest("v1/app", referrers_tag(pushed.digest)).data)
    (entry,) = tag_index["manifests"]
    assert entry["digest"] == p.soci_index_digest and entry["artifactType"] == mt.SOCI_INDEX_V1
    # A default v0.15 node ignores v1 indexes; one with pull_modes.soci_v1 enabled uses it.
    assert "SOCI v1 is off by default" in (verify_image(client, dst).failure or "")
    report = verify_image(client, dst, node=NodeConfig(soci_v1=True))
    assert report.passed, report.failure
    assert report.platforms[0].soci_version == "v1"
    # A cold converter finds the v1 zTOC through the referrers tag and reuses it.
    again = SociConverter(client, min_layer_size=SMALL, format="v1").convert(src, dst)
    assert again.layers_built == 0 and again.platforms[0].soci_index_digest == p.soci_index_digest


# ---- reuse ----------------------------------------------------------------------------------


def test_shared_base_layer_is_reused_across_images(images: ImageFactory, client) -> None:
    base = gzip_layer({"usr/lib/base.so": random_bytes(300_000, 80)})
    app1 = images.push_image("reuse/app", "1", [base, gzip_layer({"app": random_bytes(100_000, 81)})]).ref
    app2 = images.push_image("reuse/app", "2", [base, gzip_layer({"app": random_bytes(100_000, 82)})]).ref
    converter = SociConverter(client, min_layer_size=SMALL)
    r1 = converter.convert(app1, app1.with_tag("1-soci"))
    r2 = converter.convert(app2, app2.with_tag("2-soci"))
    assert (r1.layers_built, r1.layers_reused) == (2, 0)
    assert (r2.layers_built, r2.layers_reused) == (1, 1)
    assert (
        r2.platforms[0].ztocs[0].reused and r2.platforms[0].ztocs[0].ztoc_digest == r1.platforms[0].ztocs[0].ztoc_digest
    )
    # Cold cache: the scan of the repository finds both earlier indexes.
    app3 = images.push_image("reuse/app", "3", [base, gzip_layer({"app": random_bytes(100_000, 82)})]).ref
    r3 = SociConverter(client, min_layer_size=SMALL).convert(app3, app3.with_tag("3-soci"))
    assert (r3.layers_built, r3.layers_reused) == (0, 2)


def test_other_span_size_is_not_reused_and_lying_annotations_are_rejected(images: ImageFactory, client) -> None:
    layer = gzip_layer({"f.bin": random_bytes(400_000, 90)})
    src = images.push_image("span/app", "1", [layer]).ref
    small_spans = SociConverter(client, min_layer_size=SMALL, span_size=65536).convert(src, src.with_tag("s64k"))
    big_spans = SociConverter(client, min_layer_size=SMALL, span_size=1 << 20).convert(src, src.with_tag("s1m"))
    assert big_spans.layers_built == 1
    assert big_spans.platforms[0].ztocs[0].ztoc_digest != small_spans.platforms[0].ztocs[0].ztoc_digest
    # An index that claims the 64 KiB zTOC has 256 KiB spans must not be believed.
    _, s64 = _manifest(client, "span/app", small_spans.platforms[0].soci_index_digest)
    (d,) = s64.layers or []
    d.annotations = {**(d.annotations or {}), mt.ANNOTATION_SPAN_SIZE: str(256 * 1024)}
    data = gojson.marshal(s64)
    digest = client.put_manifest("span/app", "liar", data, mt.OCI_MANIFEST)
    assert digest
    fresh = SociConverter(client, min_layer_size=SMALL, span_size=256 * 1024).convert(src, src.with_tag("s256k"))
    assert fresh.layers_built == 1 and fresh.layers_reused == 0
    assert parse_ztoc(client.get_blob("span/app", fresh.platforms[0].ztocs[0].ztoc_digest)).compression.max_span_id >= 1


def test_cross_repository_conversion_mounts_blobs(images: ImageFactory, client) -> None:
    layer = gzip_layer({"x.bin": random_bytes(150_000, 95)})
    src = images.push_image("src/app", "1", [layer]).ref
    dst = ImageRef(src.registry, "dst/app", "1-soci")
    result = SociConverter(client, min_layer_size=SMALL).convert(src, dst)
    assert client.blob_size("dst/app", layer.digest) == layer.size
    _check_soci_v2_image(client, dst, result)
    assert verify_image(client, dst).passed
    # The same layer for a third repository: the zTOC is mounted, not rebuilt.
    converter = SociConverter(client, min_layer_size=SMALL)
    assert converter.convert(src, dst).layers_reused == 1
    third = converter.convert(src, ImageRef(src.registry, "third/app", "1-soci"))
    assert (third.layers_built, third.layers_reused) == (0, 1)
    assert third.image_digest == result.image_digest
    assert verify_image(client, ImageRef(src.registry, "third/app", "1-soci")).passed


def test_conversion_is_deterministic(images: ImageFactory, client) -> None:
    layer = gzip_layer({"d.bin": random_bytes(150_000, 96)})
    src = images.push_image("det/app", "1", [layer]).ref
    a = SociConverter(client, min_layer_size=SMALL).convert(src, src.with_tag("a"))
    b = SociConverter(client, min_layer_size=SMALL).convert(src, src.with_tag("b"))
    assert a.image_digest == b.image_digest
    assert client.get_manifest("det/app", "a").data == client.get_manifest("det/app", "b").data


def test_ztoc_matches_a_direct_build_of_the_layer(images: ImageFactory, client) -> None:
    layer = gzip_layer({"m.bin": random_bytes(250_000, 97), "n.txt": text_bytes(100_000, 98)})
    src = images.push_image("direct/app", "1", [layer]).ref
    result = SociConverter(client, min_layer_size=SMALL, span_size=65536).convert(src, src.with_tag("soci"))
    direct = ZtocBuilder(span_size=65536).build([layer.blob], layer.media_type)
    assert result.platforms[0].ztocs[0].ztoc_digest == direct.digest
    assert client.get_blob("direct/app", direct.digest) == direct.data


# ---- bad input: clear errors, nothing tagged --------------------------------------------------


def test_corrupt_gzip_layer_names_the_layer_and_tags_nothing(images: ImageFactory, client) -> None:
    good = gzip_layer({"ok.bin": random_bytes(100_000, 100)})
    blob = bytearray(gzip_layer({"bad.bin": random_bytes(200_000, 101)}).blob)
    blob[len(blob) // 2] ^= 0xFF  # deflate data or CRC now wrong
    from .conftest import Layer, sha256

    bad = Layer(bytes(blob), mt.OCI_LAYER_GZIP, sha256(b""), {})
    src = images.push_image("corrupt/app", "1", [good, bad]).ref
    with pytest.raises(LayerIndexError) as err:
        SociConverter(client, min_layer_size=SMALL).convert(src, src.with_tag("1-soci"))
    assert bad.digest in str(err.value) and str(src) in str(err.value)
    assert images.tags("corrupt/app") == ["1"]


def test_truncated_gzip_layer_is_an_error(images: ImageFactory, client) -> None:
    from .conftest import Layer, sha256

    data = gzip_layer({"t.bin": random_bytes(200_000, 102)}).blob[:-4000]
    bad = Layer(data, mt.OCI_LAYER_GZIP, sha256(b""), {})
    src = images.push_image("trunc/app", "1", [bad]).ref
    with pytest.raises(LayerIndexError, match=bad.digest):
        SociConverter(client, min_layer_size=SMALL).convert(src, src.with_tag("1-soci"))
    assert images.tags("trunc/app") == ["1"]


def test_not_an_image_is_refused_by_name(images: ImageFactory, client) -> None:
    layer = gzip_layer({"a.bin": random_bytes(100_000, 110)})
    src = images.push_image("notimg/app", "1", [layer]).ref
    result = SociConverter(client, min_layer_size=SMALL).convert(src, src.with_tag("soci"))
    soci_ref = src.with_digest(result.platforms[0].soci_index_digest)
    with pytest.raises(NotAnImageError, match="is a SOCI index"):
        SociConverter(client, min_layer_size=SMALL).convert(soci_ref, src.with_tag("x"))

    artifact = images.push_image(
        "notimg/art", "1", [layer], config_media_type="application/vnd.example.chart.config+json"
    ).ref
    with pytest.raises(NotAnImageError, match=r"notimg/art:1.*application/vnd.example.chart.config\+json"):
        SociConverter(client, min_layer_size=SMALL).convert(artifact, artifact.with_tag("x"))

    from .conftest import Layer

    weird = Layer(layer.blob, "application/vnd.in-toto+json", layer.diff_id, {})
    odd = images.push_image("notimg/odd", "1", [weird]).ref
    with pytest.raises(NotAnImageError, match=r"application/vnd.in-toto\+json.*not a layer type"):
        SociConverter(client, min_layer_size=SMALL).convert(odd, odd.with_tag("x"))
    assert images.tags("notimg/art") == ["1"] and images.tags("notimg/odd") == ["1"]


def test_wrong_password_is_a_clear_auth_error_and_nothing_is_tagged(auth_registry) -> None:
    factory = ImageFactory(auth_registry)
    src = factory.push_image("auth/app", "1", [gzip_layer({"a.bin": random_bytes(100_000, 120)})]).ref
    with RegistryClient(auth_registry.addr, username="streamable", password="wrong-password", retries=0) as bad:
        with pytest.raises(RegistryAuthError) as err:
            SociConverter(bad, min_layer_size=SMALL).convert(src, src.with_tag("soci"))
    assert auth_registry.addr in str(err.value) and "wrong-password" not in str(err.value)
    assert factory.tags("auth/app") == ["1"]
    factory.client.close()


def test_unreachable_registry_is_a_clear_error() -> None:
    addr = f"127.0.0.1:{free_port()}"
    with RegistryClient(addr, retries=0, timeout=2) as dead:
        with pytest.raises(RegistryUnavailableError, match=addr):
            SociConverter(dead).convert(ImageRef.parse(f"{addr}/a/b:1"), ImageRef.parse(f"{addr}/a/b:2"))


def test_missing_image_is_not_found(client, registry) -> None:
    with pytest.raises(RegistryNotFoundError, match="nothing/here"):
        SociConverter(client).convert(
            ImageRef.parse(f"{registry.addr}/nothing/here:1"), ImageRef.parse(f"{registry.addr}/nothing/here:2")
        )


def test_remembered_ztoc_is_rechecked_before_reuse(images: ImageFactory, client, registry) -> None:
    """A zTOC remembered in memory is checked (HEAD) before reuse: if it vanished, the layer is rebuilt."""
    layer = gzip_layer({"b.bin": random_bytes(100_000, 130)})
    src = images.push_image("cache/app", "1", [layer]).ref
    converter = SociConverter(client, min_layer_size=SMALL)
    first = converter.convert(src, src.with_tag("soci"))
    ztoc_digest = first.platforms[0].ztocs[0].ztoc_digest
    deleted = httpx.delete(f"{registry.url}/v2/cache/app/blobs/{ztoc_digest}", timeout=10)
    assert deleted.status_code == 202
    assert client.blob_size("cache/app", ztoc_digest) is None
    again = converter.convert(src, src.with_tag("soci2"))
    assert (again.layers_built, again.layers_reused) == (1, 0)
    assert again.platforms[0].ztocs[0].ztoc_digest == ztoc_digest
    assert client.blob_size("cache/app", ztoc_digest) is not None
    # A cold converter whose scan finds an index naming a deleted zTOC also rebuilds.
    httpx.delete(f"{registry.url}/v2/cache/app/blobs/{ztoc_digest}", timeout=10).raise_for_status()
    cold = SociConverter(client, min_layer_size=SMALL).convert(src, src.with_tag("soci3"))
    assert (cold.layers_built, cold.layers_reused) == (1, 0)


def test_layer_whose_ztoc_would_hold_the_prefetch_separator_is_skipped(images: ImageFactory, client) -> None:
    # soci-snapshotter splits a zTOC blob at "---SOCI-PREFETCH---"; a checkpoint window carrying those bytes
    # (from the layer's own content) would make the node's parse fail, so that layer gets no zTOC.
    poisoned = gzip_layer(
        {"bin/soci-snapshotter-grpc": random_bytes(40_000, 40) + b"---SOCI-PREFETCH---" + random_bytes(200_000, 41)}
    )
    clean = gzip_layer({"data/model.bin": random_bytes(240_000, 42)})
    src = images.push_image("sep/app", "1", [poisoned, clean]).ref
    result = SociConverter(client, span_size=65536, min_layer_size=0).convert(src, src.with_tag("soci"))
    (p,) = result.platforms
    assert [r.layer_digest for r in p.ztocs] == [clean.digest]
    (skipped,) = p.skipped_layers
    assert skipped.layer_digest == poisoned.digest and "---SOCI-PREFETCH---" in skipped.reason
    assert verify_image(client, src.with_tag("soci"), sample=2).passed


def test_multi_member_gzip_layer_converts_and_verifies(images: ImageFactory, client) -> None:
    import gzip as gz

    from tests.resources.soci.conftest import Layer, sha256, tar_bytes

    files = {f"data/part-{i}.bin": random_bytes(90_000, 50 + i) for i in range(4)}
    tar = tar_bytes(files)
    half = len(tar) // 2
    blob = gz.compress(tar[:half], 6) + gz.compress(tar[half:], 6)  # two gzip members, like pigz/mgzip output
    layer = Layer(blob, mt.OCI_LAYER_GZIP, sha256(tar), files)
    src = images.push_image("multi/app", "1", [layer]).ref
    # Spans across gzip members load on nodes from v0.14 (the default node_compat v0.12 leaves them out:
    # tests/resources/soci/test_prefetch_convert.py).
    SociConverter(client, span_size=65536, min_layer_size=0, node_compat="v0.14").convert(src, src.with_tag("soci"))
    report = verify_image(client, src.with_tag("soci"), sample=4)
    assert report.passed, report.failure
    assert report.files_checked == 4
