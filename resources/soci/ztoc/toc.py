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

import re
import struct
from dataclasses import dataclass
from functools import lru_cache
from typing import BinaryIO

from resources.errors import StreamableError
from resources.soci.ztoc.model import FileMetadata, Xattr, from_raw_bytes, raw_bytes

__all__ = ["TarFormatError", "TarTocBuilder", "TocResult", "build_toc", "format_go_time"]

BLOCK_SIZE = 512
MAX_SPECIAL_FILE_SIZE = 1 << 20  # Go's limit for PAX and GNU long-name payloads
_ZERO_BLOCK = bytes(BLOCK_SIZE)
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

_TYPE_NAMES = {
    ord("0"): "reg",
    ord("1"): "hardlink",
    ord("2"): "symlink",
    ord("3"): "char",
    ord("4"): "block",
    ord("5"): "dir",
    ord("6"): "fifo",
}
_HEADER_ONLY_TYPES = frozenset(ord(c) for c in "123456")
_TYPE_REG_A = 0
_TYPE_DIR = ord("5")
_TYPE_REG = ord("0")
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
_SCHILY_XATTR = "SCHILY.xattr."
_PAX_SPARSE_OFFSET = "GNU.sparse.offset"
_PAX_SPARSE_NUMBYTES = "GNU.sparse.numbytes"
_PAX_SPARSE_MAP = "GNU.sparse.map"

_OCTAL_RE = re.compile(rb"[0-7]+")
_PLAIN_OCTAL_RE = re.compile(rb"[ \x00]*([0-7]+)[ \x00]*")
_DECIMAL_RE = re.compile(r"[+-]?[0-9]+")
_DIGITS_RE = re.compile(r"[0-9]*")

_MAGIC_USTAR = b"ustar\x00"
_MAGIC_GNU = b"ustar "
_VERSION_GNU = b" \x00"
_TRAILER_STAR = b"tar\x00"


class TarFormatError(StreamableError, ValueError):
    """The layer is not a tar stream soci can index; the message names the entry and offset."""


@dataclass(frozen=True)
class TocResult:
    """What the tar pass yields for one layer."""

    entries: list[FileMetadata]
    uncompressed_archive_size: int
    disable_xattrs: bool


# --------------------------------------------------------------------------- time


@lru_cache(maxsize=4096)  # layers repeat mtimes (SOURCE_DATE_EPOCH makes them all equal)
def format_go_time(seconds: int, nanoseconds: int = 0) -> str:
    """Go's `time.Unix(seconds, nanoseconds).UTC().MarshalText()`; '' when the year is not 0..9999."""
    total = seconds * 1_000_000_000 + nanoseconds
    secs, nanos = divmod(total, 1_000_000_000)
    days, second_of_day = divmod(secs, 86400)
    year, month, day = _civil_from_days(days)
    if not 0 <= year <= 9999:
        return ""
    hour, rest = divmod(second_of_day, 3600)
    minute, second = divmod(rest, 60)
    text = f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}"
    if nanos:
        text += "." + f"{nanos:09d}".rstrip("0")
    return text + "Z"


def _civil_from_days(days: int) -> tuple[int, int, int]:
    """Proleptic Gregorian (year, month, day) of a day count since 1970-01-01 (any sign)."""
    days += 719468
    era = days // 146097
    doe = days - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    year = yoe + era * 400 + (1 if month <= 2 else 0)
    return year, month, day


def _parse_pax_time(value: str) -> tuple[int, int]:
    """Go's parsePAXTime: '%d[.%d]' to (seconds, nanoseconds), exact, sign applied to both."""
    secs_text, _, frac = value.partition(".")
    secs = _parse_go_int(secs_text)
    if secs is None:
        raise ValueError(f"invalid PAX time {value!r}")
    if not frac:
        return secs, 0
    if not _DIGITS_RE.fullmatch(frac):
        raise ValueError(f"invalid PAX time {value!r}")
    nanos = int(frac[:9].ljust(9, "0"))
    if secs_text.startswith("-"):
        nanos = -nanos
    return secs, nanos


def _parse_go_int(text: str) -> int | None:
    """strconv.ParseInt(text, 10, 64), or None when Go would fail."""
    if not _DECIMAL_RE.fullmatch(text):
        return None
    value = int(text)
    return value if _INT64_MIN <= value <= _INT64_MAX else None


# --------------------------------------------------------------------------- header fields


class _FieldError(StreamableError):
    """A numeric header field Go cannot parse."""


def _parse_string(field: bytes) -> bytes:
    """Go's parser.parseString: up to the first NUL."""
    return field.partition(b"\x00")[0]


def _parse_octal(field: bytes) -> int:
    """Go's parser.parseOctal: trim spaces/NULs, cut at a NUL, then strict octal digits."""
    plain = _PLAIN_OCTAL_RE.fullmatch(field)  # fast path for the usual "0000644\0"
    if plain:
        value = int(plain[1], 8)
    else:
        field = field.strip(b" \x00")
        if not field:
            return 0
        digits = _parse_string(field)
        if not _OCTAL_RE.fullmatch(digits):
            raise _FieldError(f"invalid octal number {field!r}")
        value = int(digits, 8)
    if value >= 2**64:
        raise _FieldError(f"octal number {field!r} overflows 64 bits")
    return value - 2**64 if value >= 2**63 else value


def _parse_numeric(field: bytes) -> int:
    """Go's parser.parseNumeric: GNU base-256 when the top bit is set, else octal."""
    if field and field[0] & 0x80:
        inverted = 0xFF if field[0] & 0x40 else 0
        value = 0
        for i, byte in enumerate(field):
            byte ^= inverted
            if i == 0:
                byte &= 0x7F
            if value >> 56:
                raise _FieldError("base-256 number overflows 64 bits")
            value = (value << 8) | byte
        if value >> 63:
            raise _FieldError("base-256 number overflows 64 bits")
        return ~value if inverted else value
    return _parse_octal(field)


@dataclass
class _RawHeader:
    """The fields of one header block, decoded the way Go's readHeader does."""

    typeflag: int
    name: str
    linkname: str
    size: int
    mode: int
    uid: int
    gid: int
    mtime: int
    uname: str
    gname: str
    devmajor: int
    devminor: int


# name mode uid gid size mtime chksum typeflag linkname magic version uname gname
# devmajor devminor, then the 155-byte tail (ustar prefix / GNU atime, ctime, ...) and 12 more.
_HEADER_LAYOUT = struct.Struct("100s8s8s8s12s12s8sB100s6s2s32s32s8s8s155s12s")
_HIGH_BYTES = bytes(range(0x80, 0x100))


def _checksum_matches(block: bytes, stored: int) -> tuple[bool, int, int]:
    """Whether `stored` equals the unsigned or the signed byte sum (checksum field as spaces)."""
    field = block[148:156]
    unsigned = sum(block) - sum(field) + 8 * 0x20
    if stored == unsigned:
        return True, unsigned, unsigned
    high = (BLOCK_SIZE - len(block.translate(None, _HIGH_BYTES))) - (
        8 - len(field.translate(None, _HIGH_BYTES))
    )
    signed = unsigned - 256 * high
    return stored == signed, unsigned, signed


def _parse_header(block: bytes, offset: int) -> _RawHeader:
    """Decode a non-zero header block; TarFormatError for a bad checksum or number."""
    (
        name_field, mode_f, uid_f, gid_f, size_f, mtime_f, checksum_f, typeflag, linkname_f,
        magic, version, uname_f, gname_f, devmajor_f, devminor_f, tail, _,
    ) = _HEADER_LAYOUT.unpack(block)  # fmt: skip
    name = from_raw_bytes(_parse_string(name_field))
    where = f"tar header at offset {offset} (name field {name!r})"
    try:
        stored = _parse_octal(checksum_f)
    except _FieldError:
        raise TarFormatError(
            f"{where}: not a tar header (unreadable checksum field {checksum_f!r})"
        ) from None
    ok, unsigned, signed = _checksum_matches(block, stored)
    if not ok:
        raise TarFormatError(
            f"{where}: checksum mismatch (stored {stored}, computed {unsigned} unsigned / "
            f"{signed} signed)"
        )
    field = "?"
    try:
        field = "size"
        size = _parse_numeric(size_f)
        field = "mode"
        mode = _parse_numeric(mode_f)
        field = "uid"
        uid = _parse_numeric(uid_f)
        field = "gid"
        gid = _parse_numeric(gid_f)
        field = "mtime"
        mtime = _parse_numeric(mtime_f)
        header = _RawHeader(
            typeflag=typeflag,
            name=name,
            linkname=from_raw_bytes(_parse_string(linkname_f)),
            size=size,
            mode=mode,
            uid=uid,
            gid=gid,
            mtime=mtime,
            uname="",
            gname="",
            devmajor=0,
            devminor=0,
        )
        if magic == _MAGIC_USTAR or (magic == _MAGIC_GNU and version == _VERSION_GNU):
            header.uname = from_raw_bytes(_parse_string(uname_f))
            header.gname = from_raw_bytes(_parse_string(gname_f))
            field = "devmajor"
            header.devmajor = _parse_numeric(devmajor_f)
            field = "devminor"
            header.devminor = _parse_numeric(devminor_f)
            prefix = b""
            if magic == _MAGIC_USTAR and block[508:512] == _TRAILER_STAR:
                prefix = _parse_string(block[345:476])
                field = "atime"
                _parse_numeric(block[476:488])
                field = "ctime"
                _parse_numeric(block[488:500])
            elif magic == _MAGIC_USTAR:
                prefix = _parse_string(tail)
            elif not _gnu_times_parse(block):
                # Pre-Go1.8 writers put a ustar prefix into a GNU header; Go reads it back.
                candidate = _parse_string(tail)
                if candidate.isascii():
                    prefix = candidate
            if prefix:
                header.name = from_raw_bytes(prefix) + "/" + header.name
    except _FieldError as exc:
        raise TarFormatError(f"{where}: bad {field} field: {exc}") from None
    return header


def _gnu_times_parse(block: bytes) -> bool:
    """Whether a GNU header's atime/ctime fields parse (Go only tries non-empty ones)."""
    for field in (block[345:357], block[357:369]):
        if field[0] != 0:
            try:
                _parse_numeric(field)
            except _FieldError:
                return False
    return True


# --------------------------------------------------------------------------- PAX


def _parse_pax_records(payload: bytes, where: str) -> dict[str, str]:
    """Go's parsePAX: 'len key=value\\n' records; GNU sparse 0.0 offsets folded into a map."""
    records: dict[str, str] = {}
    sparse_map: list[str] = []
    pos, end = 0, len(payload)
    while pos < end:
        space = payload.find(b" ", pos)
        length_text = payload[pos:space] if space >= 0 else b""
        length = _parse_go_int(length_text.decode("latin-1")) if space >= 0 else None
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

_HEADER, _DATA, _PAD, _SPECIAL, _DONE = range(5)


class TarTocBuilder:
    """Push-style tar parser: `feed()` chunks of the uncompressed layer, then `finish()`."""

    def __init__(self) -> None:
        self._pos = 0  # bytes of the stream fed so far
        self._state = _HEADER
        self._block = bytearray()
        self._remaining = 0  # bytes left in the current _DATA / _PAD / _SPECIAL run
        self._pad_after = 0  # padding that follows the current _DATA / _SPECIAL run
        self._special = bytearray()
        self._special_type = 0
        self._special_where = ""
        self._zero_blocks = 0
        self._pax: dict[str, str] | None = None
        self._long_name = ""
        self._long_link = ""
        self._entries: list[FileMetadata] = []
        self._current = "the start of the archive"  # last entry, for error messages
        self._end: int | None = None
        self._saw_xattr_or_opaque = False
        self._error: TarFormatError | None = None
        self._result: TocResult | None = None

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
            if state == _DATA or state == _PAD:
                take = min(self._remaining, n - i)
                i += take
                self._remaining -= take
                if self._remaining == 0:
                    if state == _DATA:
                        self._enter_skip(0, self._pad_after)
                    else:
                        self._state = _HEADER
            elif state == _HEADER:
                if not self._block and n - i >= BLOCK_SIZE:
                    block = bytes(view[i : i + BLOCK_SIZE])
                    i += BLOCK_SIZE
                    self._pos = base + i
                    self._on_block(block, base + i)
                else:
                    need = BLOCK_SIZE - len(self._block)
                    chunk = view[i : i + need]
                    self._block += chunk
                    i += len(chunk)
                    if len(self._block) == BLOCK_SIZE:
                        block = bytes(self._block)
                        self._block.clear()
                        self._pos = base + i
                        self._on_block(block, base + i)
            elif state == _SPECIAL:
                take = min(self._remaining, n - i)
                self._special += view[i : i + take]
                i += take
                self._remaining -= take
                if self._remaining == 0:
                    self._pos = base + i
                    self._on_special_payload()
            else:  # _DONE: Go stops reading at end-of-archive; the rest is not counted.
                i = n
        self._pos = base + n

    def _enter_skip(self, data: int, pad: int) -> None:
        """Skip `data` bytes of entry data then `pad` bytes of block padding."""
        if data > 0:
            self._state, self._remaining, self._pad_after = _DATA, data, pad
        elif pad > 0:
            self._state, self._remaining, self._pad_after = _PAD, pad, 0
        else:
            self._state, self._remaining, self._pad_after = _HEADER, 0, 0

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
        header = _parse_header(block, offset)
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
            self._long_name = from_raw_bytes(_parse_string(payload))
        else:
            self._long_link = from_raw_bytes(_parse_string(payload))
        self._enter_skip(0, self._pad_after)

    def _emit(self, header: _RawHeader, end: int, where: str) -> None:
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
                    number = _parse_go_int(value)
                    if number is None:
                        raise ValueError(f"invalid number {value!r}")
                    if key == "uid":
                        uid = number
                    elif key == "gid":
                        gid = number
                    else:
                        size = number
                elif key == "mtime":
                    mtime = _parse_pax_time(value)
                elif key in ("atime", "ctime"):
                    _parse_pax_time(value)
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
        type_name = _TYPE_NAMES.get(flag)
        if type_name is None:
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
        self._entries.append(
            FileMetadata(
                name=name,
                type=type_name,
                uncompressed_offset=end,
                uncompressed_size=size,
                linkname=linkname,
                mode=header.mode,
                uid=uid & 0xFFFFFFFF,
                gid=gid & 0xFFFFFFFF,
                uname=uname,
                gname=gname,
                mod_time=format_go_time(*mtime),
                devmajor=header.devmajor,
                devminor=header.devminor,
                xattrs=[Xattr(key=k, value=records[k]) for k in keys],
            )
        )
        self._current = where
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
        elif self._state == _DATA:
            self._error = TarFormatError(
                f"tar stream ends inside the data of {self._current}: "
                f"{self._remaining} bytes missing at offset {self._pos}"
            )
        elif self._state == _SPECIAL:
            self._error = TarFormatError(
                f"tar stream ends inside the payload of {self._special_where}: "
                f"{self._remaining} bytes missing at offset {self._pos}"
            )
        if self._error is not None:
            raise self._error
        if self._state != _DONE:
            size = self._pos  # clean io.EOF in Go: on a block boundary or inside padding
        self._result = TocResult(
            entries=self._entries,
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
