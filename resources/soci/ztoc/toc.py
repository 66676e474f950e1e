"""Streaming tar TOC builder with Go `archive/tar` semantics, as soci-snapshotter's
`metadataFromTarReader` sees a layer (docs/soci-format.md section 6).

Feed every uncompressed byte of the layer, in chunks of any size, then call `finish()`.
Only 512-byte header blocks and PAX / GNU long-name payloads are buffered; file data is skipped
by counting.

Go behaviours mirrored on purpose (each one changes bytes of the zTOC):
- `uncompressed_offset` is the stream position right after the entry's own header block;
  `uncompressed_archive_size` is the position where the reader stopped.
- The reader stops normally at two zero blocks, at one zero block followed by end of stream,
  at end of stream on a header boundary, and at end of stream inside the padding after an
  entry's data (Go's `tryReadFull` reports io.EOF there). Pending PAX / GNU long-name headers
  are then dropped, as in Go. End of stream inside a header block, inside an entry's data or
  inside a PAX / GNU long-name payload is a TarFormatError naming the entry.
- Bytes after the end-of-archive blocks (record padding) are not read and not counted.
- Header checksum: unsigned or signed byte sum; ustar prefix joined with '/'; STAR prefix;
  GNU headers use atime/ctime and, for pre-Go1.8 writers, fall back to the prefix.
- Numbers: octal (spaces/NULs trimmed) or GNU base-256; uid/gid stored as uint32.
- Typeflag NUL is `dir` when the final name ends in '/', else `reg`; '0' stays `reg`.
  Header-only types (hardlink, symlink, char, block, dir, fifo) carry no data whatever
  their size says, but their size is still recorded.
- PAX: a later 'x' header replaces an earlier one; records with empty values are kept in the
  record list but do not override header fields; GNU 'L'/'K' win over PAX path/linkpath.
- `xattrs` = all PAX records of the entry (Go's `hdr.PAXRecords`), sorted bytewise by key.
- `mod_time` is Go's `time.Time.MarshalText` (RFC 3339, nanoseconds without trailing zeros)
  in UTC (soci formats in the builder's local zone; its CLI in a container runs in UTC);
  Go yields "" (MarshalText error) for years outside 0..9999, and so do we.
- Any type soci's `getType` rejects fails the layer: PAX global header 'g', GNU sparse 'S',
  contiguous '7' (Go's reader leaves it as '7', so soci rejects it too), 'V', ...
- The TOC is what soci builds even where soci's own Unmarshal would later reject it (a
  header-only entry declaring more than 512 bytes); `serialize_ztoc` refuses those.

Deliberate difference: PAX-format GNU sparse files (GNU.sparse.* records) are rejected
(TarFormatError); Go would re-map their size/name and soci would index them. Container
layer writers (Go's archive/tar, BuildKit) never produce them.
"""

from __future__ import annotations

from functools import cached_property
from typing import BinaryIO

from resources.soci.ztoc.model import FileMetadata, from_raw_bytes, raw_bytes
from resources.soci.ztoc.tar_header import (
    BLOCK_SIZE,
    FastHeaders,
    RawHeader,
    TarFormatError,
    format_go_time,
    format_go_time_bytes,
    parse_go_int,
    parse_header,
    parse_pax_time,
    parse_string,
)
from resources.soci.ztoc.toc_table import TocTable

__all__ = ["TarFormatError", "TarTocBuilder", "TocResult", "build_toc", "format_go_time"]

MAX_SPECIAL_FILE_SIZE = 1 << 20  # Go's limit for PAX and GNU long-name payloads
_ZERO_BLOCK = bytes(BLOCK_SIZE)

_TYPE_NAMES = {
    ord("0"): "reg",
    ord("1"): "hardlink",
    ord("2"): "symlink",
    ord("3"): "char",
    ord("4"): "block",
    ord("5"): "dir",
    ord("6"): "fifo",
}
_TYPE_NAME_BYTES = {flag: name.encode() for flag, name in _TYPE_NAMES.items()}
_HEADER_ONLY_TYPES = frozenset(ord(c) for c in "123456")
_TYPE_REG_A = 0
_TYPE_DIR = ord("5")
_TYPE_REG = ord("0")
_FAST_TYPES = frozenset((_TYPE_REG_A, *_TYPE_NAMES))
_TYPE_PAX = ord("x")
_TYPE_PAX_GLOBAL = ord("g")
_TYPE_GNU_LONG_NAME = ord("L")
_TYPE_GNU_LONG_LINK = ord("K")
_TYPE_DESCRIPTIONS = {
    "g": "PAX global header",
    "S": "GNU sparse file",
    "7": "contiguous file",
    "V": "GNU volume header",
    "M": "GNU multi-volume continuation",
    "D": "GNU incremental dump directory",
    "N": "old GNU long name",
}

_WHITEOUT_OPAQUE = ".wh..wh..opq"
_WHITEOUT_OPAQUE_BYTES = _WHITEOUT_OPAQUE.encode()
_SCHILY_XATTR = "SCHILY.xattr."
_PAX_SPARSE_OFFSET = "GNU.sparse.offset"
_PAX_SPARSE_NUMBYTES = "GNU.sparse.numbytes"
_PAX_SPARSE_MAP = "GNU.sparse.map"


class TocResult:
    """What the tar pass yields for one layer: the entries (kept in a `TocTable`), where the
    reader stopped, and whether no entry has xattrs or an opaque whiteout."""

    def __init__(
        self,
        entries: list[FileMetadata] | None = None,
        uncompressed_archive_size: int = 0,
        disable_xattrs: bool = True,
        *,
        table: TocTable | None = None,
    ) -> None:
        if table is None:
            table = TocTable.from_entries(entries or [])
        elif entries is not None:
            raise ValueError("TocResult takes entries or a table, not both")
        self.table = table
        self.uncompressed_archive_size = uncompressed_archive_size
        self.disable_xattrs = disable_xattrs

    @cached_property
    def entries(self) -> list[FileMetadata]:
        """The entries as `FileMetadata` objects (built on first use)."""
        return list(self.table.entries())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TocResult):
            return NotImplemented
        return (self.entries, self.uncompressed_archive_size, self.disable_xattrs) == (
            other.entries,
            other.uncompressed_archive_size,
            other.disable_xattrs,
        )

    def __repr__(self) -> str:
        return (
            f"TocResult({len(self.table)} entries, uncompressed_archive_size={self.uncompressed_archive_size}, "
            f"disable_xattrs={self.disable_xattrs})"
        )


# --------------------------------------------------------------------------- PAX


def _parse_pax_records(payload: bytes, where: str) -> dict[str, str]:
    """Go's parsePAX: 'len key=value\\n' records; GNU sparse 0.0 offsets folded into a map."""
    records: dict[str, str] = {}
    sparse_map: list[str] = []
    pos, end = 0, len(payload)
    while pos < end:
        space = payload.find(b" ", pos)
        length_text = payload[pos:space] if space >= 0 else b""
        length = parse_go_int(length_text.decode("latin-1")) if space >= 0 else None
        if length is None or length < 5 or length > end - pos:
            raise TarFormatError(f"{where}: malformed PAX record {payload[pos:pos + 40]!r}")
        body_end = pos + length  # the record's final byte must be the newline
        if body_end <= space + 1 or payload[body_end - 1 : body_end] != b"\n":
            raise TarFormatError(
                f"{where}: PAX record {payload[pos:pos + 40]!r} does not end in a newline"
            )
        key, eq, value = payload[space + 1 : body_end - 1].partition(b"=")
        if not eq or not key:
            raise TarFormatError(f"{where}: PAX record {payload[pos:pos + 40]!r} has no key=value")
        if key in (b"path", b"linkpath", b"uname", b"gname"):
            if b"\x00" in value:
                raise TarFormatError(f"{where}: PAX record {key!r} contains NUL")
        elif b"\x00" in key:
            raise TarFormatError(f"{where}: PAX record key {key!r} contains NUL")
        pos = body_end
        key_text, value_text = from_raw_bytes(key), from_raw_bytes(value)
        if key_text in (_PAX_SPARSE_OFFSET, _PAX_SPARSE_NUMBYTES):
            expected = _PAX_SPARSE_OFFSET if len(sparse_map) % 2 == 0 else _PAX_SPARSE_NUMBYTES
            if key_text != expected or "," in value_text:
                raise TarFormatError(f"{where}: malformed GNU sparse PAX records")
            sparse_map.append(value_text)
        else:
            records[key_text] = value_text
    if sparse_map:
        records[_PAX_SPARSE_MAP] = ",".join(sparse_map)
    return records


def _is_pax_sparse(records: dict[str, str]) -> bool:
    """Whether Go would treat the entry as a PAX-format GNU sparse file."""
    major = records.get("GNU.sparse.major", "")
    minor = records.get("GNU.sparse.minor", "")
    if major == "0" and minor in ("0", "1"):
        return True
    if major == "1" and minor == "0":
        return True
    if major or minor:
        return False
    return records.get(_PAX_SPARSE_MAP, "") != ""


# --------------------------------------------------------------------------- builder

_HEADER, _SKIP, _SPECIAL, _DONE = range(4)


class TarTocBuilder:
    """Push-style tar parser: `feed()` chunks of the uncompressed layer, then `finish()`.

    Entry data is never looked at: the next header's position is computed from the entry's size
    and jumped to, within a chunk or across chunks. Header blocks most writers emit are decoded by
    `FastHeaders` and go straight into the columnar `TocTable`; the rest (PAX, GNU long names,
    zero blocks, devices, base-256 numbers, errors) take the general path.
    """

    def __init__(self) -> None:
        self._pos = 0  # bytes of the stream fed so far
        self._state = _HEADER
        self._block = bytearray()
        self._skip_to = 0  # _SKIP: stream offset of the next header block
        self._data_end = 0  # _SKIP: stream offset where the entry's data ends (padding follows)
        self._remaining = 0  # bytes left in the current _SPECIAL payload
        self._pad_after = 0  # padding that follows the current _SPECIAL payload
        self._special = bytearray()
        self._special_type = 0
        self._special_where = ""
        self._zero_blocks = 0
        self._pax: dict[str, str] | None = None
        self._long_name = ""
        self._long_link = ""
        self._table = TocTable()
        self._fast = FastHeaders()
        self._last: str | tuple[bytes, int] = "the start of the archive"  # for error messages
        self._end: int | None = None
        self._saw_xattr_or_opaque = False
        self._error: TarFormatError | None = None
        self._result: TocResult | None = None

    @property
    def _current(self) -> str:
        """The last entry, as error messages name it."""
        last = self._last
        if isinstance(last, str):
            return last
        return f"tar entry {from_raw_bytes(last[0])!r} (header at offset {last[1]})"

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Consume the next chunk of the uncompressed tar stream (any length)."""
        if self._error is not None:
            raise self._error
        if self._result is not None:
            raise RuntimeError("TarTocBuilder.feed() called after finish()")
        view = memoryview(data)
        if view.ndim != 1 or view.itemsize != 1:
            view = view.cast("B")
        try:
            self._consume(view)
        except TarFormatError as exc:
            self._error = exc
            raise

    def _consume(self, view: memoryview) -> None:
        """The state machine over one chunk."""
        n = len(view)
        base = self._pos
        i = 0
        while i < n:
            state = self._state
            if state == _SKIP:
                target = self._skip_to - base
                if target > n:
                    break
                i = target
                self._state = _HEADER
            elif state == _HEADER:
                if not self._block:
                    while n - i >= BLOCK_SIZE:  # whole header blocks in this chunk
                        block = bytes(view[i : i + BLOCK_SIZE])
                        i += BLOCK_SIZE
                        self._pos = base + i
                        self._on_header_block(block, base + i)
                        if self._state != _HEADER:
                            break
                    else:
                        self._block += view[i:]
                        i = n
                else:
                    need = BLOCK_SIZE - len(self._block)
                    chunk = view[i : i + need]
                    self._block += chunk
                    i += len(chunk)
                    if len(self._block) == BLOCK_SIZE:
                        block = bytes(self._block)
                        self._block.clear()
                        self._pos = base + i
                        self._on_header_block(block, base + i)
            elif state == _SPECIAL:
                take = min(self._remaining, n - i)
                self._special += view[i : i + take]
                i += take
                self._remaining -= take
                if self._remaining == 0:
                    self._pos = base + i
                    self._on_special_payload()
            else:  # _DONE: Go stops reading at end-of-archive; the rest is not counted.
                break
        self._pos = base + n

    def _enter_skip(self, data: int, pad: int) -> None:
        """Skip `data` bytes of entry data then `pad` bytes of block padding."""
        if data + pad > 0:
            self._state = _SKIP
            self._data_end = self._pos + data
            self._skip_to = self._data_end + pad
        else:
            self._state = _HEADER

    def _on_header_block(self, block: bytes, end: int) -> None:
        """A block at a header position: the common case here, anything else in `_on_block`."""
        if block[0] and not self._zero_blocks and self._pax is None and not self._long_name and not self._long_link:
            decoded = self._fast.decode(block)
            if decoded is not None and decoded[2][0] in _FAST_TYPES:
                name, size, (flag, linkname, mode, uid, gid, mod_time, uname, gname, _) = decoded
                if flag == _TYPE_REG_A:
                    flag = _TYPE_DIR if name.endswith(b"/") else _TYPE_REG
                if name.endswith(_WHITEOUT_OPAQUE_BYTES):
                    self._saw_xattr_or_opaque = True
                self._table.append(
                    name, _TYPE_NAME_BYTES[flag], end, size, linkname, mode, uid, gid, uname, gname, mod_time, 0, 0
                )
                self._last = (name, end - BLOCK_SIZE)
                data = 0 if flag in _HEADER_ONLY_TYPES else size
                self._enter_skip(data, -data % BLOCK_SIZE)
                return
        self._on_block(block, end)

    def _on_block(self, block: bytes, end: int) -> None:
        """Handle one complete header-position block ending at stream offset `end`."""
        offset = end - BLOCK_SIZE
        if block == _ZERO_BLOCK:
            if self._zero_blocks:
                self._state = _DONE
                self._end = end
            else:
                self._zero_blocks = 1
            return
        if self._zero_blocks:
            raise TarFormatError(
                f"invalid tar header at offset {offset}: a zero block is followed by a "
                f"non-zero block (after {self._current})"
            )
        header = parse_header(block, offset)
        where = f"tar entry {header.name!r} (header at offset {offset})"
        if header.size < 0 and header.typeflag not in _HEADER_ONLY_TYPES:
            raise TarFormatError(f"{where}: negative size {header.size}")
        flag = header.typeflag
        if flag in (_TYPE_PAX, _TYPE_GNU_LONG_NAME, _TYPE_GNU_LONG_LINK):
            if header.size > MAX_SPECIAL_FILE_SIZE:
                raise TarFormatError(
                    f"{where}: {chr(flag)!r} header payload of {header.size} bytes exceeds "
                    f"the {MAX_SPECIAL_FILE_SIZE}-byte limit"
                )
            self._special_type = flag
            self._special_where = where
            self._special.clear()
            self._pad_after = -header.size % BLOCK_SIZE
            if header.size:
                self._state, self._remaining = _SPECIAL, header.size
            else:
                self._on_special_payload()
            return
        if flag == _TYPE_PAX_GLOBAL:
            raise self._unsupported(flag, where)
        self._emit(header, end, where)

    def _on_special_payload(self) -> None:
        """A PAX 'x' or GNU 'L'/'K' payload is complete: record it for the next entry."""
        payload = bytes(self._special)
        self._special.clear()
        if self._special_type == _TYPE_PAX:
            self._pax = _parse_pax_records(payload, self._special_where)
        elif self._special_type == _TYPE_GNU_LONG_NAME:
            self._long_name = from_raw_bytes(parse_string(payload))
        else:
            self._long_link = from_raw_bytes(parse_string(payload))
        self._enter_skip(0, self._pad_after)

    def _emit(self, header: RawHeader, end: int, where: str) -> None:
        """Merge pending PAX / GNU records into the header and append the TOC entry."""
        records = self._pax or {}
        name, linkname, size = header.name, header.linkname, header.size
        uid, gid, uname, gname = header.uid, header.gid, header.uname, header.gname
        mtime = (header.mtime, 0)
        for key, value in records.items():
            if not value:
                continue
            try:
                if key == "path":
                    name = value
                elif key == "linkpath":
                    linkname = value
                elif key == "uname":
                    uname = value
                elif key == "gname":
                    gname = value
                elif key in ("uid", "gid", "size"):
                    number = parse_go_int(value)
                    if number is None:
                        raise ValueError(f"invalid number {value!r}")
                    if key == "uid":
                        uid = number
                    elif key == "gid":
                        gid = number
                    else:
                        size = number
                elif key == "mtime":
                    mtime = parse_pax_time(value)
                elif key in ("atime", "ctime"):
                    parse_pax_time(value)
            except ValueError as exc:
                raise TarFormatError(f"{where}: bad PAX record {key!r}: {exc}") from None
        if self._long_name:
            name = self._long_name
        if self._long_link:
            linkname = self._long_link
        flag = header.typeflag
        if flag == _TYPE_REG_A:
            flag = _TYPE_DIR if name.endswith("/") else _TYPE_REG
        where = f"tar entry {name!r} (header at offset {end - BLOCK_SIZE})"
        data_size = 0 if flag in _HEADER_ONLY_TYPES else size
        if data_size < 0:
            raise TarFormatError(f"{where}: negative size {size}")
        if flag not in _TYPE_NAMES:
            raise self._unsupported(flag, where)
        if _is_pax_sparse(records):
            raise TarFormatError(
                f"{where}: PAX-format GNU sparse files (GNU.sparse.* records) are not supported"
            )

        keys = sorted(records, key=raw_bytes)
        if not self._saw_xattr_or_opaque and (
            name.endswith(_WHITEOUT_OPAQUE) or any(k.startswith(_SCHILY_XATTR) for k in keys)
        ):
            self._saw_xattr_or_opaque = True
        self._table.append(
            raw_bytes(name), _TYPE_NAME_BYTES[flag], end, size, raw_bytes(linkname), header.mode,
            uid & 0xFFFFFFFF, gid & 0xFFFFFFFF, raw_bytes(uname), raw_bytes(gname),
            format_go_time_bytes(*mtime), header.devmajor, header.devminor,
            [(raw_bytes(k), raw_bytes(records[k])) for k in keys],
        )  # fmt: skip
        self._last = where
        self._pax = None
        self._long_name = ""
        self._long_link = ""
        self._enter_skip(data_size, -data_size % BLOCK_SIZE)

    @staticmethod
    def _unsupported(flag: int, where: str) -> TarFormatError:
        """The error soci raises for a type it cannot index."""
        char = chr(flag)
        description = _TYPE_DESCRIPTIONS.get(char, "unknown type")
        return TarFormatError(
            f"{where}: unsupported tar entry type {char!r} ({description}); "
            "soci cannot index this layer"
        )

    def finish(self) -> TocResult:
        """Declare end of stream and return the TOC; TarFormatError if the stream is cut short."""
        if self._error is not None:
            raise self._error
        if self._result is not None:
            return self._result
        if self._state == _DONE:
            size = self._end
        elif self._state == _HEADER and self._block:
            self._error = TarFormatError(
                f"tar stream ends inside a header block at offset {self._pos - len(self._block)} "
                f"({len(self._block)} of {BLOCK_SIZE} bytes, after {self._current})"
            )
        elif self._state == _SKIP and self._pos < self._data_end:
            self._error = TarFormatError(
                f"tar stream ends inside the data of {self._current}: "
                f"{self._data_end - self._pos} bytes missing at offset {self._pos}"
            )
        elif self._state == _SPECIAL:
            self._error = TarFormatError(
                f"tar stream ends inside the payload of {self._special_where}: "
                f"{self._remaining} bytes missing at offset {self._pos}"
            )
        if self._error is not None:
            raise self._error
        if self._state != _DONE or size is None:
            size = self._pos  # clean io.EOF in Go: on a block boundary or inside padding
        self._table.finish()
        self._result = TocResult(
            table=self._table,
            uncompressed_archive_size=size,
            disable_xattrs=not self._saw_xattr_or_opaque,
        )
        return self._result


def build_toc(stream: BinaryIO, chunk_size: int = 1 << 20) -> TocResult:
    """Run a TarTocBuilder over a readable binary stream of the uncompressed tar."""
    builder = TarTocBuilder()
    while chunk := stream.read(chunk_size):
        builder.feed(chunk)
    return builder.finish()
