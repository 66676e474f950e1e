"""SOCI index backfill: find images in a registry that lack a SOCI index of the configured format, and index them.

Plain logic, no Dagster. One image = one partition key (`image_key`), reversible to the repository and tag,
with the first 12 hex digits of the manifest digest so that a tag moved to new content is a new key.
Outcomes are `StatusRecord`s; only FAILED is retried, so images that cannot be indexed (zstd only, all
layers small) are recorded once with the reason and left alone.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal, Protocol

from resources.defaults import SOCI_MIN_LAYER_SIZE, SOCI_SPAN_SIZE, SOCI_TAG_SUFFIX
from resources.aws.ecr import EcrRegistry, tag_is_immutable
from resources.aws.push_events import ImageFilter, is_soci_output
from resources.oci.refs import ImageRef
from resources.registry import Manifest as RegistryManifest
from resources.registry import RegistryClient, RegistryError, RegistryNotFoundError
from resources.soci import gojson
from resources.oci import media_types as mt
from resources.oci import platforms as plat
from resources.soci.convert import EmptySociIndexError, SkippedLayer, SociConvertError, SociConverter
from resources.startup.index_plan import converting_with_profile  # wire16
from resources.startup.store import find_image_profile  # wire16
from resources.oci.manifest import Descriptor, parse_index, parse_manifest

LogFn = Callable[[str], None]
KEY_DIGEST_CHARS = 12
_KEY_RE = re.compile(r"^(?P<repo>[a-z0-9._~-]+)=(?P<tag>[A-Za-z0-9_.%-]+)\+(?P<digest>[0-9a-f]{12})$")


# --------------------------------------------------------------------------------------------- partition keys


@dataclass(frozen=True)
class ImageKey:
    """What a partition key names: repository, tag, and the start of the manifest digest's hex."""

    repository: str
    tag: str
    digest_prefix: str

    def matches(self, digest: str) -> bool:
        """True when `digest` is the content this key was made for."""
        return digest.split(":", 1)[-1].startswith(self.digest_prefix)


def image_key(repository: str, tag: str, digest: str) -> str:
    """Partition key for `repository:tag@digest`: `team~app=v1.2.3+<12 hex>`.

    Free of `, / | : @` and `...`; injective for valid repositories and tags ('~', '=', '+', '%' appear in
    neither), so `parse_image_key` gives the repository and tag back.
    """
    tag_part = tag.replace(".", "%2E") if "..." in tag else tag
    hex_part = digest.split(":", 1)[-1][:KEY_DIGEST_CHARS]
    if len(hex_part) != KEY_DIGEST_CHARS:
        raise ValueError(f"image {repository}:{tag}: digest {digest!r} is too short for a partition key")
    return f"{repository.replace('/', '~')}={tag_part}+{hex_part}"


def parse_image_key(key: str) -> ImageKey:
    """Inverse of `image_key`; a clear error names a key that was not made by it."""
    m = _KEY_RE.match(key)
    if not m:
        raise ValueError(f"partition key {key!r} is not an image key (expected '<repo with ~ for />=<tag>+<12 hex>')")
    return ImageKey(m["repo"].replace("~", "/"), m["tag"].replace("%2E", "."), m["digest"])


# --------------------------------------------------------------------------------------------- listing


@dataclass(frozen=True)
class ListedImage:
    """A tag in a repository, with what the listing already knows about it."""

    repository: str
    tag: str
    digest: str | None = None
    artifact_media_type: str | None = None


class ImageCatalog(Protocol):
    """Lists repositories and their tagged images."""

    def repositories(self) -> list[str]: ...

    def images(self, repository: str) -> list[ListedImage]: ...

    def tag_immutable(self, repository: str, tag: str) -> bool: ...


class OciCatalog:
    """Any OCI/Docker registry: `/v2/_catalog` and `/tags/list` (digests are resolved later)."""

    def __init__(self, client: RegistryClient, repositories: Sequence[str] | None = None) -> None:
        self.client = client
        self._repositories = list(repositories) if repositories is not None else None

    def repositories(self) -> list[str]:
        return sorted(self._repositories if self._repositories is not None else self.client.catalog())

    def images(self, repository: str) -> list[ListedImage]:
        try:
            return [ListedImage(repository, t) for t in self.client.list_tags(repository)]
        except RegistryNotFoundError:
            return []

    def tag_immutable(self, repository: str, tag: str) -> bool:
        return False


class EcrCatalog:
    """Amazon ECR through `resources.aws.ecr.EcrRegistry` (boto3 paging); knows which tags are immutable."""

    def __init__(self, ecr: EcrRegistry) -> None:
        self.ecr = ecr

    def repositories(self) -> list[str]:
        kwargs = {"registryId": self.ecr.registry_id} if self.ecr.registry_id else {}
        pages = self.ecr.client.get_paginator("describe_repositories").paginate(**kwargs)
        return sorted(r["repositoryName"] for page in pages for r in page.get("repositories", []))

    def images(self, repository: str) -> list[ListedImage]:
        return [ListedImage(repository, tag, d.get("imageDigest"), d.get("artifactMediaType"))
                for d in self.ecr.describe_images(repository, tag_status="TAGGED") for tag in d.get("imageTags") or []]

    def tag_immutable(self, repository: str, tag: str) -> bool:
        repo = self.ecr.describe_repository(repository) or {}
        exclusions = [f.get("filter", "") for f in repo.get("imageTagMutabilityExclusionFilters") or []]
        return tag_is_immutable(tag, repo.get("imageTagMutability", "MUTABLE"), exclusions)


# --------------------------------------------------------------------------------------------- status


class ImageStatus(str, Enum):
    """Outcome for one image. Only FAILED is retried."""

    INDEXED = "indexed"
    ALREADY_INDEXED = "already_indexed"
    NOT_INDEXABLE = "not_indexable"
    SUPERSEDED = "superseded"
    FAILED = "failed"

    @property
    def retryable(self) -> bool:
        return self is ImageStatus.FAILED


@dataclass(frozen=True)
class StatusRecord:
    """What happened to one image; stored as the partition's materialization metadata."""

    key: str
    image: str
    status: ImageStatus
    reason: str = ""
    soci_image: str = ""
    soci_digest: str = ""
    layers_built: int = 0
    layers_reused: int = 0
    layers_shared: int = 0
    platforms: int = 0
    duration_s: float = 0.0

    def to_metadata(self) -> dict[str, str | int | float]:
        """Flat metadata (strings and numbers) for the UI."""
        return {
            "status": self.status.value, "image": self.image, "reason": self.reason, "soci_image": self.soci_image,
            "soci_digest": self.soci_digest, "layers_built": self.layers_built, "layers_reused": self.layers_reused,
            "layers_shared_from_other_repositories": self.layers_shared, "platforms": self.platforms,
            "duration_s": round(self.duration_s, 3),
        }

    @classmethod
    def from_metadata(cls, key: str, md: Mapping[str, Any]) -> StatusRecord:
        """Rebuild a record from materialization metadata (values may be Dagster MetadataValue objects)."""
        def get(name: str, default: Any) -> Any:
            v = md.get(name, default)
            return getattr(v, "value", v)
        return cls(key=key, image=str(get("image", "")), status=ImageStatus(get("status", "failed")),
                   reason=str(get("reason", "")), soci_image=str(get("soci_image", "")),
                   soci_digest=str(get("soci_digest", "")), layers_built=int(get("layers_built", 0)),
                   layers_reused=int(get("layers_reused", 0)),
                   layers_shared=int(get("layers_shared_from_other_repositories", 0)),
                   platforms=int(get("platforms", 0)), duration_s=float(get("duration_s", 0.0)))


# --------------------------------------------------------------------------------------------- settings & checks


@dataclass(frozen=True)
class BackfillSettings:
    """What to index and how."""

    registry: str
    filters: ImageFilter = ImageFilter()
    format: Literal["v2", "v1"] = "v2"
    span_size: int = SOCI_SPAN_SIZE
    min_layer_size: int = SOCI_MIN_LAYER_SIZE
    soci_tag_suffix: str = SOCI_TAG_SUFFIX
    node_compat: str = "v0.12"  # wire16: v0.13+ writes prefetch artifacts from a stored startup profile
    prefetch: Literal["files", "ranges"] = "files"  # wire16

    def soci_tag(self, tag: str) -> str:
        """Tag of the SOCI-enabled image made from `tag` (v2), like the AWS SOCI Index Builder's."""
        return f"{tag}{self.soci_tag_suffix}"

    def converter(self, client: RegistryClient, log: LogFn | None = None) -> SociConverter:
        """The one converter a backfill run (or worker) shares, so every layer is decompressed at most once."""
        return SociConverter(client, span_size=self.span_size, min_layer_size=self.min_layer_size, format=self.format,
                             all_platforms=True, log_fn=log, node_compat=self.node_compat,  # wire16
                             prefetch_granularity=self.prefetch)


@dataclass(frozen=True)
class _Platforms:
    """The runnable image manifests of an image: digest -> (config digest, layers)."""

    manifests: dict[str, tuple[str, list[Descriptor]]]
    soci_enabled: bool = False


def _platform_manifests(client: RegistryClient, repository: str, top: RegistryManifest) -> _Platforms | None:
    """Runnable manifests of `top`, or None when `top` is not a container image (an artifact, a SOCI index)."""
    try:
        if top.media_type in mt.IMAGE_MANIFEST_TYPES:
            m = parse_manifest(top.data)
            if m.config.media_type not in mt.IMAGE_CONFIG_TYPES:
                return None
            return _Platforms({top.digest: (m.config.digest, list(m.layers or []))})
        if top.media_type not in mt.IMAGE_INDEX_TYPES:
            return None
        index = parse_index(top.data)
    except gojson.GoJSONError:
        return None
    out: dict[str, tuple[str, list[Descriptor]]] = {}
    soci_enabled = False
    for entry in index.manifests or []:
        if entry.artifact_type == mt.SOCI_INDEX_V2:
            soci_enabled = True
            continue
        if entry.media_type not in mt.IMAGE_MANIFEST_TYPES or plat.is_unknown(entry.platform) or entry.artifact_type:
            continue
        child = parse_manifest(client.get_manifest(repository, entry.digest).data)
        if child.config.media_type in mt.IMAGE_CONFIG_TYPES:
            out[entry.digest] = (child.config.digest, list(child.layers or []))
    return _Platforms(out, soci_enabled) if out else None


def existing_soci_index(client: RegistryClient, repository: str, tag: str, top: RegistryManifest,
                        settings: BackfillSettings, *, known_tags: set[str] | None = None,
                        platforms: _Platforms | None = None) -> str | None:
    """Where this image's SOCI index of the configured format already is, or None when it needs one.

    v2: the image is itself SOCI-enabled, or `<tag>-soci` is a SOCI-enabled index holding every platform
    of the image (matched by config digest: the v2 rewrite keeps config and layers). v1: every platform
    manifest has a v1 SOCI index among its referrers.
    """
    platforms = platforms or _platform_manifests(client, repository, top)
    if platforms is None:
        return None
    if settings.format == "v1":
        for digest in platforms.manifests:
            if not client.referrers(repository, digest, mt.SOCI_INDEX_V1):
                return None
        return f"every platform of {repository}@{top.digest} has a v1 SOCI index referrer"
    if platforms.soci_enabled:
        return f"{repository}:{tag} is itself a SOCI-enabled image index"
    soci_tag = settings.soci_tag(tag)
    if known_tags is not None and soci_tag not in known_tags:
        return None
    try:
        soci_top = client.get_manifest(repository, soci_tag)
    except RegistryNotFoundError:
        return None
    soci_platforms = _platform_manifests(client, repository, soci_top)
    if soci_platforms is None or not soci_platforms.soci_enabled:
        return None
    wanted = {cfg for cfg, _ in platforms.manifests.values()}
    have = {cfg for cfg, _ in soci_platforms.manifests.values()}
    if wanted <= have:
        return f"{repository}:{soci_tag} ({soci_top.digest}) is its SOCI-enabled image"
    return None


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


# --------------------------------------------------------------------------------------------- indexing


class SharedZtocs:
    """Reuse of zTOCs that SOCI indexes in *other* repositories already hold.

    The converter reuses zTOCs of the destination repository and of any repository it confirmed a zTOC in
    during this run; it does not look through repositories it has not touched. Before an image is indexed,
    `seed` looks for each of its layers in `indexed_repositories` (where the scan saw SOCI indexes), so the
    converter then mounts the zTOC instead of decompressing the layer.
    """

    def __init__(self, indexed_repositories: Iterable[str] = ()) -> None:
        self._indexed_repositories = list(dict.fromkeys(indexed_repositories))

    def seed(self, converter: SociConverter, repository: str, layers: Iterable[Descriptor]) -> int:
        """Make zTOCs for `layers` found in other indexed repositories available in `repository`; returns how many."""
        reuse, span, brought = converter.reuse, converter.span_size, 0
        for layer in {d.digest: d for d in layers}.values():
            if reuse.lookup(repository, layer.digest, layer.size, span) is not None:
                continue  # in the repository already, or confirmed elsewhere in this run and brought over
            for other in self._indexed_repositories:
                if other != repository and reuse.lookup(other, layer.digest, layer.size, span) is not None:
                    brought += reuse.lookup(repository, layer.digest, layer.size, span) is not None
                    break
        return brought


VerifyFn = Callable[[ImageRef], tuple[bool, str]]
"""Checks a SOCI-enabled image end to end (lazy reads against the layers): (passed, summary)."""


def check_soci_wiring(client: RegistryClient, ref: ImageRef, fmt: str) -> tuple[bool, str]:
    """Cheap structural check of a SOCI-enabled image whose zTOCs were all verified already: every platform's SOCI
    index is reachable the way a node finds it, and every zTOC blob it lists exists with its size."""
    assert ref.digest is not None
    top = client.get_manifest(ref.repository, ref.digest)
    platforms = _platform_manifests(client, ref.repository, top)
    if platforms is None:
        return False, f"{ref} is not a container image"
    if fmt == "v1":
        soci_digests = [m["digest"] for d in platforms.manifests
                        for m in client.referrers(ref.repository, d, mt.SOCI_INDEX_V1)[:1]]
    else:
        index = parse_index(top.data) if top.media_type in mt.IMAGE_INDEX_TYPES else None
        entries = {e.digest: e for e in (index.manifests or []) if e.artifact_type == mt.SOCI_INDEX_V2} if index else {}
        soci_digests = []
        for digest in platforms.manifests:
            annotations = parse_manifest(client.get_manifest(ref.repository, digest).data).annotations or {}
            idx = annotations.get(mt.ANNOTATION_INDEX_DIGEST)
            if idx is None:
                continue
            entry = entries.get(idx)
            if entry is None or (entry.annotations or {}).get(mt.ANNOTATION_MANIFEST_DIGEST) != digest:
                return False, f"{ref}: manifest {digest} names SOCI index {idx}, which the image index does not bind to it"
            soci_digests.append(idx)
    if not soci_digests:
        return False, f"{ref}: no platform has a SOCI index"
    for idx in soci_digests:
        for z in parse_manifest(client.get_manifest(ref.repository, idx).data).layers or []:
            if client.blob_size(ref.repository, z.digest) != z.size:
                return False, f"{ref}: zTOC {z.digest} of SOCI index {idx} is missing or has the wrong size"
    return True, f"{len(soci_digests)} SOCI index(es) wired, zTOCs present"


def not_indexable_reason(skipped: Sequence[SkippedLayer], min_layer_size: int) -> str:
    """Human summary of why no layer got a zTOC, e.g. 'no layer can be indexed: 2 zstd, 1 below 10485760 bytes'."""
    zstd = sum(1 for s in skipped if "zstd" in s.reason)
    small = sum(1 for s in skipped if "below the min layer size" in s.reason)
    other = len(skipped) - zstd - small
    parts = [f"{zstd} zstd-compressed"] if zstd else []
    parts += [f"{small} below the min layer size {min_layer_size} bytes"] if small else []
    parts += [f"{other} other ({skipped[-1].reason})"] if other else []
    return "no layer can be indexed: " + (", ".join(parts) if parts else "the image has no layers")


def index_image(client: RegistryClient, converter: SociConverter, key: str, settings: BackfillSettings, *,
                catalog: ImageCatalog | None = None, expected_digest: str | None = None,
                shared: SharedZtocs | None = None, verify: VerifyFn | None = None,
                verified_ztocs: set[str] | None = None, log: LogFn | None = None) -> StatusRecord:
    """Index the image a partition key names, unless it is indexed, gone, or cannot be indexed. Never raises for
    an image problem: the outcome is the returned record (FAILED ones are retried later).

    With `verify`, the result is verified end to end, unless every zTOC it uses is in `verified_ztocs` (verified
    earlier in this run, against the same layer): then only its wiring is checked (`check_soci_wiring`), so a
    shared base layer is not streamed again for every image. Verified zTOC digests are added to the set.
    """
    started = time.monotonic()
    k = parse_image_key(key)
    name = f"{settings.registry}/{k.repository}:{k.tag}"

    def record(status: ImageStatus, reason: str = "", image: str = name, **kw: Any) -> StatusRecord:
        return StatusRecord(key=key, image=image, status=status, reason=reason, duration_s=time.monotonic() - started, **kw)

    try:
        try:
            top = client.get_manifest(k.repository, k.tag)
        except RegistryNotFoundError:
            return record(ImageStatus.SUPERSEDED, f"{name} no longer exists")
        image = f"{name}@{top.digest}"
        if (expected_digest and top.digest != expected_digest) or not k.matches(top.digest):
            return record(ImageStatus.SUPERSEDED, f"{name} now points at {top.digest}; that image gets its own key", image)
        platforms = _platform_manifests(client, k.repository, top)
        if platforms is None:
            return record(ImageStatus.NOT_INDEXABLE, f"{image} ({top.media_type}) is not a container image", image)
        done = existing_soci_index(client, k.repository, k.tag, top, settings, platforms=platforms)
        if done is not None:
            return record(ImageStatus.ALREADY_INDEXED, done, image, platforms=len(platforms.manifests))
        dst_tag = settings.soci_tag(k.tag) if settings.format == "v2" else k.tag
        if catalog is not None and settings.format == "v2" and catalog.tag_immutable(k.repository, dst_tag):
            if client.head_manifest(k.repository, dst_tag) is not None:
                return record(ImageStatus.NOT_INDEXABLE, f"{k.repository}:{dst_tag} already exists and the repository's "
                              "tags are immutable; delete it to re-index", image)
        brought = 0
        if shared is not None:
            brought = shared.seed(converter, k.repository, (layer for _, ls in platforms.manifests.values() for layer in ls))
        src = ImageRef(settings.registry, k.repository, digest=top.digest)
        dst = ImageRef(settings.registry, k.repository, tag=dst_tag)
        previous = _current(client, k.repository, dst_tag) if settings.format == "v2" else None
        stored = find_image_profile(client, k.repository, top.digest)  # wire16: the profile stored next to the image
        try:
            with converting_with_profile(converter, stored.profile if stored else None):  # wire16
                result = converter.convert(src, dst)
        except EmptySociIndexError as exc:
            return record(ImageStatus.NOT_INDEXABLE, not_indexable_reason(exc.skipped, settings.min_layer_size), image,
                          platforms=len(platforms.manifests))
        soci_image = f"{settings.registry}/{k.repository}:{dst_tag}@{result.image_digest}"
        stats = {"soci_image": soci_image, "soci_digest": result.image_digest, "layers_built": result.layers_built,
                 "layers_reused": result.layers_reused, "layers_shared": brought, "platforms": len(result.platforms)}
        if verify is not None:
            out_ref = ImageRef(settings.registry, k.repository, tag=dst_tag, digest=result.image_digest)
            used = {row.ztoc_digest for p in result.platforms for row in p.ztocs}
            known = verified_ztocs if verified_ztocs is not None else set()
            if used <= known:
                passed, summary = check_soci_wiring(client, ImageRef(settings.registry, k.repository, digest=result.image_digest),
                                                    settings.format)
            else:
                passed, summary = verify(out_ref)
                if passed:
                    known |= used
            if not passed:
                undone = _untag_unverified(client, k.repository, dst_tag, result.image_digest, previous) \
                    if settings.format == "v2" else "the v1 SOCI index stays attached as a referrer"
                return record(ImageStatus.FAILED, f"{soci_image} did not verify: {summary}; {undone}", image, **stats)
        if log:
            log(f"{image}: indexed -> {soci_image} ({result.layers_built} layer(s) built, {result.layers_reused} reused)")
        return record(ImageStatus.INDEXED, "", image, **stats)
    except (SociConvertError, RegistryError, gojson.GoJSONError, ValueError) as exc:
        return record(ImageStatus.FAILED, f"{type(exc).__name__}: {exc}")


def _current(client: RegistryClient, repository: str, tag: str) -> RegistryManifest | None:
    try:
        return client.get_manifest(repository, tag)
    except RegistryNotFoundError:
        return None


def _untag_unverified(client: RegistryClient, repository: str, tag: str, digest: str,
                      previous: RegistryManifest | None) -> str:
    """The converter moved `tag` before verification; point it back (or delete what it points at). Says what it did."""
    try:
        if previous is not None and previous.digest != digest:
            client.put_manifest(repository, tag, previous.data, previous.media_type)
            return f"{repository}:{tag} was put back to {previous.digest}"
        client.delete_manifest(repository, digest)
        return f"the unverified {repository}@{digest} was deleted, so {tag} no longer resolves"
    except RegistryError as exc:
        return f"could not take {repository}:{tag} back ({exc}): it still points at the unverified image"


@dataclass
class BackfillReport:
    """A whole backfill pass."""

    scan: ScanResult
    records: list[StatusRecord]

    @property
    def layers_built(self) -> int:
        return sum(r.layers_built for r in self.records)

    def by_status(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.records:
            out[r.status.value] = out.get(r.status.value, 0) + 1
        return out


def iter_backfill(client: RegistryClient, catalog: ImageCatalog, settings: BackfillSettings, images: Sequence[ScannedImage], *,
                  converter: SociConverter | None = None, verify: VerifyFn | None = None,
                  log: LogFn | None = None, indexed_repositories: Iterable[str] = ()) -> Iterator[StatusRecord]:
    """Index `images` one after the other with ONE converter (shared zTOC cache), yielding each outcome.

    `indexed_repositories`: repositories known to hold SOCI indexes (see `ScanResult.indexed_repositories`),
    whose zTOCs other repositories may reuse.
    """
    conv = converter or settings.converter(client, log)
    shared = SharedZtocs(indexed_repositories)
    verified: set[str] = set()
    for img in images:
        yield index_image(client, conv, img.key, settings, catalog=catalog, expected_digest=img.digest, shared=shared,
                          verify=verify, verified_ztocs=verified, log=log)


def run_backfill(client: RegistryClient, catalog: ImageCatalog, settings: BackfillSettings, *,
                 skip_keys: set[str] | frozenset[str] = frozenset(), verify: VerifyFn | None = None,
                 log: LogFn | None = None, max_images: int | None = None) -> BackfillReport:
    """Scan the whole registry and index every pending image whose key is not in `skip_keys` (already done)."""
    scan = scan_registry(client, catalog, settings)
    todo = [i for i in scan.pending if i.key not in skip_keys][:max_images]
    records = iter_backfill(client, catalog, settings, todo, verify=verify, log=log,
                            indexed_repositories=scan.indexed_repositories)
    return BackfillReport(scan, list(records))
