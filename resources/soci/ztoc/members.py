"""gzip member boundaries of a layer, and which spans of its zTOC cross them.

A span crosses a boundary when it starts (its checkpoint) in one member and its uncompressed
range reaches into a later member: inflating it from its checkpoint must go past the member's
trailer and the next header, which soci-snapshotter's zinfo code does only since v0.14 (upstream
ztoc/compression/gzip_zinfo.c `extract_data_from_buffer`, "Handle concatenated gzip member
boundary"). A span whose checkpoint sits right after a later member's header does not cross.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence

from resources.soci.ztoc.checkpoints import parse_checkpoints
from resources.soci.ztoc.model import CompressionAlgorithm, Ztoc

MemberStart = tuple[int, int]
"""(compressed offset of a member's header, uncompressed offset of its first byte)."""


def crossing_spans(ztoc: Ztoc, member_starts: Sequence[MemberStart]) -> list[int]:
    """Span ids of a gzip zTOC whose range crosses one of `member_starts` (members after the first)."""
    if ztoc.compression.algorithm != CompressionAlgorithm.GZIP or not member_starts:
        return []
    _, points = parse_checkpoints(ztoc.compression.checkpoints)
    crossing: list[int] = []
    for span_id, point in enumerate(points):
        end_out = points[span_id + 1].out_offset if span_id + 1 < len(points) else ztoc.uncompressed_archive_size
        if any(point.in_offset < header and end_out > out for header, out in member_starts):
            crossing.append(span_id)
    return crossing


def scan_gzip_members(chunks: Iterable[bytes]) -> list[MemberStart]:
    """Member starts (after the first) of a gzip blob, by inflating it once and keeping nothing.

    Used for a reused zTOC, whose builder's member list is not at hand. Raises zlib.error on
    data that is not gzip.
    """
    starts: list[MemberStart] = []
    inflater = zlib.decompressobj(wbits=31)
    consumed = 0  # compressed bytes of the members before the current one
    fed = 0  # compressed bytes given to the current member's inflater
    out = 0
    member_ended = False
    for chunk in chunks:
        data = bytes(chunk)
        while data:
            if member_ended:
                starts.append((consumed, out))
                inflater = zlib.decompressobj(wbits=31)
                member_ended = False
            out += len(inflater.decompress(data))
            if not inflater.eof:
                fed += len(data)
                break
            consumed += fed + len(data) - len(inflater.unused_data)
            fed = 0
            data = inflater.unused_data
            member_ended = True
    return starts
