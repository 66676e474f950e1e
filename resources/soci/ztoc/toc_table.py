"""Columnar TOC storage: every entry kept as the bytes its zTOC encoding needs, no Python object
per entry.

A layer with 200,000 files would need some 500 bytes per `FileMetadata` object (plus its
strings); here an entry costs one fixed-size record (numbers, string positions) and its six
strings already laid out the way FlatBuffers stores them (`[u32 length][bytes][NUL][padding]`,
in the order they sit in the zTOC), which is also most of what the zTOC itself will hold.
PAX records (`xattrs`), rare in most layers, are kept aside per entry.

The string region of an entry, in memory order: mod_time, gname, uname, linkname, type, name
(the reverse of the order Go's `prepareMetadataOffset` creates them, because FlatBuffers
builds back to front). Each string starts 4-byte aligned, so the region's bytes do not depend
on where the entry ends up in the zTOC.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence

from resources.soci.ztoc.model import (
    FileMetadata,
    Xattr,
    ZtocFormatError,
    check_toc_offsets,
    from_raw_bytes,
    raw_bytes,
)

__all__ = ["RECORD", "TocTable", "encoded_string"]

# offset, size, mode, uid, gid, devmajor, devminor, then the positions of gname, uname, linkname,
# type and name in the string region (mod_time is at 0), the region's length, and a bit mask of
# the numbers that are not 0 (FlatBuffers leaves those fields out).
RECORD = struct.Struct("<qqqIIqqIIIIIIB")
_LEN = struct.Struct("<I")
_ZEROS = (b"\x00" * 4, b"\x00" * 3, b"\x00" * 2, b"\x00")  # NUL + padding, by length % 4
_TAIL_CACHE_LIMIT = 4096


def encoded_string(data: bytes) -> bytes:
    """One FlatBuffers string as a 4-aligned builder writes it: length, bytes, NUL, padding."""
    return _LEN.pack(len(data)) + data + _ZEROS[len(data) & 3]


def _padded_length(length: int) -> int:
    """Bytes `encoded_string` takes for a string of `length` bytes."""
    return 4 + ((length + 4) & ~3)


class TocTable:
    """The TOC entries of one layer, in archive order, stored column-wise (see module docstring)."""

    def __init__(self) -> None:
        self.records = bytearray()
        self.strings = bytearray()
        self.xattrs: dict[int, list[tuple[bytes, bytes]]] = {}  # entry index -> sorted raw records
        self.count = 0
        self._released = False
        self._tails: dict[tuple[bytes, bytes, bytes, bytes, bytes], tuple[bytes, int, int, int, int]] = {}

    def __len__(self) -> int:
        self._check_readable()
        return self.count

    def append(
        self,
        name: bytes,
        type_name: bytes,
        offset: int,
        size: int,
        linkname: bytes,
        mode: int,
        uid: int,
        gid: int,
        uname: bytes,
        gname: bytes,
        mod_time: bytes,
        devmajor: int,
        devminor: int,
        xattrs: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        """Add one entry (strings as raw archive bytes; ``xattrs`` sorted bytewise by key)."""
        key = (mod_time, gname, uname, linkname, type_name)
        tail = self._tails.get(key)
        if tail is None:
            tail = self._encode_tail(key)
        region, p_gname, p_uname, p_link, p_type = tail
        mask = (
            (offset != 0)
            | (size != 0) << 1
            | (mode != 0) << 2
            | (uid != 0) << 3
            | (gid != 0) << 4
            | (devmajor != 0) << 5
            | (devminor != 0) << 6
        )
        strings = self.strings
        strings += region
        strings += _LEN.pack(len(name))
        strings += name
        strings += _ZEROS[len(name) & 3]
        try:
            self.records += RECORD.pack(
                offset, size, mode, uid, gid, devmajor, devminor, p_gname, p_uname, p_link, p_type,
                len(region), len(region) + _padded_length(len(name)), mask,
            )  # fmt: skip
        except struct.error:
            del strings[len(strings) - len(region) - _padded_length(len(name)) :]
            raise ZtocFormatError(
                f"entry {self.count} ({from_raw_bytes(name)!r}): a number is outside the zTOC's field range "
                f"(offset {offset}, size {size}, mode {mode}, uid {uid}, gid {gid}, devmajor {devmajor}, "
                f"devminor {devminor})"
            ) from None
        if xattrs:
            self.xattrs[self.count] = xattrs
        self.count += 1

    def _encode_tail(self, key: tuple[bytes, bytes, bytes, bytes, bytes]) -> tuple[bytes, int, int, int, int]:
        """The region part before the name, and its string positions (cached: layers repeat them)."""
        if len(self._tails) >= _TAIL_CACHE_LIMIT:
            self._tails.clear()
        parts = [encoded_string(s) for s in key]
        positions = []
        at = 0
        for part in parts[:-1]:
            at += len(part)
            positions.append(at)
        tail = (b"".join(parts), *positions)
        self._tails[key] = tail  # type: ignore[assignment]
        return tail  # type: ignore[return-value]

    @classmethod
    def from_entries(cls, entries: Sequence[FileMetadata]) -> TocTable:
        """A table holding `FileMetadata` objects (their PAX records sorted bytewise by key)."""
        table = cls()
        duplicate: ZtocFormatError | None = None  # the encoder meets the last entry first: report that one
        for e in entries:
            records = sorted((raw_bytes(x.key), raw_bytes(x.value)) for x in e.xattrs)
            for prev, cur in zip(records, records[1:]):
                if prev[0] == cur[0]:
                    duplicate = ZtocFormatError(
                        f"entry {e.name!r}: PAX record key {from_raw_bytes(cur[0])!r} appears twice"
                    )
                    break
            table.append(
                raw_bytes(e.name), raw_bytes(e.type), e.uncompressed_offset, e.uncompressed_size,
                raw_bytes(e.linkname), e.mode, e.uid, e.gid, raw_bytes(e.uname), raw_bytes(e.gname),
                raw_bytes(e.mod_time), e.devmajor, e.devminor, records,
            )  # fmt: skip
        if duplicate is not None:
            raise duplicate
        table.finish()
        return table

    def finish(self) -> None:
        """Drop the encoding cache (the table is complete)."""
        self._tails = {}

    def release(self) -> None:
        """Free the entries (after encoding them); reading the table afterwards is an error."""
        self.records = bytearray()
        self.strings = bytearray()
        self.xattrs = {}
        self._released = True

    def _check_readable(self) -> None:
        if self._released:
            raise RuntimeError("TocTable was released after encoding; its entries are in the zTOC")

    # ------------------------------------------------------------------ reading back

    def _string(self, at: int) -> bytes:
        """The raw bytes of the encoded string whose length prefix is at ``at``."""
        (length,) = _LEN.unpack_from(self.strings, at)
        return bytes(self.strings[at + 4 : at + 4 + length])

    def entries(self) -> Iterator[FileMetadata]:
        """The entries as `FileMetadata` objects (for tests and small layers)."""
        self._check_readable()
        start = 0
        for i, rec in enumerate(RECORD.iter_unpack(self.records)):
            offset, size, mode, uid, gid, devmajor, devminor, p_gn, p_un, p_ln, p_ty, p_nm, length, _ = rec
            text = [from_raw_bytes(self._string(start + p)) for p in (p_nm, p_ty, p_ln, p_un, p_gn, 0)]
            yield FileMetadata(
                name=text[0], type=text[1], uncompressed_offset=offset, uncompressed_size=size,
                linkname=text[2], mode=mode, uid=uid, gid=gid, uname=text[3], gname=text[4],
                mod_time=text[5], devmajor=devmajor, devminor=devminor,
                xattrs=[Xattr(from_raw_bytes(k), from_raw_bytes(v)) for k, v in self.xattrs.get(i, ())],
            )  # fmt: skip
            start += length

    def check_offsets(self) -> None:
        """`check_toc_offsets` without building objects when the entries are in offset order."""
        next_header = 0
        previous = -1
        for rec in RECORD.iter_unpack(self.records):
            offset, size = rec[0], rec[1]
            if offset <= previous or next_header > offset:
                check_toc_offsets(list(self.entries()))  # not sorted, or a bad entry: the exact error
                return
            previous = offset
            end = offset + size
            next_header = end + (-end % 512) if end >= 0 else end
