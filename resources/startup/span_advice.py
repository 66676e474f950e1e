"""Span size advice: bytes to start and zTOC size for span sizes 512 KiB .. 8 MiB, from one pass per layer.

One pass records every resumable deflate block boundary of a gzip layer (compressed offset, output
offset, unused bits), plus the tar TOC. The builder's checkpoint rule is greedy over those boundaries
(`GzipIndexer._boundary`: a point where the output is still 0 or has grown by more than the span size
since the last point; boundaries skipped inside its Z_NO_FLUSH calls lie where no point may go), so
running that rule over the recorded boundaries gives, for any span size, exactly the checkpoints a
real build makes (tests/resources/startup/test_span_advice.py compares both at each size). The zTOC
size follows: the same TOC, that many 32785-byte checkpoints and span digests, serialized. For an
uncompressed tar layer the spans are multiples of the span size. No layer is decompressed twice.

`span_size: auto` picks the size with the fewest bytes to start (spans read plus the zTOC, which a
node fetches before the first read) whose zTOCs stay within a budget: by default 2% of the layers'
compressed bytes (a 4 MiB span costs a 32 KiB checkpoint, 0.8% of the span's output; 512 KiB spans
cost 6.25%). Ties go to the larger span (fewer requests).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from resources.defaults import SOCI_BUILD_TOOL_IDENTIFIER
from resources.errors import StreamableError
from resources.oci.media_types import LayerCompression, layer_compression
from resources.soci.prefetch import TocNames
from resources.soci.ztoc.checkpoints import BLOB_HEADER, RECORD_SIZE
from resources.soci.ztoc.flatbuf import serialize_ztoc
from resources.soci.ztoc.gzip_index import GzipIndexer
from resources.soci.ztoc.model import (
    ZTOC_VERSION,
    CompressionAlgorithm,
    CompressionInfo,
    FileMetadata,
    Ztoc,
)
from resources.soci.ztoc.tar_zinfo import encode_tar_zinfo, uncompressed_max_span_id
from resources.soci.ztoc.toc import TarTocBuilder
from resources.startup.cost import SpanLayout, content_entry, read_spans
from resources.startup.profile import ProfiledFile

KiB, MiB = 1 << 10, 1 << 20
SPAN_SIZES = (512 * KiB, 1 * MiB, 2 * MiB, 4 * MiB, 8 * MiB)
DEFAULT_ZTOC_BUDGET_FRACTION = 0.02
_FAKE_DIGEST = "sha256:" + "0" * 64
Boundary = tuple[int, int, int]


class SpanAdviceError(StreamableError, ValueError):
    """A layer cannot be measured (not gzip or tar), or no span size fits the budget."""


class _BoundaryRecorder(GzipIndexer):
    """A GzipIndexer that keeps every block boundary instead of placing points (span size 1: always Z_BLOCK)."""

    def __init__(self, sink: TarTocBuilder) -> None:
        super().__init__(1, output_sink=sink.feed, digest_in_thread=True)
        self.boundaries: list[Boundary] = []

    def _boundary(self, in_offset: int, bits: int) -> None:
        self.boundaries.append((in_offset, self._total_out, bits))


@dataclass(frozen=True)
class MeasuredLayer:
    """What one pass over a layer learned: its TOC and its candidate checkpoints."""

    digest: str
    media_type: str
    compressed_size: int
    uncompressed_archive_size: int
    entries: list[FileMetadata]
    boundaries: list[Boundary] | None
    """gzip: every block boundary in order; None for an uncompressed tar layer."""

    def checkpoints(self, span_size: int) -> list[Boundary]:
        """The checkpoints the builder places at this span size (gzip layers)."""
        points: list[Boundary] = []
        last = 0
        for boundary in self.boundaries or []:
            out = boundary[1]
            if not points or out == 0 or out - last > span_size:
                points.append(boundary)
                last = out
        return points

    def layout(self, span_size: int) -> SpanLayout:
        """Span layout at this span size."""
        if self.boundaries is None:
            count = uncompressed_max_span_id(self.compressed_size, span_size) + 1
            return SpanLayout(span_size, self.compressed_size, None, count)
        points = self.checkpoints(span_size)
        return SpanLayout(span_size, self.compressed_size, points, len(points))

    def ztoc_size(self, span_size: int, build_tool_identifier: str = SOCI_BUILD_TOOL_IDENTIFIER) -> int:
        """Size of the zTOC a build at this span size writes."""
        count = self.layout(span_size).count
        if self.boundaries is None:
            info = CompressionInfo(
                CompressionAlgorithm.UNCOMPRESSED,
                count - 1,
                [_FAKE_DIGEST] * count,
                encode_tar_zinfo(span_size, self.compressed_size),
            )
        else:
            info = CompressionInfo(
                CompressionAlgorithm.GZIP,
                count - 1,
                [_FAKE_DIGEST] * count,
                BLOB_HEADER.pack(count, span_size) + bytes(count * RECORD_SIZE),
            )
        ztoc = Ztoc(
            ZTOC_VERSION,
            build_tool_identifier,
            self.compressed_size,
            self.uncompressed_archive_size,
            self.entries,
            info,
        )
        return len(serialize_ztoc(ztoc))


def measure_layer(digest: str, media_type: str, chunks: Iterable[bytes]) -> MeasuredLayer:
    """One pass over a layer blob (gzip or uncompressed tar)."""
    kind = layer_compression(media_type)
    toc = TarTocBuilder()
    size = 0
    if kind is LayerCompression.GZIP:
        recorder = _BoundaryRecorder(toc)
        with recorder:
            for chunk in chunks:
                for _ in recorder.feed(chunk):
                    pass
                size += len(chunk)
            recorder.finish()
        boundaries: list[Boundary] | None = recorder.boundaries
    elif kind is LayerCompression.UNCOMPRESSED:
        for chunk in chunks:
            toc.feed(chunk)
            size += len(chunk)
        boundaries = None
    else:
        raise SpanAdviceError(f"layer {digest}: {media_type!r} has no zTOC (only gzip and tar layers do)")
    result = toc.finish()
    return MeasuredLayer(digest, media_type, size, result.uncompressed_archive_size, result.entries, boundaries)


@dataclass(frozen=True)
class SpanOption:
    """One span size: what a lazy start reads from the measured layers, and their zTOCs."""

    span_size: int
    spans: int
    span_bytes: int
    ztoc_bytes: int
    within_budget: bool

    @property
    def bytes_to_start(self) -> int:
        """Spans read plus the zTOCs (fetched before the first read)."""
        return self.span_bytes + self.ztoc_bytes


@dataclass(frozen=True)
class SpanAdvice:
    """The table, the budget, and the pick for `span_size: auto`."""

    options: list[SpanOption]
    ztoc_budget: int
    chosen: int
    layer_bytes: int = 0
    notes: list[str] = field(default_factory=list)

    def table(self) -> list[dict[str, object]]:
        """One row per span size (for a Dagster table)."""
        return [
            {
                "span_size": o.span_size,
                "spans": o.spans,
                "span_bytes": o.span_bytes,
                "ztoc_bytes": o.ztoc_bytes,
                "bytes_to_start": o.bytes_to_start,
                "within_budget": o.within_budget,
                "chosen": o.span_size == self.chosen,
            }
            for o in self.options
        ]


def advise_span_size(
    layers: Sequence[MeasuredLayer],
    files: Sequence[ProfiledFile],
    *,
    span_sizes: Sequence[int] = SPAN_SIZES,
    ztoc_budget: int | None = None,
) -> SpanAdvice:
    """Bytes to start and zTOC size per span size for the profile's files in these layers; pick `auto`."""
    layer_bytes = sum(layer.compressed_size for layer in layers)
    budget = int(layer_bytes * DEFAULT_ZTOC_BUDGET_FRACTION) if ztoc_budget is None else ztoc_budget
    by_digest = {layer.digest: layer for layer in layers}
    mine = [f for f in files if f.layer_digest in by_digest]
    options = []
    names = {layer.digest: TocNames(layer.entries) for layer in layers}
    for span in span_sizes:
        spans = span_bytes = ztoc_bytes = 0
        for layer in layers:
            layout = layer.layout(span)
            touched: set[int] = set()
            for f in mine:
                if f.layer_digest == layer.digest:
                    for read in read_spans(layout, content_entry(names[layer.digest], f.path, layer.digest), f.ranges):
                        touched |= read
            spans += len(touched)
            span_bytes += sum(layout.size(s) for s in touched)
            ztoc_bytes += layer.ztoc_size(span)
        options.append(SpanOption(span, spans, span_bytes, ztoc_bytes, ztoc_bytes <= budget))
    fitting = [o for o in options if o.within_budget]
    if not fitting:
        raise SpanAdviceError(
            f"no span size keeps the zTOCs within {budget} bytes (smallest: {min(o.ztoc_bytes for o in options)} "
            f"bytes at {max(span_sizes)} bytes per span); raise the zTOC budget"
        )
    best = min(fitting, key=lambda o: (o.bytes_to_start, -o.span_size))
    return SpanAdvice(options, budget, best.span_size, layer_bytes)
