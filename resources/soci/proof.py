"""Complete proof of one indexed layer against its zTOC, in a single streamed pass over the layer blob.

The layer is read once from the registry. On the way through, every span's compressed bytes are hashed
and compared with the zTOC's span digests; the stream is inflated with Python's zlib (not our ztoc/
code, and not zlib-ng, on which zTOCs are built; checkpoint resumes run on the system zlib too, as on a
node), and the tar stream is parsed with Python's `tarfile` (an independent parser, not
resources/soci/ztoc/toc.py; its random-access mode over the forward-only stream, which skips file data
without copying it, as its stream mode cannot): each member is compared, in order, field by field with the zTOC's TOC.
At every gzip checkpoint, a few KiB inflated from the checkpoint's window are compared with the stream
at the checkpoint's offset. The archive sizes must be exact. The first difference raises ProofFailure
naming the layer, the entry, the field, the zTOC's value and the layer's value.

How tarfile's view maps to soci's Go `archive/tar` view (the zTOC fields):
- directory names: tarfile strips the trailing '/', Go keeps it: compared without it;
- type: REGTYPE/AREGTYPE reg, LNKTYPE hardlink, SYMTYPE symlink, CHRTYPE char, BLKTYPE block,
  DIRTYPE dir, FIFOTYPE fifo; anything else (contiguous '7', GNU sparse) is a difference (soci rejects it);
- uncompressed_offset is `offset_data` (after the member's own header, PAX/GNU headers before it);
  uncompressed_size is the header (or PAX) size, also for header-only types;
- uid/gid as uint32; mod_time is the PAX `mtime` record (exact, nanoseconds) or the header's seconds,
  written as Go's `time.Time.MarshalText` in UTC;
- xattrs are all the PAX records of the member (Go's `PAXRecords`), sorted bytewise by key;
- uncompressed_archive_size is where Go's reader stops: after the two zero blocks (or the end of the stream).
"""

from __future__ import annotations

import hashlib
import posixpath
import tarfile
import zlib
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from resources.errors import StreamableError
from resources.oci import media_types as mt
from resources.soci.node_rules import SpanLayout
from resources.soci.ztoc.lazy import CheckpointDecoder, LazyReadError
from resources.soci.ztoc.model import FileMetadata, Ztoc, raw_bytes
from resources.soci.ztoc.zlib_ctypes import system_zlib

COMPARE_BYTES = 4096
"""Bytes compared at each checkpoint."""
CAPTURE_COMPRESSED = 16384
"""Compressed bytes kept from each checkpoint's span start to resume inflation from."""
_INFLATE_PIECE = 1 << 20
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TYPES = {
    tarfile.REGTYPE: "reg", tarfile.AREGTYPE: "reg", tarfile.LNKTYPE: "hardlink", tarfile.SYMTYPE: "symlink",
    tarfile.CHRTYPE: "char", tarfile.BLKTYPE: "block", tarfile.DIRTYPE: "dir", tarfile.FIFOTYPE: "fifo",
    tarfile.CONTTYPE: "contiguous (rejected by soci)", tarfile.GNUTYPE_SPARSE: "GNU sparse (rejected by soci)",
}


class ProofFailure(StreamableError):
    """The zTOC does not describe the layer exactly; the message names layer, entry, field and both values."""


@dataclass
class LayerProof:
    """What the complete proof of one layer established."""

    entries: int = 0
    spans: int = 0
    checkpoints_checked: int = 0
    compressed_size: int = 0
    uncompressed_size: int = 0
    file_hashes: dict[str, str] = field(default_factory=dict)
    """sha256 (hex) of the requested regular files, by clean name (hard links resolved)."""


def clean_name(name: str) -> str:
    """A tar path without leading `./` or `/` and without a trailing `/`."""
    return posixpath.normpath("/" + name).lstrip("/") or "."


def go_time_text(seconds: int, nanos: int = 0) -> str:
    """Go's time.Unix(s, ns).UTC().MarshalText(): RFC 3339 with trailing-zero-free nanoseconds; '' out of range."""
    try:
        moment = _EPOCH + timedelta(seconds=seconds)
    except OverflowError:
        return ""
    if not 0 < moment.year <= 9999:
        return ""
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if nanos:
        text += "." + f"{nanos:09d}".rstrip("0")
    return text + "Z"


def _pax_time(value: str) -> tuple[int, int]:
    """'%d[.%d]' exactly (Go's parsePAXTime): sign on both parts, nanoseconds truncated to 9 digits."""
    negative = value.startswith("-")
    whole, _, frac = value.lstrip("+-").partition(".")
    seconds, nanos = int(whole or "0"), int((frac + "000000000")[:9])
    if negative:
        seconds, nanos = -seconds, -nanos
    if nanos < 0:
        seconds, nanos = seconds - 1, nanos + 1_000_000_000
    return seconds, nanos


def layer_view(member: tarfile.TarInfo) -> dict[str, object]:
    """A tarfile member as the zTOC's FileMetadata fields (the mapping in the module docstring)."""
    mtime_text = member.pax_headers.get("mtime")
    seconds, nanos = _pax_time(mtime_text) if mtime_text else (int(member.mtime), 0)
    kind = _TYPES.get(member.type, f"type {member.type!r}")
    return {
        "name": member.name,
        "type": kind,
        "uncompressed_offset": member.offset_data,
        "uncompressed_size": member.size,
        "linkname": member.linkname,
        "mode": member.mode,
        "uid": member.uid & 0xFFFFFFFF,
        "gid": member.gid & 0xFFFFFFFF,
        "uname": member.uname,
        "gname": member.gname,
        "mod_time": go_time_text(seconds, nanos),
        "devmajor": member.devmajor,
        "devminor": member.devminor,
        "xattrs": sorted(member.pax_headers.items(), key=lambda kv: raw_bytes(kv[0])),
    }


def ztoc_view(entry: FileMetadata) -> dict[str, object]:
    """A zTOC entry in the same shape as `layer_view`."""
    return {
        "name": entry.name.rstrip("/") if entry.type == "dir" else entry.name,
        "type": entry.type,
        "uncompressed_offset": entry.uncompressed_offset,
        "uncompressed_size": entry.uncompressed_size,
        "linkname": entry.linkname,
        "mode": entry.mode,
        "uid": entry.uid,
        "gid": entry.gid,
        "uname": entry.uname,
        "gname": entry.gname,
        "mod_time": entry.mod_time,
        "devmajor": entry.devmajor,
        "devminor": entry.devminor,
        "xattrs": [(x.key, x.value) for x in entry.xattrs],
    }


class _Capture:
    """Bytes of one checkpoint: compressed from its span start, uncompressed from its offset."""

    def __init__(self, index: int, c_start: int, c_len: int, u_start: int, u_len: int) -> None:
        self.index, self.c_start, self.c_len, self.u_start, self.u_len = index, c_start, c_len, u_start, u_len
        self.compressed, self.uncompressed = bytearray(), bytearray()

    def done(self) -> bool:
        return len(self.compressed) >= self.c_len and len(self.uncompressed) >= self.u_len


def _take(buf: bytearray, want: int, start: int, pos: int, data: memoryview) -> None:
    """Append to `buf` the part of `data` (at stream offset `pos`) from `start + len(buf)` up to `want` bytes."""
    lo = start + len(buf) - pos
    if len(buf) >= want or lo >= len(data) or lo < 0:
        return
    buf += data[lo:lo + want - len(buf)]


class LayerStream:
    """The layer pipeline, a forward-only file for tarfile: span digests, inflate, checkpoint captures."""

    def __init__(self, chunks: Iterable[bytes], ztoc: Ztoc, layout: SpanLayout, *, layer: str, gzip: bool) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)
        self.layer, self.ztoc, self.layout = layer, ztoc, layout
        self._inflater = zlib.decompressobj(31) if gzip else None
        self.cpos = self.upos = 0
        self._out: deque[memoryview] = deque()
        self._buffered = 0
        self.rpos = 0
        self._eof = False
        self._hash_pool = ThreadPoolExecutor(1, thread_name_prefix="span-digests")  # sha256 releases the GIL
        self._hash_jobs: deque[Future[None]] = deque()
        self._hashers: dict[int, hashlib._Hash] = {}
        self._next_span = 0
        self.checked = 0
        self._captures: list[_Capture] = []
        for i in range(len(layout.points)):
            (cs, ce), (us, ue) = layout.compressed[i], layout.uncompressed[i]
            self._captures.append(_Capture(i, cs, min(ce - cs, CAPTURE_COMPRESSED), us, min(ue - us, COMPARE_BYTES)))
        self._open: dict[bool, list[_Capture]] = {True: [], False: []}
        self._next = {True: 0, False: 0}

    # ---- file protocol for tarfile ----

    def read(self, n: int = -1) -> bytes:
        """Exactly `n` bytes (fewer only at the end of the stream), as tarfile's random-access mode expects."""
        while (n < 0 or self._buffered < n) and not self._eof:
            self._pull()
        out = self._out
        if n < 0 or n >= self._buffered:
            data = b"".join(out)
            out.clear()
        elif len(out[0]) >= n:
            first = out[0]
            data = bytes(first[:n])
            out[0] = first[n:]
            if not len(out[0]):
                out.popleft()
        else:
            pieces, need = [], n
            while need:
                first = out[0]
                if len(first) <= need:
                    pieces.append(out.popleft())
                    need -= len(first)
                else:
                    pieces.append(first[:need])
                    out[0] = first[need:]
                    need = 0
            data = b"".join(pieces)
        self._buffered -= len(data)
        self.rpos += len(data)
        return data

    def tell(self) -> int:
        """Uncompressed bytes handed out or skipped so far."""
        return self.rpos

    def seek(self, target: int, whence: int = 0) -> int:
        """Skip forward to `target` without copying the skipped bytes (tarfile only ever seeks forward here)."""
        if whence != 0 or target < self.rpos:
            raise ProofFailure(f"layer {self.layer}: tar parser tried to seek back to {target} (at {self.rpos})")
        skip = target - self.rpos
        while skip:
            while not self._out and not self._eof:
                self._pull()
            if not self._out:
                break
            first = self._out[0]
            if len(first) <= skip:
                self._out.popleft()
                taken = len(first)
            else:
                self._out[0] = first[skip:]
                taken = skip
            skip -= taken
            self._buffered -= taken
            self.rpos += taken
        return self.rpos

    def drain(self) -> None:
        """Read the rest of the blob (so every span digest, the sizes and the layer digest are checked)."""
        while not self._eof:
            self._pull()
            self._out.clear()
            self._buffered = 0

    def close(self) -> None:
        """Stop the digest thread."""
        self._hash_pool.shutdown(wait=True, cancel_futures=True)

    # ---- the pass ----

    def _pull(self) -> None:
        chunk = next(self._chunks, None)
        if chunk is None:
            self._finish()
            return
        chunk = bytes(chunk)
        view = memoryview(chunk)
        self._hash_jobs.append(self._hash_pool.submit(self._hash_spans, view, self.cpos))
        while self._hash_jobs and (self._hash_jobs[0].done() or len(self._hash_jobs) > 8):
            self._hash_jobs.popleft().result()  # a span digest failure surfaces here
        self._capture(view, compressed=True)
        self.cpos += len(chunk)
        if self._inflater is None:
            self._emit(chunk)
        else:
            self._inflate(chunk)

    def _inflate(self, data: bytes) -> None:
        d = self._inflater
        assert d is not None
        while data:
            if d.eof:
                if not b"\x1f\x8b".startswith(data[:2]):
                    raise ProofFailure(
                        f"layer {self.layer}: bytes after a gzip member (compressed offset {self.cpos}) "
                        "are not another member"
                    )
                d = self._inflater = zlib.decompressobj(31)
            try:
                out = d.decompress(data, _INFLATE_PIECE)
            except zlib.error as exc:
                raise ProofFailure(
                    f"layer {self.layer}: gzip stream is corrupt near compressed offset {self.cpos}: {exc}"
                ) from None
            self._emit(out)
            data = d.unused_data if d.eof else d.unconsumed_tail

    def _emit(self, out: bytes) -> None:
        if not out:
            return
        view = memoryview(out)
        self._capture(view, compressed=False)
        self.upos += len(out)
        self._out.append(view)
        self._buffered += len(out)

    def _hash_spans(self, view: memoryview, start: int) -> None:
        """(digest thread) Feed the span hashers with the compressed bytes at `start`; check finished spans."""
        end = start + len(view)
        spans = self.layout.compressed
        while self._next_span < len(spans) and spans[self._next_span][0] < end:
            self._hashers[self._next_span] = hashlib.sha256()
            self._next_span += 1
        for i in list(self._hashers):
            s, e = spans[i]
            lo, hi = max(s, start), min(e, end)
            if hi > lo:
                self._hashers[i].update(view[lo - start:hi - start])
            if e <= end:
                self._check_span(i, self._hashers.pop(i))

    def _check_span(self, i: int, hasher: hashlib._Hash) -> None:
        actual = "sha256:" + hasher.hexdigest()
        expected = self.ztoc.compression.span_digests[i]
        if actual != expected:
            s, e = self.layout.compressed[i]
            raise ProofFailure(
                f"layer {self.layer}: span {i} (compressed bytes [{s}, {e})): field span_digests[{i}]: "
                f"zTOC value {expected}, layer value {actual}"
            )

    def _capture(self, view: memoryview, *, compressed: bool) -> None:
        pos = self.cpos if compressed else self.upos
        end = pos + len(view)
        caps, opened = self._captures, self._open[compressed]
        nxt = self._next[compressed]
        while nxt < len(caps) and (caps[nxt].c_start if compressed else caps[nxt].u_start) < end:
            opened.append(caps[nxt])
            nxt += 1
        self._next[compressed] = nxt
        for cap in list(opened):
            if compressed:
                _take(cap.compressed, cap.c_len, cap.c_start, pos, view)
                full = len(cap.compressed) >= cap.c_len
            else:
                _take(cap.uncompressed, cap.u_len, cap.u_start, pos, view)
                full = len(cap.uncompressed) >= cap.u_len
            if full:
                opened.remove(cap)
                if cap.done():
                    self._check_checkpoint(cap)

    def _check_checkpoint(self, cap: _Capture) -> None:
        point = self.layout.points[cap.index]
        got = bytearray()
        where = (
            f"layer {self.layer}: checkpoint {cap.index} (compressed offset {point.in_offset}, bits {point.bits}, "
            f"uncompressed offset {point.out_offset})"
        )
        try:
            with CheckpointDecoder(point.window, point.bits, library=system_zlib()) as decoder:
                for out in decoder.feed(bytes(cap.compressed)):
                    got += out
                    if len(got) >= cap.u_len:
                        break
        except (LazyReadError, ValueError) as exc:
            raise ProofFailure(f"{where}: inflation from its window fails: {exc}") from None
        want = bytes(cap.uncompressed)
        if bytes(got[:len(want)]) != want:
            at = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
            raise ProofFailure(
                f"{where}: inflating from its window differs from the layer stream at uncompressed offset "
                f"{point.out_offset + at}: zTOC value {bytes(got[at:at + 16])!r}, layer value {want[at:at + 16]!r}"
            )
        self.checked += 1

    def _finish(self) -> None:
        self._eof = True
        while self._hash_jobs:
            self._hash_jobs.popleft().result()
        if self._inflater is not None and not self._inflater.eof and self.cpos:
            raise ProofFailure(
                f"layer {self.layer}: gzip stream ends inside a member (at compressed offset {self.cpos})"
            )
        for i in list(self._hashers):
            self._check_span(i, self._hashers.pop(i))
        pending = {id(c): c for c in self._open[True] + self._open[False]}
        for cap in pending.values():
            cap.u_len = len(cap.uncompressed)  # the stream ended: compare what it had
            self._check_checkpoint(cap)
        self._open = {True: [], False: []}


def prove_layer(
    chunks: Iterable[bytes], ztoc: Ztoc, layout: SpanLayout, *, layer: str, media_type: str, wanted: Iterable[str] = ()
) -> LayerProof:
    """Prove `ztoc` against the layer blob streamed as `chunks`; ProofFailure on the first difference."""
    gzip = mt.layer_compression(media_type) is mt.LayerCompression.GZIP
    stream = LayerStream(chunks, ztoc, layout, layer=layer, gzip=gzip)
    try:
        return _prove(stream, ztoc, layout, layer, wanted)
    finally:
        stream.close()


def _prove(stream: LayerStream, ztoc: Ztoc, layout: SpanLayout, layer: str, wanted: Iterable[str]) -> LayerProof:
    proof = LayerProof(spans=layout.count)
    wanted_names = {clean_name(n) for n in wanted}
    entries = ztoc.entries
    to_hash = wanted_names | {
        clean_name(e.linkname) for e in entries if e.type == "hardlink" and clean_name(e.name) in wanted_names
    }
    hashes: dict[str, str] = {}
    end_of_tar = 0
    try:
        # Random-access mode over the forward-only stream: tarfile skips file data by seeking, which the
        # stream does without copying; it never seeks back when members are read in order.
        with tarfile.open(fileobj=stream, mode="r:", encoding="utf-8", errors="surrogateescape") as tar:  # type: ignore[call-overload]
            for k, member in enumerate(tar):
                tar.members.clear()  # memory stays flat however many entries the layer has
                _compare_entry(layer, k, entries[k] if k < len(entries) else None, member)
                name = clean_name(member.name)
                if member.isreg() and name in to_hash:
                    hashes[name] = _hash_member(tar, member)
                elif member.islnk() and clean_name(member.linkname) in hashes:
                    hashes[name] = hashes[clean_name(member.linkname)]
                proof.entries = k + 1
            end_of_tar = tar.offset
    except tarfile.ReadError as exc:
        if stream.upos or "empty file" not in str(exc):
            raise ProofFailure(f"layer {layer}: does not parse as a tar stream: {exc}") from None
    except tarfile.TarError as exc:
        raise ProofFailure(f"layer {layer}: does not parse as a tar stream: {exc}") from None
    if proof.entries < len(entries):
        extra = entries[proof.entries]
        raise ProofFailure(
            f"layer {layer}: entry {proof.entries} {extra.name!r}: field name: zTOC value {extra.name!r}, "
            f"layer value <none> (the layer has only {proof.entries} entries, the zTOC {len(entries)})"
        )
    stream.drain()
    proof.compressed_size, proof.uncompressed_size = stream.cpos, stream.upos
    go_end = min(end_of_tar + 1024, stream.upos) if proof.entries or stream.upos else 0
    for what, z_value, l_value in (
        ("compressed_archive_size", ztoc.compressed_archive_size, stream.cpos),
        ("uncompressed_archive_size", ztoc.uncompressed_archive_size, go_end),
    ):
        if z_value != l_value:
            raise ProofFailure(f"layer {layer}: field {what}: zTOC value {z_value}, layer value {l_value}")
    proof.checkpoints_checked = stream.checked
    proof.file_hashes = {n: h for n, h in hashes.items() if n in wanted_names}
    return proof


def _hash_member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> str:
    extracted = tar.extractfile(member)
    assert extracted is not None
    hasher = hashlib.sha256()
    for piece in iter(lambda: extracted.read(1 << 20), b""):
        hasher.update(piece)
    return hasher.hexdigest()


def _compare_entry(layer: str, k: int, entry: FileMetadata | None, member: tarfile.TarInfo) -> None:
    got = layer_view(member)
    if entry is None:
        raise ProofFailure(
            f"layer {layer}: entry {k} {member.name!r}: field name: zTOC value <none>, layer value {member.name!r} "
            f"(the zTOC ends after {k} entries)"
        )
    want = ztoc_view(entry)
    for key, z_value in want.items():
        if got[key] != z_value:
            raise ProofFailure(
                f"layer {layer}: entry {k} {entry.name!r}: field {key}: "
                f"zTOC value {z_value!r}, layer value {got[key]!r}"
            )
