"""Incremental backfill scan: each tick lists tags and reads manifests only for tags it has not seen before.

`scan_registry` (backfill.py) reads every tag's manifest on every pass: O(all tags) per tick. This scan keeps
what it learned per repository (tag -> digest, whether the image still needs a SOCI index, why not) in a
`ScanStateStore`, a JSON artifact in the registry (`streamable/catalog:backfill-scan-state`, shared by every
pod like the zTOC catalog; see artifact_store.py for why the registry). A tick then costs one tag listing
per repository plus manifest reads for new or moved tags only: O(new tags).

What makes a tag "changed": it is new; its listed digest differs (ECR lists digests, so a moved tag is seen);
its `<tag>-soci` or `sha256-<hex>` referrers tag appeared (the image may now be indexed). A registry whose
tag list carries no digest (the OCI API) cannot show a tag moved to new content without a manifest read:
`rescan_after_s` re-reads a repository's tags when its last full read is older than that (spread over
ticks by the scan deadline). Push events and the git sensor see moved tags at once anyway.

When a `ZtocCatalog` is given, the zTOCs of every SOCI index seen in new tags are folded into it, and a
repository scanned in full for the first time is marked covered (the converter then skips its tag scan).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from resources.aws.push_events import is_soci_output
from resources.oci import media_types as mt
from resources.oci.manifest import parse_index, parse_manifest
from resources.registry import Manifest as RegistryManifest
from resources.registry import (
    RegistryClient,
    RegistryError,
    RegistryNotFoundError,
    is_referrers_tag,
)
from resources.release.backfill import BackfillSettings, _platform_manifests, existing_soci_index
from resources.release.catalog import ImageCatalog, ListedImage
from resources.release.scan import ScannedImage, ScanResult
from resources.soci import gojson
from resources.soci.artifact_store import ArtifactStoreError, Doc, JsonArtifactStore
from resources.soci.index import soci_version_of
from resources.soci.ztoc_catalog import DEFAULT_CATALOG_REPOSITORY, ZtocCatalog

SCAN_STATE_TAG = "backfill-scan-state"
SCAN_STATE_ARTIFACT_TYPE = "application/vnd.streamable.backfill-scan-state.v1+json"
VERSION = 1
PENDING, DONE, OTHER = "pending", "done", "other"
"""Tag kinds: an image needing a SOCI index; an image that has one; anything else (SOCI output, artifact, filtered)."""
LIST_BATCH = 64


@dataclass
class TagRecord:
    """What the scan learned about one tag."""

    digest: str
    listed: str
    """The digest the catalog listed for it ('' when the listing has none)."""
    kind: str
    reason: str = ""

    def row(self) -> list[str]:
        return [self.digest, self.listed, self.kind, self.reason]


@dataclass
class RepoState:
    """One repository: its tags and when they were last all read."""

    tags: dict[str, TagRecord] = field(default_factory=dict)
    read_at: float = 0.0

    def to_doc(self) -> Doc:
        return {"read_at": self.read_at, "tags": {t: r.row() for t, r in sorted(self.tags.items())}}

    @classmethod
    def from_doc(cls, doc: Any) -> RepoState:
        tags = {}
        for tag, row in (doc.get("tags") or {}).items() if isinstance(doc, dict) else ():
            if isinstance(row, list) and len(row) == 4:
                tags[str(tag)] = TagRecord(str(row[0]), str(row[1]), str(row[2]), str(row[3]))
        return cls(tags, float(doc.get("read_at") or 0.0) if isinstance(doc, dict) else 0.0)


@dataclass
class ScanState:
    """Every repository's state, valid for one settings fingerprint."""

    fingerprint: str
    repositories: dict[str, RepoState] = field(default_factory=dict)


def settings_fingerprint(settings: BackfillSettings) -> str:
    """What the recorded pending/done answers depend on; other settings mean a fresh scan."""
    text = json.dumps([settings.registry, settings.format, settings.soci_tag_suffix, list(settings.filters.patterns)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class ScanStateStore:
    """The scan state as a JSON artifact (`repository:backfill-scan-state`)."""

    def __init__(self, client: RegistryClient, repository: str = DEFAULT_CATALOG_REPOSITORY) -> None:
        self.store = JsonArtifactStore(client, repository, SCAN_STATE_TAG, SCAN_STATE_ARTIFACT_TYPE)
        self._digest: str | None = None

    @property
    def repository(self) -> str:
        return self.store.repository

    def load(self, settings: BackfillSettings) -> ScanState:
        """The stored state, or an empty one when there is none or it was made with other settings."""
        loaded = self.store.load()
        self._digest = loaded.manifest_digest
        fp = settings_fingerprint(settings)
        doc = loaded.doc
        if doc.get("version") != VERSION or doc.get("fingerprint") != fp:
            return ScanState(fp)
        return ScanState(fp, {r: RepoState.from_doc(d) for r, d in (doc.get("repositories") or {}).items()})

    def save(self, state: ScanState, touched: Iterable[str], dropped: Iterable[str] = ()) -> None:
        """Write `state`; repositories this tick did not touch keep what another writer stored meanwhile."""
        touched, dropped = set(touched), set(dropped)
        ours = {"version": VERSION, "fingerprint": state.fingerprint,
                "repositories": {r: s.to_doc() for r, s in sorted(state.repositories.items())}}

        def merge(stored: Doc, mine: Doc) -> Doc:
            if stored.get("version") != VERSION or stored.get("fingerprint") != state.fingerprint:
                return mine
            repos = dict(stored.get("repositories") or {})
            for r in dropped:
                repos.pop(r, None)
            for r in touched:
                repos[r] = mine["repositories"][r]
            return {**mine, "repositories": dict(sorted(repos.items()))}

        self._digest = self.store.save(ours, self._digest, merge).manifest_digest


@dataclass
class TickStats:
    """What one incremental tick read (the benchmark prints these)."""

    repositories_listed: int = 0
    tags_new_or_changed: int = 0
    manifests_checked: int = 0
    soci_indexes_folded: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def count(self, name: str, n: int = 1) -> None:
        """Add `n` to a counter (called from scan threads)."""
        with self._lock:
            setattr(self, name, getattr(self, name) + n)


def incremental_scan(
    client: RegistryClient,
    catalog: ImageCatalog,
    settings: BackfillSettings,
    store: ScanStateStore,
    *,
    ztoc_catalog: ZtocCatalog | None = None,
    deadline: float | None = None,
    resume_after: str | None = None,
    max_parallel: int = 16,
    rescan_after_s: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    now: Callable[[], float] = time.time,
    stats: TickStats | None = None,
) -> ScanResult:
    """Like `scan_registry` (same result, same resume/deadline rules), reading manifests of new or changed tags only."""
    stats = stats if stats is not None else TickStats()
    result = ScanResult()
    try:
        state = store.load(settings)
    except (ArtifactStoreError, RegistryError) as exc:
        result.errors.append(f"scan state not readable, scanning everything: {exc}")
        state = ScanState(settings_fingerprint(settings))
    skip = {store.repository, ztoc_catalog.repository if ztoc_catalog is not None else store.repository}
    try:
        repos = [r for r in catalog.repositories() if settings.filters.may_match_repository(r) and r not in skip]
    except RegistryError as exc:
        result.errors.append(f"cannot list repositories of {settings.registry}: {exc}")
        return result
    todo = [r for r in repos if resume_after is None or r > resume_after]
    touched: list[str] = []
    result.complete = True
    with ThreadPoolExecutor(max_workers=max_parallel) as pool:
        for start in range(0, len(todo), LIST_BATCH):
            if deadline is not None and clock() >= deadline:
                result.complete = False
                break
            batch = todo[start:start + LIST_BATCH]
            for repo, listed in zip(batch, pool.map(lambda r: _list(catalog, r, result.errors), batch)):
                stats.repositories_listed += 1
                if listed is None:
                    continue
                prev = state.repositories.get(repo)
                full = prev is None or (rescan_after_s is not None and now() - prev.read_at > rescan_after_s)
                updated = _update_repository(client, settings, repo, listed, prev or RepoState(), full, ztoc_catalog,
                                             pool, result.errors, stats)
                if updated is not None:
                    if full:
                        updated.read_at = now()
                        if ztoc_catalog is not None:
                            ztoc_catalog.mark_covered(repo)
                    state.repositories[repo] = updated
                    touched.append(repo)
                result.repositories += 1
                result.resume_after = repo
    dropped = [r for r in state.repositories if r not in repos and r not in skip] if result.complete else []
    for r in dropped:
        del state.repositories[r]
        if ztoc_catalog is not None:
            ztoc_catalog.forget_repository(r)
    if result.complete:
        result.resume_after = None
    elif result.resume_after is None:
        result.resume_after = resume_after
    for repo in repos:
        for tag, rec in sorted((state.repositories.get(repo) or RepoState()).tags.items()):
            if rec.kind != OTHER and settings.filters.matches(repo, tag):
                result.images.append(ScannedImage(settings.registry, repo, tag, rec.digest, pending=rec.kind == PENDING,
                                                  reason=rec.reason))
    try:
        if touched or dropped:
            store.save(state, touched, dropped)
    except (ArtifactStoreError, RegistryError) as exc:
        result.errors.append(f"scan state not saved (the next tick reads these tags again): {exc}")
    if ztoc_catalog is not None and (err := ztoc_catalog.flush_quietly()):
        result.errors.append(f"zTOC catalog not saved: {err}")
    return result


def _list(catalog: ImageCatalog, repo: str, errors: list[str]) -> list[ListedImage] | None:
    try:
        return catalog.images(repo)
    except RegistryError as exc:
        errors.append(f"repository {repo}: {exc}")
        return None


def _changed_tags(listed: dict[str, ListedImage], prev: RepoState, settings: BackfillSettings, full: bool) -> set[str]:
    """Tags whose answer may differ from what `prev` says."""
    if full:
        return set(listed)
    new = {t for t, item in listed.items()
           if t not in prev.tags or (item.digest and item.digest != prev.tags[t].listed)}
    out = set(new)
    suffix = settings.soci_tag_suffix
    by_hex: dict[str, list[str]] = {}
    for t, rec in prev.tags.items():
        by_hex.setdefault(rec.digest.split(":", 1)[-1], []).append(t)
    for t in new:
        if t.endswith(suffix) and t[: -len(suffix)] in listed:
            out.add(t[: -len(suffix)])
        if is_referrers_tag(t):
            out.update(by_hex.get(t.split("-", 1)[1], []))
    return out


def _update_repository(client: RegistryClient, settings: BackfillSettings, repo: str, listed_images: list[ListedImage],
                       prev: RepoState, full: bool, ztoc_catalog: ZtocCatalog | None, pool: ThreadPoolExecutor,
                       errors: list[str], stats: TickStats) -> RepoState | None:
    """The repository's new state (None when nothing changed)."""
    listed = {i.tag: i for i in listed_images}
    changed = _changed_tags(listed, prev, settings, full)
    if not changed and set(listed) == set(prev.tags):
        return None
    stats.tags_new_or_changed += len(changed)
    tags = set(listed)

    def check(tag: str) -> tuple[str, TagRecord | None]:
        item = listed[tag]
        listed_digest = item.digest or ""
        soci_output = is_soci_output(tag, item.artifact_media_type)
        try:
            if soci_output or not settings.filters.matches(repo, tag):
                if (
                    soci_output
                    and ztoc_catalog is not None
                    and (tag.endswith(settings.soci_tag_suffix) or is_referrers_tag(tag))
                ):
                    stats.count(
                        "soci_indexes_folded", _fold(client, ztoc_catalog, repo, tag, client.get_manifest(repo, tag))
                    )
                return tag, TagRecord(listed_digest, listed_digest, OTHER)
            top = client.get_manifest(repo, tag)
            stats.count("manifests_checked")
            platforms = _platform_manifests(client, repo, top)
            if platforms is None:
                return tag, TagRecord(top.digest, listed_digest, OTHER, "not a container image")
            if platforms.soci_enabled and ztoc_catalog is not None:
                stats.count("soci_indexes_folded", _fold(client, ztoc_catalog, repo, tag, top))
            # v1 indexes as referrers: no tag shows them
            if ztoc_catalog is not None and client.supports_referrers(repo):
                stats.count("soci_indexes_folded", _fold_referrers(client, ztoc_catalog, repo, platforms.manifests))
            done = existing_soci_index(client, repo, tag, top, settings, known_tags=tags, platforms=platforms)
        except RegistryNotFoundError:
            return tag, None  # deleted while scanning
        except (RegistryError, gojson.GoJSONError) as exc:
            errors.append(f"image {settings.registry}/{repo}:{tag}: {exc}")
            return tag, prev.tags.get(tag)  # keep the old answer; retried when the tag changes or on a rescan
        return tag, TagRecord(top.digest, listed_digest, PENDING if done is None else DONE, done or "")

    out = RepoState({t: r for t, r in prev.tags.items() if t in listed and t not in changed}, prev.read_at)
    for tag, rec in pool.map(check, sorted(changed & tags)):
        if rec is not None:
            out.tags[tag] = rec
    return out


def _fold(client: RegistryClient, ztoc_catalog: ZtocCatalog, repo: str, tag: str, top: RegistryManifest) -> int:
    """Add the zTOCs of the SOCI index(es) `tag` points at (or holds) to the catalog; returns how many indexes."""
    digests: list[str] = []
    try:
        if top.media_type in mt.IMAGE_INDEX_TYPES:
            for entry in parse_index(top.data).manifests or []:
                if entry.artifact_type in mt.SOCI_ARTIFACT_TYPES or is_referrers_tag(tag):
                    digests.append(entry.digest)
        elif top.media_type in mt.IMAGE_MANIFEST_TYPES:
            manifest = parse_manifest(top.data)
            if soci_version_of(manifest) is not None:
                ztoc_catalog.add_soci_index(repo, manifest.layers or [])
                return 1
        folded = 0
        for digest in digests:
            manifest = parse_manifest(client.get_manifest(repo, digest).data)
            if soci_version_of(manifest) is not None:
                ztoc_catalog.add_soci_index(repo, manifest.layers or [])
                folded += 1
        return folded
    except (RegistryNotFoundError, gojson.GoJSONError):
        return 0


def _fold_referrers(client: RegistryClient, ztoc_catalog: ZtocCatalog, repo: str, manifests: Iterable[str]) -> int:
    """Add the zTOCs of v1 SOCI indexes that refer to `manifests` (registries with the referrers API)."""
    folded = 0
    for digest in manifests:
        for ref in client.referrers(repo, digest, mt.SOCI_INDEX_V1):
            if not isinstance(ref.get("digest"), str):
                continue
            try:
                manifest = parse_manifest(client.get_manifest(repo, ref["digest"]).data)
            except (RegistryNotFoundError, gojson.GoJSONError):
                continue
            if soci_version_of(manifest) is not None:
                ztoc_catalog.add_soci_index(repo, manifest.layers or [])
                folded += 1
    return folded
