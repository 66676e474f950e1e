"""Streaming gzip checkpoint indexer: places SOCI checkpoints and span digests in one pass.

Placement follows soci-snapshotter's zlib code (zran.c lineage, spec section 7): raw inflate with
``Z_BLOCK``; at a block boundary that is not inside/after the last block, add a point when the
output count is still 0 or has grown by more than ``span_size`` since the last point. Point 0 sits
right after the first member's gzip header. Later members reset the inflater; the end of their
header is a boundary too (as in zran.c, which resets a gzip inflater per member), with the spacing
count carried over.

Strictness (what Go's compress/gzip, used by containerd and soci's TOC builder, also rejects):
every member's CRC32 and ISIZE are checked, a truncated member is an error, and any bytes after a
complete member that are not another gzip member are an error -- including zero padding (Go's
reader fails with "gzip: invalid header" on it, so such a layer would not unpack on a node).
"""

from __future__ import annotations

import ctypes
import hashlib
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from resources.soci.ztoc.checkpoints import (
    BLOB_HEADER,
    RECORD_HEADER,
    RECORD_SIZE,
    WINDOW_SIZE,
    Checkpoint,
    parse_checkpoints,
)
from resources.soci.ztoc.zlib_ctypes import (
    DATA_TYPE_BLOCK_BOUNDARY,
    DATA_TYPE_LAST_BLOCK,
    DATA_TYPE_UNUSED_BITS_MASK,
    Z_BLOCK,
    Z_STREAM_END,
    RawInflater,
    ZlibError,
    bytes_address,
)

__all__ = [
    "Checkpoint",
    "GzipFormatError",
    "GzipIndex",
    "GzipIndexer",
    "parse_checkpoints",
]

GZIP_MAGIC = b"\x1f\x8b"
GZIP_CM_DEFLATE = 8
FLAG_HCRC = 0x02
FLAG_EXTRA = 0x04
FLAG_NAME = 0x08
FLAG_COMMENT = 0x10
FLAG_RESERVED = 0xE0
TRAILER = struct.Struct("<II")  # CRC32, ISIZE
MAX_HEADER_BYTES = 1 << 20
DEFAULT_OUTPUT_CHUNK = 1 << 20

_HEADER, _DEFLATE, _TRAILER, _MEMBER_END = range(4)


class GzipFormatError(ValueError):
    """The blob is not a valid (multi-member) gzip stream; ``offset`` is the compressed offset."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(f"{message} (at compressed offset {offset})")
        self.offset = offset


@dataclass(frozen=True)
class GzipIndex:
    """Result of indexing: the serialized checkpoint blob plus the numbers a zTOC needs."""

    checkpoints: bytes
    span_digests: list[str]
    max_span_id: int
    compressed_size: int
    uncompressed_size: int
    span_size: int

    def points(self) -> list[Checkpoint]:
        """The parsed checkpoints (windows are views into ``checkpoints``)."""
        return parse_checkpoints(self.checkpoints)[1]


def _gzip_header_length(buf: bytearray, offset: int, first_member: bool) -> int | None:
    """Length of the gzip member header at the start of ``buf``; None if more bytes are needed."""
    have = len(buf)
    for i, magic in enumerate(GZIP_MAGIC[: min(have, 2)]):
        if buf[i] != magic:
            if first_member:
                raise GzipFormatError("not a gzip stream (bad magic bytes)", offset)
            what = "trailing zero padding" if not any(buf) else "trailing bytes that are not a gzip member"
            raise GzipFormatError(f"{what} after the last gzip member", offset)
    if have < 10:
        return None
    if buf[2] != GZIP_CM_DEFLATE:
        raise GzipFormatError(f"unsupported gzip compression method {buf[2]}", offset + 2)
    flags = buf[3]
    if flags & FLAG_RESERVED:
        raise GzipFormatError(f"gzip header has reserved flag bits set (flags=0x{flags:02x})", offset + 3)
    pos = 10
    if flags & FLAG_EXTRA:
        if have < pos + 2:
            return None
        pos += 2 + (buf[pos] | buf[pos + 1] << 8)
        if have < pos:
            return None
    for flag in (FLAG_NAME, FLAG_COMMENT):
        if flags & flag:
            nul = buf.find(0, pos)
            if nul < 0:
                return None
            pos = nul + 1
    if flags & FLAG_HCRC:
        if have < pos + 2:
            return None
        expected = buf[pos] | buf[pos + 1] << 8
        actual = zlib.crc32(memoryview(buf)[:pos]) & 0xFFFF
        if expected != actual:
            raise GzipFormatError(
                f"gzip header CRC16 mismatch (stored 0x{expected:04x}, computed 0x{actual:04x})", offset + pos
            )
        pos += 2
    return pos


class GzipIndexer:
    """Push-style gzip indexer: ``feed`` compressed chunks, consume the yielded output, then ``finish``.

    The memoryviews ``feed`` yields point into a reused buffer: use each one before asking for the
    next (and fully iterate every ``feed`` call before the next one, or the blob is not processed).
    """

    def __init__(self, span_size: int, output_chunk: int = DEFAULT_OUTPUT_CHUNK) -> None:
        if span_size <= 0:
            raise ValueError(f"span size must be positive, got {span_size}")
        if output_chunk < WINDOW_SIZE:
            raise ValueError(f"output chunk must be at least {WINDOW_SIZE} bytes")
        self.span_size = span_size
        self._inflater = RawInflater()
        # Output ring: the first WINDOW_SIZE bytes always hold the history before the write position
        # (zeros at the very start, which is exactly the zero-padded window of early points).
        self._out = bytearray(WINDOW_SIZE + output_chunk)
        self._out_ctypes = (ctypes.c_char * len(self._out)).from_buffer(self._out)
        self._out_addr = ctypes.addressof(self._out_ctypes)
        self._out_view = memoryview(self._out)
        self._out_pos = WINDOW_SIZE
        self._emit_from = WINDOW_SIZE
        self._inflater.set_output(self._out_addr + WINDOW_SIZE, output_chunk)

        self._state = _HEADER
        self._pending = bytearray()
        self._members = 0
        self._member_start = 0
        self._member_crc = 0
        self._member_size = 0
        self._total_in = 0
        self._total_out = 0
        self._fed = 0
        self._finished = False

        self._records = bytearray()
        self._count = 0
        self._last_out = 0

        self._chunk: bytes = b""
        self._chunk_base = 0
        self._last_byte = 0
        self._span_hash: hashlib._Hash | None = None
        self._hashed_to = 0
        self._digests: list[str] = []

    # ----------------------------------------------------------------- public API

    def feed(self, compressed: bytes | bytearray | memoryview) -> Iterator[memoryview]:
        """Process the next compressed chunk, yielding the uncompressed bytes it produces."""
        if self._finished:
            raise RuntimeError("GzipIndexer.feed called after finish")
        data = compressed if isinstance(compressed, bytes) else bytes(compressed)
        size = len(data)
        if not size:
            return
        self._chunk = data
        self._chunk_base = self._fed
        self._fed += size
        pos = 0
        while pos < size:
            state = self._state
            if state == _DEFLATE:
                pos = yield from self._inflate(data, pos)
            elif state == _HEADER:
                pos = self._take_header(data, pos)
            elif state == _TRAILER:
                pos = yield from self._take_trailer(data, pos)
            else:  # _MEMBER_END: more bytes follow a complete member, so a new member starts here
                self._state = _HEADER
                self._member_start = self._chunk_base + pos
        if self._out_pos > self._emit_from:
            yield from self._emit()
        self._hash_to(self._chunk_base + size)
        self._last_byte = data[-1]
        self._chunk = b""

    def finish(self) -> GzipIndex:
        """Check the stream ended cleanly after a whole member and return the index."""
        if self._finished:
            raise RuntimeError("GzipIndexer.finish called twice")
        self._finished = True
        try:
            if self._state != _MEMBER_END:
                if self._members == 0 and self._fed == 0:
                    raise GzipFormatError("empty blob is not a gzip stream", 0)
                where = {_HEADER: "member header", _DEFLATE: "deflate data", _TRAILER: "member trailer"}
                raise GzipFormatError(
                    f"truncated gzip stream: the blob ends inside a {where[self._state]}", self._fed
                )
            assert self._span_hash is not None
            self._digests.append("sha256:" + self._span_hash.hexdigest())
            blob = BLOB_HEADER.pack(self._count, self.span_size) + bytes(self._records)
            self._records = bytearray()
            return GzipIndex(
                checkpoints=blob,
                span_digests=self._digests,
                max_span_id=self._count - 1,
                compressed_size=self._fed,
                uncompressed_size=self._total_out,
                span_size=self.span_size,
            )
        finally:
            self.close()

    def close(self) -> None:
        """Release zlib state (finish does this too)."""
        self._inflater.close()

    def __enter__(self) -> GzipIndexer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def compressed_offset(self) -> int:
        """Compressed bytes fed so far."""
        return self._fed

    @property
    def uncompressed_offset(self) -> int:
        """Uncompressed bytes produced so far."""
        return self._total_out

    # ----------------------------------------------------------------- gzip framing

    def _take_header(self, data: bytes, pos: int) -> int:
        """Accumulate and parse a member header; returns the new position in ``data``."""
        pending = self._pending
        pending += memoryview(data)[pos:]
        length = _gzip_header_length(pending, self._member_start, self._members == 0)
        if length is None:
            if len(pending) > MAX_HEADER_BYTES:
                raise GzipFormatError(f"gzip header longer than {MAX_HEADER_BYTES} bytes", self._member_start)
            return len(data)
        leftover = len(pending) - length
        pending.clear()
        header_end = self._member_start + length
        self._total_in = header_end
        if self._members:
            self._inflater.reset()
        self._members += 1
        self._member_crc = 0
        self._member_size = 0
        self._state = _DEFLATE
        self._boundary(header_end, 0)
        return len(data) - leftover

    def _take_trailer(self, data: bytes, pos: int) -> Iterator[memoryview]:
        """Accumulate the 8-byte trailer and check CRC32/ISIZE of the member just inflated."""
        pending = self._pending
        take = min(TRAILER.size - len(pending), len(data) - pos)
        pending += data[pos : pos + take]
        pos += take
        if len(pending) < TRAILER.size:
            return pos
        trailer_offset = self._chunk_base + pos - TRAILER.size
        if self._out_pos > self._emit_from:
            yield from self._emit()  # the CRC covers output only once it is emitted
        crc, isize = TRAILER.unpack(pending)
        pending.clear()
        if crc != self._member_crc:
            raise GzipFormatError(
                f"gzip member CRC32 mismatch (stored 0x{crc:08x}, computed 0x{self._member_crc:08x})",
                trailer_offset,
            )
        if isize != self._member_size & 0xFFFFFFFF:
            raise GzipFormatError(
                f"gzip member size mismatch (ISIZE {isize}, inflated {self._member_size} bytes)",
                trailer_offset + 4,
            )
        self._total_in = self._chunk_base + pos
        self._state = _MEMBER_END
        return pos

    # ----------------------------------------------------------------- inflate

    def _inflate(self, data: bytes, pos: int) -> Iterator[memoryview]:
        """Inflate from ``data[pos:]`` until it is used up or the member's deflate stream ends."""
        inflater = self._inflater
        stream = inflater.stream
        inflater.set_input(data, bytes_address(data) + pos)
        stream.avail_in = len(data) - pos
        out_capacity = len(self._out)
        span = self.span_size
        while True:
            if stream.avail_out == 0:
                yield from self._emit()
                self._slide()
            avail_in = stream.avail_in
            avail_out = stream.avail_out
            try:
                code = inflater.inflate(Z_BLOCK)
            except ZlibError as exc:
                consumed = avail_in - stream.avail_in
                raise GzipFormatError(
                    f"corrupt deflate data in gzip member {self._members}: {exc}",
                    self._total_in + consumed,
                ) from exc
            self._total_in += avail_in - stream.avail_in
            produced = avail_out - stream.avail_out
            self._total_out += produced
            self._out_pos += produced
            if code == Z_STREAM_END:
                self._state = _TRAILER
                return len(data) - stream.avail_in
            data_type = stream.data_type
            if data_type & DATA_TYPE_BLOCK_BOUNDARY and not data_type & DATA_TYPE_LAST_BLOCK:
                out = self._total_out
                if out == 0 or out - self._last_out > span:
                    self._boundary(self._total_in, data_type & DATA_TYPE_UNUSED_BITS_MASK)
            if stream.avail_in == 0:
                return len(data)
            if produced == 0 and avail_in == stream.avail_in and stream.avail_out:
                raise GzipFormatError("inflate made no progress", self._total_in)  # pragma: no cover
            assert self._out_pos <= out_capacity

    def _emit(self) -> Iterator[memoryview]:
        """Yield pending output and fold it into the member CRC and size."""
        view = self._out_view[self._emit_from : self._out_pos]
        self._emit_from = self._out_pos
        self._member_crc = zlib.crc32(view, self._member_crc)
        self._member_size += len(view)
        yield view

    def _slide(self) -> None:
        """Keep the last window of output at the front of the buffer and write after it."""
        ctypes.memmove(self._out_addr, self._out_addr + self._out_pos - WINDOW_SIZE, WINDOW_SIZE)
        self._out_pos = self._emit_from = WINDOW_SIZE
        self._inflater.set_output(self._out_addr + WINDOW_SIZE, len(self._out) - WINDOW_SIZE)

    # ----------------------------------------------------------------- points and span digests

    def _boundary(self, in_offset: int, bits: int) -> None:
        """At a resumable boundary: add a point if spacing says so, and start a new span."""
        out = self._total_out
        if self._count and not (out == 0 or out - self._last_out > self.span_size):
            return
        window = self._out_view[self._out_pos - WINDOW_SIZE : self._out_pos]
        self._records += RECORD_HEADER.pack(in_offset, out, bits)
        self._records += window
        self._count += 1
        self._last_out = out
        if self._span_hash is not None:
            self._hash_to(in_offset)
            self._digests.append("sha256:" + self._span_hash.hexdigest())
        self._span_hash = hashlib.sha256()
        if bits:
            previous = in_offset - 1
            if previous >= self._chunk_base:
                self._span_hash.update(self._chunk[previous - self._chunk_base : previous - self._chunk_base + 1])
            else:
                self._span_hash.update(bytes((self._last_byte,)))
        self._hashed_to = in_offset

    def _hash_to(self, end: int) -> None:
        """Add compressed bytes [hashed_to, end) of the current chunk to the current span digest."""
        if self._span_hash is None or end <= self._hashed_to:
            return
        start = self._hashed_to - self._chunk_base
        assert start >= 0, "span hashing fell behind the current chunk"
        self._span_hash.update(memoryview(self._chunk)[start : end - self._chunk_base])
        self._hashed_to = end


def index_gzip(chunks: Iterator[bytes] | list[bytes], span_size: int) -> GzipIndex:
    """Index a whole gzip blob given as chunks, discarding the uncompressed output."""
    indexer = GzipIndexer(span_size)
    for chunk in chunks:
        for _ in indexer.feed(chunk):
            pass
    return indexer.finish()


RECORD_BYTES = RECORD_SIZE
