"""gzip member boundaries of a layer, and which spans of its zTOC cross them.

A span crosses a boundary when it starts (its checkpoint) in one member and its uncompressed
range reaches into a later member: inflating it from its checkpoint must go past the member's
trailer and the next header, which soci-snapshotter's zinfo code does only since v0.14 (upstream
ztoc/compression/gzip_zinfo.c `extract_data_from_buffer`, "Handle concatenated gzip member
boundary"). A span whose checkpoint sits right after a later member's header does not cross.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Iterable, Sequence
from types import ModuleType

from resources.soci.ztoc.checkpoints import (
    Checkpoint,
    parse_checkpoints,
    span_compressed_range,
)
from resources.soci.ztoc.gzip_index import TRAILER, GzipFormatError
from resources.soci.ztoc.model import CompressionAlgorithm, Ztoc
from resources.soci.ztoc.zlib_ctypes import (
    Z_NO_FLUSH,
    Z_STREAM_END,
    RawInflater,
    ZlibError,
    zlib_module,
)

MemberStart = tuple[int, int]
"""(compressed offset of a member's header, uncompressed offset of its first byte)."""


def crossing_spans(ztoc: Ztoc, member_starts: Sequence[MemberStart]) -> list[int]:
    """Span ids of a gzip zTOC whose range crosses one of `member_starts` (members after the first)."""
    if ztoc.compression.algorithm != CompressionAlgorithm.GZIP or not member_starts:
        return []
    _, points = parse_checkpoints(ztoc.compression.checkpoints)
    crossing: list[int] = []
    for span_id, point in enumerate(points):
        end_out = points[span_id + 1].out_offset if span_id + 1 < len(points) else ztoc.uncompressed_archive_size
        if any(point.in_offset < header and end_out > out for header, out in member_starts):
            crossing.append(span_id)
    return crossing


def scan_gzip_members(chunks: Iterable[bytes]) -> list[MemberStart]:
    """Member starts (after the first) of a gzip blob, by inflating it once and keeping nothing.

    Used for a reused zTOC, whose builder's member list is not at hand. Inflates on the zTOC
    builder's library (zlib-ng when installed); raises GzipFormatError on data that is not gzip.
    """
    module = zlib_module()
    try:
        return _member_starts(chunks, module)
    except module.error as exc:
        raise GzipFormatError(f"cannot scan the gzip members: {exc}", 0) from exc


def _member_starts(chunks: Iterable[bytes], module: ModuleType) -> list[MemberStart]:
    """The scan itself; ``module`` is zlib or zlib_ng.zlib_ng."""
    starts: list[MemberStart] = []
    inflater = module.decompressobj(wbits=31)
    consumed = 0  # compressed bytes of the members before the current one
    fed = 0  # compressed bytes given to the current member's inflater
    out = 0
    member_ended = False
    for chunk in chunks:
        data = bytes(chunk)
        while data:
            if member_ended:
                starts.append((consumed, out))
                inflater = module.decompressobj(wbits=31)
                member_ended = False
            out += len(inflater.decompress(data))
            if not inflater.eof:
                fed += len(data)
                break
            consumed += fed + len(data) - len(inflater.unused_data)
            fed = 0
            data = inflater.unused_data
            member_ended = True
    return starts


def proves_single_member(ztoc: Ztoc, fetch: Callable[[int, int], bytes]) -> bool:
    """True when two span fetches prove the layer is one gzip member (so no span can cross a boundary).

    The proof: (a) inflating span 0 from checkpoint 0 (inside the first member) yields output before
    any member end, so the first member is not empty; (b) inflating the last span from its checkpoint
    ends its deflate stream exactly 8 bytes (the trailer) before the blob's end, which gives the total
    output D; (c) D < 4 GiB and the trailer's ISIZE equals D, so the last member produced all D bytes
    and every earlier member none. With (a), the first member is the last. False means "not proven":
    scan the layer (`scan_gzip_members`).
    """
    if ztoc.compression.algorithm != CompressionAlgorithm.GZIP:
        return True
    _, points = parse_checkpoints(ztoc.compression.checkpoints)
    size = ztoc.compressed_archive_size
    start, end = span_compressed_range(points, 0, size)
    produced, _ = _inflate_span(points[0], fetch(start, end), stop_after_output=True)
    if produced == 0:
        return False
    last = len(points) - 1
    start, end = span_compressed_range(points, last, size)
    if end != size:
        return False
    data = fetch(start, end)
    produced, left = _inflate_span(points[last], data, stop_after_output=False)
    if left != TRAILER.size:
        return False
    total = points[last].out_offset + produced
    return total < 1 << 32 and int.from_bytes(data[-4:], "little") == total


def _inflate_span(point: Checkpoint, data: bytes, *, stop_after_output: bool) -> tuple[int, int | None]:
    """Raw-inflate a span's compressed bytes from its checkpoint: (output, input left at the stream's end or None)."""
    out = ctypes.create_string_buffer(1 << 18)
    with RawInflater() as inflater:
        pos = 0
        if point.bits:
            inflater.prime(point.bits, data[0] >> (8 - point.bits))
            pos = 1
        inflater.set_dictionary(bytes(point.window))
        inflater.set_input(data, pos)
        produced = 0
        while True:
            inflater.set_output(ctypes.addressof(out), len(out))
            try:
                code = inflater.inflate(Z_NO_FLUSH)
            except ZlibError:
                return produced, None
            produced += len(out) - inflater.stream.avail_out
            if code == Z_STREAM_END:
                return produced, inflater.stream.avail_in
            if (stop_after_output and produced) or (inflater.stream.avail_in == 0 and inflater.stream.avail_out > 0):
                return produced, None
