"""Streaming gzip checkpoint indexer: places SOCI checkpoints and span digests in one pass.

Placement follows soci-snapshotter's zlib code (zran.c lineage, docs/soci-format.md section 7): raw inflate with
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
import struct
import zlib
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass

from resources.errors import StreamableError
from resources.soci.ztoc.checkpoints import (
    BLOB_HEADER,
    RECORD_HEADER,
    WINDOW_SIZE,
    Checkpoint,
    parse_checkpoints,
)
from resources.soci.ztoc.span_digests import Cut, OrderedWorker, SpanDigester
from resources.soci.ztoc.zlib_ctypes import (
    DATA_TYPE_BLOCK_BOUNDARY,
    DATA_TYPE_LAST_BLOCK,
    DATA_TYPE_UNUSED_BITS_MASK,
    Z_BLOCK,
    Z_NO_FLUSH,
    Z_STREAM_END,
    InflateLibrary,
    RawInflater,
    ZlibError,
    inflate_library,
)

__all__ = [
    "Checkpoint",
    "GzipFormatError",
    "GzipIndex",
    "GzipIndexer",
    "gzip_header_length",
    "index_gzip",
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
OUTPUT_BUFFERS = 3

_HEADER, _DEFLATE, _TRAILER, _MEMBER_END = range(4)


class GzipFormatError(StreamableError, ValueError):
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
    blob_digest: str | None = None
    member_starts: tuple[tuple[int, int], ...] = ()
    """(compressed offset of the header, uncompressed offset) of every gzip member after the first."""

    def points(self) -> list[Checkpoint]:
        """The parsed checkpoints (windows are views into ``checkpoints``)."""
        return parse_checkpoints(self.checkpoints)[1]


def gzip_header_length(buf: bytearray, offset: int, first_member: bool) -> int | None:
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


class _MemberCheck:
    """CRC32 and size of the current member's output, checked against its trailer."""

    def __init__(self, library: InflateLibrary) -> None:
        self._crc32_at = library.crc32_at
        self.crc = 0
        self.size = 0

    def update(self, address: int, length: int) -> None:
        """Add ``length`` output bytes at ``address`` (held unchanged until this ran)."""
        self.crc = self._crc32_at(self.crc, address, length)
        self.size += length

    def check_trailer(self, crc: int, isize: int, trailer_offset: int) -> None:
        """Compare with the member trailer, then start counting the next member."""
        computed, size = self.crc, self.size
        self.crc = self.size = 0
        if crc != computed:
            raise GzipFormatError(
                f"gzip member CRC32 mismatch (stored 0x{crc:08x}, computed 0x{computed:08x})", trailer_offset
            )
        if isize != size & 0xFFFFFFFF:
            raise GzipFormatError(
                f"gzip member size mismatch (ISIZE {isize}, inflated {size} bytes)", trailer_offset + 4
            )


class _OutputBuffer:
    """One inflate output buffer: WINDOW_SIZE bytes of history, then room for new output."""

    def __init__(self, size: int) -> None:
        self.data = bytearray(size)
        self._ctypes = (ctypes.c_char * size).from_buffer(self.data)
        self.address = ctypes.addressof(self._ctypes)
        self.view = memoryview(self.data)
        self.busy: int | None = None  # ticket of the last worker call that reads this buffer


class GzipIndexer:
    """Push-style gzip indexer: ``feed`` compressed chunks, consume the yielded output, then ``finish``.

    The memoryviews ``feed`` yields point into reused buffers: use each one before asking for the
    next (and fully iterate every ``feed`` call before the next one, or the blob is not processed).
    ``blob_digest`` also hashes the whole blob. ``digest_in_thread`` moves sha256 and CRC32 work to
    a worker thread (both release the GIL, so they overlap with inflate on another core).
    With ``output_sink``, ``feed`` yields nothing: the output goes to ``output_sink`` instead, in
    order, on the worker thread when there is one (its exceptions surface from ``feed``/``finish``);
    the Python work of the sink then overlaps with inflate, which runs without the GIL.
    ``inline_when``: see `OrderedWorker` (parallel builds on busy cores run their digests inline).
    """

    def __init__(
        self,
        span_size: int,
        output_chunk: int = DEFAULT_OUTPUT_CHUNK,
        *,
        blob_digest: bool = False,
        digest_in_thread: bool = False,
        output_sink: Callable[[memoryview], None] | None = None,
        library: InflateLibrary | None = None,
        inline_when: Callable[[], bool] | None = None,
    ) -> None:
        if span_size <= 0:
            raise ValueError(f"span size must be positive, got {span_size}")
        if output_chunk < WINDOW_SIZE:
            raise ValueError(f"output chunk must be at least {WINDOW_SIZE} bytes")
        self.span_size = span_size
        self._output_sink = output_sink
        self.library = library or inflate_library()
        self._inflater = RawInflater(self.library)
        self._worker = OrderedWorker(threaded=digest_in_thread, inline_when=inline_when)
        self._digester = SpanDigester(whole_blob=blob_digest)
        self._member_check = _MemberCheck(self.library)
        # Output goes to a ring of buffers so the worker can CRC one while inflate fills the next.
        # Each buffer starts with the WINDOW_SIZE bytes before its first new byte (zeros at the very
        # start of the stream, which is exactly the zero-padded window of early points).
        ring = OUTPUT_BUFFERS if digest_in_thread else 1
        self._buffers = [_OutputBuffer(WINDOW_SIZE + output_chunk) for _ in range(ring)]
        self._current = 0
        self._buf = self._buffers[0]
        self._out_pos = WINDOW_SIZE  # next write position in the current buffer
        self._emit_from = WINDOW_SIZE  # start of output not yet yielded
        self._crc_from = WINDOW_SIZE  # start of output not yet handed to the member CRC

        self._state = _HEADER
        self._pending = bytearray()
        self._members = 0
        self._member_start = 0
        self._member_starts: list[tuple[int, int]] = []
        self._total_in = 0
        self._total_out = 0
        self._fed = 0
        self._finished = False

        self._records = bytearray()
        self._count = 0
        self._last_out = 0

        self._chunk_base = 0
        self._cuts: list[Cut] = []

    # ----------------------------------------------------------------- public API

    def feed(self, compressed: bytes | bytearray | memoryview) -> Iterator[memoryview]:
        """Process the next compressed chunk, yielding the uncompressed bytes it produces."""
        if self._finished:
            raise RuntimeError("GzipIndexer.feed called after finish")
        data = compressed if isinstance(compressed, bytes) else bytes(compressed)
        size = len(data)
        if not size:
            return
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
                pos = self._take_trailer(data, pos)
            else:  # _MEMBER_END: more bytes follow a complete member, so a new member starts here
                self._state = _HEADER
                self._member_start = self._chunk_base + pos
        if self._out_pos > self._emit_from:
            yield from self._emit()
        self._worker.submit(self._digester.update, data, self._cuts)
        self._cuts = []

    def finish(self) -> GzipIndex:
        """Check the stream ended cleanly after a whole member and return the index."""
        if self._finished:
            raise RuntimeError("GzipIndexer.finish called twice")
        self._finished = True
        try:
            self._worker.drain()  # a CRC mismatch found by the worker is reported first
            if self._state != _MEMBER_END:
                if self._members == 0 and self._fed == 0:
                    raise GzipFormatError("empty blob is not a gzip stream", 0)
                where = {_HEADER: "member header", _DEFLATE: "deflate data", _TRAILER: "member trailer"}
                raise GzipFormatError(
                    f"truncated gzip stream: the blob ends inside a {where[self._state]}", self._fed
                )
            digests, blob_digest = self._digester.finish()
            blob = BLOB_HEADER.pack(self._count, self.span_size) + bytes(self._records)
            self._records = bytearray()
            return GzipIndex(
                checkpoints=blob,
                span_digests=digests,
                max_span_id=self._count - 1,
                compressed_size=self._fed,
                uncompressed_size=self._total_out,
                span_size=self.span_size,
                blob_digest=blob_digest,
                member_starts=tuple(self._member_starts),
            )
        finally:
            self.close()

    def close(self) -> None:
        """Release zlib state and the worker thread (finish does this too)."""
        self._worker.close()
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
        length = gzip_header_length(pending, self._member_start, self._members == 0)
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
            self._member_starts.append((self._member_start, self._total_out))
        self._members += 1
        self._state = _DEFLATE
        self._boundary(header_end, 0)
        return len(data) - leftover

    def _take_trailer(self, data: bytes, pos: int) -> int:
        """Accumulate the 8-byte trailer and have CRC32/ISIZE of the member checked (in order)."""
        pending = self._pending
        take = min(TRAILER.size - len(pending), len(data) - pos)
        pending += data[pos : pos + take]
        pos += take
        if len(pending) < TRAILER.size:
            return pos
        crc, isize = TRAILER.unpack(pending)
        pending.clear()
        self._hand_to_crc()
        self._worker.submit(
            self._member_check.check_trailer, crc, isize, self._chunk_base + pos - TRAILER.size
        )
        self._total_in = self._chunk_base + pos
        self._state = _MEMBER_END
        return pos

    # ----------------------------------------------------------------- inflate

    def _inflate(self, data: bytes, pos: int) -> Generator[memoryview, None, int]:
        """Inflate from ``data[pos:]`` until it is used up or the member's deflate stream ends.

        Boundaries matter only once the output has grown by more than a span since the last point
        (or while there is no output yet), so up to that point inflate runs with Z_NO_FLUSH in
        large calls, and with Z_BLOCK after it. A boundary hidden inside a Z_NO_FLUSH call lies at
        or before last_out + span, where no point may go.
        """
        inflater = self._inflater
        stream = inflater.stream
        inflater.set_input(data, pos)
        span = self.span_size
        while True:
            room = len(self._buf.data) - self._out_pos
            if room == 0:
                yield from self._next_buffer()
                room = len(self._buf.data) - self._out_pos
            out = self._total_out
            gap = self._last_out + span - out
            if out and gap > 0:
                flush = Z_NO_FLUSH
                limit = min(room, gap)
            else:
                flush = Z_BLOCK
                limit = room
            stream.next_out = self._buf.address + self._out_pos
            stream.avail_out = limit
            avail_in = stream.avail_in
            try:
                code = inflater.inflate(flush)
            except ZlibError as exc:
                raise GzipFormatError(
                    f"corrupt deflate data in gzip member {self._members}: {exc}",
                    self._total_in + avail_in - stream.avail_in,
                ) from exc
            self._total_in += avail_in - stream.avail_in
            produced = limit - stream.avail_out
            self._total_out = out + produced
            self._out_pos += produced
            if code == Z_STREAM_END:
                self._state = _TRAILER
                return len(data) - stream.avail_in
            if flush == Z_BLOCK:
                data_type = stream.data_type
                if data_type & DATA_TYPE_BLOCK_BOUNDARY and not data_type & DATA_TYPE_LAST_BLOCK:
                    self._boundary(self._total_in, data_type & DATA_TYPE_UNUSED_BITS_MASK)
            if stream.avail_in == 0:
                return len(data)
            if produced == 0 and avail_in == stream.avail_in:
                raise GzipFormatError("inflate made no progress", self._total_in)  # pragma: no cover

    def _emit(self) -> Iterator[memoryview]:
        """Yield the output produced since the last emit (or queue it for the output sink)."""
        view = self._buf.view[self._emit_from : self._out_pos]
        self._emit_from = self._out_pos
        if self._output_sink is None:
            yield view
        else:
            self._buf.busy = self._worker.submit(self._output_sink, view)

    def _hand_to_crc(self) -> None:
        """Queue the not yet checksummed output of the current buffer for the member CRC."""
        if self._out_pos > self._crc_from:
            buffer = self._buf
            buffer.busy = self._worker.submit(
                self._member_check.update, buffer.address + self._crc_from, self._out_pos - self._crc_from
            )
            self._crc_from = self._out_pos

    def _next_buffer(self) -> Iterator[memoryview]:
        """The current buffer is full: yield and checksum it, continue in the next one of the ring."""
        if self._out_pos > self._emit_from:
            yield from self._emit()
        self._hand_to_crc()
        old = self._buf
        self._current = (self._current + 1) % len(self._buffers)
        new = self._buffers[self._current]
        if new is not old:
            self._worker.wait(new.busy)
        new.busy = None
        ctypes.memmove(new.address, old.address + self._out_pos - WINDOW_SIZE, WINDOW_SIZE)
        self._buf = new
        self._out_pos = self._emit_from = self._crc_from = WINDOW_SIZE

    # ----------------------------------------------------------------- points

    def _boundary(self, in_offset: int, bits: int) -> None:
        """At a resumable boundary: add a point if spacing says so (which also starts a span)."""
        out = self._total_out
        if self._count and not (out == 0 or out - self._last_out > self.span_size):
            return
        self._records += RECORD_HEADER.pack(in_offset, out, bits)
        self._records += self._buf.view[self._out_pos - WINDOW_SIZE : self._out_pos]
        self._count += 1
        self._last_out = out
        self._cuts.append((in_offset, bits))


def index_gzip(
    chunks: Iterator[bytes] | list[bytes], span_size: int, library: InflateLibrary | None = None
) -> GzipIndex:
    """Index a whole gzip blob given as chunks, discarding the uncompressed output."""
    indexer = GzipIndexer(span_size, library=library)
    for chunk in chunks:
        for _ in indexer.feed(chunk):
            pass
    return indexer.finish()
