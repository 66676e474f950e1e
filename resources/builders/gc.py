"""Builder cache GC: check configured GC policies for a final catch-all tier, and prune every builder."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resources.builders.base import ImageBuilder, LogFn, PruneResult
from resources.errors import StreamableError

_SIZE_KEYS = ("keepbytes", "reservedspace", "maxusedspace", "minfreespace")


class GcConfigError(StreamableError, ValueError):
    """A GC policy file cannot be read; the message names the file and the field."""


@dataclass(frozen=True)
class GcTier:
    """One GC policy tier (a `[[worker.*.gcpolicy]]` table or a daemon.json `builder.gc.policy` entry)."""

    all: bool = False
    filters: tuple[str, ...] = ()
    keep_duration: str | None = None
    limits: Mapping[str, str] = field(default_factory=dict)

    @property
    def catch_all(self) -> bool:
        """True when the tier may delete any record, shared and internal ones included, whatever its age."""
        return self.all and not self.filters and not self.keep_duration

    def describe(self) -> str:
        parts = ["all" if self.all else "unshared only"]
        parts += [f"filters {list(self.filters)}"] if self.filters else []
        parts += [f"keep {self.keep_duration}"] if self.keep_duration else []
        parts += [f"{k}={v}" for k, v in self.limits.items()]
        return ", ".join(parts)


@dataclass(frozen=True)
class GcPolicy:
    """The GC configuration of one worker (BuildKit) or engine (Docker) as a file declares it."""

    source: str
    worker: str
    enabled: bool
    tiers: tuple[GcTier, ...]
    """Empty when the file sets no custom tiers: BuildKit's defaults apply (they end with a catch-all)."""


def _lower_keys(table: Mapping[str, Any]) -> dict[str, Any]:
    """BuildKit decodes TOML keys case-insensitively (BurntSushi/toml); so do we."""
    return {str(k).lower(): v for k, v in table.items()}


def _as_str(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def policies_from_buildkitd_toml(text: str, source: str = "buildkitd.toml") -> list[GcPolicy]:
    """GC policies of the workers a buildkitd.toml configures (absent or disabled workers are left out: an absent
    section means BuildKit's default policy, which ends with a catch-all)."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise GcConfigError(f"{source}: not valid TOML: {exc}") from None
    workers = _lower_keys(doc.get("worker") or {})
    out: list[GcPolicy] = []
    for name in ("oci", "containerd"):
        if name not in workers:
            continue
        section = _lower_keys(workers.get(name) or {})
        if section.get("enabled") is False:
            continue
        raw_tiers = section.get("gcpolicy") or []
        if not isinstance(raw_tiers, list):
            raise GcConfigError(
                f"{source}: worker.{name}.gcpolicy must be an array of tables ([[worker.{name}.gcpolicy]])"
            )
        tiers = []
        for i, raw in enumerate(raw_tiers):
            if not isinstance(raw, dict):
                raise GcConfigError(f"{source}: worker.{name}.gcpolicy[{i}] must be a table")
            t = _lower_keys(raw)
            filters = t.get("filters") or []
            tiers.append(GcTier(
                all=bool(t.get("all", False)),
                filters=tuple(str(f) for f in (filters if isinstance(filters, list) else [filters])),
                keep_duration=_as_str(t["keepduration"]) if t.get("keepduration") not in (None, "", 0) else None,
                limits={k: _as_str(t[k]) for k in _SIZE_KEYS if t.get(k) not in (None, "", 0)},
            ))
        out.append(GcPolicy(source, f"worker.{name}", enabled=section.get("gc", True) is not False, tiers=tuple(tiers)))
    return out


def policies_from_docker_daemon_json(text: str, source: str = "daemon.json") -> list[GcPolicy]:
    """The builder GC policy of a Docker daemon.json (`builder.gc`); none when the file does not configure it."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise GcConfigError(f"{source}: not valid JSON: {exc}") from None
    gc = ((doc.get("builder") or {}).get("gc")) if isinstance(doc, dict) else None
    if not isinstance(gc, dict):
        return []
    tiers = []
    for i, raw in enumerate(gc.get("policy") or []):
        if not isinstance(raw, dict):
            raise GcConfigError(f"{source}: builder.gc.policy[{i}] must be an object")
        filters = [str(f) for f in raw.get("filter") or []]
        unused = [f.split("=", 1)[1] for f in filters if f.startswith("unused-for=")]
        tiers.append(GcTier(all=bool(raw.get("all", False)),
                            filters=tuple(f for f in filters if not f.startswith("unused-for=")),
                            keep_duration=unused[0] if unused else None,
                            limits={"keepstorage": str(raw["keepStorage"])} if raw.get("keepStorage") else {}))
    return [GcPolicy(source, "builder.gc", enabled=bool(gc.get("enabled", False)), tiers=tuple(tiers))]


def load_gc_policies(path: str | Path) -> list[GcPolicy]:
    """GC policies from a buildkitd.toml or a Docker daemon.json (by extension)."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise GcConfigError(f"{p}: cannot read GC policy file ({exc.strerror or exc})") from None
    if p.suffix == ".json":
        return policies_from_docker_daemon_json(text, str(p))
    return policies_from_buildkitd_toml(text, str(p))


def check_policy(policy: GcPolicy) -> list[str]:
    """Warnings for a GC policy that lets the cache fill the disk: GC off, or custom tiers without a final catch-all."""
    where = f"{policy.source} ({policy.worker})"
    if not policy.enabled:
        return [f"{where}: garbage collection is disabled; the build cache grows until the disk is full"]
    if not policy.tiers:
        return []
    last = policy.tiers[-1]
    if last.catch_all:
        return []
    return [f"{where}: the custom GC policy has no final catch-all tier (all = true, no filters, no keepDuration); "
            f"custom tiers replace BuildKit's defaults, so shared and internal records are never collected and the "
            f"disk can fill up. Last tier: {last.describe()}. Add a last [[{policy.worker}.gcpolicy]] with all = true "
            "and a size limit (maxUsedSpace / keepBytes)."]


def check_gc_files(paths: Sequence[str | Path]) -> list[str]:
    """Warnings for every policy in `paths`; an unreadable file is a warning too (it names the file)."""
    warnings: list[str] = []
    for path in paths:
        try:
            for policy in load_gc_policies(path):
                warnings += check_policy(policy)
        except GcConfigError as exc:
            warnings.append(str(exc))
    return warnings


@dataclass(frozen=True)
class GcRow:
    """One builder's line in the GC table: cache bytes before, freed by the prune, after; or why it failed."""

    builder: str
    status: str
    """`pruned` or `failed`."""
    bytes_before: int | None
    bytes_freed: int | None
    bytes_after: int | None
    error: str = ""


GC_COLUMNS: tuple[tuple[str, str], ...] = (
    ("builder", "string"), ("status", "string"), ("bytes_before", "int"), ("bytes_freed", "int"),
    ("bytes_after", "int"), ("error", "string"),
)
"""Column names and types of GcRow, in table order."""


@dataclass
class GcReport:
    """Outcome of pruning every builder: per-builder results and the builders that failed."""

    results: list[PruneResult]
    failures: dict[str, str]

    @property
    def freed_bytes(self) -> int:
        return sum(r.freed_bytes for r in self.results)

    def rows(self) -> list[GcRow]:
        """One row per builder, pruned ones first (by name), then the failed ones."""
        pruned = [GcRow(r.builder, "pruned", r.bytes_before, r.freed_bytes, r.bytes_after)
                  for r in sorted(self.results, key=lambda r: r.builder)]
        failed = [GcRow(name, "failed", None, None, None, why) for name, why in sorted(self.failures.items())]
        return pruned + failed


def prune_builders(builder: ImageBuilder, *, keep_storage_bytes: int | None = None, keep_duration_s: int | None = None,
                   free_storage_bytes: int | None = None, log: LogFn) -> GcReport:
    """Prune through the builder contract; a pool's partial failure (PruneError) keeps the builders that succeeded."""
    try:
        results = builder.prune(keep_storage_bytes=keep_storage_bytes, keep_duration_s=keep_duration_s,
                                free_storage_bytes=free_storage_bytes, log=log)
        return GcReport(results=list(results), failures={})
    except Exception as exc:  # noqa: BLE001 - any builder error is reported, not raised past the report
        partial = getattr(exc, "results", None)
        failures = getattr(exc, "failures", None)
        if isinstance(partial, list) and isinstance(failures, dict):
            return GcReport(results=partial, failures={str(k): str(v) for k, v in failures.items()})
        return GcReport(
            results=[], failures={getattr(builder, "name", type(builder).__name__): f"{type(exc).__name__}: {exc}"}
        )
