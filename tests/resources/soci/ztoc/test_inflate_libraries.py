"""zlib-ng and the system zlib give byte-identical checkpoints, zTOCs and lazy reads; the choice is explicit."""

from __future__ import annotations

import ctypes
import gzip
import random
import zlib

import pytest

from resources.soci.ztoc.builder import ZtocBuilder
from resources.soci.ztoc.gzip_index import GzipFormatError, GzipIndex, GzipIndexer
from resources.soci.ztoc.lazy import CheckpointDecoder
from resources.soci.ztoc.zlib_ctypes import (
    INFLATE_LIBRARY_ENV,
    InflateLibrary,
    ZlibError,
    ZngStream,
    ZStream,
    inflate_library,
    system_zlib,
    zlib_ng,
)

from .conftest import WINDOW, make_tar, mixed_bytes, sample_tar_members, text_bytes
from .test_gzip_index import indexed_gzip_checkpoints

KIB = 1024
MIB = 1024 * KIB
OCI_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


def libraries() -> list[InflateLibrary]:
    """Both implementations: zlib-ng is a declared dependency, so its absence is a failure here."""
    fast = zlib_ng()
    assert fast is not None, "the zlib-ng wheel is installed with streamable but exports no zng_ API"
    return [fast, system_zlib()]


def index_with(library: InflateLibrary, blob: bytes, span: int, chunk: int, threaded: bool = False) -> GzipIndex:
    """Checkpoints of ``blob`` fed in ``chunk``-byte pieces through ``library``."""
    indexer = GzipIndexer(span, digest_in_thread=threaded, blob_digest=True, library=library)
    for start in range(0, len(blob), chunk):
        for _ in indexer.feed(blob[start : start + chunk]):
            pass
    return indexer.finish()


def flushed_stream(data: bytes, level: int, every: int, mode: int) -> bytes:
    """A gzip member whose deflate stream is cut by ``mode`` flushes every ``every`` bytes (many small blocks)."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, 31)
    out = bytearray()
    for start in range(0, len(data), every):
        out += compressor.compress(data[start : start + every])
        out += compressor.flush(mode)
    out += compressor.flush()
    return bytes(out)


def fixed_huffman_stream(data: bytes) -> bytes:
    """A gzip member of fixed-Huffman blocks only (Z_FIXED strategy)."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31, 8, zlib.Z_FIXED)
    return compressor.compress(data) + compressor.flush()


def streams() -> dict[str, bytes]:
    """Deflate shapes whose block boundaries fall in different places: stored, fixed, dynamic, flushed, members."""
    rnd = random.Random(99)
    text = text_bytes(rnd, 600 * KIB)
    mixed = mixed_bytes(5, 700 * KIB)
    return {
        "stored-level0": gzip.compress(mixed, 0, mtime=0),
        "level1-text": gzip.compress(text, 1, mtime=0),
        "level9-mixed": gzip.compress(mixed, 9, mtime=0),
        "fixed-huffman": fixed_huffman_stream(text),
        "sync-flush-every-3k": flushed_stream(text, 6, 3000, zlib.Z_SYNC_FLUSH),
        "full-flush-every-1k": flushed_stream(mixed[: 200 * KIB], 6, 1024, zlib.Z_FULL_FLUSH),
        "three-members": b"".join(gzip.compress(part, 6, mtime=0) for part in (text[:1000], mixed, b"")),
    }


@pytest.mark.parametrize("name", list(streams()))
@pytest.mark.parametrize("span", [1 * KIB, 64 * KIB])
def test_checkpoints_identical_between_libraries(name: str, span: int) -> None:
    blob = streams()[name]
    fast, system = libraries()
    reference = index_with(system, blob, span, 64 * KIB)
    assert reference.max_span_id > 2, "the stream should hold several points"
    for chunk in (1 * MIB, 64 * KIB, 4097, 13):  # odd cuts make inflate stop at different input positions
        got = index_with(fast, blob, span, chunk, threaded=chunk == 4097)
        assert got.checkpoints == reference.checkpoints, f"{name}: zlib-ng checkpoints differ at chunk {chunk}"
        assert got.span_digests == reference.span_digests
        assert got.member_starts == reference.member_starts
        assert got.uncompressed_size == reference.uncompressed_size


@pytest.mark.parametrize("name", ["stored-level0", "level9-mixed", "sync-flush-every-3k", "fixed-huffman"])
def test_zlib_ng_checkpoints_equal_indexed_gzip(name: str) -> None:
    blob = streams()[name]
    fast, _ = libraries()
    assert index_with(fast, blob, 64 * KIB, 64 * KIB).checkpoints == indexed_gzip_checkpoints(blob, 64 * KIB)


def test_one_byte_feeds_give_the_same_points() -> None:
    blob = flushed_stream(text_bytes(random.Random(3), 60 * KIB), 6, 700, zlib.Z_SYNC_FLUSH)
    fast, system = libraries()
    assert index_with(fast, blob, 2 * KIB, 1).checkpoints == index_with(system, blob, 2 * KIB, 1).checkpoints


def test_ztoc_bytes_identical_between_libraries() -> None:
    tar = make_tar(sample_tar_members(21))
    blob = gzip.compress(tar, 6, mtime=0)
    built = [ZtocBuilder(span_size=8 * KIB, library=lib).build([blob], OCI_GZIP) for lib in libraries()]
    assert built[0].data == built[1].data
    assert built[0].digest == built[1].digest
    assert built[0].ztoc.compression.max_span_id > 3


def test_lazy_reads_from_every_point_agree() -> None:
    data = mixed_bytes(8, 300 * KIB)
    blob = gzip.compress(data, 6, mtime=0)
    index = index_with(system_zlib(), blob, 16 * KIB, 64 * KIB)
    points = index.points()
    for point in points:
        start = point.in_offset - 1 if point.bits else point.in_offset
        outputs = []
        for library in libraries():
            decoder = CheckpointDecoder(point.window, point.bits, library=library)
            outputs.append(b"".join(bytes(v) for v in decoder.feed(blob[start:])))
        assert outputs[0] == outputs[1]
        assert outputs[0].startswith(data[point.out_offset : point.out_offset + 4096])


def test_corrupt_deflate_is_an_error_with_either_library() -> None:
    blob = bytearray(gzip.compress(text_bytes(random.Random(4), 200 * KIB), 6, mtime=0))
    blob[len(blob) // 2 : len(blob) // 2 + 64] = bytes(range(64))
    for library in libraries():
        with pytest.raises(GzipFormatError, match="corrupt deflate data|CRC32 mismatch"):
            index_with(library, bytes(blob), 64 * KIB, 64 * KIB)


def test_crc32_matches_python_zlib(monkeypatch: pytest.MonkeyPatch) -> None:
    import array

    import resources.soci.ztoc.zlib_ctypes as module

    data = random.Random(5).randbytes(100_003)
    big = random.Random(6).randbytes(8 * MIB)  # above malloc's mmap threshold: a freed copy would be unmapped
    words = array.array("I", range(50_000))
    for library in libraries():
        assert library.crc32(data) == zlib.crc32(data)
        assert library.crc32(bytearray(data), 7) == zlib.crc32(data, 7)
        assert library.crc32(memoryview(data)[5:]) == zlib.crc32(data[5:])  # read-only view
        assert library.crc32(memoryview(big)[1:]) == zlib.crc32(big[1:])  # read-only, copied, kept alive
        assert library.crc32(memoryview(bytearray(data))[10:20]) == zlib.crc32(data[10:20])
        assert library.crc32(memoryview(words)) == zlib.crc32(words.tobytes())  # items of 4 bytes: nbytes counts
        assert library.crc32(b"") == 0
        monkeypatch.setattr(module, "MAX_CALL_BYTES", 1000)  # as a > 1 GiB buffer would be cut
        assert library.crc32(data) == zlib.crc32(data)
        monkeypatch.undo()


def test_a_giant_chunk_is_fed_in_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    import resources.soci.ztoc.builder as builder_module

    tar = make_tar(sample_tar_members(22))
    blob = gzip.compress(tar, 6, mtime=0)
    expected = ZtocBuilder(span_size=8 * KIB).build([blob[i : i + 4096] for i in range(0, len(blob), 4096)], OCI_GZIP)
    assert len(blob) > 10 * 10_000
    monkeypatch.setattr(builder_module, "MAX_CALL_BYTES", 10_000)  # stands for zlib's 4 GiB limit
    assert ZtocBuilder(span_size=8 * KIB, chunk_size=3000).build([blob], OCI_GZIP).data == expected.data


def test_stream_layouts_are_checked_by_the_libraries(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ZStream.next_out.offset == ZngStream.next_out.offset
    assert ZStream.data_type.offset == ZngStream.data_type.offset
    assert ZngStream.adler.size == 4 and ZStream.adler.size == 8

    class Wider(ZngStream):
        _fields_ = [("extra", ctypes.c_uint64)]

    import resources.soci.ztoc.zlib_ctypes as module

    libraries()  # the real, cached one is fine
    monkeypatch.setattr(module, "ZngStream", Wider)
    module.zlib_ng.cache_clear()
    try:
        assert module.zlib_ng() is None  # zlib-ng compared sizeof(zng_stream) with ours and said Z_VERSION_ERROR
    finally:
        module.zlib_ng.cache_clear()


def test_choice_by_argument_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    fast, system = libraries()
    assert inflate_library("zlib") is system
    assert inflate_library("zlib-ng") is fast
    monkeypatch.delenv(INFLATE_LIBRARY_ENV, raising=False)
    assert inflate_library() is fast  # auto prefers zlib-ng
    monkeypatch.setenv(INFLATE_LIBRARY_ENV, "zlib")
    assert inflate_library() is system
    assert GzipIndexer(WINDOW).library is system
    monkeypatch.setenv(INFLATE_LIBRARY_ENV, "libdeflate")
    with pytest.raises(ZlibError, match=f"{INFLATE_LIBRARY_ENV}='libdeflate' is not one of auto, zlib-ng, zlib"):
        inflate_library()


def test_auto_falls_back_to_zlib_without_zlib_ng(monkeypatch: pytest.MonkeyPatch) -> None:
    import resources.soci.ztoc.zlib_ctypes as module

    monkeypatch.setattr(module, "zlib_ng", lambda: None)
    monkeypatch.delenv(INFLATE_LIBRARY_ENV, raising=False)
    assert module.inflate_library() is system_zlib()
    with pytest.raises(ZlibError, match="zlib-ng wheel is not installed"):
        module.inflate_library("zlib-ng")


def test_member_scan_agrees_between_libraries_and_names_bad_data(monkeypatch: pytest.MonkeyPatch) -> None:
    from resources.soci.ztoc.members import scan_gzip_members

    blob = streams()["three-members"]
    chunks = [blob[i : i + 4096] for i in range(0, len(blob), 4096)]
    found = {}
    for choice in ("zlib-ng", "zlib"):
        monkeypatch.setenv(INFLATE_LIBRARY_ENV, choice)
        found[choice] = scan_gzip_members(chunks)
        with pytest.raises(GzipFormatError, match="cannot scan the gzip members"):
            scan_gzip_members([b"this is not gzip at all"])
    assert found["zlib-ng"] == found["zlib"] == list(index_with(system_zlib(), blob, 64 * KIB, 4096).member_starts)
    assert len(found["zlib"]) == 2
