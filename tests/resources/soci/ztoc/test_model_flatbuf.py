"""zTOC FlatBuffers encoding: the spec's golden vector, build order, defaults, parsing, errors."""

from __future__ import annotations

import hashlib
import struct
from dataclasses import replace

import flatbuffers
import pytest
from flatbuffers import number_types, table

from resources.soci.ztoc.flatbuf import parse_ztoc, serialize_ztoc
from resources.soci.ztoc.model import (
    ZTOC_VERSION,
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
from resources.soci.ztoc.tar_zinfo import encode_tar_zinfo

GOLDEN_SIZE = 65928
GOLDEN_SHA256 = "eba28fdf50b1b57543f57dd051b2468c1d4f57b64d2006c75aa4de1d03e6c7ec"


def golden_ztoc() -> Ztoc:
    """Spec section 5: two zero-valued entries (mod_time = Go's zero time), 64 KiB of zeros."""
    entry = FileMetadata(
        name="",
        type="",
        uncompressed_offset=0,
        uncompressed_size=0,
        linkname="",
        mode=0,
        uid=0,
        gid=0,
        uname="",
        gname="",
        mod_time="0001-01-01T00:00:00Z",
        devmajor=0,
        devminor=0,
        xattrs=[],
    )
    return Ztoc(
        version="0.9",
        build_tool_identifier="AWS SOCI CLI",
        compressed_archive_size=2000000,
        uncompressed_archive_size=2500000,
        entries=[entry, entry],
        compression=CompressionInfo(
            algorithm=CompressionAlgorithm.GZIP,
            max_span_id=3,
            span_digests=[],
            checkpoints=bytes(65536),
        ),
    )


def rich_ztoc() -> Ztoc:
    """Entries exercising every field, non-ASCII and non-UTF-8 names, and PAX records."""
    latin1_name = from_raw_bytes(b"caf\xe9/men\xfc.txt")  # GNU tar with a latin-1 locale
    return Ztoc(
        version=ZTOC_VERSION,
        build_tool_identifier="streamable test",
        compressed_archive_size=123456789,
        uncompressed_archive_size=987654321,
        entries=[
            FileMetadata(
                name="etc/",
                type="dir",
                uncompressed_offset=512,
                uncompressed_size=0,
                linkname="",
                mode=0o755,
                uid=0,
                gid=0,
                uname="root",
                gname="root",
                mod_time="2023-01-02T03:04:05Z",
                devmajor=0,
                devminor=0,
                xattrs=[],
            ),
            FileMetadata(
                name="etc/ünïcode-" + "x" * 200,
                type="reg",
                uncompressed_offset=2048,
                uncompressed_size=2**40,
                linkname="",
                mode=0o100644,
                uid=2**32 - 1,
                gid=65534,
                uname="nobody",
                gname="nogroup",
                mod_time="2023-01-02T03:04:05.123456789Z",
                devmajor=0,
                devminor=0,
                xattrs=[
                    Xattr("path", "etc/ünïcode-" + "x" * 200),
                    Xattr("SCHILY.xattr.user.k", "v\x00binary"),
                    Xattr("mtime", "1672628645.123456789"),
                    Xattr("SCHILY.xattr.security.capability", from_raw_bytes(b"\x01\x00\x00\x02\xff")),
                ],
            ),
            FileMetadata(
                name=latin1_name,
                type="symlink",
                uncompressed_offset=2**41,
                uncompressed_size=0,
                linkname="../target",
                mode=-(2**63),
                uid=1,
                gid=2,
                uname="",
                gname="",
                mod_time="",
                devmajor=2**63 - 1,
                devminor=7,
                xattrs=[Xattr("", "")],
            ),
            FileMetadata(
                name="dev/null",
                type="char",
                uncompressed_offset=2**41 + 512,
                uncompressed_size=0,
                linkname="",
                mode=0o666,
                uid=0,
                gid=0,
                uname="",
                gname="",
                mod_time="1970-01-01T00:00:00Z",
                devmajor=1,
                devminor=3,
                xattrs=[],
            ),
        ],
        compression=CompressionInfo(
            algorithm=CompressionAlgorithm.UNCOMPRESSED,
            max_span_id=2,
            span_digests=["sha256:" + "ab" * 32, "sha256:" + "cd" * 32, "sha256:" + "ef" * 32],
            checkpoints=encode_tar_zinfo(4194304, 10 * 1024 * 1024),
        ),
    )


# --------------------------------------------------------------------------- official runtime


class Reader:
    """Reads our output with the official flatbuffers runtime (independent of parse_ztoc)."""

    def __init__(self, buf: bytes) -> None:
        self.buf = bytearray(buf)

    def root(self) -> table.Table:
        return table.Table(self.buf, struct.unpack_from("<I", self.buf, 0)[0])

    @staticmethod
    def field_pos(tab: table.Table, slot: int) -> int | None:
        off = tab.Offset(4 + 2 * slot)
        return tab.Pos + off if off else None

    def sub(self, tab: table.Table, slot: int) -> table.Table:
        return table.Table(self.buf, tab.Indirect(self.field_pos(tab, slot)))

    def string_pos(self, tab: table.Table, slot: int) -> int:
        """Position of a string's bytes."""
        return tab.Vector(tab.Offset(4 + 2 * slot))

    def elements(self, tab: table.Table, slot: int) -> list[table.Table]:
        off = tab.Offset(4 + 2 * slot)
        start, n = tab.Vector(off), tab.VectorLen(off)
        return [table.Table(self.buf, tab.Indirect(start + 4 * i)) for i in range(n)]

    def string_elements_pos(self, tab: table.Table, slot: int) -> list[int]:
        off = tab.Offset(4 + 2 * slot)
        start, n = tab.Vector(off), tab.VectorLen(off)
        return [tab.Indirect(start + 4 * i) + 4 for i in range(n)]

    def text(self, tab: table.Table, slot: int) -> bytes:
        return bytes(tab.String(tab.Pos + tab.Offset(4 + 2 * slot)))


# --------------------------------------------------------------------------- tests


def test_golden_vector_is_byte_identical() -> None:
    encoded = serialize_ztoc(golden_ztoc())
    assert len(encoded) == GOLDEN_SIZE
    assert hashlib.sha256(encoded).hexdigest() == GOLDEN_SHA256


def test_golden_vector_parses_back() -> None:
    assert parse_ztoc(serialize_ztoc(golden_ztoc())) == golden_ztoc()


def test_round_trip_is_byte_identical() -> None:
    first = serialize_ztoc(rich_ztoc())
    parsed = parse_ztoc(first)
    # rich_ztoc lists one entry's PAX records unsorted; the encoding stores them sorted.
    expected = rich_ztoc()
    sorted_entries = [
        replace(e, xattrs=sorted(e.xattrs, key=lambda x: raw_bytes(x.key))) for e in expected.entries
    ]
    assert parsed == replace(expected, entries=sorted_entries)
    assert parsed.entries[1].xattrs != expected.entries[1].xattrs
    assert serialize_ztoc(parsed) == first


def test_non_utf8_bytes_survive_exactly() -> None:
    encoded = serialize_ztoc(rich_ztoc())
    assert b"caf\xe9/men\xfc.txt" in encoded
    assert b"\x01\x00\x00\x02\xff" in encoded
    parsed = parse_ztoc(encoded)
    assert raw_bytes(parsed.entries[2].name) == b"caf\xe9/men\xfc.txt"


def test_fields_read_by_the_official_runtime() -> None:
    z = rich_ztoc()
    r = Reader(serialize_ztoc(z))
    root = r.root()
    assert r.text(root, 0) == b"0.9"
    assert r.text(root, 1) == b"streamable test"
    assert root.Get(number_types.Int64Flags, r.field_pos(root, 2)) == 123456789
    assert root.Get(number_types.Int64Flags, r.field_pos(root, 3)) == 987654321
    toc = r.sub(root, 4)
    entries = r.elements(toc, 0)
    assert [r.text(e, 0) for e in entries] == [raw_bytes(e.name) for e in z.entries]
    second = entries[1]
    assert second.Get(number_types.Uint32Flags, r.field_pos(second, 6)) == 2**32 - 1
    assert second.Get(number_types.Int64Flags, r.field_pos(second, 3)) == 2**40
    xattr_keys = [r.text(x, 0) for x in r.elements(second, 13)]
    # Go sorts PAX keys bytewise (sort.Strings): uppercase before lowercase.
    assert xattr_keys == [
        b"SCHILY.xattr.security.capability",
        b"SCHILY.xattr.user.k",
        b"mtime",
        b"path",
    ]
    info = r.sub(root, 5)
    assert info.Get(number_types.Int8Flags, r.field_pos(info, 0)) == 2
    assert info.Get(number_types.Int32Flags, r.field_pos(info, 1)) == 2
    off = info.Offset(4 + 2 * 3)
    assert bytes(r.buf[info.Vector(off) : info.Vector(off) + info.VectorLen(off)]) == (
        z.compression.checkpoints
    )


def test_builder_call_order() -> None:
    """FlatBuffers are built back to front: what is created first sits at the highest address."""
    r = Reader(serialize_ztoc(rich_ztoc()))
    root = r.root()
    version_pos = r.string_pos(root, 0)
    build_tool_pos = r.string_pos(root, 1)
    assert version_pos > build_tool_pos  # version created first
    entries = r.elements(r.sub(root, 4), 0)
    name_pos = [r.string_pos(e, 0) for e in entries]
    # entries are built from last to first, so the first entry's strings come last (lowest)
    assert name_pos == sorted(name_pos)
    assert build_tool_pos > name_pos[-1]
    e = entries[1]
    per_entry = [r.string_pos(e, slot) for slot in (0, 1, 4, 8, 9, 10)]  # name..mod_time
    assert per_entry == sorted(per_entry, reverse=True)
    xattrs = r.elements(e, 13)
    key_pos = [r.string_pos(x, 0) for x in xattrs]
    value_pos = [r.string_pos(x, 1) for x in xattrs]
    assert key_pos == sorted(key_pos, reverse=True)  # created in sorted key order
    assert all(k > v for k, v in zip(key_pos, value_pos))  # key before value
    assert value_pos[-1] > e.Pos > r.string_pos(entries[0], 0)  # table after its strings
    info = r.sub(root, 5)
    checkpoints_pos = info.Vector(info.Offset(4 + 2 * 3))
    digest_pos = r.string_elements_pos(info, 2)
    assert entries[0].Pos > checkpoints_pos > digest_pos[0] > digest_pos[1] > digest_pos[2]
    assert digest_pos[2] > info.Pos > root.Pos


def test_gzip_algorithm_is_the_default_and_not_written() -> None:
    gz = golden_ztoc()
    r = Reader(serialize_ztoc(gz))
    info = r.sub(r.root(), 5)
    assert info.Offset(4) == 0  # slot 0 absent
    plain = replace(gz, compression=replace(gz.compression, algorithm=CompressionAlgorithm.UNCOMPRESSED))
    r2 = Reader(serialize_ztoc(plain))
    info2 = r2.sub(r2.root(), 5)
    assert info2.Get(number_types.Int8Flags, r2.field_pos(info2, 0)) == 2
    assert parse_ztoc(serialize_ztoc(plain)).compression.algorithm is CompressionAlgorithm.UNCOMPRESSED


def test_zero_scalars_are_not_written() -> None:
    r = Reader(serialize_ztoc(rich_ztoc()))
    dev = r.elements(r.sub(r.root(), 4), 0)[3]
    for slot in (3, 6, 7):  # uncompressed_size, uid, gid are 0
        assert r.field_pos(dev, slot) is None
    for slot in (0, 1, 4, 8, 9, 10, 13):  # strings and the xattrs vector are always written
        assert r.field_pos(dev, slot) is not None


def test_empty_xattrs_vector_is_written() -> None:
    r = Reader(serialize_ztoc(golden_ztoc()))
    entry = r.elements(r.sub(r.root(), 4), 0)[0]
    off = entry.Offset(4 + 2 * 13)
    assert off != 0 and entry.VectorLen(off) == 0


def test_parse_fills_defaults_for_absent_fields() -> None:
    b = flatbuffers.Builder(0)
    b.StartObject(1)
    toc = b.EndObject()
    b.StartObject(4)
    info = b.EndObject()
    b.StartObject(6)
    b.PrependUOffsetTRelativeSlot(4, toc, 0)
    b.PrependUOffsetTRelativeSlot(5, info, 0)
    b.Finish(b.EndObject())
    z = parse_ztoc(bytes(b.Output()))
    assert z == Ztoc("", "", 0, 0, [], CompressionInfo(CompressionAlgorithm.GZIP, 0, [], b""))


@pytest.mark.parametrize("missing", [4, 5])
def test_parse_rejects_missing_tables(missing: int) -> None:
    b = flatbuffers.Builder(0)
    b.StartObject(1)
    sub = b.EndObject()
    b.StartObject(6)
    b.PrependUOffsetTRelativeSlot(9 - missing, sub, 0)
    b.Finish(b.EndObject())
    with pytest.raises(ZtocFormatError, match="missing"):
        parse_ztoc(bytes(b.Output()))


def test_parse_rejects_unknown_algorithm() -> None:
    encoded = bytearray(serialize_ztoc(rich_ztoc()))
    r = Reader(bytes(encoded))
    info = r.sub(r.root(), 5)
    encoded[r.field_pos(info, 0)] = 9
    with pytest.raises(ZtocFormatError, match="unknown compression algorithm 9"):
        parse_ztoc(bytes(encoded))


@pytest.mark.parametrize("cut", [0, 3, 100, 1000, GOLDEN_SIZE - 1])
def test_parse_rejects_truncated_buffers(cut: int) -> None:
    encoded = serialize_ztoc(golden_ztoc())
    with pytest.raises(ZtocFormatError):
        parse_ztoc(encoded[:cut])


def test_parse_rejects_offsets_outside_the_buffer() -> None:
    encoded = bytearray(serialize_ztoc(rich_ztoc()))
    struct.pack_into("<I", encoded, 0, len(encoded) + 8)
    with pytest.raises(ZtocFormatError, match="outside"):
        parse_ztoc(bytes(encoded))
    encoded = bytearray(serialize_ztoc(rich_ztoc()))
    r = Reader(bytes(encoded))
    entry = r.elements(r.sub(r.root(), 4), 0)[1]
    name_field = r.field_pos(entry, 0)
    struct.pack_into("<I", encoded, name_field, 2**31)
    with pytest.raises(ZtocFormatError, match=r"metadata\[1\]\.name"):
        parse_ztoc(bytes(encoded))


def test_serialize_rejects_duplicate_pax_keys() -> None:
    z = rich_ztoc()
    bad = replace(z.entries[0], xattrs=[Xattr("path", "a"), Xattr("path", "b")])
    with pytest.raises(ZtocFormatError, match="'path' appears twice"):
        serialize_ztoc(replace(z, entries=[bad]))


@pytest.mark.parametrize(
    ("field", "value"),
    [("uid", -1), ("gid", 2**32), ("mode", 2**63), ("uncompressed_offset", -(2**63) - 1)],
)
def test_serialize_rejects_values_outside_the_schema(field: str, value: int) -> None:
    z = rich_ztoc()
    bad = replace(z.entries[0], **{field: value})
    with pytest.raises(ZtocFormatError, match=rf"entry 0 \('etc/'\)\.{field}"):
        serialize_ztoc(replace(z, entries=[bad]))


def test_serialize_rejects_bad_header_values() -> None:
    z = rich_ztoc()
    with pytest.raises(ZtocFormatError, match="max_span_id"):
        serialize_ztoc(replace(z, compression=replace(z.compression, max_span_id=2**31)))
    with pytest.raises(ZtocFormatError, match="compressed_archive_size"):
        serialize_ztoc(replace(z, compressed_archive_size=2**63))
    with pytest.raises(ZtocFormatError, match="algorithm"):
        serialize_ztoc(replace(z, compression=replace(z.compression, algorithm=3)))


def entry_at(offset: int, size: int, name: str = "e") -> FileMetadata:
    """A minimal entry for the offset checks."""
    return replace(golden_ztoc().entries[0], name=name, uncompressed_offset=offset, uncompressed_size=size)


def test_check_toc_offsets_mirrors_soci_unmarshal() -> None:
    check_toc_offsets([entry_at(512, 100), entry_at(1536, 512), entry_at(2560, 0), entry_at(3072, 0)])
    check_toc_offsets([entry_at(1536, 0), entry_at(512, 512)])  # sorted by offset first
    with pytest.raises(ZtocFormatError, match="'second'.*1024.*before.*1536"):
        check_toc_offsets([entry_at(512, 600), entry_at(1024, 0, "second")])
    with pytest.raises(ZtocFormatError, match="'neg'"):
        check_toc_offsets([entry_at(-1, 0, "neg")])
    # a directory header declaring 4096 bytes: soci writes it, its nodes cannot load it
    with pytest.raises(ZtocFormatError, match="ErrInvalidTOCEntry"):
        check_toc_offsets([entry_at(512, 4096, "dir/"), entry_at(1024, 3, "file")])


def test_serialize_and_parse_reject_overlapping_entries() -> None:
    z = rich_ztoc()
    bad = replace(z, entries=[entry_at(512, 4096, "dir/"), entry_at(1024, 3, "file")])
    with pytest.raises(ZtocFormatError, match="'file'"):
        serialize_ztoc(bad)
    encoded = bytearray(serialize_ztoc(z))
    r = Reader(bytes(encoded))
    dev_null = r.elements(r.sub(r.root(), 4), 0)[3]
    struct.pack_into("<q", encoded, r.field_pos(dev_null, 2), 2048 + 100)  # inside entry 1's data
    with pytest.raises(ZtocFormatError, match="ErrInvalidTOCEntry"):
        parse_ztoc(bytes(encoded))


@pytest.mark.parametrize("make", [golden_ztoc, rich_ztoc])
def test_builder_initial_capacity_does_not_change_the_bytes(make) -> None:
    """Go starts from NewBuilder(0); serialize_ztoc pre-sizes its buffer. Same bytes."""
    from .flatbuf_reference import _encode

    z = make()
    expected = _encode(z, flatbuffers.Builder(0))
    assert serialize_ztoc(z) == expected
    for capacity in (1, 7, 1000, 65536 + 333, 10**6):
        assert _encode(z, flatbuffers.Builder(capacity)) == expected
