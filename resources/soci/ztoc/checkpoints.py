"""The gzip checkpoint blob of a zTOC (docs/soci-format.md section 7): layout, parsing and span arithmetic."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from resources.errors import StreamableError

WINDOW_SIZE = 32768
BLOB_HEADER = struct.Struct("<iq")  # int32 count, int64 span size
RECORD_HEADER = struct.Struct("<qqB")  # int64 in, int64 out, uint8 bits
RECORD_SIZE = RECORD_HEADER.size + WINDOW_SIZE  # 32785


class CheckpointFormatError(StreamableError, ValueError):
    """A checkpoint blob does not have the layout of docs/soci-format.md section 7."""


@dataclass(frozen=True)
class Checkpoint:
    """One resume point: compressed offset of the first whole byte, uncompressed offset, bits, window."""

    in_offset: int
    out_offset: int
    bits: int
    window: bytes | memoryview

    @property
    def span_start(self) -> int:
        """First compressed byte of the span this point starts (the byte at in-1 when bits != 0)."""
        return self.in_offset - 1 if self.bits else self.in_offset


def encode_record(in_offset: int, out_offset: int, bits: int, window: bytes | memoryview) -> bytes:
    """One packed checkpoint record (32785 bytes)."""
    if len(window) != WINDOW_SIZE:
        raise ValueError(f"checkpoint window must be {WINDOW_SIZE} bytes, got {len(window)}")
    return RECORD_HEADER.pack(in_offset, out_offset, bits) + bytes(window)


def encode_checkpoints(span_size: int, records: bytes | bytearray, count: int) -> bytes:
    """The full blob: header followed by ``count`` packed records."""
    if len(records) != count * RECORD_SIZE:
        raise ValueError(f"{count} checkpoints need {count * RECORD_SIZE} bytes, got {len(records)}")
    return BLOB_HEADER.pack(count, span_size) + bytes(records)


def parse_checkpoints(blob: bytes | bytearray | memoryview) -> tuple[int, list[Checkpoint]]:
    """Parse a gzip checkpoint blob into (span size, checkpoints); windows are views into ``blob``."""
    view = memoryview(blob).cast("B")
    if len(view) < BLOB_HEADER.size:
        raise CheckpointFormatError(f"checkpoint blob is {len(view)} bytes, shorter than its 12-byte header")
    count, span_size = BLOB_HEADER.unpack_from(view, 0)
    expected = BLOB_HEADER.size + count * RECORD_SIZE
    if count < 1 or len(view) != expected:
        raise CheckpointFormatError(
            f"checkpoint blob of {len(view)} bytes does not hold {count} checkpoints "
            f"({expected} bytes expected)"
        )
    points: list[Checkpoint] = []
    offset = BLOB_HEADER.size
    for index in range(count):
        in_offset, out_offset, bits = RECORD_HEADER.unpack_from(view, offset)
        if bits > 7:
            raise CheckpointFormatError(f"checkpoint {index} has bits={bits} (must be 0-7)")
        if points and (in_offset < points[-1].in_offset or out_offset < points[-1].out_offset):
            raise CheckpointFormatError(f"checkpoint {index} goes backwards ({in_offset=}, {out_offset=})")
        window_start = offset + RECORD_HEADER.size
        points.append(
            Checkpoint(in_offset, out_offset, bits, view[window_start : window_start + WINDOW_SIZE])
        )
        offset += RECORD_SIZE
    return span_size, points


def span_compressed_range(points: list[Checkpoint], span_id: int, blob_size: int) -> tuple[int, int]:
    """Compressed byte range [start, end) of a span: from in-1 (with bits) to the next point's in."""
    start = points[span_id].span_start
    end = blob_size if span_id == len(points) - 1 else points[span_id + 1].in_offset
    return start, end


def span_for_offset(points: list[Checkpoint], uncompressed_offset: int) -> int:
    """The last span whose point's out offset is <= ``uncompressed_offset`` (soci's lookup rule)."""
    low, high = 0, len(points) - 1
    while low < high:
        mid = (low + high + 1) // 2
        if points[mid].out_offset <= uncompressed_offset:
            low = mid
        else:
            high = mid - 1
    return low
