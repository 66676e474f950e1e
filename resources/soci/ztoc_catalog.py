"""A registry-wide, persistent map (layer digest, span size) -> zTOC blobs, so a conversion finds reusable zTOCs
without reading every tag's manifest.

Kept in the registry as one JSON artifact (`JsonArtifactStore`, default `streamable/catalog:ztoc-catalog`):
every pod and the CLI share it. It is fed incrementally: by conversions (each zTOC they build or reuse) and
by the backfill's incremental scan (the zTOCs of SOCI indexes it sees in new tags); a repository whose SOCI
indexes were all folded in by a scan is marked *covered*, and the converter then skips its full tag scan.

A catalog entry is only a candidate: `ZtocReuseIndex` checks it exactly like a candidate found by scanning
(zTOC blob fetched and hashed, parsed, span size and layer size checked, first and last span digests checked
against the layer's own bytes). Entries that fail are dropped from the catalog.

    {"version": 1,
     "ztocs": {"<layer digest> <span size>": [["<repository>", "<zTOC digest>", <zTOC size>], ...]},
     "covered": ["<repository>", ...]}
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from resources.errors import StreamableError
from resources.oci import media_types as mt
from resources.oci.manifest import Descriptor
from resources.registry import RegistryClient, RegistryError
from resources.soci.artifact_store import Doc, JsonArtifactStore
from resources.soci.reuse import ZtocInfo, ZtocReuseIndex, _Candidate

log = logging.getLogger(__name__)

DEFAULT_CATALOG_REPOSITORY = "streamable/catalog"
CATALOG_TAG = "ztoc-catalog"
CATALOG_ARTIFACT_TYPE = "application/vnd.streamable.ztoc-catalog.v1+json"
VERSION = 1
MAX_TRIES = 4
"""Catalog candidates checked per lookup (the same repository's first); each costs a few requests."""


@dataclass(frozen=True)
class CatalogEntry:
    """A zTOC blob in a repository, said to index `layer_digest` with `span_size`."""

    layer_digest: str
    span_size: int
    repository: str
    digest: str
    size: int


def _key(layer_digest: str, span_size: int) -> str:
    return f"{layer_digest} {span_size}"


def _entries(doc: Doc) -> dict[str, set[tuple[str, str, int]]]:
    out: dict[str, set[tuple[str, str, int]]] = {}
    ztocs = doc.get("ztocs") if doc.get("version") == VERSION else None
    for key, rows in (ztocs or {}).items():
        good = {(str(r[0]), str(r[1]), int(r[2])) for r in rows if isinstance(r, list) and len(r) == 3}
        if good:
            out[key] = good
    return out


class ZtocCatalog:
    """In-memory view of the stored catalog; `flush` writes what this process added (merged with others' writes)."""

    def __init__(self, store: JsonArtifactStore, *, log_fn: Callable[[str], None] | None = None) -> None:
        self.store = store
        self._log = log_fn or log.info
        self._lock = threading.RLock()
        self._ztocs: dict[str, set[tuple[str, str, int]]] = {}
        self._covered: set[str] = set()
        self._added: dict[str, set[tuple[str, str, int]]] = {}
        self._removed: dict[str, set[tuple[str, str, int]]] = {}
        self._newly_covered: set[str] = set()
        self._digest: str | None = None
        self._loaded = False

    @classmethod
    def in_registry(cls, client: RegistryClient, repository: str = DEFAULT_CATALOG_REPOSITORY, *,
                    log_fn: Callable[[str], None] | None = None) -> ZtocCatalog:
        """The catalog of the client's registry, kept at `repository:ztoc-catalog`."""
        return cls(JsonArtifactStore(client, repository, CATALOG_TAG, CATALOG_ARTIFACT_TYPE), log_fn=log_fn)

    @property
    def repository(self) -> str:
        """Where the catalog lives (scans skip it)."""
        return self.store.repository

    # ---- reading --------------------------------------------------------------------------------

    def _ensure_loaded(self) -> None:
        with self._lock:
            if not self._loaded:
                self._apply(self.store.load())
                self._loaded = True

    def _apply(self, loaded: Any) -> None:
        """Take the stored document, then re-apply this process's own unsaved changes on top."""
        self._ztocs = _entries(loaded.doc)
        self._covered = set(loaded.doc.get("covered") or []) if loaded.doc.get("version") == VERSION else set()
        self._digest = loaded.manifest_digest
        for key, rows in self._added.items():
            self._ztocs.setdefault(key, set()).update(rows)
        for key, rows in self._removed.items():
            self._ztocs.get(key, set()).difference_update(rows)
        self._covered |= self._newly_covered

    def refresh(self) -> bool:
        """Reload when another process wrote since we read (one HEAD); True when it did."""
        with self._lock:
            self._ensure_loaded()
            head = self.store.client.head_manifest(self.store.repository, self.store.tag)
            if (head.digest if head else None) == self._digest:
                return False
            self._apply(self.store.load())
            return True

    def candidates(self, layer_digest: str, span_size: int, *, refresh_on_miss: bool = True) -> list[CatalogEntry]:
        """Known zTOCs for this layer and span size (reloading once when none is known and the catalog changed)."""
        with self._lock:
            self._ensure_loaded()
            rows = self._ztocs.get(_key(layer_digest, span_size))
            if not rows and refresh_on_miss and self.refresh():
                rows = self._ztocs.get(_key(layer_digest, span_size))
            return [CatalogEntry(layer_digest, span_size, r, d, s) for r, d, s in sorted(rows or ())]

    def covers(self, repository: str) -> bool:
        """True when a scan folded every SOCI index of `repository` into the catalog."""
        with self._lock:
            self._ensure_loaded()
            return repository in self._covered

    def __len__(self) -> int:
        with self._lock:
            self._ensure_loaded()
            return sum(len(v) for v in self._ztocs.values())

    # ---- writing --------------------------------------------------------------------------------

    def add(self, repository: str, layer_digest: str, span_size: int, ztoc_digest: str, ztoc_size: int) -> None:
        """Remember that `repository` holds zTOC `ztoc_digest` for the layer."""
        key, row = _key(layer_digest, span_size), (repository, ztoc_digest, ztoc_size)
        with self._lock:
            self._ensure_loaded()
            self._removed.get(key, set()).discard(row)
            if row not in self._ztocs.get(key, set()):
                self._ztocs.setdefault(key, set()).add(row)
                self._added.setdefault(key, set()).add(row)

    def add_info(self, repository: str, info: ZtocInfo) -> None:
        """`add` for a zTOC the converter built or verified."""
        self.add(repository, info.layer_digest, info.span_size, info.digest, info.size)

    def add_soci_index(self, repository: str, layers: Iterable[Descriptor]) -> int:
        """Add the zTOC descriptors of a SOCI index manifest (its `layers`); returns how many."""
        n = 0
        for d in layers:
            annotations = d.annotations or {}
            layer_digest = annotations.get(mt.ANNOTATION_LAYER_DIGEST)
            span_text = annotations.get(mt.ANNOTATION_SPAN_SIZE, "")
            if d.media_type == mt.SOCI_ZTOC and layer_digest and span_text.isdigit():
                self.add(repository, layer_digest, int(span_text), d.digest, d.size)
                n += 1
        return n

    def discard(self, entry: CatalogEntry) -> None:
        """Forget an entry that failed its checks."""
        key, row = _key(entry.layer_digest, entry.span_size), (entry.repository, entry.digest, entry.size)
        with self._lock:
            self._ztocs.get(key, set()).discard(row)
            self._added.get(key, set()).discard(row)
            self._removed.setdefault(key, set()).add(row)

    def mark_covered(self, repository: str) -> None:
        """Record that every SOCI index of `repository` is in the catalog."""
        with self._lock:
            self._ensure_loaded()
            if repository not in self._covered:
                self._covered.add(repository)
                self._newly_covered.add(repository)

    def forget_repository(self, repository: str) -> None:
        """Drop the covered mark (the repository is gone or must be scanned again)."""
        with self._lock:
            self._covered.discard(repository)
            self._newly_covered.discard(repository)

    @property
    def dirty(self) -> bool:
        return any(self._added.values()) or any(self._removed.values()) or bool(self._newly_covered)

    def flush(self) -> bool:
        """Write this process's additions and removals (read-merge-write); True when something was written."""
        with self._lock:
            if not self.dirty:
                return False
            added, removed, covered = self._added, self._removed, set(self._newly_covered)

            def merge(stored: Doc, _ours: Doc) -> Doc:
                ztocs = _entries(stored)
                for key, rows in added.items():
                    ztocs.setdefault(key, set()).update(rows)
                for key, rows in removed.items():
                    ztocs.get(key, set()).difference_update(rows)
                old_covered = set(stored.get("covered") or []) if stored.get("version") == VERSION else set()
                return {"version": VERSION, "ztocs": {k: sorted(map(list, v)) for k, v in sorted(ztocs.items()) if v},
                        "covered": sorted(old_covered | covered)}

            ours = {"version": VERSION,
                    "ztocs": {k: sorted(map(list, v)) for k, v in sorted(self._ztocs.items()) if v},
                    "covered": sorted(self._covered)}
            saved = self.store.save(ours, self._digest, merge)
            self._added, self._removed, self._newly_covered = {}, {}, set()
            self._apply(saved)
            return True

    # ---- the reuse hook -------------------------------------------------------------------------

    def lookup(self, reuse: ZtocReuseIndex, repository: str, layer_digest: str, layer_size: int,
               span_size: int) -> ZtocInfo | None:
        """A catalog zTOC for the layer, brought into `repository` and checked by `reuse`'s own checks; or None."""
        client = reuse._client
        ranked = sorted(self.candidates(layer_digest, span_size), key=lambda e: e.repository != repository)
        for entry in ranked[:MAX_TRIES]:
            if entry.repository != repository and not self._bring(client, entry, repository):
                continue
            info = reuse._verify(repository, _Candidate(entry.digest, entry.size), layer_digest, layer_size, span_size)
            if info is None:
                if entry.repository == repository:
                    self.discard(entry)
                continue
            self._log(f"zTOC catalog: layer {layer_digest} -> {entry.digest} (from {entry.repository})")
            reuse.record(repository, info)
            return info
        return None

    def _bring(self, client: RegistryClient, entry: CatalogEntry, repository: str) -> bool:
        """Mount (or copy) a zTOC blob from its repository into `repository`."""
        try:
            if client.blob_size(repository, entry.digest) == entry.size:
                return True
            if client.blob_size(entry.repository, entry.digest) != entry.size:
                self.discard(entry)
                return False
            if not client.mount_blob(repository, entry.digest, entry.repository):
                client.push_blob(repository, client.get_blob(entry.repository, entry.digest), digest=entry.digest)
            return True
        except RegistryError as exc:
            self._log(f"zTOC catalog: could not bring {entry.repository}@{entry.digest} into {repository}: {exc}")
            return False

    def drop_unsaved(self) -> None:
        """Forget additions not flushed yet (the image they came from did not verify)."""
        with self._lock:
            for key, rows in self._added.items():
                self._ztocs.get(key, set()).difference_update(rows)
            self._added = {}

    def flush_quietly(self) -> str | None:
        """`flush`, returning the error text instead of raising (a catalog write never fails an image)."""
        try:
            self.flush()
        except (StreamableError, RegistryError) as exc:
            self._log(f"zTOC catalog: not saved: {exc}")
            return str(exc)
        return None
