"""TarZinfo: the checkpoints blob of uncompressed tar layers (docs/soci-format.md section 7)."""

from __future__ import annotations

import struct

import flatbuffers
import pytest
from flatbuffers import number_types, table

from resources.soci.ztoc.model import ZtocFormatError
from resources.soci.ztoc.tar_zinfo import (
    TarZinfo,
    decode_tar_zinfo,
    encode_tar_zinfo,
    uncompressed_max_span_id,
)

# The spec's example for (2, 4194304, 52428800). The spec prints "... 00000200 0000" at the
# end, which is 46 bytes although it says 48: it dropped the 2-byte run of alignment padding
# before the int32 version. These are the 48 bytes with that padding restored; the structure
# test below checks each field's position independently.
SPEC_EXAMPLE = bytes.fromhex(
    "14000000 00000000 00000a00 1c001800 0c000400 0a000000"
    " 00002003 00000000 00004000 00000000 00000000 02000000".replace(" ", "")
)


def test_spec_example_bytes() -> None:
    encoded = encode_tar_zinfo(4194304, 52428800)
    assert len(encoded) == 48
    assert encoded == SPEC_EXAMPLE


def test_spec_example_structure_read_with_the_official_runtime() -> None:
    encoded = encode_tar_zinfo(4194304, 52428800)
    root = struct.unpack_from("<I", encoded, 0)[0]
    tab = table.Table(bytearray(encoded), root)

    def field(slot: int, flags: type) -> int | None:
        off = tab.Offset(4 + 2 * slot)
        return tab.Get(flags, tab.Pos + off) if off else None

    assert field(0, number_types.Int32Flags) == 2
    assert field(1, number_types.Int64Flags) == 4194304
    assert field(2, number_types.Int64Flags) == 52428800
    # vtable of 3 slots (10 bytes); object of 28 bytes = soffset 4 + size 8 + span 8 + pad 4 + version 4
    vtable = root - struct.unpack_from("<i", encoded, root)[0]
    assert struct.unpack_from("<HH", encoded, vtable) == (10, 28)


def test_decode_round_trip() -> None:
    zinfo = decode_tar_zinfo(encode_tar_zinfo(4194304, 52428800))
    assert zinfo == TarZinfo(version=2, span_size=4194304, size=52428800)
    assert zinfo.max_span_id == 12  # 52428800 / 4194304 = 12.5


def test_size_zero_is_a_default_and_not_written() -> None:
    small = encode_tar_zinfo(4194304, 0)
    assert len(small) < len(encode_tar_zinfo(4194304, 1))
    assert decode_tar_zinfo(small) == TarZinfo(version=2, span_size=4194304, size=0)


@pytest.mark.parametrize(
    ("size", "span", "expected"),
    [
        (52428800, 4194304, 12),
        (4194304 * 12, 4194304, 11),  # divides exactly: minus one
        (4194304 * 12 + 1, 4194304, 12),
        (1, 4194304, 0),
        (4194304, 4194304, 0),
        (4194305, 4194304, 1),
        (10, 3, 3),
        (9, 3, 2),
    ],
)
def test_max_span_id(size: int, span: int, expected: int) -> None:
    assert uncompressed_max_span_id(size, span) == expected


def test_max_span_id_rejects_non_positive_span() -> None:
    with pytest.raises(ValueError, match="span size must be positive"):
        uncompressed_max_span_id(100, 0)


@pytest.mark.parametrize(("span", "size"), [(0, 10), (-1, 10), (10, -1), (2**63, 1)])
def test_encode_rejects_out_of_range(span: int, size: int) -> None:
    with pytest.raises(ZtocFormatError, match="TarZinfo"):
        encode_tar_zinfo(span, size)


def test_decode_rejects_truncated_and_garbage() -> None:
    good = encode_tar_zinfo(4194304, 52428800)
    with pytest.raises(ZtocFormatError, match="TarZinfo"):
        decode_tar_zinfo(good[:30])
    with pytest.raises(ZtocFormatError, match="TarZinfo"):
        decode_tar_zinfo(b"\xff\xff\xff\x7f" + good[4:])
    with pytest.raises(ZtocFormatError, match="TarZinfo"):
        decode_tar_zinfo(b"")


def test_decode_rejects_zero_span_size() -> None:
    b = flatbuffers.Builder(0)
    b.StartObject(3)
    b.PrependInt32Slot(0, 2, 0)
    b.PrependInt64Slot(2, 100, 0)
    b.Finish(b.EndObject())
    with pytest.raises(ZtocFormatError, match="span_size must be positive"):
        decode_tar_zinfo(bytes(b.Output()))
