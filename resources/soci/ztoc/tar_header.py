"""Tar header blocks as Go's `archive/tar` reader decodes them (fields, numbers, checksum, times).

`parse_header` is the general decoder; `FastHeaders` decodes, with a few C-level calls, the
header blocks most writers emit (ustar or GNU magic, plain octal numbers, no device numbers) and
returns None for anything else, which then takes the general path. Both give the same result
for a block `FastHeaders` accepts.
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from resources.errors import StreamableError
from resources.soci.ztoc.model import from_raw_bytes

BLOCK_SIZE = 512
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
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


def parse_pax_time(value: str) -> tuple[int, int]:
    """Go's parsePAXTime: '%d[.%d]' to (seconds, nanoseconds), exact, sign applied to both."""
    secs_text, _, frac = value.partition(".")
    secs = parse_go_int(secs_text)
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


def parse_go_int(text: str) -> int | None:
    """strconv.ParseInt(text, 10, 64), or None when Go would fail."""
    if not _DECIMAL_RE.fullmatch(text):
        return None
    value = int(text)
    return value if _INT64_MIN <= value <= _INT64_MAX else None


# --------------------------------------------------------------------------- header fields


class _FieldError(StreamableError):
    """A numeric header field Go cannot parse."""


def parse_string(field: bytes) -> bytes:
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
        digits = parse_string(field)
        if not _OCTAL_RE.fullmatch(digits):
            raise _FieldError(f"invalid octal number {field!r}")
        value = int(digits, 8)
    if value >= 2**64:
        raise _FieldError(f"octal number {field!r} overflows 64 bits")
    return value - 2**64 if value >= 2**63 else value


def parse_numeric(field: bytes) -> int:
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
class RawHeader:
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


def parse_header(block: bytes, offset: int) -> RawHeader:
    """Decode a non-zero header block; TarFormatError for a bad checksum or number."""
    (
        name_field, mode_f, uid_f, gid_f, size_f, mtime_f, checksum_f, typeflag, linkname_f,
        magic, version, uname_f, gname_f, devmajor_f, devminor_f, tail, _,
    ) = _HEADER_LAYOUT.unpack(block)  # fmt: skip
    name = from_raw_bytes(parse_string(name_field))
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
        size = parse_numeric(size_f)
        field = "mode"
        mode = parse_numeric(mode_f)
        field = "uid"
        uid = parse_numeric(uid_f)
        field = "gid"
        gid = parse_numeric(gid_f)
        field = "mtime"
        mtime = parse_numeric(mtime_f)
        header = RawHeader(
            typeflag=typeflag,
            name=name,
            linkname=from_raw_bytes(parse_string(linkname_f)),
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
            header.uname = from_raw_bytes(parse_string(uname_f))
            header.gname = from_raw_bytes(parse_string(gname_f))
            field = "devmajor"
            header.devmajor = parse_numeric(devmajor_f)
            field = "devminor"
            header.devminor = parse_numeric(devminor_f)
            prefix = b""
            if magic == _MAGIC_USTAR and block[508:512] == _TRAILER_STAR:
                prefix = parse_string(block[345:476])
                field = "atime"
                parse_numeric(block[476:488])
                field = "ctime"
                parse_numeric(block[488:500])
            elif magic == _MAGIC_USTAR:
                prefix = parse_string(tail)
            elif not _gnu_times_parse(block):
                # Pre-Go1.8 writers put a ustar prefix into a GNU header; Go reads it back.
                candidate = parse_string(tail)
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
                parse_numeric(field)
            except _FieldError:
                return False
    return True


@lru_cache(maxsize=4096)
def format_go_time_bytes(seconds: int, nanoseconds: int = 0) -> bytes:
    """`format_go_time` as the bytes a zTOC stores."""
    return format_go_time(seconds, nanoseconds).encode("ascii")


# --------------------------------------------------------------------------- fast path

# The usual widths of octal numbers (Go's, Python's and GNU tar's writers): 7 digits for mode, uid
# and gid, 11 for size and mtime, and 6 (+ 2 terminators) or 7 (+ 1) for the checksum.
_FAST_IDS = re.compile(rb"([0-7]{7})[ \x00]([0-7]{7})[ \x00]([0-7]{7})[ \x00]")  # at 100
_FAST_MTIME = re.compile(rb"([0-7]{11})[ \x00]")  # at 136
_FAST_SIZE_CHECKSUM = re.compile(  # at 124
    rb"([0-7]{11})[ \x00][\s\S]{12}(?:([0-7]{6})[ \x00][ \x00]|([0-7]{7})[ \x00])"
)
_ZERO_DEVICES = (b"0000000\x000000000\x00", bytes(16), b"0000000 0000000 ")
_MAGIC_USTAR_00 = b"ustar\x0000"
_MAGIC_GNU_FULL = _MAGIC_GNU + _VERSION_GNU
_META_CACHE_LIMIT = 4096
# typeflag, linkname, mode, uid, gid, mod_time (zTOC text), uname, gname, ustar (else GNU) magic
HeaderMeta = tuple[int, bytes, int, int, int, bytes, bytes, bytes, bool]
_MISSING: Any = object()  # a dict.get default that no cached value equals


def _cut(block: bytes, start: int, end: int) -> bytes:
    """Go's parseString of block[start:end]: up to the first NUL."""
    nul = block.find(0, start, end)
    return block[start : nul if nul >= 0 else end]


def _decode_meta(block: bytes) -> HeaderMeta | None:
    """The fields of a header other than name, size and checksum, if the fast path takes them."""
    ids = _FAST_IDS.match(block, 100)
    mtime = _FAST_MTIME.match(block, 136)
    if ids is None or mtime is None or block[329:345] not in _ZERO_DEVICES:
        return None
    magic = block[257:265]
    if magic != _MAGIC_USTAR_00 and magic != _MAGIC_GNU_FULL:
        return None
    mode, uid, gid = ids.groups()
    return (
        block[156], _cut(block, 157, 257), int(mode, 8), int(uid, 8), int(gid, 8),
        format_go_time_bytes(int(mtime[1], 8), 0), _cut(block, 265, 297), _cut(block, 297, 329),
        magic == _MAGIC_USTAR_00,
    )  # fmt: skip


class FastHeaders:
    """Decodes the header blocks most writers emit, for a fraction of `parse_header`'s cost.

    Accepted: ustar ("ustar\\0" "00", not STAR) or GNU magic with empty atime/ctime, octal numbers
    in their usual widths, device fields 0, and an unsigned checksum that matches; for those,
    `parse_header` gives the same values (devices 0). Everything but name, size and checksum
    repeats from entry to entry in a layer, so it is decoded once per distinct raw value.
    """

    def __init__(self) -> None:
        self._meta: dict[bytes, HeaderMeta | None] = {}

    def decode(self, block: bytes) -> tuple[bytes, int, HeaderMeta] | None:
        """(name, size, the other fields) of a block the fast path takes, else None."""
        key = block[100:124] + block[136:148] + block[156:345]
        meta = self._meta.get(key, _MISSING)
        if meta is _MISSING:
            if len(self._meta) >= _META_CACHE_LIMIT:
                self._meta.clear()
            meta = self._meta[key] = _decode_meta(block)
        if meta is None:
            return None
        numbers = _FAST_SIZE_CHECKSUM.match(block, 124)
        if numbers is None:
            return None
        size, checksum6, checksum7 = numbers.groups()
        # Byte sums through adler32 (its low half is 1 + the sum while 256 bytes cannot reach 65521).
        unsigned = (
            (zlib.adler32(block[:256]) & 0xFFFF) + (zlib.adler32(block[256:]) & 0xFFFF) - 2
            - sum(block[148:156]) + 8 * 0x20
        )  # fmt: skip
        if int(checksum6 or checksum7, 8) != unsigned:
            return None
        nul = block.find(0, 0, 100)
        name = block[: nul if nul >= 0 else 100]
        if meta[8]:  # ustar: a STAR header reads its prefix elsewhere; else the prefix joins the name
            if block[508:512] == _TRAILER_STAR:
                return None
            if block[345]:
                name = _cut(block, 345, 500) + b"/" + name
        elif block[345] or block[357]:  # GNU atime/ctime: Go may read a ustar prefix there
            return None
        return name, int(size, 8), meta
