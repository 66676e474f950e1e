"""GzipIndexer: checkpoint placement cross-checked against indexed_gzip, digests, strictness."""

from __future__ import annotations

import ctypes
import gzip
import hashlib
import io
import random
import struct
import zlib

import indexed_gzip
import pytest

from resources.soci.ztoc.checkpoints import (
    RECORD_SIZE,
    CheckpointFormatError,
    encode_checkpoints,
    encode_record,
    parse_checkpoints,
)
from resources.soci.ztoc.gzip_index import GzipFormatError, GzipIndex, GzipIndexer
from resources.soci.ztoc.zlib_ctypes import RawInflater, ZStream, zlib_version

from .conftest import WINDOW, gzip_member, mixed_bytes, text_bytes

KIB = 1024
MIB = 1024 * KIB


def index_blob(
    blob: bytes, span: int, chunk: int = 64 * KIB, threaded: bool = False
) -> tuple[GzipIndex, bytes]:
    """Run the indexer over ``blob`` in ``chunk``-sized pieces; returns the index and the output."""
    indexer = GzipIndexer(span, digest_in_thread=threaded, blob_digest=True)
    out = bytearray()
    for start in range(0, len(blob), chunk):
        for view in indexer.feed(blob[start : start + chunk]):
            out += view
    index = indexer.finish()
    assert index.blob_digest == "sha256:" + hashlib.sha256(blob).hexdigest()
    return index, bytes(out)


def indexed_gzip_checkpoints(blob: bytes, span: int) -> bytes:
    """Checkpoints from indexed_gzip, converted to the SOCI blob layout (docs/soci-format.md section 7)."""
    with indexed_gzip.IndexedGzipFile(fileobj=io.BytesIO(blob), spacing=span + 1, window_size=WINDOW) as f:
        f.build_full_index()
        exported = io.BytesIO()
        f.export_index(fileobj=exported)
    data = exported.getvalue()
    assert data[:5] == b"GZIDX"
    _csize, _usize, _spacing, window_size, count = struct.unpack_from("<QQIII", data, 7)
    assert window_size == WINDOW
    pos = 35
    points = []
    for _ in range(count):
        points.append(list(struct.unpack_from("<QQBB", data, pos)))
        pos += 18
    windows = []
    for point in points:
        if point[3]:
            windows.append(data[pos : pos + WINDOW])
            pos += WINDOW
        else:
            windows.append(bytes(WINDOW))  # point 0 carries no window: zero-filled
    # indexed_gzip ends with a point at end of file; soci has none there.
    assert points[-1][0] == len(blob) and points[-1][1] == len(gzip.decompress(blob))
    points, windows = points[:-1], windows[:-1]
    records = b"".join(encode_record(p[0], p[1], p[2], w) for p, w in zip(points, windows, strict=True))
    return encode_checkpoints(span, records, len(points))


def block_type_at(blob: bytes, in_offset: int, bits: int) -> int:
    """BTYPE of the deflate block starting at a checkpoint (0 = stored)."""
    start = in_offset - 1 if bits else in_offset
    value = int.from_bytes(blob[start : start + 2], "little")
    skip = 8 - bits if bits else 0
    return (value >> (skip + 1)) & 3


@pytest.fixture(scope="module")
def mixed_3m() -> bytes:
    return mixed_bytes(1, 3 * MIB)


@pytest.fixture(scope="module")
def mixed_14m() -> bytes:
    return mixed_bytes(2, 14 * MIB)


# ---------------------------------------------------------------- zlib binding


def test_zlib_binding_layout_and_lifecycle() -> None:
    assert ctypes.sizeof(ZStream) == 112  # LP64 z_stream
    assert zlib_version() == zlib.ZLIB_RUNTIME_VERSION
    inflater = RawInflater()
    inflater.close()
    inflater.close()  # idempotent
    with RawInflater() as other:
        compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
        raw = compressor.compress(b"abc" * 1000) + compressor.flush()
        out = ctypes.create_string_buffer(10_000)
        other.set_input(raw)
        other.set_output(ctypes.addressof(out), len(out))
        assert other.inflate(0) == 1  # Z_STREAM_END
        assert out.raw[:3000] == b"abc" * 1000


# ---------------------------------------------------------------- placement vs indexed_gzip


@pytest.mark.parametrize("level", [0, 1, 6, 9])
@pytest.mark.parametrize("kind", ["random", "text", "mixed"])
def test_checkpoints_identical_to_indexed_gzip_64k(level: int, kind: str, mixed_3m: bytes) -> None:
    rnd = random.Random(level * 7 + len(kind))
    data = {"random": rnd.randbytes(3 * MIB), "text": text_bytes(rnd, 3 * MIB), "mixed": mixed_3m}[kind]
    blob = gzip.compress(data, level, mtime=0)
    index, out = index_blob(blob, 64 * KIB, threaded=level % 2 == 1)
    assert out == data
    expected = indexed_gzip_checkpoints(blob, 64 * KIB)
    assert index.checkpoints == expected
    assert index.max_span_id == len(index.points()) - 1 > 5


@pytest.mark.parametrize("span", [1 * MIB, 4 * MIB])
@pytest.mark.parametrize("level", [1, 6])
def test_checkpoints_identical_to_indexed_gzip_large_spans(span: int, level: int, mixed_14m: bytes) -> None:
    blob = gzip.compress(mixed_14m, level, mtime=0)
    index, _ = index_blob(blob, span, chunk=MIB, threaded=True)
    assert index.checkpoints == indexed_gzip_checkpoints(blob, span)
    assert index.max_span_id >= 2


def test_bits_and_stored_blocks_are_both_covered(mixed_3m: bytes) -> None:
    """The fixtures above really exercise points with bits != 0 and points before stored blocks."""
    blob = gzip.compress(mixed_3m, 6, mtime=0)
    index, _ = index_blob(blob, 64 * KIB)
    points = index.points()
    assert any(p.bits for p in points)
    assert any(p.bits and block_type_at(blob, p.in_offset, p.bits) == 0 for p in points)


@pytest.mark.parametrize(
    "fields",
    [
        {"name": b"layer.tar"},
        {"extra": b"SOCI" + bytes(range(40)), "comment": b"made by a test"},
        {"name": b"n", "extra": b"", "comment": b"c", "header_crc": True},
    ],
)
def test_optional_header_fields_move_point_zero(fields: dict, mixed_3m: bytes) -> None:
    blob = gzip_member(mixed_3m[: 2 * MIB], 6, **fields)
    index, out = index_blob(blob, 64 * KIB, chunk=4099)
    assert out == mixed_3m[: 2 * MIB]
    header_length = 10
    if "extra" in fields:
        header_length += 2 + len(fields["extra"])
    header_length += sum(len(fields[k]) + 1 for k in ("name", "comment") if k in fields)
    header_length += 2 if fields.get("header_crc") else 0
    first = index.points()[0]
    assert (first.in_offset, first.out_offset, first.bits) == (header_length, 0, 0)
    assert bytes(first.window) == bytes(WINDOW)
    assert index.checkpoints == indexed_gzip_checkpoints(blob, 64 * KIB)


def test_python_gzip_fname_header(mixed_3m: bytes) -> None:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="some/layer.tar", mode="wb", fileobj=buf, mtime=0) as f:
        f.write(mixed_3m)
    blob = buf.getvalue()
    index, _ = index_blob(blob, 64 * KIB)
    assert index.points()[0].in_offset == 10 + len(b"layer.tar") + 1
    assert index.checkpoints == indexed_gzip_checkpoints(blob, 64 * KIB)


# ---------------------------------------------------------------- digests and streaming


def test_span_digests_cover_spec_ranges(mixed_3m: bytes) -> None:
    blob = gzip.compress(mixed_3m, 6, mtime=0)
    index, _ = index_blob(blob, 64 * KIB)
    points = index.points()
    assert len(index.span_digests) == len(points)
    for i, point in enumerate(points):
        start = point.in_offset - (1 if point.bits else 0)
        end = points[i + 1].in_offset if i + 1 < len(points) else len(blob)
        assert index.span_digests[i] == "sha256:" + hashlib.sha256(blob[start:end]).hexdigest()


@pytest.mark.parametrize(
    ("chunk", "threaded"), [(1, False), (13, True), (4096, False), (4096, True), (10**9, True)]
)
def test_result_does_not_depend_on_chunking(chunk: int, threaded: bool, mixed_3m: bytes) -> None:
    data = mixed_3m[: (300 * KIB if chunk < 100 else 3 * MIB)]
    blob = gzip_member(data, 6, name=b"layer.tar", extra=b"xx", comment=b"c", header_crc=True)
    blob += gzip_member(data[:50_000], 1)
    span = 16 * KIB if chunk < 100 else 64 * KIB
    reference, _ = index_blob(blob, span, chunk=len(blob))
    index, out = index_blob(blob, span, chunk=chunk, threaded=threaded)
    assert index == reference
    assert len(index.span_digests) > 5
    assert index.compressed_size == len(blob)
    assert index.uncompressed_size == len(out)


@pytest.mark.parametrize("threaded", [False, True])
def test_output_views_and_small_output_buffer(threaded: bool, mixed_3m: bytes) -> None:
    blob = gzip.compress(mixed_3m, 6, mtime=0) + gzip.compress(mixed_3m[:100_000], 1, mtime=0)
    indexer = GzipIndexer(64 * KIB, output_chunk=WINDOW, digest_in_thread=threaded, blob_digest=True)
    out = bytearray()
    for start in range(0, len(blob), 100_000):
        for view in indexer.feed(blob[start : start + 100_000]):
            assert isinstance(view, memoryview) and len(view) <= WINDOW
            out += view
    reference, _ = index_blob(blob, 64 * KIB)
    assert indexer.finish() == reference
    assert out == mixed_3m + mixed_3m[:100_000]


def test_serialized_layout() -> None:
    data = random.Random(3).randbytes(300 * KIB)
    index, _ = index_blob(gzip.compress(data, 1, mtime=0), 64 * KIB)
    count, span = struct.unpack_from("<iq", index.checkpoints)
    assert span == 64 * KIB and count == index.max_span_id + 1
    assert len(index.checkpoints) == 12 + RECORD_SIZE * count
    assert struct.unpack_from("<qqB", index.checkpoints, 12) == (10, 0, 0)


def test_empty_member_has_single_point() -> None:
    index, out = index_blob(gzip.compress(b"", mtime=0), 4 * MIB)
    assert out == b""
    assert index.max_span_id == 0 and index.uncompressed_size == 0
    assert [(p.in_offset, p.out_offset) for p in index.points()] == [(10, 0)]


def test_leading_empty_block_gets_its_own_point_like_zlib_zran() -> None:
    """soci's C code adds a point at every boundary while no output exists (totout == 0)."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    body = compressor.flush(zlib.Z_SYNC_FLUSH)  # an empty stored block before any data
    body += compressor.compress(b"payload" * 1000) + compressor.flush()
    data = b"payload" * 1000
    blob = gzip_member(b"", 6)[:10] + body + struct.pack("<II", zlib.crc32(data), len(data))
    index, out = index_blob(blob, 64 * KIB)
    assert out == data
    assert [(p.in_offset, p.out_offset, p.bits) for p in index.points()] == [(10, 0, 0), (15, 0, 0)]


# ---------------------------------------------------------------- multiple members


def test_points_continue_across_members() -> None:
    first = mixed_bytes(11, 700 * KIB)
    second = mixed_bytes(12, 900 * KIB)
    member1 = gzip.compress(first, 6, mtime=0)
    member2 = gzip_member(second, 6, name=b"second")
    blob = member1 + member2
    span = 100 * KIB
    index, out = index_blob(blob, span, chunk=5000, threaded=True)
    assert out == first + second
    points = index.points()

    # Candidate boundaries, from each member indexed alone with the smallest span.
    def boundaries(member: bytes, in_base: int, out_base: int) -> list[tuple[int, int, int]]:
        alone, _ = index_blob(member, 1)
        return [(p.in_offset + in_base, p.out_offset + out_base, p.bits) for p in alone.points()]

    candidates = boundaries(member1, 0, 0) + boundaries(member2, len(member1), len(first))
    expected: list[tuple[int, int, int]] = []
    for in_offset, out_offset, bits in candidates:
        if not expected or out_offset == 0 or out_offset - expected[-1][1] > span:
            expected.append((in_offset, out_offset, bits))
    assert [(p.in_offset, p.out_offset, p.bits) for p in points] == expected
    assert any(p.in_offset > len(member1) for p in points)
    whole = bytes(WINDOW) + first + second
    for point in points:
        assert bytes(point.window) == whole[point.out_offset : point.out_offset + WINDOW]
    assert index.compressed_size == len(blob)
    assert index.uncompressed_size == len(first) + len(second)


def test_member_header_end_is_a_boundary() -> None:
    """A point lands right after the second member's header when spacing allows (zran.c reset)."""
    first = random.Random(5).randbytes(200 * KIB)  # stored blocks: last block ends the member
    member1 = gzip.compress(first, 0, mtime=0)
    blob = member1 + gzip.compress(b"tail" * 100, 6, mtime=0)
    index, _ = index_blob(blob, len(first) - 1)
    ends = [(p.in_offset, p.out_offset, p.bits) for p in index.points()]
    assert ends == [(10, 0, 0), (len(member1) + 10, len(first), 0)]


# ---------------------------------------------------------------- strictness


@pytest.fixture(scope="module")
def small_blob() -> tuple[bytes, bytes]:
    data = mixed_bytes(21, 400 * KIB)
    return data, gzip.compress(data, 6, mtime=0)


def expect_error(blob: bytes, match: str, threaded: bool = False) -> GzipFormatError:
    with pytest.raises(GzipFormatError, match=match) as info:
        index_blob(blob, 64 * KIB, chunk=4096, threaded=threaded)
    return info.value


@pytest.mark.parametrize(
    ("cut", "where"), [(5, "member header"), (1000, "deflate data"), (-4, "member trailer")]
)
def test_truncated(cut: int, where: str, small_blob: tuple[bytes, bytes]) -> None:
    blob = small_blob[1][:cut]
    error = expect_error(blob, f"truncated gzip stream.*{where}")
    assert error.offset == len(blob)


def test_corrupt_deflate_data(small_blob: tuple[bytes, bytes]) -> None:
    blob = bytearray(small_blob[1])
    blob[20:60] = b"\xff" * 40
    error = expect_error(bytes(blob), "corrupt deflate data")
    assert 20 <= error.offset <= len(blob)


@pytest.mark.parametrize("threaded", [False, True])
def test_crc_mismatch(threaded: bool, small_blob: tuple[bytes, bytes]) -> None:
    blob = bytearray(small_blob[1])
    blob[-8] ^= 1
    assert expect_error(bytes(blob), "CRC32 mismatch", threaded).offset == len(blob) - 8
    second_member_broken = small_blob[1] + bytes(blob)
    error = expect_error(second_member_broken, "CRC32 mismatch", threaded)
    assert error.offset == len(second_member_broken) - 8


@pytest.mark.parametrize("threaded", [False, True])
def test_size_mismatch(threaded: bool, small_blob: tuple[bytes, bytes]) -> None:
    blob = bytearray(small_blob[1])
    blob[-1] ^= 1
    assert expect_error(bytes(blob), "size mismatch", threaded).offset == len(blob) - 4


def test_trailing_garbage(small_blob: tuple[bytes, bytes]) -> None:
    blob = small_blob[1] + b"garbage"
    assert expect_error(blob, "not a gzip member").offset == len(small_blob[1])


def test_trailing_zero_padding(small_blob: tuple[bytes, bytes]) -> None:
    blob = small_blob[1] + bytes(512)
    assert expect_error(blob, "trailing zero padding").offset == len(small_blob[1])


def test_truncated_second_member_header(small_blob: tuple[bytes, bytes]) -> None:
    expect_error(small_blob[1] + b"\x1f\x8b\x08", "truncated gzip stream.*member header")


def test_not_gzip_and_empty() -> None:
    assert expect_error(b"PK\x03\x04 not gzip", "not a gzip stream").offset == 0
    expect_error(b"", "empty blob")
    expect_error(b"\x1f\x8b\x07" + bytes(20), "compression method 7")


def test_header_crc_mismatch(small_blob: tuple[bytes, bytes]) -> None:
    blob = bytearray(gzip_member(small_blob[0], 6, name=b"x", header_crc=True))
    blob[12] ^= 0xFF  # inside the header CRC16
    expect_error(bytes(blob), "header CRC16 mismatch")


def test_feed_after_finish_is_refused() -> None:
    indexer = GzipIndexer(64 * KIB)
    list(indexer.feed(gzip.compress(b"x")))
    indexer.finish()
    with pytest.raises(RuntimeError):
        list(indexer.feed(b"more"))


# ---------------------------------------------------------------- parse_checkpoints


def test_parse_checkpoints_round_trip_and_errors(small_blob: tuple[bytes, bytes]) -> None:
    index, _ = index_blob(small_blob[1], 64 * KIB)
    span, points = parse_checkpoints(index.checkpoints)
    assert span == 64 * KIB and len(points) == index.max_span_id + 1
    rebuilt = b"".join(encode_record(p.in_offset, p.out_offset, p.bits, p.window) for p in points)
    assert encode_checkpoints(span, rebuilt, len(points)) == index.checkpoints
    with pytest.raises(CheckpointFormatError, match="shorter than its 12-byte header"):
        parse_checkpoints(b"\x01")
    with pytest.raises(CheckpointFormatError, match="does not hold"):
        parse_checkpoints(index.checkpoints[:-1])
    broken = bytearray(index.checkpoints)
    broken[12 + 16] = 9  # bits of point 0
    with pytest.raises(CheckpointFormatError, match="bits=9"):
        parse_checkpoints(bytes(broken))
