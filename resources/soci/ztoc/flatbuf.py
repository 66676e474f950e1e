"""zTOC <-> FlatBuffers bytes, byte-identical to soci-snapshotter's `ztoc_marshaler.go`.

Schema (upstream `ztoc/fbs/ztoc.fbs`, field slots in this order):

    table Xattr { key:string; value:string; }
    table FileMetadata { name:string; type:string; uncompressed_offset:long;
        uncompressed_size:long; linkname:string; mode:long; uid:uint32; gid:uint32;
        uname:string; gname:string; mod_time:string; devmajor:long; devminor:long;
        xattrs:[Xattr]; }
    enum CompressionAlgorithm:byte { Gzip = 1, Uncompressed }
    table CompressionInfo { compression_algorithm:CompressionAlgorithm = Gzip;
        max_span_id:int; span_digests:[string]; checkpoints:[ubyte]; }
    table TOC { metadata:[FileMetadata]; }
    table Ztoc { version:string; build_tool_identifier:string; compressed_archive_size:long;
        uncompressed_archive_size:long; toc:TOC; compression_info:CompressionInfo; }
    root_type Ztoc;

FlatBuffers bytes depend on the order of builder calls, so `serialize_ztoc` makes the same
calls as Go's `ztocToFlatbuffer` (docs/soci-format.md section 5), through `flatbuf_writer` (the official
builder's layout rules, without its per-call cost), which then yields Go's bytes. Reading uses
`FlatTable`, a small bounds-checked accessor, because the Python runtime has no verifier and
reads out of range (or from the end, for negative offsets) on malformed input.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from typing import overload

from resources.soci.ztoc.flatbuf_writer import encode_ztoc
from resources.soci.ztoc.model import (
    CompressionAlgorithm,
    CompressionInfo,
    FileMetadata,
    Xattr,
    Ztoc,
    ZtocFormatError,
    check_toc_offsets,
    from_raw_bytes,
    raw_bytes,
)
from resources.soci.ztoc.toc_table import TocTable

__all__ = [
    "FlatTable",
    "ZtocEntries",
    "ZtocFormatError",
    "check_ztoc_fields",
    "parse_ztoc",
    "serialize_table",
    "serialize_ztoc",
]

_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)
_UINT32 = (0, 2**32 - 1)
_MAX_INITIAL = 2**31 - 1

# Slots (field index in the schema) per table.
_XATTR_FIELDS = 2
_FM_NAME, _FM_TYPE, _FM_OFFSET, _FM_SIZE, _FM_LINKNAME, _FM_MODE = 0, 1, 2, 3, 4, 5
_FM_UID, _FM_GID, _FM_UNAME, _FM_GNAME, _FM_MOD_TIME = 6, 7, 8, 9, 10
_FM_DEVMAJOR, _FM_DEVMINOR, _FM_XATTRS = 11, 12, 13
_FM_FIELDS = 14
_CI_ALGORITHM, _CI_MAX_SPAN_ID, _CI_SPAN_DIGESTS, _CI_CHECKPOINTS = 0, 1, 2, 3
_CI_FIELDS = 4
_TOC_METADATA = 0
_TOC_FIELDS = 1
_Z_VERSION, _Z_BUILD_TOOL, _Z_COMPRESSED, _Z_UNCOMPRESSED, _Z_TOC, _Z_COMPRESSION = range(6)
_Z_FIELDS = 6


# --------------------------------------------------------------------------- serialize


def serialize_ztoc(z: Ztoc) -> bytes:
    """Encode a zTOC exactly as soci-snapshotter does (same builder calls, same bytes).

    Refuses (ZtocFormatError, naming the field or entry) what the schema cannot hold and
    TOCs that soci-snapshotter's Unmarshal would reject (`check_toc_offsets`).
    """
    check_ztoc_fields(z)
    check_toc_offsets(z.entries)
    return serialize_table(z, TocTable.from_entries(z.entries))


def serialize_table(z: Ztoc, table: TocTable, *, release_table: bool = False) -> bytes:
    """Encode a zTOC whose entries are ``table`` (``z.entries`` is not read); see `flatbuf_writer`.

    ``release_table`` empties the table once its entries are written (before the final copy).
    """
    info = z.compression
    return encode_ztoc(
        version=raw_bytes(z.version),
        build_tool_identifier=raw_bytes(z.build_tool_identifier),
        compressed_archive_size=z.compressed_archive_size,
        uncompressed_archive_size=z.uncompressed_archive_size,
        table=table,
        algorithm=int(info.algorithm),
        max_span_id=info.max_span_id,
        span_digests=[raw_bytes(d) for d in info.span_digests],
        checkpoints=info.checkpoints if isinstance(info.checkpoints, bytes) else bytes(info.checkpoints),
        release_table=release_table,
    )


def check_ztoc_fields(z: Ztoc) -> None:
    """Reject values the schema cannot hold, naming the field (Go would wrap them silently)."""
    _check_range("compressed_archive_size", z.compressed_archive_size, _INT64)
    _check_range("uncompressed_archive_size", z.uncompressed_archive_size, _INT64)
    _check_range("compression.max_span_id", z.compression.max_span_id, _INT32)
    try:
        CompressionAlgorithm(z.compression.algorithm)
    except ValueError:
        raise ZtocFormatError(
            f"compression.algorithm: unknown value {z.compression.algorithm!r}"
        ) from None
    if not isinstance(z.compression.checkpoints, (bytes, bytearray, memoryview)):
        raise ZtocFormatError("compression.checkpoints must be bytes")
    for i, e in enumerate(z.entries):
        where = f"entry {i} ({e.name!r})"
        for field in ("uncompressed_offset", "uncompressed_size", "mode", "devmajor", "devminor"):
            _check_range(f"{where}.{field}", getattr(e, field), _INT64)
        _check_range(f"{where}.uid", e.uid, _UINT32)
        _check_range(f"{where}.gid", e.gid, _UINT32)


def _check_range(what: str, value: int, bounds: tuple[int, int]) -> None:
    """Raise ZtocFormatError unless `value` is an int within `bounds`."""
    if not isinstance(value, int) or isinstance(value, bool) or not bounds[0] <= value <= bounds[1]:
        raise ZtocFormatError(f"{what}: {value!r} is outside [{bounds[0]}, {bounds[1]}]")


# --------------------------------------------------------------------------- parse


class FlatTable:
    """A FlatBuffers table inside `buf`, read with bounds checks (ZtocFormatError on bad data).

    Error messages name the field by its path (e.g. `ztoc.toc.metadata[3].name`); the path is
    only assembled when an error is raised.
    """

    __slots__ = ("_buf", "_label", "_parent", "_pos", "_vtable", "_vtable_size")

    def __init__(self, buf: bytes, pos: int, parent: FlatTable | None, label: str) -> None:
        self._buf = buf
        self._pos = pos
        self._parent = parent
        self._label = label
        vtable = pos - self._read(_I32, pos, "")
        self._vtable = vtable
        self._vtable_size = self._read(_U16, vtable, "")
        if self._vtable_size < 4 or self._vtable_size % 2 or vtable + self._vtable_size > len(buf):
            raise ZtocFormatError(f"{self.what}: bad vtable (size {self._vtable_size} at {vtable})")

    @classmethod
    def root(cls, buf: bytes, label: str) -> FlatTable:
        """The root table of a finished buffer (no size prefix, no file identifier)."""
        if len(buf) < 4:
            raise ZtocFormatError(f"{label}: {len(buf)} bytes is too short for a FlatBuffer")
        return cls(buf, _U32.unpack_from(buf, 0)[0], None, label)

    @property
    def what(self) -> str:
        """This table's path from the root, for error messages."""
        return self._label if self._parent is None else f"{self._parent.what}.{self._label}"

    def _read(self, packer: struct.Struct, pos: int, name: str) -> int:
        """One little-endian scalar at `pos`, bounds-checked."""
        if pos < 0 or pos + packer.size > len(self._buf):
            raise self._outside(name, pos, packer.size)
        return packer.unpack_from(self._buf, pos)[0]

    def _outside(self, name: str, pos: int, size: int) -> ZtocFormatError:
        """The error for a reference outside the buffer."""
        where = f"{self.what}.{name}" if name else self.what
        return ZtocFormatError(
            f"{where}: reference to bytes {pos}..{pos + size} outside the "
            f"{len(self._buf)}-byte buffer"
        )

    def _field(self, slot: int) -> int | None:
        """Absolute position of a field, or None when absent (default value)."""
        voffset = 4 + 2 * slot
        if voffset >= self._vtable_size:
            return None
        off = _U16.unpack_from(self._buf, self._vtable + voffset)[0]  # vtable bounds checked
        return self._pos + off if off else None

    def scalar(self, slot: int, packer: struct.Struct, default: int, name: str) -> int:
        """A scalar field."""
        pos = self._field(slot)
        return default if pos is None else self._read(packer, pos, name)

    def _target(self, slot: int, name: str) -> int | None:
        """Follow a uoffset field to the object it points at."""
        pos = self._field(slot)
        return None if pos is None else pos + self._read(_U32, pos, name)

    def table(self, slot: int, name: str) -> FlatTable | None:
        """A sub-table field."""
        target = self._target(slot, name)
        return None if target is None else FlatTable(self._buf, target, self, name)

    def _vector(self, slot: int, name: str, elem_size: int) -> tuple[int, int] | None:
        """(first element position, length) of a vector field."""
        target = self._target(slot, name)
        if target is None:
            return None
        length = self._read(_U32, target, name)
        if target + 4 + length * elem_size > len(self._buf):
            raise self._outside(name, target + 4, length * elem_size)
        return target + 4, length

    def _string_at(self, pos: int, name: str) -> bytes:
        """The bytes of the string whose length prefix is at `pos` (NUL terminator required)."""
        size = self._read(_U32, pos, name)
        end = pos + 4 + size
        if end >= len(self._buf):
            raise self._outside(name, pos + 4, size + 1)
        if self._buf[end] != 0:
            raise ZtocFormatError(f"{self.what}.{name}: string is not NUL-terminated")
        return self._buf[pos + 4 : end]

    def string(self, slot: int, name: str) -> str:
        """A string field ('' when absent, like Go's accessor)."""
        target = self._target(slot, name)
        return "" if target is None else from_raw_bytes(self._string_at(target, name))

    def bytes_vector(self, slot: int, name: str) -> bytes:
        """A [ubyte] field (b'' when absent)."""
        vec = self._vector(slot, name, 1)
        return b"" if vec is None else self._buf[vec[0] : vec[0] + vec[1]]

    def _element_positions(self, slot: int, name: str) -> list[int]:
        """Absolute positions of the elements of a vector of offsets ([] when absent)."""
        vec = self._vector(slot, name, 4)
        if vec is None:
            return []
        start, length = vec
        offsets = struct.unpack_from(f"<{length}I", self._buf, start)
        return [start + 4 * i + off for i, off in enumerate(offsets)]

    def tables(self, slot: int, name: str) -> list[FlatTable]:
        """A vector of tables ([] when absent)."""
        return [FlatTable(self._buf, pos, self, f"{name}[{i}]")
                for i, pos in enumerate(self._element_positions(slot, name))]

    def strings(self, slot: int, name: str) -> list[str]:
        """A vector of strings ([] when absent)."""
        return [
            from_raw_bytes(self._string_at(pos, f"{name}[{i}]"))
            for i, pos in enumerate(self._element_positions(slot, name))
        ]


_I8 = struct.Struct("<b")
_U16 = struct.Struct("<H")
_I32 = struct.Struct("<i")
_U32 = struct.Struct("<I")
_I64 = struct.Struct("<q")


def parse_ztoc(data: bytes) -> Ztoc:
    """Decode a zTOC blob written by this module or by soci-snapshotter.

    Entries stay in stored order. Bytes after the FlatBuffer (soci's optional
    `---SOCI-PREFETCH---` JSON appendix) are ignored. Like soci's Unmarshal, a TOC whose
    entries overlap is rejected (`check_toc_offsets`).
    """
    buf = bytes(data)
    root = FlatTable.root(buf, "ztoc")
    toc = root.table(_Z_TOC, "toc")
    if toc is None:
        raise ZtocFormatError("ztoc: the toc table is missing")
    info = root.table(_Z_COMPRESSION, "compression_info")
    if info is None:
        raise ZtocFormatError("ztoc: the compression_info table is missing")
    algorithm_value = info.scalar(_CI_ALGORITHM, _I8, int(CompressionAlgorithm.GZIP), "algorithm")
    try:
        algorithm = CompressionAlgorithm(algorithm_value)
    except ValueError:
        raise ZtocFormatError(
            f"ztoc.compression_info: unknown compression algorithm {algorithm_value}"
        ) from None
    z = Ztoc(
        version=root.string(_Z_VERSION, "version"),
        build_tool_identifier=root.string(_Z_BUILD_TOOL, "build_tool_identifier"),
        compressed_archive_size=root.scalar(_Z_COMPRESSED, _I64, 0, "compressed_archive_size"),
        uncompressed_archive_size=root.scalar(
            _Z_UNCOMPRESSED, _I64, 0, "uncompressed_archive_size"
        ),
        entries=[_parse_file_metadata(t) for t in toc.tables(_TOC_METADATA, "metadata")],
        compression=CompressionInfo(
            algorithm=algorithm,
            max_span_id=info.scalar(_CI_MAX_SPAN_ID, _I32, 0, "max_span_id"),
            span_digests=info.strings(_CI_SPAN_DIGESTS, "span_digests"),
            checkpoints=info.bytes_vector(_CI_CHECKPOINTS, "checkpoints"),
        ),
    )
    check_toc_offsets(z.entries)
    return z


def _parse_file_metadata(t: FlatTable) -> FileMetadata:
    """Decode one FileMetadata table."""
    return FileMetadata(
        name=t.string(_FM_NAME, "name"),
        type=t.string(_FM_TYPE, "type"),
        uncompressed_offset=t.scalar(_FM_OFFSET, _I64, 0, "uncompressed_offset"),
        uncompressed_size=t.scalar(_FM_SIZE, _I64, 0, "uncompressed_size"),
        linkname=t.string(_FM_LINKNAME, "linkname"),
        mode=t.scalar(_FM_MODE, _I64, 0, "mode"),
        uid=t.scalar(_FM_UID, _U32, 0, "uid"),
        gid=t.scalar(_FM_GID, _U32, 0, "gid"),
        uname=t.string(_FM_UNAME, "uname"),
        gname=t.string(_FM_GNAME, "gname"),
        mod_time=t.string(_FM_MOD_TIME, "mod_time"),
        devmajor=t.scalar(_FM_DEVMAJOR, _I64, 0, "devmajor"),
        devminor=t.scalar(_FM_DEVMINOR, _I64, 0, "devminor"),
        xattrs=[
            Xattr(key=x.string(0, "key"), value=x.string(1, "value"))
            for x in t.tables(_FM_XATTRS, "xattrs")
        ],
    )


class ZtocEntries(Sequence[FileMetadata]):
    """The TOC entries of encoded zTOC bytes, decoded one by one when read (equal to a list of
    the same `FileMetadata`)."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        root = FlatTable.root(data, "ztoc")
        toc = root.table(_Z_TOC, "toc")
        if toc is None:
            raise ZtocFormatError("ztoc: the toc table is missing")
        self._toc = toc
        self._positions = toc._element_positions(_TOC_METADATA, "metadata")

    def __len__(self) -> int:
        return len(self._positions)

    @overload
    def __getitem__(self, index: int) -> FileMetadata: ...

    @overload
    def __getitem__(self, index: slice) -> list[FileMetadata]: ...

    def __getitem__(self, index: int | slice) -> FileMetadata | list[FileMetadata]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        pos = self._positions[index]
        return _parse_file_metadata(FlatTable(self._data, pos, self._toc, f"metadata[{index}]"))

    def __iter__(self) -> Iterator[FileMetadata]:
        for i in range(len(self._positions)):
            yield self[i]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (list, tuple, ZtocEntries)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    def __repr__(self) -> str:
        return f"ZtocEntries({len(self)} entries)"
