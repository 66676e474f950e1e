"""A back-to-front FlatBuffers writer that yields the official builder's bytes, with a fast path
for TOC entries.

`BackWriter` makes the same layout decisions as `flatbuffers.Builder` (Python 24/25, which makes
Go's): the same alignment (`Prep`), the same vtable deduplication (one dict keyed by the field
offsets and the object size), the same `Finish`. It writes into one buffer sized up front, so a
zTOC is encoded without regrowth copies.

`write_entries` encodes the `FileMetadata` tables of a `TocTable` from the last entry to the
first, as Go's `ztocToFlatbuffer` does. An entry without PAX records is written with two copies
and one `struct.pack_into`: its strings are already encoded in the table, and the table object
takes one of 256 fixed layouts (which numbers are present x whether the object starts 8-byte
aligned), generated once each. Entries with PAX records take the general path.
"""

from __future__ import annotations

import struct
from array import array
from collections import Counter
from collections.abc import Callable
from typing import Any

from resources.soci.ztoc.model import ZtocFormatError
from resources.soci.ztoc.toc_table import RECORD, TocTable

__all__ = ["BackWriter", "encode_ztoc", "write_entries"]

I8 = struct.Struct("<b")
I32 = struct.Struct("<i")
U32 = struct.Struct("<I")
I64 = struct.Struct("<q")
MAX_BUFFER = 2**31
_FM_FIELDS = 14
_VECTOR_BATCH = 8192
_GZIP = 1

_SIZE_ERROR = "zTOC exceeds the 2 GiB FlatBuffers limit: flatbuffers: cannot grow buffer beyond 2 gigabytes"


class BackWriter:
    """FlatBuffers written back to front into a zero-filled buffer (padding is never written)."""

    def __init__(self, capacity: int) -> None:
        self.buf = bytearray(capacity)
        self.cap = capacity
        self.pos = capacity  # the builder's `head`
        self.minalign = 1
        self.vtables: dict[tuple[int, ...], int] = {}
        self._vtable: list[int] = []
        self._object_end = 0

    def offset(self) -> int:
        """The builder's `Offset()`: bytes written so far."""
        return self.cap - self.pos

    def reserve(self, size: int) -> None:
        """Make room for ``size`` more bytes (the estimate was short: grow at the front)."""
        if self.pos >= size:
            return
        if self.offset() + size > MAX_BUFFER:
            raise ZtocFormatError(_SIZE_ERROR)
        extra = max(size, self.cap)
        self.buf[0:0] = bytes(extra)
        self.cap += extra
        self.pos += extra

    def prep(self, size: int, additional: int) -> None:
        """`Builder.Prep`: align so that ``size`` is aligned after ``additional`` more bytes."""
        self.minalign = max(self.minalign, size)
        pad = (-(self.cap - self.pos + additional)) & (size - 1)
        self.reserve(pad + size + additional)
        self.pos -= pad

    def string(self, data: bytes) -> int:
        """`Builder.CreateString` of raw bytes."""
        length = len(data)
        self.prep(4, length + 1)
        pos = self.pos - length - 1  # the NUL is already 0
        self.buf[pos : pos + length] = data
        self.pos = pos - 4
        U32.pack_into(self.buf, self.pos, length)
        return self.cap - self.pos

    def byte_vector(self, data: bytes) -> int:
        """`Builder.CreateByteVector`."""
        length = len(data)
        self.prep(4, length)
        pos = self.pos - length
        self.buf[pos : pos + length] = data
        self.pos = pos - 4
        U32.pack_into(self.buf, self.pos, length)
        return self.cap - self.pos

    def offset_vector(self, offsets: list[int] | array[int]) -> int:
        """`StartVector(4, n, 4)`, `PrependUOffsetTRelative` of each offset (last first), `EndVector`."""
        count = len(offsets)
        self.prep(4, 4 * count)
        base = self.cap - self.pos + 4 * count  # element i ends at base - 4 * i
        self.pos -= 4 * count
        for start in range(0, count, _VECTOR_BATCH):  # in batches: no list of 200,000 ints at once
            batch = offsets[start : start + _VECTOR_BATCH]
            values = array("I", [base - 4 * i - off for i, off in enumerate(batch, start)])
            at = self.pos + 4 * start
            self.buf[at : at + 4 * len(batch)] = values.tobytes()
        self.pos -= 4
        U32.pack_into(self.buf, self.pos, count)
        return self.cap - self.pos

    def start_object(self, fields: int) -> None:
        """`Builder.StartObject`."""
        self._vtable = [0] * fields
        self._object_end = self.cap - self.pos

    def uoffset_slot(self, slot: int, target: int) -> None:
        """`PrependUOffsetTRelativeSlot(slot, target, 0)`."""
        if target != 0:
            self.prep(4, 0)
            value = self.cap - self.pos - target + 4
            self.pos -= 4
            U32.pack_into(self.buf, self.pos, value)
            self._vtable[slot] = self.cap - self.pos

    def scalar_slot(self, slot: int, packer: struct.Struct, value: int, default: int) -> None:
        """`Prepend<Type>Slot(slot, value, default)`."""
        if value != default:
            self.prep(packer.size, 0)
            self.pos -= packer.size
            packer.pack_into(self.buf, self.pos, value)
            self._vtable[slot] = self.cap - self.pos

    def end_object(self) -> int:
        """`Builder.EndObject`: the soffset, then a new vtable or a reference to an equal one."""
        self.prep(4, 0)
        self.pos -= 4
        obj = self.cap - self.pos
        key: list[int] = []
        trim = True
        for elem in reversed(self._vtable):
            if elem == 0:
                if trim:
                    continue
            else:
                elem = obj - elem
                trim = False
            key.append(elem)
        size = obj - self._object_end
        key.append(size)
        vtkey = tuple(key)
        existing = self.vtables.get(vtkey)
        if existing is None:
            fields = key[:-1]
            self.prep(2, 0)
            self.reserve(2 * (len(fields) + 2))
            self.pos -= 2 * (len(fields) + 2)
            struct.pack_into(f"<{len(fields) + 2}H", self.buf, self.pos, 2 * (len(fields) + 2), size, *reversed(fields))
            existing = self.cap - self.pos
            self.vtables[vtkey] = existing
        I32.pack_into(self.buf, self.cap - obj, existing - obj)
        return obj

    def finish(self, root: int) -> bytes:
        """`Builder.Finish(root)` and the finished bytes."""
        self.prep(self.minalign, 4)
        self.prep(4, 0)
        value = self.cap - self.pos - root + 4
        self.pos -= 4
        U32.pack_into(self.buf, self.pos, value)
        if self.cap - self.pos > MAX_BUFFER:
            raise ZtocFormatError(_SIZE_ERROR)
        with memoryview(self.buf) as view:
            return bytes(view[self.pos :])


# --------------------------------------------------------------------------- FileMetadata tables

# (field, kind, bit of the record mask or None); kinds: U string/vector offset, q int64, I uint32.
_FIELDS = (
    ("name", "U", None), ("type", "U", None), ("offset", "q", 0), ("size", "q", 1),
    ("linkname", "U", None), ("mode", "q", 2), ("uid", "I", 3), ("gid", "I", 4),
    ("uname", "U", None), ("gname", "U", None), ("mod_time", "U", None),
    ("devmajor", "q", 5), ("devminor", "q", 6), ("xattrs", "U", None),
)  # fmt: skip
# Where each offset field points, from the first byte after the table's 4-byte empty xattr vector.
_TARGET = {"name": "p_nm", "type": "p_ty", "linkname": "p_ln", "uname": "p_un", "gname": "p_gn", "mod_time": "0"}
_Fill = Callable[..., None]
_Layout = tuple[int, tuple[int, ...], bytes, _Fill]


def _layout(mask: int, parity: int) -> _Layout:
    """Object size, vtable key, vtable bytes and writer of a FileMetadata table without PAX records
    whose numbers present are ``mask`` and whose end is at an offset of ``parity`` (0 or 4) mod 8."""
    w = parity
    items: list[tuple[str, str | None]] = []  # in build order (pads precede their field)
    slots = [0] * _FM_FIELDS
    for slot, (name, kind, bit) in enumerate(_FIELDS):
        if bit is not None and not mask >> bit & 1:
            continue
        size = 8 if kind == "q" else 4
        pad = -w % size
        if pad:
            items.append((f"{pad}x", None))
            w += pad
        w += size
        slots[slot] = w
        if kind == "U":
            rel = w - parity
            expr = f"{rel}" if name == "xattrs" else f"{rel + 4} + {_TARGET[name]}"
        else:
            expr = name
        items.append((kind, expr))
    w += 4
    items.append(("i", "soff"))
    obj_size = w - parity
    vtkey = tuple((w - s) if s else 0 for s in reversed(slots)) + (obj_size,)
    vtable = struct.pack(f"<{_FM_FIELDS + 2}H", 2 * (_FM_FIELDS + 2), obj_size, *((w - s) if s else 0 for s in slots))
    memory = items[::-1]
    fmt = "<" + "".join("I" if k == "U" else k for k, _ in memory)
    args = ", ".join(e for _, e in memory if e is not None)
    source = (
        "def fill(buf, at, soff, offset, size, mode, uid, gid, devmajor, devminor, p_gn, p_un, p_ln, p_ty, p_nm):\n"
        f"    pack_into(buf, at, {args})\n"
    )
    namespace: dict[str, Any] = {"pack_into": struct.Struct(fmt).pack_into}
    exec(compile(source, f"<FileMetadata layout {mask:07b}/{parity}>", "exec"), namespace)
    return obj_size, vtkey, vtable, namespace["fill"]


_LAYOUTS: list[_Layout] = [_layout(index >> 1, 4 * (index & 1)) for index in range(256)]
_VTABLE_BYTES = 2 * (_FM_FIELDS + 2)
_MAX_OBJECT = 4 + 7 * 4 + 5 * 8 + 2 * 4 + 12 + 4  # soffset, offsets, numbers, padding, xattr vector
# Per field mask: the larger object size of the two alignments, plus the empty xattr vector.
_OBJECT_BOUND = [max(_LAYOUTS[2 * mask][0], _LAYOUTS[2 * mask + 1][0]) + 4 for mask in range(128)]


def _string_at(strings: bytes | bytearray | memoryview, at: int) -> bytes:
    """The raw bytes of the encoded string whose length prefix is at ``at``."""
    (length,) = U32.unpack_from(strings, at)
    return bytes(strings[at + 4 : at + 4 + length])


def _write_general(
    w: BackWriter, record: tuple[int, ...], strings: memoryview, start: int, xattrs: list[tuple[bytes, bytes]]
) -> int:
    """One FileMetadata table the way Go's `prepareMetadataOffset` makes it (any entry)."""
    offset, size, mode, uid, gid, devmajor, devminor, p_gn, p_un, p_ln, p_ty, p_nm = record[:12]
    name = w.string(_string_at(strings, start + p_nm))
    type_ = w.string(_string_at(strings, start + p_ty))
    linkname = w.string(_string_at(strings, start + p_ln))
    uname = w.string(_string_at(strings, start + p_un))
    gname = w.string(_string_at(strings, start + p_gn))
    mod_time = w.string(_string_at(strings, start))
    tables = []
    for key, value in xattrs:
        key_off = w.string(key)
        value_off = w.string(value)
        w.start_object(2)
        w.uoffset_slot(0, key_off)
        w.uoffset_slot(1, value_off)
        tables.append(w.end_object())
    vector = w.offset_vector(tables)
    w.start_object(_FM_FIELDS)
    w.uoffset_slot(0, name)
    w.uoffset_slot(1, type_)
    w.scalar_slot(2, I64, offset, 0)
    w.scalar_slot(3, I64, size, 0)
    w.uoffset_slot(4, linkname)
    w.scalar_slot(5, I64, mode, 0)
    w.scalar_slot(6, U32, uid, 0)
    w.scalar_slot(7, U32, gid, 0)
    w.uoffset_slot(8, uname)
    w.uoffset_slot(9, gname)
    w.uoffset_slot(10, mod_time)
    w.scalar_slot(11, I64, devmajor, 0)
    w.scalar_slot(12, I64, devminor, 0)
    w.uoffset_slot(13, vector)
    return w.end_object()


def write_entries(w: BackWriter, table: TocTable, *, general_only: bool = False) -> array[int]:
    """Write every entry's FileMetadata table, last first; returns their offsets (first first)."""
    count = table.count
    offsets = array("I", bytes(4 * count))
    if not count:
        return offsets
    records = table.records
    strings = memoryview(table.strings)
    xattrs = table.xattrs
    unpack = RECORD.unpack_from
    rsize = RECORD.size
    layouts = _LAYOUTS
    vtables = w.vtables
    str_end = len(strings)
    wide = 0
    w.prep(4, 0)  # the writer stands 4-aligned between tables
    w.minalign = max(w.minalign, 4)
    buf, cap, pos = w.buf, w.cap, w.pos
    for i in range(count - 1, -1, -1):
        record = unpack(records, i * rsize)
        length = record[12]
        str_start = str_end - length
        if general_only or i in xattrs:
            w.pos = pos
            offsets[i] = _write_general(w, record, strings, str_start, xattrs.get(i, []))
            buf, cap, pos = w.buf, w.cap, w.pos
        else:
            if pos < length + _MAX_OBJECT + _VTABLE_BYTES:
                w.pos = pos
                w.reserve(length + _MAX_OBJECT + _VTABLE_BYTES)
                buf, cap, pos = w.buf, w.cap, w.pos
            mask = record[13]
            wide |= mask
            pos -= length
            buf[pos : pos + length] = strings[str_start:str_end]
            pos -= 4  # the empty xattrs vector: its length, 0
            obj_size, vtkey, vtable, fill = layouts[mask << 1 | ((cap - pos) & 4) >> 2]
            pos -= obj_size
            obj = cap - pos
            existing = vtables.get(vtkey)
            if existing is None:
                pos -= _VTABLE_BYTES
                buf[pos : pos + _VTABLE_BYTES] = vtable
                existing = cap - pos
                vtables[vtkey] = existing
            fill(buf, cap - obj, existing - obj, *record[:12])
            offsets[i] = obj
        str_end = str_start
    w.pos = pos
    if wide & 0b1100111:  # an int64 field was written: the builder's Prep(8) raised minalign
        w.minalign = max(w.minalign, 8)
    return offsets


def encoded_size_bound(table: TocTable, checkpoints: int, digests: int, text: int) -> int:
    """A little more than the zTOC can take (so the writer does not regrow, nor hold much slack)."""
    xattr_bytes = sum(48 + len(k) + len(v) for records in table.xattrs.values() for k, v in records)
    masks = Counter(table.records[RECORD.size - 1 :: RECORD.size])  # each entry's field mask
    objects = sum(count * _OBJECT_BOUND[mask] for mask, count in masks.items())
    return (
        len(table.strings) + objects + table.count * 8 + len(_LAYOUTS) * _VTABLE_BYTES
        + xattr_bytes + 8 * len(table.xattrs) * _VTABLE_BYTES + checkpoints + 84 * digests + text + 1024
    )  # fmt: skip


def encode_ztoc(
    *,
    version: bytes,
    build_tool_identifier: bytes,
    compressed_archive_size: int,
    uncompressed_archive_size: int,
    table: TocTable,
    algorithm: int,
    max_span_id: int,
    span_digests: list[bytes],
    checkpoints: bytes,
    general_only: bool = False,
    release_table: bool = False,
) -> bytes:
    """The zTOC bytes, making Go's `ztocToFlatbuffer` builder calls in its order.

    ``release_table`` empties ``table`` right after its entries are written.
    """
    bound = encoded_size_bound(table, len(checkpoints), len(span_digests), len(version) + len(build_tool_identifier))
    w = BackWriter(min(bound, MAX_BUFFER))
    version_off = w.string(version)
    build_tool = w.string(build_tool_identifier)
    entry_offsets = write_entries(w, table, general_only=general_only)
    if release_table:
        table.release()
    metadata = w.offset_vector(entry_offsets)
    del entry_offsets
    w.start_object(1)
    w.uoffset_slot(0, metadata)
    toc = w.end_object()
    checkpoints_off = w.byte_vector(checkpoints)
    digests = w.offset_vector([w.string(d) for d in span_digests])
    w.start_object(4)
    w.scalar_slot(1, I32, max_span_id, 0)
    w.uoffset_slot(2, digests)
    w.uoffset_slot(3, checkpoints_off)
    if algorithm != _GZIP:
        w.scalar_slot(0, I8, algorithm, _GZIP)
    compression_info = w.end_object()
    w.start_object(6)
    w.uoffset_slot(0, version_off)
    w.uoffset_slot(1, build_tool)
    w.uoffset_slot(4, toc)
    w.scalar_slot(2, I64, compressed_archive_size, 0)
    w.scalar_slot(3, I64, uncompressed_archive_size, 0)
    w.uoffset_slot(5, compression_info)
    return w.finish(w.end_object())
