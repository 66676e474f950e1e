"""The cost of a start: what a lazy (SOCI) start fetches for a startup profile, against a full pull.

How a soci-snapshotter v0.15 node fetches, read from upstream (awslabs/soci-snapshotter):
- Before any layer mounts: containerd fetches the image index (when there is one), the image manifest
  and the config; the snapshotter fetches the SOCI index manifest, then every zTOC and prefetch
  artifact in parallel (fs/artifact_fetcher.go `FetchSociArtifacts`, one errgroup). One round trip
  each, one request per blob.
- A layer without a zTOC (too small, zstd, ...) is fetched whole before the container starts, whether
  or not the start reads from it (the snapshotter has no index for it, so it is pulled and unpacked):
  one request for its full size.
- At mount, with a prefetch artifact, the spans it names are fetched by a pool of workers before the
  mount returns (fs/layer/layer.go `executePrefetch`, GOMAXPROCS workers, `ResolveSpan` each).
- A read of [start, end) of a file fetches the spans `span(start)` .. `span(end)` (fs/reader/reader.go
  `ReadAt` -> span-manager `GetContents` -> `getSpanInfo`, end offset exclusive, so a read ending on
  a span boundary also fetches the next span), each span not yet cached as one range request of
  exactly its compressed bytes (span_manager.go `fetchSpanWithRetries` -> remote blob `ReadAt`, one
  region; spans are never merged), the spans of one read in parallel (errgroup). Adjacent spans are
  separate requests.

The model here: every recorded range is one read, reads happen one after another in first-access
order (a read that needs no new span costs no round trip); the spans of one read, the zTOCs, and the
whole layers without a zTOC each go out in parallel. A full pull fetches index, manifest, config,
then every layer blob, `layer_parallelism` at a time (containerd's default max_concurrent_downloads
is 3). Time = round trips x RTT + bytes / bandwidth; unpacking and page-cache effects are left out.
Default network: 100 MB/s and 20 ms per round trip, an estimate for a node pulling from a registry in
its own region (ECR serves layer bytes from S3); targets set their own.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from resources.errors import StreamableError
from resources.soci import gojson
from resources.soci.prefetch import (
    Granularity,
    LayerZtoc,
    SpanLocator,
    TocNames,
    plan_for_profile,
)
from resources.soci.ztoc.checkpoints import parse_checkpoints
from resources.soci.ztoc.model import CompressionAlgorithm, FileMetadata, Ztoc
from resources.startup.profile import ProfiledFile

MB = 1_000_000


class StartCostError(StreamableError, ValueError):
    """The profile and the image do not fit together (the message names the file and layer)."""


@dataclass(frozen=True)
class NetworkModel:
    """Bandwidth and latency of a node's registry (estimates; a target sets its own)."""

    bandwidth_bytes_per_s: float = 100 * MB
    rtt_s: float = 0.020
    prefetch_parallelism: int = 4
    """Span fetches a node runs at once while prefetching (GOMAXPROCS on the node)."""
    layer_parallelism: int = 3
    """Layer blobs containerd downloads at once (max_concurrent_downloads)."""

    def seconds(self, nbytes: int, round_trips: int) -> float:
        """Estimated transfer time."""
        return round_trips * self.rtt_s + nbytes / self.bandwidth_bytes_per_s


@dataclass(frozen=True)
class ImageLayer:
    """A manifest layer: its blob size and, when the SOCI index has one, its zTOC and the zTOC's size."""

    digest: str
    size: int
    ztoc: Ztoc | None = None
    ztoc_size: int = 0


@dataclass(frozen=True)
class ImageDocuments:
    """Sizes of the documents a pull reads before any layer (image_index 0: a single-manifest image)."""

    manifest: int
    config: int
    soci_index: int
    image_index: int = 0


@dataclass(frozen=True)
class LayerCost:
    """One layer's share of a start."""

    layer_digest: str
    layer_bytes: int
    indexed: bool
    bytes_to_start: int
    spans: int
    requests: int
    files: int


@dataclass(frozen=True)
class StartCost:
    """What one way of starting fetches, and the time it is estimated to take."""

    mode: str
    bytes_to_start: int
    image_bytes: int
    """The full pull's bytes (every layer plus index, manifest and config): what a start is compared to."""
    document_bytes: int
    requests: int
    round_trips: int
    seconds: float
    layers: list[LayerCost] = field(default_factory=list)

    @property
    def fraction(self) -> float:
        """bytes_to_start / image_bytes."""
        return self.bytes_to_start / self.image_bytes if self.image_bytes else 0.0

    @property
    def summary(self) -> str:
        """'to start: X MB of Y MB (Z%)'."""
        return (f"to start: {self.bytes_to_start / MB:.1f} MB of {self.image_bytes / MB:.1f} MB "
                f"({100 * self.fraction:.1f}%)")


@dataclass(frozen=True)
class StartCostComparison:
    """Lazy, lazy + prefetch (files), lazy + prefetch (ranges) and full pull, side by side."""

    lazy: StartCost
    prefetch_files: StartCost
    prefetch_ranges: StartCost
    full_pull: StartCost
    network: NetworkModel

    @property
    def modes(self) -> list[StartCost]:
        """The four costs, lazy first."""
        return [self.lazy, self.prefetch_files, self.prefetch_ranges, self.full_pull]

    @property
    def summary(self) -> str:
        """The lazy start's one-liner, with the full pull's time beside it."""
        return (
            f"{self.lazy.summary}; est. {self.lazy.seconds:.2f} s lazy vs {self.full_pull.seconds:.2f} s full pull "
            f"(at {self.network.bandwidth_bytes_per_s / MB:g} MB/s, {self.network.rtt_s * 1000:g} ms RTT)"
        )

    def table(self) -> list[dict[str, object]]:
        """One row per mode (for a Dagster table)."""
        return [
            {
                "mode": c.mode,
                "bytes_to_start": c.bytes_to_start,
                "image_bytes": c.image_bytes,
                "percent": round(100 * c.fraction, 2),
                "requests": c.requests,
                "round_trips": c.round_trips,
                "seconds": round(c.seconds, 3),
            }
            for c in self.modes
        ]

    def layer_table(self) -> list[dict[str, object]]:
        """One row per layer: its bytes and what each way of starting fetches from it (for a table or a bar plot)."""
        rows = []
        for i, layer in enumerate(self.lazy.layers):
            rows.append(
                {
                    "layer": layer.layer_digest,
                    "indexed": layer.indexed,
                    "layer_bytes": layer.layer_bytes,
                    "files": layer.files,
                    "spans": layer.spans,
                    "lazy_bytes": layer.bytes_to_start,
                    "prefetch_files_bytes": self.prefetch_files.layers[i].bytes_to_start,
                    "prefetch_ranges_bytes": self.prefetch_ranges.layers[i].bytes_to_start,
                }
            )
        return rows


# ---- the model --------------------------------------------------------------------------------------


def compare_start_costs(
    files: Sequence[ProfiledFile],
    layers: Sequence[ImageLayer],
    documents: ImageDocuments,
    network: NetworkModel | None = None,
) -> StartCostComparison:
    """All four costs for a profile's files on an image (layers in manifest order)."""
    net = network or NetworkModel()
    with_ztocs = [LayerZtoc(layer.digest, layer.ztoc) for layer in layers]
    costs = {}
    for granularity in Granularity:
        plan = plan_for_profile(with_ztocs, files, granularity)
        spans = {a.layer_digest: [s for start, end in a.spans for s in range(start, end + 1)] for a in plan.artifacts}
        extra_index = sum(len(gojson.marshal(d)) + 1 for d in plan.descriptors)  # ",{descriptor}" per artifact
        costs[granularity] = lazy_start_cost(
            files,
            layers,
            documents,
            net,
            prefetch=spans,
            prefetch_blob_sizes=[a.descriptor.size for a in plan.artifacts],
            extra_index_bytes=extra_index,
            mode=f"lazy + prefetch ({granularity.value})",
        )
    return StartCostComparison(
        lazy=lazy_start_cost(files, layers, documents, net),
        prefetch_files=costs[Granularity.FILES],
        prefetch_ranges=costs[Granularity.RANGES],
        full_pull=full_pull_cost(layers, documents, net),
        network=net,
    )


def full_pull_cost(layers: Sequence[ImageLayer], documents: ImageDocuments, network: NetworkModel) -> StartCost:
    """Every layer blob plus index, manifest and config."""
    docs = documents.image_index + documents.manifest + documents.config
    doc_trips = (1 if documents.image_index else 0) + 2
    total = docs + sum(layer.size for layer in layers)
    trips = doc_trips + math.ceil(len(layers) / network.layer_parallelism)
    rows = [LayerCost(layer.digest, layer.size, layer.ztoc is not None, layer.size, 0, 1, 0) for layer in layers]
    return StartCost(
        "full pull", total, total, docs, doc_trips + len(layers), trips, network.seconds(total, trips), rows
    )


def lazy_start_cost(
    files: Sequence[ProfiledFile],
    layers: Sequence[ImageLayer],
    documents: ImageDocuments,
    network: NetworkModel,
    *,
    prefetch: Mapping[str, Iterable[int]] | None = None,
    prefetch_blob_sizes: Sequence[int] = (),
    extra_index_bytes: int = 0,
    mode: str = "lazy",
) -> StartCost:
    """What a SOCI node fetches to run the profiled reads (optionally after prefetching `prefetch` spans)."""
    by_digest = {layer.digest: layer for layer in layers}
    image_bytes = documents.image_index + documents.manifest + documents.config + sum(layer.size for layer in layers)
    blobs = [layer.ztoc_size for layer in layers if layer.ztoc is not None] + list(prefetch_blob_sizes)
    docs = (
        documents.image_index
        + documents.manifest
        + documents.config
        + documents.soci_index
        + extra_index_bytes
        + sum(blobs)
    )
    requests = (1 if documents.image_index else 0) + 3 + len(blobs)
    trips = (1 if documents.image_index else 0) + 3 + (1 if blobs else 0)

    fetched: dict[str, set[int]] = {layer.digest: set() for layer in layers}
    spans_of = {layer.digest: SpanLayout.of_ztoc(layer.ztoc, layer.size) for layer in layers if layer.ztoc is not None}
    file_counts: dict[str, int] = {layer.digest: 0 for layer in layers}
    names: dict[str, TocNames] = {}
    whole = [layer for layer in layers if layer.ztoc is None]  # pulled and unpacked before the start, read or not
    requests += len(whole)
    trips += math.ceil(len(whole) / network.layer_parallelism)
    for digest, spans in (prefetch or {}).items():
        count = spans_of[digest].count  # a span id past the last (possible from soci's tar arithmetic) fails, skipped
        wanted = {s for s in spans if s < count} - fetched[digest]
        fetched[digest] |= wanted
        requests += len(wanted)
        trips += math.ceil(len(wanted) / network.prefetch_parallelism)
    for f in sorted(files, key=lambda f: f.first_access_ms):
        layer = by_digest.get(f.layer_digest)
        if layer is None:
            raise StartCostError(f"profiled file {f.path}: layer {f.layer_digest} is not a layer of the image")
        file_counts[layer.digest] += 1
        if layer.ztoc is None:
            continue
        if layer.digest not in names:
            names[layer.digest] = TocNames(layer.ztoc.entries)
        entry = content_entry(names[layer.digest], f.path, layer.digest)
        for read in read_spans(spans_of[layer.digest], entry, f.ranges):
            new = read - fetched[layer.digest]
            if new:
                fetched[layer.digest] |= new
                requests += len(new)
                trips += 1
    rows = []
    for layer in layers:
        if layer.ztoc is None:
            rows.append(LayerCost(layer.digest, layer.size, False, layer.size, 0, 1, file_counts[layer.digest]))
        else:
            spans = fetched[layer.digest]
            nbytes = sum(spans_of[layer.digest].size(s) for s in spans)
            rows.append(
                LayerCost(layer.digest, layer.size, True, nbytes, len(spans), len(spans), file_counts[layer.digest])
            )
    total = docs + sum(r.bytes_to_start for r in rows)
    return StartCost(mode, total, image_bytes, docs, requests, trips, network.seconds(total, trips), rows)


class SpanLayout:
    """Where each span of a layer starts and how many compressed bytes its range request transfers."""

    def __init__(
        self, span_size: int, blob_size: int, points: Sequence[tuple[int, int, int]] | None, count: int
    ) -> None:
        self.span_size = span_size
        self.blob_size = blob_size
        self._points = list(points) if points is not None else None
        """gzip: (in offset, out offset, bits) per checkpoint; None for an uncompressed tar layer."""
        self._outs = [p[1] for p in self._points] if self._points is not None else []
        self.count = count

    @classmethod
    def of_ztoc(cls, ztoc: Ztoc, blob_size: int) -> SpanLayout:
        """The layout a zTOC describes."""
        if ztoc.compression.algorithm == CompressionAlgorithm.GZIP:
            span_size, points = parse_checkpoints(ztoc.compression.checkpoints)
            return cls(span_size, blob_size, [(p.in_offset, p.out_offset, p.bits) for p in points], len(points))
        span_size = SpanLocator(ztoc).span_size
        return cls(span_size, blob_size, None, ztoc.compression.max_span_id + 1)

    def span_of(self, offset: int) -> int:
        """soci's UncompressedOffsetToSpanID (the last checkpoint at or before offset; tar: offset // span)."""
        if self._points is None:
            return min(offset // self.span_size, self.count - 1)
        return max(0, bisect.bisect_right(self._outs, offset) - 1)

    def size(self, span_id: int) -> int:
        """Bytes of the span's range request."""
        if self._points is None:
            start = span_id * self.span_size
            return min(start + self.span_size, self.blob_size) - start
        in_offset, _, bits = self._points[span_id]
        start = in_offset - 1 if bits else in_offset
        end = self.blob_size if span_id == self.count - 1 else self._points[span_id + 1][0]
        return end - start


def read_spans(layout: SpanLayout, entry: FileMetadata, ranges: Iterable[tuple[int, int]]) -> list[set[int]]:
    """The spans each read of [start, end) of a file fetches: span(start) .. span(end) (soci getSpanInfo)."""
    reads = []
    for start, end in ranges:
        end = min(end, entry.uncompressed_size)
        if end > start:
            first = layout.span_of(entry.uncompressed_offset + start)
            last = min(layout.span_of(entry.uncompressed_offset + end), layout.count - 1)
            reads.append(set(range(first, last + 1)))
    return reads


def content_entry(names: TocNames, path: str, layer: str) -> FileMetadata:
    """The entry a node serves for `path` (the last with that name; a hard link's target holds the data)."""
    entry = names.find(path, last=True)
    if entry is None:
        raise StartCostError(f"profiled file {path}: not in the zTOC of layer {layer}")
    return names.content(entry)
