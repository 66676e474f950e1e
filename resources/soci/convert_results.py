"""What `SociConverter.convert` reports: indexed layers, skipped layers, per platform and overall."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from resources.soci.convert_prefetch import PrefetchReport
from resources.soci.node_compat import DEFAULT_NODE_COMPAT


@dataclass(frozen=True)
class ZtocRow:
    """One indexed layer: the layer, its zTOC, and whether the zTOC was reused."""

    layer_digest: str
    media_type: str
    layer_size: int
    ztoc_digest: str
    ztoc_size: int
    spans: int
    files: int
    reused: bool


@dataclass(frozen=True)
class SkippedLayer:
    """A layer that gets no zTOC, and why."""

    layer_digest: str
    media_type: str
    layer_size: int
    reason: str


@dataclass
class PlatformResult:
    """What the conversion did for one platform manifest."""

    platform: str
    source_manifest_digest: str
    manifest_digest: str
    """The image manifest the destination points at (rewritten for v2, the original for v1)."""
    soci_index_digest: str | None
    soci_index_size: int | None
    ztocs: list[ZtocRow] = field(default_factory=list)
    skipped_layers: list[SkippedLayer] = field(default_factory=list)
    skipped_reason: str | None = None
    """Why this platform got no SOCI index (None when it got one)."""
    prefetch: PrefetchReport | None = None
    """Prefetch artifacts written after the zTOCs, or why none were (the node_compat gate)."""


@dataclass
class ConvertResult:
    """Summary of one conversion (what the CLI prints as JSON)."""

    source: str
    destination: str
    format: str
    span_size: int
    min_layer_size: int
    image_digest: str
    """Digest the destination tag points at: the SOCI-enabled image index (v2) or the original image (v1)."""
    image_media_type: str
    image_size: int
    platforms: list[PlatformResult]
    layers_built: int
    layers_reused: int
    node_compat: str = str(DEFAULT_NODE_COMPAT)

    @property
    def soci_index_digests(self) -> list[str]:
        """Digests of the SOCI index manifests pushed, one per indexed platform."""
        return [p.soci_index_digest for p in self.platforms if p.soci_index_digest]

    def to_dict(self) -> dict[str, object]:
        """Plain JSON-ready dict."""
        return asdict(self)

    def to_json(self) -> str:
        """Indented JSON text."""
        return json.dumps(self.to_dict(), indent=2)
