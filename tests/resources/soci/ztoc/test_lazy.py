"""Lazy reads through a zTOC: resuming at checkpoints, span fetching and verification."""

from __future__ import annotations

import gzip
import hashlib
import io
import random
import tarfile

import pytest

from resources.soci.ztoc.checkpoints import span_compressed_range
from resources.soci.ztoc.gzip_index import GzipIndex, GzipIndexer
from resources.soci.ztoc.lazy import (
    CheckpointDecoder,
    LazyLayerReader,
    LazyReadError,
    SpanDigestMismatch,
    decompress_from_checkpoint,
)
from resources.soci.ztoc.model import (
    CompressionAlgorithm,
    CompressionInfo,
    FileMetadata,
    Ztoc,
)
from resources.soci.ztoc.tar_zinfo import encode_tar_zinfo, uncompressed_max_span_id

from .conftest import TarMember, gzip_member, make_tar, mixed_bytes, sample_tar_members
from .test_gzip_index import block_type_at, index_blob

KIB = 1024
MIB = 1024 * KIB


class CountingFetcher:
    """A range fetcher over an in-memory blob that records every request."""

    def __init__(self, blob: bytes) -> None:
        self.blob = blob
        self.requests: list[tuple[int, int]] = []

    def __call__(self, start: int, end: int) -> bytes:
        self.requests.append((start, end))
        return self.blob[start:end]


def toc_from_tarfile(tar: bytes) -> tuple[list[FileMetadata], int]:
    """TOC entries from Python's tarfile (independent of the project's tar parser)."""
    entries = []
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        for member in archive.getmembers():
            kind = {
                tarfile.REGTYPE: "reg",
                tarfile.DIRTYPE: "dir",
                tarfile.LNKTYPE: "hardlink",
                tarfile.SYMTYPE: "symlink",
            }[member.type]
            entries.append(
                FileMetadata(
                    name=member.name + ("/" if member.isdir() else ""),
                    type=kind,
                    uncompressed_offset=member.offset_data,
                    uncompressed_size=member.size,
                    linkname=member.linkname,
                    mode=member.mode,
                    uid=0,
                    gid=0,
                    uname="",
                    gname="",
                    mod_time="",
                    devmajor=0,
                    devminor=0,
                    xattrs=[],
                )
            )
    return entries, len(tar)


def gzip_ztoc(blob: bytes, tar: bytes, span: int) -> tuple[Ztoc, GzipIndex]:
    index, _ = index_blob(blob, span)
    entries, size = toc_from_tarfile(tar)
    ztoc = Ztoc(
        version="0.9",
        build_tool_identifier="test",
        compressed_archive_size=len(blob),
        uncompressed_archive_size=size,
        entries=entries,
        compression=CompressionInfo(
            CompressionAlgorithm.GZIP, index.max_span_id, index.span_digests, index.checkpoints
        ),
    )
    return ztoc, index


@pytest.fixture(scope="module")
def layer(sample_tar: bytes) -> tuple[bytes, bytes, Ztoc]:
    blob = gzip.compress(sample_tar, 6, mtime=0)
    ztoc, _ = gzip_ztoc(blob, sample_tar, 256 * KIB)
    return sample_tar, blob, ztoc


# ---------------------------------------------------------------- resuming at checkpoints


@pytest.mark.parametrize("level", [1, 6, 9])
def test_every_checkpoint_resumes_to_the_right_bytes(level: int) -> None:
    data = mixed_bytes(40 + level, 3 * MIB)
    blob = gzip.compress(data, level, mtime=0)
    index, _ = index_blob(blob, 16 * KIB)
    points = index.points()
    for point in points:
        size = min(70_000, len(data) - point.out_offset)
        resumed = decompress_from_checkpoint(point, [blob[point.span_start :]], 0, size)
        assert resumed == data[point.out_offset : point.out_offset + size], point.out_offset
    # The hard case exists: a point in the middle of a byte followed by a stored block.
    assert any(p.bits and block_type_at(blob, p.in_offset, p.bits) == 0 for p in points)


def test_resume_with_bits_before_a_stored_block_needs_priming() -> None:
    """Shifting bytes instead of inflatePrime goes wrong here; our decoder must not."""
    data = mixed_bytes(77, 3 * MIB)
    blob = gzip.compress(data, 6, mtime=0)
    index, _ = index_blob(blob, 64 * KIB)
    tricky = [p for p in index.points() if p.bits and block_type_at(blob, p.in_offset, p.bits) == 0]
    assert tricky
    for point in tricky:
        chunks = [blob[i : i + 997] for i in range(point.span_start, len(blob), 997)]
        size = min(200_000, len(data) - point.out_offset - 1234)
        got = decompress_from_checkpoint(point, chunks, 1234, size)
        assert got == data[point.out_offset + 1234 : point.out_offset + 1234 + size]


def test_decoder_crosses_member_boundaries() -> None:
    first = mixed_bytes(90, 600 * KIB)
    second = mixed_bytes(91, 500 * KIB)
    member1 = gzip.compress(first, 6, mtime=0)
    blob = member1 + gzip_member(second, 6, name=b"m2", comment=b"second member")
    index, _ = index_blob(blob, 128 * KIB)
    last_in_first = [p for p in index.points() if p.in_offset < len(member1)][-1]
    with CheckpointDecoder(last_in_first.window, last_in_first.bits) as decoder:
        out = b"".join(
            bytes(o)
            for i in range(last_in_first.span_start, len(blob), 3)
            for o in decoder.feed(blob[i : i + 3])
        )
    assert out == (first + second)[last_in_first.out_offset :]


# ---------------------------------------------------------------- LazyLayerReader (gzip)


def test_read_every_file_matches_tarfile(layer: tuple[bytes, bytes, Ztoc]) -> None:
    tar, blob, ztoc = layer
    reader = LazyLayerReader(ztoc, CountingFetcher(blob))
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        for member in archive.getmembers():
            if member.isreg():
                assert reader.read_file(member.name) == archive.extractfile(member).read(), member.name


def test_random_ranges_match_full_decompression(layer: tuple[bytes, bytes, Ztoc]) -> None:
    tar, blob, ztoc = layer
    reader = LazyLayerReader(ztoc, CountingFetcher(blob), cached_spans=0)
    rnd = random.Random(3)
    for _ in range(60):
        offset = rnd.randrange(len(tar))
        size = rnd.randint(0, min(len(tar) - offset, 700_000))
        assert reader.read_range(offset, size) == tar[offset : offset + size]
    assert reader.read_range(len(tar) - 1, 1) == tar[-1:]


def test_file_across_span_boundaries(layer: tuple[bytes, bytes, Ztoc]) -> None:
    tar, blob, ztoc = layer
    reader = LazyLayerReader(ztoc, CountingFetcher(blob), cached_spans=0)
    points = reader._points
    big = max((e for e in ztoc.entries if e.type == "reg"), key=lambda e: e.uncompressed_size)
    start_span = max(i for i, p in enumerate(points) if p.out_offset <= big.uncompressed_offset)
    end_span = max(
        i for i, p in enumerate(points) if p.out_offset < big.uncompressed_offset + big.uncompressed_size
    )
    assert end_span - start_span >= 2
    assert (
        reader.read_entry(big)
        == tar[big.uncompressed_offset : big.uncompressed_offset + big.uncompressed_size]
    )
    assert reader.spans_fetched == end_span - start_span + 1


def test_small_file_fetches_only_its_span(layer: tuple[bytes, bytes, Ztoc]) -> None:
    tar, blob, ztoc = layer
    fetcher = CountingFetcher(blob)
    reader = LazyLayerReader(ztoc, fetcher)
    small = next(e for e in ztoc.entries if e.type == "reg" and 0 < e.uncompressed_size < 10_000)
    data = reader.read_file(small.name)
    assert data == tar[small.uncompressed_offset : small.uncompressed_offset + small.uncompressed_size]
    assert reader.spans_fetched in (1, 2)
    assert reader.bytes_fetched < len(blob) / 4
    assert reader.bytes_fetched == sum(end - start for start, end in fetcher.requests)
    span_id = max(i for i, p in enumerate(reader._points) if p.out_offset <= small.uncompressed_offset)
    assert fetcher.requests[0] == span_compressed_range(reader._points, span_id, len(blob))
    reader.read_file(small.name)  # served from the span cache
    assert len(fetcher.requests) == reader.spans_fetched


def test_hardlink_symlink_and_missing_names(layer: tuple[bytes, bytes, Ztoc]) -> None:
    tar, blob, ztoc = layer
    reader = LazyLayerReader(ztoc, CountingFetcher(blob))
    assert reader.read_file("app/link_to_weights") == reader.read_file("app/weights_0.bin")
    assert reader.read_file("./app/weights_1.bin") == reader.read_file("app/weights_1.bin")
    with pytest.raises(LazyReadError, match="'app/symlink' is a symlink"):
        reader.read_file("app/symlink")
    with pytest.raises(LazyReadError, match="is a dir"):
        reader.read_file("app/lib/")
    with pytest.raises(LazyReadError, match="no entry named 'nope'"):
        reader.read_file("nope")
    with pytest.raises(LazyReadError, match="outside the uncompressed archive"):
        reader.read_range(len(tar), 1)


def test_tampered_span_is_rejected_naming_the_span(layer: tuple[bytes, bytes, Ztoc]) -> None:
    tar, blob, ztoc = layer
    tampered = bytearray(blob)
    reader = LazyLayerReader(ztoc, CountingFetcher(blob), layer="sha256:abc")
    start, end = reader.span(3).start, reader.span(3).end
    tampered[(start + end) // 2] ^= 0x01
    bad = LazyLayerReader(ztoc, CountingFetcher(bytes(tampered)), layer="sha256:abc")
    offset = reader._points[3].out_offset + 10
    with pytest.raises(SpanDigestMismatch, match=r"sha256:abc: span 3 \(compressed bytes"):
        bad.read_range(offset, 100)
    short = LazyLayerReader(ztoc, lambda s, e: blob[s : e - 1])
    with pytest.raises(LazyReadError, match="returned"):
        short.read_range(offset, 100)


def test_inconsistent_ztoc_is_rejected(layer: tuple[bytes, bytes, Ztoc]) -> None:
    _, blob, ztoc = layer
    info = ztoc.compression
    broken = Ztoc(
        **{
            **ztoc.__dict__,
            "compression": CompressionInfo(
                info.algorithm, info.max_span_id, info.span_digests[:-1], info.checkpoints
            ),
        }
    )
    with pytest.raises(LazyReadError, match="span digests"):
        LazyLayerReader(broken, CountingFetcher(blob))


def test_span_crossing_into_second_member() -> None:
    members = sample_tar_members(9, files=20, big=2)
    tar = make_tar(members)
    cut = len(tar) // 2 + 123
    member1 = gzip.compress(tar[:cut], 6, mtime=0)
    blob = member1 + gzip.compress(tar[cut:], 9, mtime=0)
    ztoc, index = gzip_ztoc(blob, tar, 512 * KIB)
    reader = LazyLayerReader(ztoc, CountingFetcher(blob), cached_spans=0)
    points = index.points()
    crossing = [
        i for i in range(len(points) - 1) if points[i].in_offset < len(member1) < points[i + 1].in_offset
    ]
    assert crossing, "no span crosses the member boundary"
    i = crossing[0]
    offset = points[i].out_offset + 5
    size = points[i + 1].out_offset - offset + 1000
    assert reader.read_range(offset, size) == tar[offset : offset + size]
    assert reader.read_range(cut - 10, 20) == tar[cut - 10 : cut + 10]
    for entry in ztoc.entries:
        if entry.type == "reg":
            assert (
                reader.read_entry(entry)
                == tar[entry.uncompressed_offset : entry.uncompressed_offset + entry.uncompressed_size]
            )


# ---------------------------------------------------------------- uncompressed layers


def test_uncompressed_layer_reads() -> None:
    tar = make_tar(sample_tar_members(12, files=30, big=2))
    span = 300 * KIB
    digests = ["sha256:" + hashlib.sha256(tar[i : i + span]).hexdigest() for i in range(0, len(tar), span)]
    entries, size = toc_from_tarfile(tar)
    ztoc = Ztoc(
        "0.9",
        "test",
        len(tar),
        size,
        entries,
        CompressionInfo(
            CompressionAlgorithm.UNCOMPRESSED,
            uncompressed_max_span_id(len(tar), span),
            digests,
            encode_tar_zinfo(span, len(tar)),
        ),
    )
    fetcher = CountingFetcher(tar)
    reader = LazyLayerReader(ztoc, fetcher, cached_spans=0)
    rnd = random.Random(4)
    for _ in range(40):
        offset = rnd.randrange(len(tar))
        length = rnd.randint(1, min(len(tar) - offset, 1_000_000))
        assert reader.read_range(offset, length) == tar[offset : offset + length]
    small = next(e for e in entries if e.type == "reg" and 0 < e.uncompressed_size < 5000)
    before = reader.bytes_fetched
    reader.read_file(small.name)
    assert reader.bytes_fetched - before <= 2 * span
    assert all(start % span == 0 and (end % span == 0 or end == len(tar)) for start, end in fetcher.requests)
    tampered = bytearray(tar)
    tampered[span + 7] ^= 1
    with pytest.raises(SpanDigestMismatch, match="span 1"):
        LazyLayerReader(ztoc, CountingFetcher(bytes(tampered))).read_range(span, 10)


def test_single_member_matches_streaming_indexer_output() -> None:
    """The decoder yields exactly what the indexer produced when started at point 0."""
    tar = make_tar(
        [TarMember("a.txt", b"hello " * 5000), TarMember("b.bin", random.Random(1).randbytes(70_000))]
    )
    blob = gzip.compress(tar, 6, mtime=0)
    indexer = GzipIndexer(32 * KIB)
    streamed = b"".join(bytes(v) for v in indexer.feed(blob))
    point = indexer.finish().points()[0]
    assert decompress_from_checkpoint(point, [blob[point.span_start :]], 0, len(streamed)) == streamed == tar


def test_undecodable_span_names_layer_and_span(layer: tuple[bytes, bytes, Ztoc]) -> None:
    """A zTOC whose checkpoint does not fit the blob fails clearly instead of returning garbage."""
    tar, blob, ztoc = layer
    reader = LazyLayerReader(ztoc, CountingFetcher(blob))
    point = reader._points[2]
    shifted = bytearray(ztoc.compression.checkpoints)
    record = 12 + 2 * (17 + 32768)
    shifted[record : record + 8] = (point.in_offset + 3).to_bytes(8, "little")  # in points mid-block
    info = ztoc.compression
    digests = list(info.span_digests)
    start = point.in_offset + 3 - (1 if point.bits else 0)
    digests[2] = "sha256:" + hashlib.sha256(blob[start : reader._points[3].in_offset]).hexdigest()
    broken = Ztoc(
        **{
            **ztoc.__dict__,
            "compression": CompressionInfo(info.algorithm, info.max_span_id, digests, bytes(shifted)),
        }
    )
    with pytest.raises(LazyReadError, match=r"sha256:bad: span 2: "):
        LazyLayerReader(broken, CountingFetcher(blob), layer="sha256:bad").read_range(
            point.out_offset, 50_000
        )


def test_unreadable_checkpoints_name_the_layer(layer: tuple[bytes, bytes, Ztoc]) -> None:
    _, blob, ztoc = layer
    info = ztoc.compression
    cut = CompressionInfo(info.algorithm, info.max_span_id, info.span_digests, info.checkpoints[:-5])
    with pytest.raises(LazyReadError, match="sha256:cut: unreadable checkpoints"):
        broken = Ztoc(**{**ztoc.__dict__, "compression": cut})
        LazyLayerReader(broken, CountingFetcher(blob), layer="sha256:cut")
