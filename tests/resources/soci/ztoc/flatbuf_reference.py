"""Reference zTOC encoder: the official `flatbuffers.Builder` making Go's `ztocToFlatbuffer` calls.

This is the encoder `flatbuf.serialize_ztoc` used before the fast writer (`flatbuf_writer`);
tests compare the two on random TOCs. Test-only code.
"""

from __future__ import annotations

import flatbuffers

from resources.soci.ztoc.model import (
    CompressionAlgorithm,
    FileMetadata,
    Ztoc,
    ZtocFormatError,
    from_raw_bytes,
    raw_bytes,
)

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


def reference_serialize(z: Ztoc) -> bytes:
    """The zTOC bytes as the official builder makes them (no range checks)."""
    return _encode(z, flatbuffers.Builder(0))


def _encode(z: Ztoc, b: flatbuffers.Builder) -> bytes:
    """Make Go's `ztocToFlatbuffer` builder calls, in its order."""
    version = b.CreateString(raw_bytes(z.version))
    build_tool = b.CreateString(raw_bytes(z.build_tool_identifier))

    entry_offsets = [0] * len(z.entries)
    for i in range(len(z.entries) - 1, -1, -1):
        entry_offsets[i] = _build_file_metadata(b, z.entries[i])
    metadata = _build_offset_vector(b, entry_offsets)
    b.StartObject(_TOC_FIELDS)
    b.PrependUOffsetTRelativeSlot(_TOC_METADATA, metadata, 0)
    toc = b.EndObject()

    info = z.compression
    raw_checkpoints = info.checkpoints
    checkpoints = b.CreateByteVector(
        raw_checkpoints if isinstance(raw_checkpoints, bytes) else bytes(raw_checkpoints)
    )
    digest_offsets = [b.CreateString(raw_bytes(d)) for d in info.span_digests]
    span_digests = _build_offset_vector(b, digest_offsets)
    b.StartObject(_CI_FIELDS)
    b.PrependInt32Slot(_CI_MAX_SPAN_ID, info.max_span_id, 0)
    b.PrependUOffsetTRelativeSlot(_CI_SPAN_DIGESTS, span_digests, 0)
    b.PrependUOffsetTRelativeSlot(_CI_CHECKPOINTS, checkpoints, 0)
    if info.algorithm != CompressionAlgorithm.GZIP:
        b.PrependInt8Slot(_CI_ALGORITHM, int(info.algorithm), int(CompressionAlgorithm.GZIP))
    compression_info = b.EndObject()

    b.StartObject(_Z_FIELDS)
    b.PrependUOffsetTRelativeSlot(_Z_VERSION, version, 0)
    b.PrependUOffsetTRelativeSlot(_Z_BUILD_TOOL, build_tool, 0)
    b.PrependUOffsetTRelativeSlot(_Z_TOC, toc, 0)
    b.PrependInt64Slot(_Z_COMPRESSED, z.compressed_archive_size, 0)
    b.PrependInt64Slot(_Z_UNCOMPRESSED, z.uncompressed_archive_size, 0)
    b.PrependUOffsetTRelativeSlot(_Z_COMPRESSION, compression_info, 0)
    b.Finish(b.EndObject())
    with memoryview(b.Bytes) as buffer:
        return bytes(buffer[b.Head() :])


def _build_file_metadata(b: flatbuffers.Builder, e: FileMetadata) -> int:
    """Add one FileMetadata table the way Go's `prepareMetadataOffset` does."""
    name = b.CreateString(raw_bytes(e.name))
    type_ = b.CreateString(raw_bytes(e.type))
    linkname = b.CreateString(raw_bytes(e.linkname))
    uname = b.CreateString(raw_bytes(e.uname))
    gname = b.CreateString(raw_bytes(e.gname))
    mod_time = b.CreateString(raw_bytes(e.mod_time))

    xattr_offsets = []
    for key, value in _sorted_records(e):
        key_off = b.CreateString(key)
        value_off = b.CreateString(value)
        b.StartObject(_XATTR_FIELDS)
        b.PrependUOffsetTRelativeSlot(0, key_off, 0)
        b.PrependUOffsetTRelativeSlot(1, value_off, 0)
        xattr_offsets.append(b.EndObject())
    xattrs = _build_offset_vector(b, xattr_offsets)

    b.StartObject(_FM_FIELDS)
    b.PrependUOffsetTRelativeSlot(_FM_NAME, name, 0)
    b.PrependUOffsetTRelativeSlot(_FM_TYPE, type_, 0)
    b.PrependInt64Slot(_FM_OFFSET, e.uncompressed_offset, 0)
    b.PrependInt64Slot(_FM_SIZE, e.uncompressed_size, 0)
    b.PrependUOffsetTRelativeSlot(_FM_LINKNAME, linkname, 0)
    b.PrependInt64Slot(_FM_MODE, e.mode, 0)
    b.PrependUint32Slot(_FM_UID, e.uid, 0)
    b.PrependUint32Slot(_FM_GID, e.gid, 0)
    b.PrependUOffsetTRelativeSlot(_FM_UNAME, uname, 0)
    b.PrependUOffsetTRelativeSlot(_FM_GNAME, gname, 0)
    b.PrependUOffsetTRelativeSlot(_FM_MOD_TIME, mod_time, 0)
    b.PrependInt64Slot(_FM_DEVMAJOR, e.devmajor, 0)
    b.PrependInt64Slot(_FM_DEVMINOR, e.devminor, 0)
    b.PrependUOffsetTRelativeSlot(_FM_XATTRS, xattrs, 0)
    return b.EndObject()


def _sorted_records(e: FileMetadata) -> list[tuple[bytes, bytes]]:
    """PAX records as raw bytes in Go's `sort.Strings` order (bytewise); keys must be unique."""
    records = sorted((raw_bytes(x.key), raw_bytes(x.value)) for x in e.xattrs)
    for prev, cur in zip(records, records[1:]):
        if prev[0] == cur[0]:
            raise ZtocFormatError(
                f"entry {e.name!r}: PAX record key {from_raw_bytes(cur[0])!r} appears twice"
            )
    return records


def _build_offset_vector(b: flatbuffers.Builder, offsets: list[int]) -> int:
    """Write a vector of table/string offsets, first element first (Go's prepend loop)."""
    b.StartVector(4, len(offsets), 4)
    for off in reversed(offsets):
        b.PrependUOffsetTRelative(off)
    return b.EndVector()
