"""The checks a soci-snapshotter v0.15 node makes on a zTOC before it lazy-loads a layer.

One rule set, shared by `convert` (which refuses to write a zTOC that breaks one: the layer is
skipped with the rule's message) and `verify` (which fails with the same message). Each rule names
the upstream file it comes from; docs/soci-node-rules.md lists them.
"""

from __future__ import annotations

from dataclasses import dataclass

from resources.soci.ztoc.checkpoints import (
    Checkpoint,
    CheckpointFormatError,
    parse_checkpoints,
    span_compressed_range,
)
from resources.soci.ztoc.model import (
    CompressionAlgorithm,
    Ztoc,
    ZtocFormatError,
    check_toc_offsets,
)
from resources.soci.ztoc.tar_zinfo import decode_tar_zinfo, uncompressed_max_span_id


@dataclass(frozen=True)
class SpanLayout:
    """Where each span of a layer sits: compressed [start, end) and uncompressed [start, end)."""

    span_size: int
    points: list[Checkpoint]
    """gzip checkpoints (empty for an uncompressed tar layer)."""
    compressed: list[tuple[int, int]]
    uncompressed: list[tuple[int, int]]

    @property
    def count(self) -> int:
        """Number of spans."""
        return len(self.compressed)


def span_layout(ztoc: Ztoc) -> SpanLayout:
    """The span layout a node computes from a zTOC's zinfo (ZtocFormatError when unreadable)."""
    info = ztoc.compression
    if info.algorithm == CompressionAlgorithm.GZIP:
        try:
            span_size, points = parse_checkpoints(info.checkpoints)
        except CheckpointFormatError as exc:
            raise ZtocFormatError(f"unreadable gzip checkpoints: {exc}") from None
        size = ztoc.compressed_archive_size
        compressed = [span_compressed_range(points, i, size) for i in range(len(points))]
        outs = [p.out_offset for p in points] + [ztoc.uncompressed_archive_size]
        return SpanLayout(span_size, points, compressed, [(outs[i], outs[i + 1]) for i in range(len(points))])
    zinfo = decode_tar_zinfo(info.checkpoints)
    count = uncompressed_max_span_id(zinfo.size, zinfo.span_size) + 1
    ranges = [(i * zinfo.span_size, min((i + 1) * zinfo.span_size, zinfo.size)) for i in range(max(0, count))]
    return SpanLayout(zinfo.span_size, [], ranges, list(ranges))


def ztoc_rule_violation(ztoc: Ztoc, layer_size: int) -> str | None:
    """The first node rule the zTOC breaks for a layer blob of `layer_size` bytes, or None.

    The message is the same wherever it is reported (convert's skip reason, verify's failure).
    """
    info = ztoc.compression
    try:
        layout = span_layout(ztoc)
    except ZtocFormatError as exc:
        return f"its zinfo does not decode ({exc}); the node's Zinfo() fails (ztoc/ztoc.go)"
    if layout.count == 0:
        return (
            "it has no spans (the layer is empty): there is nothing to load lazily, and a node's span "
            "manager would be built over no data; such a layer is pulled in full"
        )
    if info.max_span_id != layout.count - 1:
        return (
            f"max_span_id is {info.max_span_id} but its checkpoints describe {layout.count} spans: the node "
            "rejects it (ErrIncorrectMaxSpanID, fs/span-manager/span_manager.go New)"
        )
    if len(info.span_digests) != info.max_span_id + 1:
        return (
            f"it has {len(info.span_digests)} span digests for max_span_id {info.max_span_id}: the node rejects "
            "it (ErrIncorrectMaxSpanID, fs/span-manager/span_manager.go New)"
        )
    for i in range(layout.count - 1):
        (cs, ce), (us, ue) = layout.compressed[i], layout.uncompressed[i]
        if cs >= ce or us >= ue:
            return (
                f"span {i} is empty or backwards (compressed [{cs}, {ce}), uncompressed [{us}, {ue})): the node "
                "rejects it (ErrNonMonotonicCheckpoints, fs/span-manager/span_manager.go buildAllSpans)"
            )
    if ztoc.compressed_archive_size != layer_size:
        return (
            f"it describes a {ztoc.compressed_archive_size}-byte blob, but the layer is {layer_size} bytes; a node "
            "uses this size as the layer size when the descriptor has none (fs/layer/layer.go Resolve)"
        )
    try:
        check_toc_offsets(ztoc.entries)
    except ZtocFormatError as exc:
        return f"its TOC does not unmarshal on a node: {exc}"
    return None
