"""What `verify_image` reports: per file, per layer, per platform, and the verdict."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field


@dataclass
class FileCheck:
    """One file read lazily and from the full layer stream."""

    name: str
    layer_digest: str
    size: int
    sha256: str
    stream_sha256: str | None
    spans_fetched: int
    """Spans a node fetches for this file on its own (a cold read); shared spans are fetched once per layer."""
    bytes_fetched: int
    """Compressed bytes of those spans (what a node range-reads for it)."""
    why: str
    """startup | largest | required | entrypoint | sample"""
    lazy: bool = True
    """False when the file lives in a layer without a zTOC (fetched in full at pull time)."""


@dataclass
class LayerCheck:
    """One image layer and what its zTOC says about it."""

    layer_digest: str
    media_type: str
    layer_size: int
    ztoc_digest: str | None
    ztoc_size: int | None = None
    spans: int | None = None
    spans_checked: int = 0
    files: int | None = None
    proven: bool = False
    """True when the complete proof passed: TOC == the layer's tar, every span digest, checkpoints, sizes."""
    entries_proven: int = 0
    checkpoints_checked: int = 0


@dataclass
class PlatformReport:
    """Checks for one platform manifest."""

    platform: str
    manifest_digest: str
    soci_index_digest: str | None = None
    soci_version: str | None = None
    index_found_by: str | None = None
    layers_indexed: int = 0
    layers_skipped: int = 0
    layers: list[LayerCheck] = field(default_factory=list)
    files: list[FileCheck] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    cold_start_spans: int = 0
    """Spans a node fetches to read the checked files (each span once)."""
    cold_start_bytes: int = 0
    """Compressed bytes of those spans."""


@dataclass
class VerifyReport:
    """The verdict: would this image lazy-load, and the evidence."""

    image: str
    image_digest: str | None = None
    mode: str = "complete"
    """complete (every indexed layer proven) or quick (sampled spans and files)."""
    platforms: list[PlatformReport] = field(default_factory=list)
    passed: bool = False
    failure: str | None = None
    files_checked: int = 0
    lazy_bytes_fetched: int = 0
    """Compressed bytes actually range-read to lazily read the checked files (each span at most once per layer)."""
    lazy_layer_bytes: int = 0
    """Total size of the layers those files live in (what a full pull of them fetches)."""
    span_check_bytes: int = 0
    image_layer_bytes: int = 0

    def to_dict(self) -> dict[str, object]:
        """Plain JSON-ready dict."""
        return asdict(self)

    def to_json(self) -> str:
        """Indented JSON text."""
        return json.dumps(self.to_dict(), indent=2)

    def summary(self) -> str:
        """A few lines for a terminal: verdict, layers proven, files, what a cold start fetches."""
        verdict = "PASS: would lazy-load" if self.passed else "FAIL: would not lazy-load"
        lines = [f"{self.image} ({self.image_digest or '?'}): {verdict} [{self.mode} check]"]
        for p in self.platforms:
            proven = sum(1 for layer in p.layers if layer.proven)
            entries = sum(layer.entries_proven for layer in p.layers)
            lines.append(
                f"  {p.platform}: SOCI index {p.soci_index_digest or '-'} ({p.index_found_by or 'none'}); "
                f"layers indexed {p.layers_indexed}, proven {proven}, not indexed {p.layers_skipped}; "
                f"entries proven {entries}"
            )
            if p.files:
                lines.append(
                    f"    cold start of {len(p.files)} checked files fetches {p.cold_start_spans} spans, "
                    f"{p.cold_start_bytes} compressed bytes"
                )
            lines += [f"    note: {n}" for n in p.notes]
        if self.failure:
            lines.append(f"  failure: {self.failure}")
        return "\n".join(lines) + "\n"
