"""TarZinfo: the `checkpoints` blob of a zTOC for an uncompressed tar layer (docs/soci-format.md section 7).

Upstream schema (`ztoc/compression/fbs/zinfo.fbs`):

    table TarZinfo { version:int32; span_size:int64; size:int64; }

Encoded like Go's `TarZinfo.Bytes()`: builder of initial size 0, slots added in schema order,
defaults (0) not written, no file identifier.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import flatbuffers

from resources.soci.ztoc.flatbuf import FlatTable
from resources.soci.ztoc.model import ZtocFormatError

TAR_ZINFO_VERSION = 2
_I32 = struct.Struct("<i")
_I64 = struct.Struct("<q")
_INT64_MAX = 2**63 - 1


@dataclass(frozen=True)
class TarZinfo:
    """Span layout of an uncompressed tar layer: span i = [i*span_size, min((i+1)*span_size, size))."""

    version: int
    span_size: int
    size: int

    @property
    def max_span_id(self) -> int:
        """The last span's index (see `uncompressed_max_span_id`)."""
        return uncompressed_max_span_id(self.size, self.span_size)


def encode_tar_zinfo(span_size: int, size: int) -> bytes:
    """FlatBuffers bytes of TarZinfo{version 2, span_size, size} (size = layer blob size)."""
    if not 0 < span_size <= _INT64_MAX:
        raise ZtocFormatError(f"TarZinfo span_size must be in 1..{_INT64_MAX}, got {span_size}")
    if not 0 <= size <= _INT64_MAX:
        raise ZtocFormatError(f"TarZinfo size must be in 0..{_INT64_MAX}, got {size}")
    b = flatbuffers.Builder(0)
    b.StartObject(3)
    b.PrependInt32Slot(0, TAR_ZINFO_VERSION, 0)
    b.PrependInt64Slot(1, span_size, 0)
    b.PrependInt64Slot(2, size, 0)
    b.Finish(b.EndObject())
    return bytes(b.Output())


def decode_tar_zinfo(data: bytes) -> TarZinfo:
    """Read a TarZinfo blob; ZtocFormatError if it is malformed or its span size is not positive."""
    table = FlatTable.root(bytes(data), "TarZinfo")
    zinfo = TarZinfo(
        version=table.scalar(0, _I32, 0, "version"),
        span_size=table.scalar(1, _I64, 0, "span_size"),
        size=table.scalar(2, _I64, 0, "size"),
    )
    if zinfo.span_size <= 0:
        raise ZtocFormatError(f"TarZinfo: span_size must be positive, got {zinfo.span_size}")
    if zinfo.size < 0:
        raise ZtocFormatError(f"TarZinfo: size must not be negative, got {zinfo.size}")
    return zinfo


def uncompressed_max_span_id(size: int, span: int) -> int:
    """size // span, minus 1 when span divides size exactly (Go's `TarZinfo.MaxSpanID`)."""
    if span <= 0:
        raise ValueError(f"span size must be positive, got {span}")
    max_id = size // span
    if size % span == 0:
        max_id -= 1
    return max_id
