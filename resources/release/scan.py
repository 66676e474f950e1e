"""Scan a registry for images that match the backfill filters and lack a SOCI index of the configured format."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from resources.aws.push_events import is_soci_output
from resources.registry import RegistryClient, RegistryError, RegistryNotFoundError
from resources.release.backfill import BackfillSettings, _platform_manifests, existing_soci_index
from resources.release.catalog import ImageCatalog, ListedImage, image_key
from resources.soci import gojson

# --------------------------------------------------------------------------------------------- scanning


@dataclass(frozen=True)
class ScannedImage:
    """An image found by a scan, and whether it still needs a SOCI index."""

    registry: str
    repository: str
    tag: str
    digest: str
    pending: bool
    reason: str = ""

    @property
    def key(self) -> str:
        return image_key(self.repository, self.tag, self.digest)

    @property
    def ref(self) -> str:
        return f"{self.registry}/{self.repository}:{self.tag}@{self.digest}"


@dataclass
class ScanResult:
    """One scan pass: the images seen, where to resume, and per-repository or per-image errors."""

    images: list[ScannedImage] = field(default_factory=list)
    resume_after: str | None = None
    """Last repository fully scanned when the deadline cut the pass short; None when the pass completed."""
    repositories: int = 0
    errors: list[str] = field(default_factory=list)
    complete: bool = False
    """True when the pass reached the last repository."""

    @property
    def pending(self) -> list[ScannedImage]:
        return [i for i in self.images if i.pending]

    @property
    def indexed_repositories(self) -> list[str]:
        """Repositories where the scan found SOCI-indexed images (sources of reusable zTOCs)."""
        return sorted({i.repository for i in self.images if not i.pending})


def scan_registry(client: RegistryClient, catalog: ImageCatalog, settings: BackfillSettings, *,
                  deadline: float | None = None, resume_after: str | None = None, max_parallel: int = 8,
                  clock: Callable[[], float] = time.monotonic) -> ScanResult:
    """Scan repositories (in name order, after `resume_after`) for images matching the filters.

    Stops between repositories when `deadline` (a `clock()` value) passes, so a sensor tick stays bounded.
    """
    result = ScanResult()
    try:
        repos = [r for r in catalog.repositories() if settings.filters.may_match_repository(r)]
    except RegistryError as exc:
        result.errors.append(f"cannot list repositories of {settings.registry}: {exc}")
        return result
    if resume_after is not None:
        repos = [r for r in repos if r > resume_after]
    for repo in repos:
        if deadline is not None and clock() >= deadline:
            result.resume_after = _last_scanned(result, resume_after)
            return result
        try:
            result.images += _scan_repository(client, catalog, settings, repo, max_parallel, result.errors)
        except RegistryError as exc:
            result.errors.append(f"repository {repo}: {exc}")
        result.repositories += 1
        result.resume_after = repo
    result.resume_after = None
    result.complete = True
    return result


def _last_scanned(result: ScanResult, resume_after: str | None) -> str | None:
    return result.resume_after if result.resume_after is not None else resume_after


def _scan_repository(client: RegistryClient, catalog: ImageCatalog, settings: BackfillSettings, repo: str,
                     max_parallel: int, errors: list[str]) -> list[ScannedImage]:
    listed = catalog.images(repo)
    tags = {i.tag for i in listed}
    candidates = [i for i in listed if not is_soci_output(i.tag, i.artifact_media_type)
                  and settings.filters.matches(repo, i.tag)]

    def check(item: ListedImage) -> ScannedImage | None:
        try:
            top = client.get_manifest(repo, item.tag)
            platforms = _platform_manifests(client, repo, top)
            if platforms is None:
                return None
            done = existing_soci_index(client, repo, item.tag, top, settings, known_tags=tags, platforms=platforms)
        except RegistryNotFoundError:
            return None  # deleted while scanning
        except (RegistryError, gojson.GoJSONError) as exc:
            errors.append(f"image {settings.registry}/{repo}:{item.tag}: {exc}")
            return None
        return ScannedImage(settings.registry, repo, item.tag, top.digest, pending=done is None, reason=done or "")

    with ThreadPoolExecutor(max_workers=max(1, min(max_parallel, len(candidates) or 1))) as pool:
        return [s for s in pool.map(check, sorted(candidates, key=lambda i: i.tag)) if s is not None]
