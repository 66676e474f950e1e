"""Lazy reads from a layer blob through its zTOC: fetch only the spans a range needs.

This is what a soci-snapshotter node does on a file access: find the span holding the offset,
fetch that span's compressed bytes, check them against the zTOC's span digest, and inflate from
the span's checkpoint (priming the partial byte with ``inflatePrime`` and loading the window as
dictionary). Used to verify a freshly built index against the pushed blob.
"""

from __future__ import annotations

import ctypes
import hashlib
import posixpath
from collections import OrderedDict
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass

from resources.errors import StreamableError
from resources.soci.ztoc.checkpoints import (
    WINDOW_SIZE,
    Checkpoint,
    CheckpointFormatError,
    parse_checkpoints,
    span_compressed_range,
    span_for_offset,
)
from resources.soci.ztoc.gzip_index import TRAILER, GzipFormatError, gzip_header_length
from resources.soci.ztoc.model import CompressionAlgorithm, FileMetadata, Ztoc, ZtocFormatError
from resources.soci.ztoc.tar_zinfo import decode_tar_zinfo, uncompressed_max_span_id
from resources.soci.ztoc.zlib_ctypes import Z_NO_FLUSH, Z_STREAM_END, InflateLibrary, RawInflater, ZlibError

Fetch = Callable[[int, int], bytes]

_OUTPUT_CHUNK = 1 << 18


class LazyReadError(StreamableError):
    """A lazy read failed: bad range, missing entry, short fetch or corrupt data."""


class SpanDigestMismatch(LazyReadError):
    """A fetched span does not hash to the digest the zTOC records for it."""


class CheckpointDecoder:
    """Inflate a gzip blob from a checkpoint onward, across gzip member boundaries.

    Feed compressed bytes starting at the checkpoint's span start (``in - 1`` when ``bits`` is
    non-zero: that first byte supplies the primed bits).
    """

    def __init__(
        self,
        window: bytes | memoryview,
        bits: int,
        output_chunk: int = _OUTPUT_CHUNK,
        library: InflateLibrary | None = None,
    ) -> None:
        if len(window) != WINDOW_SIZE:
            raise ValueError(f"window must be {WINDOW_SIZE} bytes, got {len(window)}")
        if not 0 <= bits <= 7:
            raise ValueError(f"bits must be 0-7, got {bits}")
        self._inflater = RawInflater(library)
        self._window = bytes(window)
        self._bits = bits
        self._primed = bits == 0
        if self._primed:
            self._inflater.set_dictionary(self._window)
        self._out = ctypes.create_string_buffer(output_chunk)
        self._out_addr = ctypes.addressof(self._out)
        self._out_size = output_chunk
        self._in_deflate = True
        self._pending = bytearray()  # trailer + next header bytes between members

    def close(self) -> None:
        """Release zlib state."""
        self._inflater.close()

    def __enter__(self) -> CheckpointDecoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def feed(self, compressed: bytes) -> Iterator[bytes]:
        """Decompress the next compressed bytes, yielding output chunks."""
        data = bytes(compressed)
        if not self._primed and data:
            first = data[0]
            self._inflater.prime(self._bits, first >> (8 - self._bits))
            self._inflater.set_dictionary(self._window)
            self._primed = True
            data = data[1:]
        pos = 0
        while pos < len(data):
            if self._in_deflate:
                pos = yield from self._inflate(data, pos)
            else:
                pos = self._between_members(data, pos)

    def _inflate(self, data: bytes, pos: int) -> Generator[bytes, None, int]:
        """Inflate ``data[pos:]`` until it is used up (and flushed) or the member's stream ends."""
        inflater = self._inflater
        stream = inflater.stream
        inflater.set_input(data, pos)
        while True:
            inflater.set_output(self._out_addr, self._out_size)
            try:
                code = inflater.inflate(Z_NO_FLUSH)
            except ZlibError as exc:
                raise LazyReadError(f"corrupt deflate data while resuming from a checkpoint: {exc}") from exc
            produced = self._out_size - stream.avail_out
            if produced:
                yield ctypes.string_at(self._out_addr, produced)
            if code == Z_STREAM_END:
                self._in_deflate = False
                self._pending.clear()
                return len(data) - stream.avail_in
            if stream.avail_in == 0 and produced < self._out_size:
                return len(data)

    def _between_members(self, data: bytes, pos: int) -> int:
        """Skip the trailer (unverifiable mid-member) and the next member's header."""
        self._pending += data[pos:]
        if len(self._pending) <= TRAILER.size:
            return len(data)
        header = bytearray(self._pending[TRAILER.size :])
        try:
            length = gzip_header_length(header, 0, first_member=False)
        except GzipFormatError as exc:
            raise LazyReadError(f"bad gzip member boundary inside a span: {exc}") from exc
        if length is None:
            return len(data)
        used = TRAILER.size + length
        leftover = len(self._pending) - used
        self._pending.clear()
        self._inflater.reset()
        self._in_deflate = True
        return len(data) - leftover


def decompress_from_checkpoint(
    point: Checkpoint, compressed: Iterable[bytes], skip: int, size: int, library: InflateLibrary | None = None
) -> bytes:
    """Inflate from ``point``: drop ``skip`` output bytes, return the next ``size`` bytes."""
    result = bytearray()
    with CheckpointDecoder(point.window, point.bits, library=library) as decoder:
        for chunk in compressed:
            for out in decoder.feed(chunk):
                if skip >= len(out):
                    skip -= len(out)
                    continue
                result += out[skip : skip + size - len(result)]
                skip = 0
                if len(result) >= size:
                    return bytes(result)
    if len(result) < size:
        raise LazyReadError(f"compressed data ended {size - len(result)} bytes before the requested range")
    return bytes(result)


@dataclass(frozen=True)
class SpanRange:
    """A span's compressed byte range [start, end) in the layer blob and its expected digest."""

    span_id: int
    start: int
    end: int
    digest: str


class LazyLayerReader:
    """Random access to a layer's uncompressed tar stream through its zTOC and a range fetcher."""

    def __init__(
        self,
        ztoc: Ztoc,
        fetch: Fetch,
        layer: str = "layer",
        cached_spans: int = 2,
        library: InflateLibrary | None = None,
    ) -> None:
        self.ztoc = ztoc
        self.layer = layer
        self.library = library
        """The inflate implementation spans are resumed with (None: `inflate_library`'s choice)."""
        self._fetch = fetch
        self.bytes_fetched = 0
        self.spans_fetched = 0
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self.touched: set[int] = set()
        """Span ids read since the caller last cleared this set, cache hits included (what a cold read needs)."""
        self._cache_size = cached_spans
        self._entries_by_name: dict[str, list[int]] | None = None
        info = ztoc.compression
        self._blob_size = ztoc.compressed_archive_size
        self.span_size, self._points, span_count = _span_layout(ztoc, layer)
        if info.max_span_id != span_count - 1:
            raise LazyReadError(
                f"{layer}: zTOC max_span_id {info.max_span_id} but checkpoints describe {span_count} spans"
            )
        if len(info.span_digests) != span_count:
            raise LazyReadError(
                f"{layer}: zTOC has {len(info.span_digests)} span digests for {span_count} spans"
            )
        self._span_count = span_count

    # ----------------------------------------------------------------- public API

    @property
    def algorithm(self) -> CompressionAlgorithm:
        """The layer's compression algorithm as recorded in the zTOC."""
        return self.ztoc.compression.algorithm

    def read_range(self, uncompressed_offset: int, size: int) -> bytes:
        """Bytes [offset, offset+size) of the uncompressed tar stream, fetching only needed spans."""
        limit = self.ztoc.uncompressed_archive_size
        if uncompressed_offset < 0 or size < 0 or uncompressed_offset + size > limit:
            raise LazyReadError(
                f"{self.layer}: range [{uncompressed_offset}, {uncompressed_offset + size}) is outside "
                f"the uncompressed archive (size {limit})"
            )
        if size == 0:
            return b""
        if self.algorithm == CompressionAlgorithm.UNCOMPRESSED:
            return self._read_uncompressed(uncompressed_offset, size)
        end = uncompressed_offset + size
        first = span_for_offset(self._points, uncompressed_offset)
        last = span_for_offset(self._points, end - 1)
        parts = []
        for span_id in range(first, last + 1):
            # Like a node: each span is inflated on its own, from its own checkpoint.
            point = self._points[span_id]
            span_end = self._points[span_id + 1].out_offset if span_id + 1 < len(self._points) else end
            start, stop = max(uncompressed_offset, point.out_offset), min(end, span_end)
            if stop > start:
                data = self.fetch_span(span_id)
                try:
                    parts.append(
                        decompress_from_checkpoint(
                            point, [data], start - point.out_offset, stop - start, self.library
                        )
                    )
                except LazyReadError as exc:
                    raise LazyReadError(f"{self.layer}: span {span_id}: {exc}") from exc
        return b"".join(parts)

    def read_file(self, name: str) -> bytes:
        """The content of a regular file (or of a hard link's target) named as in the TOC."""
        entry = self.entry(name)
        return self.read_entry(entry)

    def read_entry(self, entry: FileMetadata) -> bytes:
        """The content of a TOC entry: regular files directly, hard links via their target."""
        seen: set[str] = set()
        while entry.type == "hardlink":
            if entry.linkname in seen:
                raise LazyReadError(f"{self.layer}: hard link loop at {entry.name!r}")
            seen.add(entry.linkname)
            entry = self._hardlink_target(entry)
        if entry.type != "reg":
            raise LazyReadError(f"{self.layer}: {entry.name!r} is a {entry.type}, not a regular file")
        return self.read_range(entry.uncompressed_offset, entry.uncompressed_size)

    def entry(self, name: str) -> FileMetadata:
        """The last TOC entry with this name (exact, else ignoring a leading ``./`` or ``/``)."""
        index = self._index_of(name)
        if index is None:
            raise LazyReadError(f"{self.layer}: no entry named {name!r} in the zTOC")
        return self.ztoc.entries[index]

    # ----------------------------------------------------------------- spans

    def span(self, span_id: int) -> SpanRange:
        """Compressed range and expected digest of a span."""
        if not 0 <= span_id < self._span_count:
            raise LazyReadError(
                f"{self.layer}: span {span_id} does not exist (max span id {self._span_count - 1})"
            )
        if self.algorithm == CompressionAlgorithm.GZIP:
            start, end = span_compressed_range(self._points, span_id, self._blob_size)
        else:
            start = span_id * self.span_size
            end = min(start + self.span_size, self._blob_size)
        return SpanRange(span_id, start, end, self.ztoc.compression.span_digests[span_id])

    def fetch_span(self, span_id: int) -> bytes:
        """Fetch a span's compressed bytes and check them against the zTOC's span digest."""
        self.touched.add(span_id)
        cached = self._cache.get(span_id)
        if cached is not None:
            self._cache.move_to_end(span_id)
            return cached
        span = self.span(span_id)
        data = self._fetch(span.start, span.end)
        self.bytes_fetched += len(data)
        self.spans_fetched += 1
        if len(data) != span.end - span.start:
            raise LazyReadError(
                f"{self.layer}: span {span_id}: fetching bytes [{span.start}, {span.end}) returned "
                f"{len(data)} bytes"
            )
        actual = "sha256:" + hashlib.sha256(data).hexdigest()
        if actual != span.digest:
            raise SpanDigestMismatch(
                f"{self.layer}: span {span_id} (compressed bytes [{span.start}, {span.end})) has digest "
                f"{actual}, the zTOC records {span.digest}"
            )
        if self._cache_size > 0:
            self._cache[span_id] = data
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return data

    def _read_uncompressed(self, offset: int, size: int) -> bytes:
        first = offset // self.span_size
        last = (offset + size - 1) // self.span_size
        parts = [self.fetch_span(span_id) for span_id in range(first, last + 1)]
        joined = b"".join(parts) if len(parts) > 1 else parts[0]
        start = offset - first * self.span_size
        return joined[start : start + size]

    # ----------------------------------------------------------------- TOC lookups

    def _index_of(self, name: str, before: int | None = None) -> int | None:
        if self._entries_by_name is None:
            self._entries_by_name = {}
            for index, entry in enumerate(self.ztoc.entries):
                self._entries_by_name.setdefault(entry.name, []).append(index)
                normalized = _normalize(entry.name)
                if normalized != entry.name:
                    self._entries_by_name.setdefault(normalized, []).append(index)
        candidates = self._entries_by_name.get(name) or self._entries_by_name.get(_normalize(name)) or []
        if before is not None:
            candidates = [index for index in candidates if index < before]
        return max(candidates) if candidates else None

    def _hardlink_target(self, link: FileMetadata) -> FileMetadata:
        position = next(i for i, e in enumerate(self.ztoc.entries) if e is link)
        index = self._index_of(link.linkname, before=position)
        if index is None:
            raise LazyReadError(
                f"{self.layer}: hard link {link.name!r} points to {link.linkname!r}, "
                "which is not earlier in the layer"
            )
        return self.ztoc.entries[index]


def _span_layout(ztoc: Ztoc, layer: str) -> tuple[int, list[Checkpoint], int]:
    """(span size, gzip checkpoints or [], number of spans) from a zTOC's checkpoints blob."""
    info = ztoc.compression
    try:
        if info.algorithm == CompressionAlgorithm.GZIP:
            span_size, points = parse_checkpoints(info.checkpoints)
            return span_size, points, len(points)
        if info.algorithm != CompressionAlgorithm.UNCOMPRESSED:  # pragma: no cover - model has two
            raise LazyReadError(f"{layer}: unsupported compression algorithm {info.algorithm!r}")
        zinfo = decode_tar_zinfo(info.checkpoints)
    except (CheckpointFormatError, ZtocFormatError) as exc:
        raise LazyReadError(f"{layer}: unreadable checkpoints in the zTOC: {exc}") from exc
    if zinfo.size != ztoc.compressed_archive_size:
        raise LazyReadError(
            f"{layer}: TarZinfo size {zinfo.size} differs from the zTOC's archive size "
            f"{ztoc.compressed_archive_size}"
        )
    return zinfo.span_size, [], uncompressed_max_span_id(zinfo.size, zinfo.span_size) + 1


def _normalize(name: str) -> str:
    """A tar name without leading ``./`` or ``/`` and without a trailing ``/``."""
    cleaned = posixpath.normpath("/" + name).lstrip("/")
    return cleaned or "."
