"""SOCI prefetch artifacts, byte for byte as soci-snapshotter writes them (v0.13+).

Upstream (awslabs/soci-snapshotter):
- soci/prefetch.go: the JSON (`PrefetchArtifact{Version, PrefetchSpans}`, `PrefetchSpan{StartSpan,
  EndSpan, Priority omitempty}`, SpanID is int32), marshalled with `json.Marshal`, media type
  `application/vnd.amazon.soci.prefetch.v1+json`; an artifact without spans is never written.
- soci/soci_index.go `buildPrefetchLayer`: for each `--prefetch-file` path (cleaned, leading `/`
  dropped), walk the manifest's layers from the top down, only layers that got a zTOC, and take the
  first TOC entry with that name; its spans are `UncompressedOffsetToSpanID(offset)` ..
  `UncompressedOffsetToSpanID(offset + size)` (end offset exclusive, so a file ending on a span
  boundary also names the next span; an empty file names the span holding its offset). Paths found
  nowhere are only logged. `normalizePrefetchSpans` sorts and merges overlapping and adjacent ranges.
  One artifact per layer, annotated only with `com.amazon.soci.image-layer-digest`, in manifest layer
  order, placed in the index after every zTOC (`build`: `ztocsDesc` = zTOCs, then prefetch descs).
- fs/fs.go `findPrefetchArtifact`: a node uses the first prefetch entry for a layer digest.

From a startup profile, each file's layer is the one the profile names (the topmost layer that
provides it). Granularity `files` spans whole files as upstream does; `ranges` spans only the
recorded byte ranges: span(start) .. span(end - 1) of each range.
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

from resources.errors import StreamableError
from resources.oci import media_types as mt
from resources.oci.manifest import Descriptor
from resources.soci import gojson
from resources.soci.gojson import go_field
from resources.soci.ztoc.checkpoints import parse_checkpoints, span_for_offset
from resources.soci.ztoc.model import CompressionAlgorithm, FileMetadata, Ztoc
from resources.soci.ztoc.tar_zinfo import decode_tar_zinfo
from resources.startup.profile import ProfiledFile

PREFETCH_ARTIFACT_VERSION = "1.0"


class PrefetchError(StreamableError, ValueError):
    """A prefetch artifact that soci-snapshotter would refuse (the message names it)."""


class Granularity(str, Enum):
    """What a profiled file's prefetch covers."""

    FILES = "files"
    RANGES = "ranges"


@dataclass
class PrefetchSpan:
    """soci's PrefetchSpan: an inclusive span id range; priority 0 is left out (omitempty)."""

    start_span: int = go_field("start_span", default=0)
    end_span: int = go_field("end_span", default=0)
    priority: int = go_field("priority", omitempty=True, default=0)


@dataclass
class PrefetchArtifact:
    """soci's PrefetchArtifact."""

    version: str = go_field("version", default=PREFETCH_ARTIFACT_VERSION)
    prefetch_spans: list[PrefetchSpan] | None = go_field("prefetch_spans", default=None)


@dataclass(frozen=True)
class LayerZtoc:
    """A manifest layer and its zTOC (None when the layer has no zTOC in the index)."""

    layer_digest: str
    ztoc: Ztoc | None


@dataclass(frozen=True)
class PrefetchBlob:
    """One prefetch artifact: its bytes and its SOCI index descriptor."""

    layer_digest: str
    data: bytes
    descriptor: Descriptor
    spans: tuple[tuple[int, int], ...]

    @property
    def span_count(self) -> int:
        """Spans the node prefetches for this layer."""
        return sum(end - start + 1 for start, end in self.spans)


@dataclass
class PrefetchPlan:
    """The artifacts for one image manifest, and what could not be prefetched (never dropped silently)."""

    artifacts: list[PrefetchBlob] = field(default_factory=list)
    not_found: list[str] = field(default_factory=list)
    """Paths (or profile files) not in any zTOC they were looked for in."""
    unindexed: list[str] = field(default_factory=list)
    """Profiled files whose layer has no zTOC: the node fetches that whole layer anyway."""

    @property
    def descriptors(self) -> list[Descriptor]:
        """The descriptors to append to the SOCI index after the zTOCs."""
        return [a.descriptor for a in self.artifacts]


# ---- span arithmetic (soci's UncompressedOffsetToSpanID) ------------------------------------------


class SpanLocator:
    """Span id of an uncompressed offset in one zTOC, as soci-snapshotter computes it."""

    def __init__(self, ztoc: Ztoc) -> None:
        info = ztoc.compression
        if info.algorithm == CompressionAlgorithm.GZIP:
            self.span_size, self._points = parse_checkpoints(info.checkpoints)
        else:
            self.span_size, self._points = decode_tar_zinfo(info.checkpoints).span_size, []

    def span_of(self, offset: int) -> int:
        """gzip: the last checkpoint whose out offset <= offset (gzip_zinfo.c); tar: offset // span size."""
        if self._points:
            return span_for_offset(self._points, offset)
        return offset // self.span_size


def entry_spans(locator: SpanLocator, entry: FileMetadata) -> tuple[int, int]:
    """upstream buildPrefetchLayer: span(offset) .. span(offset + size), end never before start."""
    start = locator.span_of(entry.uncompressed_offset)
    end = locator.span_of(entry.uncompressed_offset + entry.uncompressed_size)
    return start, max(start, end)


def range_spans(locator: SpanLocator, entry: FileMetadata, ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """The spans holding the bytes [start, end) of a file's content, one (first, last) per range."""
    out: list[tuple[int, int]] = []
    base = entry.uncompressed_offset
    for start, end in ranges:
        end = min(end, entry.uncompressed_size)
        if end > start:
            out.append((locator.span_of(base + start), locator.span_of(base + end - 1)))
    return out


def normalize_spans(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """upstream normalizePrefetchSpans: sort by (start, end), merge overlapping and adjacent ranges."""
    ordered = sorted(spans)
    merged: list[tuple[int, int]] = []
    for start, end in ordered:
        if merged and start <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


# ---- the artifact bytes ----------------------------------------------------------------------------


def encode_artifact(spans: Sequence[tuple[int, int]]) -> bytes:
    """`json.Marshal` of the PrefetchArtifact with these (already normalized) spans."""
    if not spans:
        raise PrefetchError("prefetch artifact is empty (soci's ErrEmptyPrefetchArtifact)")
    artifact = PrefetchArtifact(prefetch_spans=[PrefetchSpan(s, e) for s, e in spans])
    return gojson.marshal(artifact)


def parse_artifact(data: bytes, *, name: str = "prefetch artifact") -> PrefetchArtifact:
    """Read an artifact as soci's UnmarshalPrefetchArtifact does: version 1.0 and at least one span."""
    try:
        artifact = gojson.unmarshal(data, PrefetchArtifact)
    except gojson.GoJSONError as exc:
        raise PrefetchError(f"{name}: not a prefetch artifact: {exc}") from None
    if artifact.version != PREFETCH_ARTIFACT_VERSION:
        raise PrefetchError(f"{name}: unsupported version {artifact.version!r} (expected {PREFETCH_ARTIFACT_VERSION})")
    if not artifact.prefetch_spans:
        raise PrefetchError(f"{name}: prefetch artifact is empty")
    return artifact


def artifact_descriptor(layer_digest: str, data: bytes) -> Descriptor:
    """The SOCI index entry upstream's storePrefetchLayer writes."""
    return Descriptor(
        media_type=mt.SOCI_PREFETCH,
        digest="sha256:" + hashlib.sha256(data).hexdigest(),
        size=len(data),
        annotations={mt.ANNOTATION_LAYER_DIGEST: layer_digest},
    )


def prefetch_entry_for_layer(layers: Sequence[Descriptor], layer_digest: str) -> Descriptor | None:
    """The prefetch entry a node uses for a layer (fs.go findPrefetchArtifact: the first one)."""
    for d in layers:
        if d.media_type == mt.SOCI_PREFETCH and (d.annotations or {}).get(mt.ANNOTATION_LAYER_DIGEST) == layer_digest:
            return d
    return None


# ---- plans ------------------------------------------------------------------------------------------


def clean_path(path: str) -> str:
    """upstream: strings.TrimPrefix(filepath.Clean("/" + path), "/")."""
    return posixpath.normpath("/" + path).lstrip("/")


def plan_for_paths(layers: Sequence[LayerZtoc], paths: Iterable[str]) -> PrefetchPlan:
    """What upstream `soci convert --prefetch-file PATH ...` writes for these layers (manifest order)."""
    spans: dict[str, list[tuple[int, int]]] = {}
    plan = PrefetchPlan()
    locators: dict[str, SpanLocator] = {}
    names: dict[str, TocNames] = {}
    for raw in paths:
        path = clean_path(raw.strip())
        if not raw.strip():
            continue
        for layer in reversed(layers):
            if layer.ztoc is None:
                continue
            if layer.layer_digest not in names:
                names[layer.layer_digest] = TocNames(layer.ztoc.entries)
            entry = names[layer.layer_digest].raw_first(path)
            if entry is not None:
                if layer.layer_digest not in locators:
                    locators[layer.layer_digest] = SpanLocator(layer.ztoc)
                locator = locators[layer.layer_digest]
                spans.setdefault(layer.layer_digest, []).append(entry_spans(locator, entry))
                break
        else:
            plan.not_found.append(raw)
    plan.artifacts = _artifacts(layers, spans)
    return plan


def plan_for_profile(
    layers: Sequence[LayerZtoc], files: Iterable[ProfiledFile], granularity: Granularity
) -> PrefetchPlan:
    """Artifacts for a startup profile: each file in the layer the profile names."""
    by_digest = {layer.layer_digest: layer for layer in layers}
    spans: dict[str, list[tuple[int, int]]] = {}
    plan = PrefetchPlan()
    locators: dict[str, SpanLocator] = {}
    names: dict[str, TocNames] = {}
    for f in files:
        layer = by_digest.get(f.layer_digest)
        if layer is None:
            plan.not_found.append(f"{f.path} (layer {f.layer_digest} is not in the image)")
            continue
        if layer.ztoc is None:
            plan.unindexed.append(f.path)
            continue
        if layer.layer_digest not in names:
            names[layer.layer_digest] = TocNames(layer.ztoc.entries)
        toc = names[layer.layer_digest]
        entry = toc.find(f.path, last=granularity is Granularity.RANGES)
        if entry is None:
            plan.not_found.append(f"{f.path} (not in the zTOC of layer {f.layer_digest})")
            continue
        if layer.layer_digest not in locators:
            locators[layer.layer_digest] = SpanLocator(layer.ztoc)
        locator = locators[layer.layer_digest]
        wanted = spans.setdefault(layer.layer_digest, [])
        if granularity is Granularity.FILES:
            wanted.append(entry_spans(locator, entry))
        else:
            wanted.extend(range_spans(locator, toc.content(entry), f.ranges))
    plan.artifacts = _artifacts(layers, spans)
    return plan


class TocNames:
    """Name lookups in a zTOC's entries, built once (raw names as upstream compares, and cleaned names)."""

    def __init__(self, entries: Sequence[FileMetadata]) -> None:
        self.entries = list(entries)  # decoded once: a lazy zTOC view decodes a new object per read
        self._raw_first: dict[str, int] = {}
        self._cleaned: dict[str, list[int]] = {}
        for i, e in enumerate(entries):
            self._raw_first.setdefault(e.name, i)
            self._cleaned.setdefault(clean_path(e.name), []).append(i)

    def raw_first(self, name: str) -> FileMetadata | None:
        """upstream buildPrefetchLayer: the first entry whose raw tar name equals the cleaned path."""
        i = self._raw_first.get(name)
        return None if i is None else self.entries[i]

    def find(self, path: str, *, last: bool) -> FileMetadata | None:
        """The first (or last: what the node serves) entry named `path`, names compared cleaned (`./a` is `a`)."""
        found = self._cleaned.get(clean_path(path))
        return None if not found else self.entries[found[-1] if last else found[0]]

    def content(self, entry: FileMetadata) -> FileMetadata:
        """The entry holding a file's data: a hard link's target (the last earlier entry with the link name)."""
        seen = 0
        while entry.type == "hardlink" and seen < 40:
            position = next(i for i in self._cleaned.get(clean_path(entry.name), []) if self.entries[i] is entry)
            earlier = [i for i in self._cleaned.get(clean_path(entry.linkname), []) if i < position]
            if not earlier:
                return entry
            entry = self.entries[earlier[-1]]
            seen += 1
        return entry


def _artifacts(layers: Sequence[LayerZtoc], spans: dict[str, list[tuple[int, int]]]) -> list[PrefetchBlob]:
    out: list[PrefetchBlob] = []
    for layer in layers:  # manifest layer order, as upstream
        wanted = spans.get(layer.layer_digest)
        if not wanted:
            continue
        merged = normalize_spans(wanted)
        data = encode_artifact(merged)
        out.append(PrefetchBlob(layer.layer_digest, data, artifact_descriptor(layer.layer_digest, data), tuple(merged)))
    return out


# ---- checks a verifier can run on a pushed index ------------------------------------------------------


def check_prefetch_entries(
    index_layers: Sequence[Descriptor], read_blob: Callable[[Descriptor], bytes], span_counts: Mapping[str, int]
) -> list[str]:
    """Problems a node would have with the prefetch entries of a SOCI index (empty list: none).

    `read_blob` fetches an entry's bytes (digest-checked); `span_counts` maps each layer digest that
    has a zTOC in the index to its number of spans. Checked: entries come after every zTOC, each
    names a layer with a zTOC, parses as upstream's UnmarshalPrefetchArtifact would, names only
    existing spans, and is the one a node uses (the first for its layer).
    """
    problems: list[str] = []
    last_ztoc = max((i for i, d in enumerate(index_layers) if d.media_type == mt.SOCI_ZTOC), default=-1)
    seen: set[str] = set()
    for i, d in enumerate(index_layers):
        if d.media_type != mt.SOCI_PREFETCH:
            continue
        layer = (d.annotations or {}).get(mt.ANNOTATION_LAYER_DIGEST)
        name = f"prefetch artifact {d.digest}"
        if i < last_ztoc:
            problems.append(f"{name} comes before a zTOC (upstream lists prefetch artifacts after every zTOC)")
        if not layer or layer not in span_counts:
            problems.append(f"{name} names layer {layer!r}, which has no zTOC in the index")
            continue
        if layer in seen:
            problems.append(f"{name}: a second prefetch artifact for layer {layer}; a node uses only the first")
        seen.add(layer)
        try:
            artifact = parse_artifact(read_blob(d), name=name)
        except PrefetchError as exc:
            problems.append(str(exc))
            continue
        for span in artifact.prefetch_spans or []:
            if not 0 <= span.start_span <= span.end_span < span_counts[layer]:
                problems.append(
                    f"{name}: spans {span.start_span}..{span.end_span} are outside layer {layer}'s "
                    f"{span_counts[layer]} spans"
                )
    return problems
