"""ZtocBuilder: one streaming pass over a layer blob gives a consistent, readable zTOC."""

from __future__ import annotations

import gzip
import hashlib
import io
import random
import tarfile
import tracemalloc
import zlib
from pathlib import Path

import pytest

from resources.soci.ztoc.builder import (
    BuiltZtoc,
    UnsupportedLayerError,
    ZtocBuilder,
    ZtocBuildError,
)
from resources.soci.ztoc.flatbuf import parse_ztoc
from resources.soci.ztoc.lazy import LazyLayerReader
from resources.soci.ztoc.model import CompressionAlgorithm
from resources.soci.ztoc.tar_zinfo import decode_tar_zinfo

from .conftest import TarMember, make_tar, mixed_bytes, sample_tar_members, text_bytes
from .test_gzip_index import index_blob

KIB = 1024
MIB = 1024 * KIB
OCI_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_TAR = "application/vnd.oci.image.layer.v1.tar"


def check_against_tarfile(built: BuiltZtoc, tar: bytes) -> None:
    """Every regular file's TOC range holds exactly what tarfile extracts."""
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        members = archive.getmembers()
        assert [e.name.rstrip("/") for e in built.ztoc.entries] == [m.name for m in members]
        for entry, member in zip(built.ztoc.entries, members, strict=True):
            assert entry.uncompressed_offset == member.offset_data
            if member.isreg():
                assert entry.uncompressed_size == member.size


def test_gzip_layer(sample_tar: bytes) -> None:
    blob = gzip.compress(sample_tar, 6, mtime=0)
    built = ZtocBuilder(span_size=256 * KIB, build_tool_identifier="streamable-test").build(
        io.BytesIO(blob), OCI_GZIP
    )
    assert built.layer_digest == "sha256:" + hashlib.sha256(blob).hexdigest()
    assert built.digest == "sha256:" + hashlib.sha256(built.data).hexdigest()
    assert built.size == len(built.data)
    assert parse_ztoc(built.data) == built.ztoc
    ztoc = built.ztoc
    assert (ztoc.version, ztoc.build_tool_identifier) == ("0.9", "streamable-test")
    assert ztoc.compressed_archive_size == built.compressed_size == len(blob)
    assert (
        ztoc.uncompressed_archive_size
        == built.uncompressed_size
        <= built.decompressed_size
        == len(sample_tar)
    )
    standalone, _ = index_blob(blob, 256 * KIB)
    info = ztoc.compression
    assert info.algorithm == CompressionAlgorithm.GZIP
    assert (info.max_span_id, info.span_digests, info.checkpoints) == (
        standalone.max_span_id,
        standalone.span_digests,
        standalone.checkpoints,
    )
    assert built.disable_xattrs
    check_against_tarfile(built, sample_tar)
    reader = LazyLayerReader(parse_ztoc(built.data), lambda s, e: blob[s:e])
    assert reader.read_file("app/weights_2.bin") == next(
        m.data for m in sample_tar_members(7) if m.name == "app/weights_2.bin"
    )


def test_chunking_and_input_kind_do_not_change_the_result(sample_tar: bytes) -> None:
    blob = gzip.compress(sample_tar, 9, mtime=0)
    builder = ZtocBuilder(span_size=128 * KIB)
    from_file = builder.build(io.BytesIO(blob), OCI_GZIP)
    pieces = [blob[i : i + 777] for i in range(0, len(blob), 777)]
    from_iterable = builder.build(iter(pieces), OCI_GZIP)
    small_reads = ZtocBuilder(span_size=128 * KIB, chunk_size=4096).build(io.BytesIO(blob), OCI_GZIP)
    single_thread = ZtocBuilder(span_size=128 * KIB, digest_in_thread=False).build(io.BytesIO(blob), OCI_GZIP)
    assert from_file.data == from_iterable.data == small_reads.data == single_thread.data
    assert from_file.layer_digest == single_thread.layer_digest


def test_uncompressed_layer(sample_tar: bytes) -> None:
    tar = sample_tar + bytes(10 * 1024)  # record padding after end-of-archive is not part of the TOC
    span = 300 * KIB
    built = ZtocBuilder(span_size=span).build(io.BytesIO(tar), OCI_TAR)
    info = built.ztoc.compression
    assert info.algorithm == CompressionAlgorithm.UNCOMPRESSED
    zinfo = decode_tar_zinfo(info.checkpoints)
    assert (zinfo.version, zinfo.span_size, zinfo.size) == (2, span, len(tar))
    assert info.max_span_id == (len(tar) + span - 1) // span - 1
    assert info.span_digests == [
        "sha256:" + hashlib.sha256(tar[i : i + span]).hexdigest() for i in range(0, len(tar), span)
    ]
    assert built.compressed_size == built.decompressed_size == len(tar)
    assert built.uncompressed_size == built.ztoc.uncompressed_archive_size < len(tar)
    assert built.layer_digest == "sha256:" + hashlib.sha256(tar).hexdigest()
    assert parse_ztoc(built.data) == built.ztoc
    check_against_tarfile(built, sample_tar)
    reader = LazyLayerReader(built.ztoc, lambda s, e: tar[s:e])
    weights = next(m.data for m in sample_tar_members(7) if m.name == "app/weights_1.bin")
    assert reader.read_file("app/weights_1.bin") == weights


def test_uncompressed_span_size_dividing_the_blob() -> None:
    tar = make_tar([TarMember("f", b"x" * 1000)])
    assert len(tar) % 512 == 0
    built = ZtocBuilder(span_size=512).build([tar], OCI_TAR)
    assert built.ztoc.compression.max_span_id == len(tar) // 512 - 1
    assert len(built.ztoc.compression.span_digests) == len(tar) // 512


@pytest.mark.parametrize(
    "media_type",
    [
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    ],
)
def test_gzip_media_type_variants(media_type: str) -> None:
    tar = make_tar([TarMember("a", b"a" * 100)])
    built = ZtocBuilder().build([gzip.compress(tar)], media_type)
    assert built.ztoc.compression.algorithm == CompressionAlgorithm.GZIP
    assert built.media_type == media_type


@pytest.mark.parametrize(
    "media_type",
    [
        "application/vnd.docker.image.rootfs.diff.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
    ],
)
def test_uncompressed_media_type_variants(media_type: str) -> None:
    tar = make_tar([TarMember("a", b"a" * 100)])
    assert (
        ZtocBuilder().build([tar], media_type).ztoc.compression.algorithm == CompressionAlgorithm.UNCOMPRESSED
    )


def test_unsupported_media_types() -> None:
    builder = ZtocBuilder()
    with pytest.raises(UnsupportedLayerError, match="zstd .*not supported by SOCI"):
        builder.build([b""], "application/vnd.oci.image.layer.v1.tar+zstd")
    with pytest.raises(UnsupportedLayerError, match="'application/vnd.oci.image.layer.v1.tar\\+encrypted'"):
        builder.build([b""], "application/vnd.oci.image.layer.v1.tar+encrypted")
    with pytest.raises(
        UnsupportedLayerError, match="sha256:ab: 'application/json' is not a layer media type"
    ):
        builder.build([b""], "application/json", layer="sha256:ab")


def test_progress_reports_bytes_processed(sample_tar: bytes) -> None:
    blob = gzip.compress(sample_tar, 1)
    seen: list[int] = []
    ZtocBuilder(chunk_size=256 * KIB).build(io.BytesIO(blob), OCI_GZIP, progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == len(blob) and len(seen) == -(-len(blob) // (256 * KIB))


def test_bad_blobs_name_the_layer(sample_tar: bytes) -> None:
    blob = gzip.compress(sample_tar, 6)
    builder = ZtocBuilder()
    with pytest.raises(
        ZtocBuildError, match=r"sha256:feed \(application/vnd.oci.image.layer.v1.tar\+gzip\): truncated gzip"
    ):
        builder.build([blob[: len(blob) // 2]], OCI_GZIP, layer="sha256:feed")
    with pytest.raises(ZtocBuildError, match="not a gzip stream"):
        builder.build([sample_tar], OCI_GZIP, layer="sha256:feed")
    not_a_tar = gzip.compress(b"hello, this is not a tar archive" * 100)
    for threaded in (True, False):
        with pytest.raises(ZtocBuildError, match="sha256:feed.*not a tar header"):
            ZtocBuilder(digest_in_thread=threaded).build([not_a_tar], OCI_GZIP, layer="sha256:feed")
    with pytest.raises(ZtocBuildError, match="sha256:feed.*not a tar header"):
        ZtocBuilder().build([b"hello, this is not a tar archive" * 100], OCI_TAR, layer="sha256:feed")


def test_xattrs_clear_disable_xattrs() -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("file")
        info.size = 3
        info.pax_headers = {"SCHILY.xattr.user.test": "1"}
        tar.addfile(info, io.BytesIO(b"abc"))
    built = ZtocBuilder().build([gzip.compress(buf.getvalue())], OCI_GZIP)
    assert not built.disable_xattrs


def test_memory_stays_bounded_on_a_large_layer(tmp_path: Path) -> None:
    """Peak Python memory is a few chunks plus checkpoints, far below the layer size."""
    path = tmp_path / "layer.tar.gz"
    members = [
        TarMember(f"f{i}.bin", mixed_bytes(i, 4 * MIB) if i % 2 else text_bytes(random.Random(i), 4 * MIB))
        for i in range(12)
    ]
    with path.open("wb") as out:
        compressor = zlib.compressobj(1, zlib.DEFLATED, 31)
        out.write(compressor.compress(make_tar(members)) + compressor.flush())
    del members
    builder = ZtocBuilder(span_size=MIB)
    tracemalloc.start()
    try:
        with path.open("rb") as blob:
            built = builder.build(blob, OCI_GZIP)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    checkpoints = len(built.ztoc.compression.checkpoints)
    assert built.decompressed_size > 48 * MIB
    # Streaming: one read chunk (1 MiB) + the inflate buffer (1 MiB) + TOC; at the end the
    # checkpoint blob and its FlatBuffers serialization (~4-5 copies of the checkpoints).
    assert peak < 3 * MIB + 6 * checkpoints, (peak, checkpoints)
    assert peak < built.decompressed_size / 5


@pytest.mark.parametrize("gzipped", [True, False])
def test_verified_digest_skips_the_whole_blob_hash_and_changes_no_byte(sample_tar: bytes, gzipped: bool) -> None:
    """A caller that verifies the blob itself (the registry client) gets the same zTOC."""
    blob = gzip.compress(sample_tar, 6, mtime=0) if gzipped else sample_tar
    media_type = OCI_GZIP if gzipped else OCI_TAR
    own = ZtocBuilder(span_size=256 * KIB).build(io.BytesIO(blob), media_type)
    told = ZtocBuilder(span_size=256 * KIB).build(io.BytesIO(blob), media_type, verified_digest="sha256:" + "ab" * 32)
    assert told.data == own.data
    assert own.layer_digest == "sha256:" + hashlib.sha256(blob).hexdigest()
    assert told.layer_digest == "sha256:" + "ab" * 32  # taken as given: not recomputed
