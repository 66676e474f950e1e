"""SOCI index backfill: find images in a registry that lack a SOCI index of the configured format, and index them.

Plain logic, no Dagster. One image = one partition key (`image_key`), reversible to the repository and tag,
with the first 12 hex digits of the manifest digest so that a tag moved to new content is a new key.
Outcomes are `StatusRecord`s; only FAILED is retried, so images that cannot be indexed (zstd only, all
layers small) are recorded once with the reason and left alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal

from resources.aws.push_events import ImageFilter
from resources.defaults import SOCI_MIN_LAYER_SIZE, SOCI_SPAN_SIZE, SOCI_TAG_SUFFIX
from resources.log import LogFn
from resources.oci import media_types as mt
from resources.oci.manifest import Descriptor
from resources.oci.manifest import RawManifest as RegistryManifest
from resources.oci.refs import ImageRef
from resources.registry import RegistryClient, RegistryError, RegistryNotFoundError
from resources.release.catalog import ImageCatalog, parse_image_key
from resources.soci import gojson
from resources.soci.convert import EmptySociIndexError, SkippedLayer, SociConverter, SociConvertError
from resources.soci.index import SociVersion
from resources.soci.node import (
    ImageView,
    NodeConfig,
    NodeReadError,
    NotAnImage,
    fetch_soci_index,
    find_soci_index,
    image_blobs,
    index_blobs,
    missing_blob,
    read_image,
    v2_binding_problem,
)
from resources.soci.ztoc_catalog import ZtocCatalog
from resources.startup.index_plan import converting_with_profile
from resources.startup.store import find_image_profile

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
            "status": self.status.value,
            "image": self.image,
            "reason": self.reason,
            "soci_image": self.soci_image,
            "soci_digest": self.soci_digest,
            "layers_built": self.layers_built,
            "layers_reused": self.layers_reused,
            "layers_shared_from_other_repositories": self.layers_shared,
            "platforms": self.platforms,
            "duration_s": round(self.duration_s, 3),
        }

    @classmethod
    def from_metadata(cls, key: str, md: Mapping[str, Any]) -> StatusRecord:
        """Rebuild a record from materialization metadata (values may be Dagster MetadataValue objects)."""

        def get(name: str, default: Any) -> Any:
            v = md.get(name, default)
            return getattr(v, "value", v)

        return cls(
            key=key,
            image=str(get("image", "")),
            status=ImageStatus(get("status", "failed")),
            reason=str(get("reason", "")),
            soci_image=str(get("soci_image", "")),
            soci_digest=str(get("soci_digest", "")),
            layers_built=int(get("layers_built", 0)),
            layers_reused=int(get("layers_reused", 0)),
            layers_shared=int(get("layers_shared_from_other_repositories", 0)),
            platforms=int(get("platforms", 0)),
            duration_s=float(get("duration_s", 0.0)),
        )


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
    node_compat: str = "v0.12"
    prefetch: Literal["files", "ranges"] = "files"

    def soci_tag(self, tag: str) -> str:
        """Tag of the SOCI-enabled image made from `tag` (v2), like the AWS SOCI Index Builder's."""
        return f"{tag}{self.soci_tag_suffix}"

    def converter(self, client: RegistryClient, log: LogFn | None = None) -> SociConverter:
        """The one converter a backfill run (or worker) shares, so every layer is decompressed at most once."""
        return SociConverter(
            client,
            span_size=self.span_size,
            min_layer_size=self.min_layer_size,
            format=self.format,
            all_platforms=True,
            log_fn=log,
            node_compat=self.node_compat,
            prefetch_granularity=self.prefetch,
        )


@dataclass(frozen=True)
class _Platforms:
    """The runnable image manifests of an image: digest -> (config digest, layers)."""

    manifests: dict[str, tuple[str, list[Descriptor]]]
    soci_enabled: bool = False
    view: ImageView | None = None


def _platform_manifests(client: RegistryClient, repository: str, top: RegistryManifest) -> _Platforms | None:
    """Runnable manifests of `top` (read by the node module), or None when `top` is not a container image."""
    try:
        view = read_image(
            client, ImageRef(client.registry, repository, digest=top.digest), top=top, config_platform_of_manifest=False
        )
    except (NotAnImage, gojson.GoJSONError):
        return None
    soci_enabled = view.index is not None and any(
        e.artifact_type == mt.SOCI_INDEX_V2 for e in view.index.manifests or []
    )
    manifests = {img.raw.digest: (img.manifest.config.digest, list(img.manifest.layers or [])) for img in view.images}
    return _Platforms(manifests, soci_enabled, view)


def existing_soci_index(
    client: RegistryClient,
    repository: str,
    tag: str,
    top: RegistryManifest,
    settings: BackfillSettings,
    *,
    known_tags: set[str] | None = None,
    platforms: _Platforms | None = None,
) -> str | None:
    """Where this image's SOCI index of the configured format already is, or None when it needs one.

    v2: the image is itself SOCI-enabled, or `<tag>-soci` is a SOCI-enabled index holding every platform
    of the image (matched by config digest: the v2 rewrite keeps config and layers). v1: every platform
    manifest has a v1 SOCI index among its referrers.
    """
    platforms = platforms or _platform_manifests(client, repository, top)
    if platforms is None:
        return None
    if settings.format == "v1":
        assert platforms.view is not None
        v1_only = NodeConfig(soci_v1=True, soci_v2=False)
        for image in platforms.view.images:
            if find_soci_index(client, repository, image, v1_only).found is None:
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
    """Cheap check, by the node module's rules, of an image whose zTOCs were verified already: each SOCI index is
    found as a node finds it, survives its re-encode, and every blob of manifest and index exists with its size."""
    assert ref.digest is not None
    node = NodeConfig(soci_v1=fmt == "v1", soci_v2=fmt != "v1")
    try:
        view = read_image(client, ref, config_platform_of_manifest=False)
    except (NotAnImage, gojson.GoJSONError):
        return False, f"{ref} is not a container image"
    wired = 0
    for image in view.images:
        found = find_soci_index(client, ref.repository, image, node).found
        if found is None:
            continue
        if found.version is SociVersion.V2 and (problem := v2_binding_problem(view, image, found.digest)):
            return False, f"{ref}: {problem}"
        try:
            soci = fetch_soci_index(client, ref.repository, found, f"SOCI index {found.digest}")
        except NodeReadError as exc:
            return False, f"{ref}: {exc}"
        missing = missing_blob(client, ref.repository, image_blobs(image) + index_blobs(soci))
        if missing is not None:
            return False, f"{ref}: not pullable: {missing}"
        wired += 1
    if not wired:
        return False, f"{ref}: no platform has a SOCI index"
    return True, f"{wired} SOCI index(es) wired, zTOCs present"


def not_indexable_reason(skipped: Sequence[SkippedLayer], min_layer_size: int) -> str:
    """Human summary of why no layer got a zTOC, e.g. 'no layer can be indexed: 2 zstd, 1 below 10485760 bytes'."""
    zstd = sum(1 for s in skipped if "zstd" in s.reason)
    small = sum(1 for s in skipped if "below the min layer size" in s.reason)
    other = len(skipped) - zstd - small
    parts = [f"{zstd} zstd-compressed"] if zstd else []
    parts += [f"{small} below the min layer size {min_layer_size} bytes"] if small else []
    parts += [f"{other} other ({skipped[-1].reason})"] if other else []
    return "no layer can be indexed: " + (", ".join(parts) if parts else "the image has no layers")


def index_image(
    client: RegistryClient,
    converter: SociConverter,
    key: str,
    settings: BackfillSettings,
    *,
    catalog: ImageCatalog | None = None,
    expected_digest: str | None = None,
    shared: SharedZtocs | None = None,
    verify: VerifyFn | None = None,
    verified_ztocs: set[str] | None = None,
    log: LogFn | None = None,
    ztoc_catalog: ZtocCatalog | None = None,
) -> StatusRecord:
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
        return StatusRecord(
            key=key, image=image, status=status, reason=reason, duration_s=time.monotonic() - started, **kw
        )

    try:
        try:
            top = client.get_manifest(k.repository, k.tag)
        except RegistryNotFoundError:
            return record(ImageStatus.SUPERSEDED, f"{name} no longer exists")
        image = f"{name}@{top.digest}"
        if (expected_digest and top.digest != expected_digest) or not k.matches(top.digest):
            return record(
                ImageStatus.SUPERSEDED, f"{name} now points at {top.digest}; that image gets its own key", image
            )
        platforms = _platform_manifests(client, k.repository, top)
        if platforms is None:
            return record(ImageStatus.NOT_INDEXABLE, f"{image} ({top.media_type}) is not a container image", image)
        done = existing_soci_index(client, k.repository, k.tag, top, settings, platforms=platforms)
        if done is not None:
            return record(ImageStatus.ALREADY_INDEXED, done, image, platforms=len(platforms.manifests))
        dst_tag = settings.soci_tag(k.tag) if settings.format == "v2" else k.tag
        if catalog is not None and settings.format == "v2" and catalog.tag_immutable(k.repository, dst_tag):
            if client.head_manifest(k.repository, dst_tag) is not None:
                return record(
                    ImageStatus.NOT_INDEXABLE,
                    f"{k.repository}:{dst_tag} already exists and the repository's "
                    "tags are immutable; delete it to re-index",
                    image,
                )
        brought = 0
        if shared is not None:
            brought = shared.seed(
                converter, k.repository, (layer for _, ls in platforms.manifests.values() for layer in ls)
            )
        src = ImageRef(settings.registry, k.repository, digest=top.digest)
        dst = ImageRef(settings.registry, k.repository, tag=dst_tag)
        previous = _current(client, k.repository, dst_tag) if settings.format == "v2" else None
        if ztoc_catalog is not None:
            converter.reuse.catalog = ztoc_catalog  # registry-wide zTOC map (ztoc_catalog.py)
        stored = find_image_profile(client, k.repository, top.digest)  # the profile stored next to the image
        try:
            with converting_with_profile(converter, stored.profile if stored else None):
                result = converter.convert(src, dst)
        except EmptySociIndexError as exc:
            return record(
                ImageStatus.NOT_INDEXABLE,
                not_indexable_reason(exc.skipped, settings.min_layer_size),
                image,
                platforms=len(platforms.manifests),
            )
        soci_image = f"{settings.registry}/{k.repository}:{dst_tag}@{result.image_digest}"
        stats = {
            "soci_image": soci_image,
            "soci_digest": result.image_digest,
            "layers_built": result.layers_built,
            "layers_reused": result.layers_reused,
            "layers_shared": brought,
            "platforms": len(result.platforms),
        }
        if verify is not None:
            out_ref = ImageRef(settings.registry, k.repository, tag=dst_tag, digest=result.image_digest)
            used = {row.ztoc_digest for p in result.platforms for row in p.ztocs}
            known = verified_ztocs if verified_ztocs is not None else set()
            if used <= known:
                passed, summary = check_soci_wiring(
                    client, ImageRef(settings.registry, k.repository, digest=result.image_digest), settings.format
                )
            else:
                passed, summary = verify(out_ref)
                if passed:
                    known |= used
            if not passed:
                if converter.reuse.catalog is not None:
                    converter.reuse.catalog.drop_unsaved()
                undone = (
                    _untag_unverified(client, k.repository, dst_tag, result.image_digest, previous)
                    if settings.format == "v2"
                    else "the v1 SOCI index stays attached as a referrer"
                )
                return record(ImageStatus.FAILED, f"{soci_image} did not verify: {summary}; {undone}", image, **stats)
        if converter.reuse.catalog is not None:
            converter.reuse.catalog.flush_quietly()
        if log:
            log(
                f"{image}: indexed -> {soci_image} "
                f"({result.layers_built} layer(s) built, {result.layers_reused} reused)"
            )
        return record(ImageStatus.INDEXED, "", image, **stats)
    except (SociConvertError, RegistryError, gojson.GoJSONError, ValueError) as exc:
        return record(ImageStatus.FAILED, f"{type(exc).__name__}: {exc}")


def _current(client: RegistryClient, repository: str, tag: str) -> RegistryManifest | None:
    try:
        return client.get_manifest(repository, tag)
    except RegistryNotFoundError:
        return None


def _untag_unverified(
    client: RegistryClient, repository: str, tag: str, digest: str, previous: RegistryManifest | None
) -> str:
    """The converter moved `tag` before verification; point it back (or delete what it points at). Says what it did."""
    try:
        if previous is not None and previous.digest != digest:
            client.put_manifest(repository, tag, previous.data, previous.media_type)
            return f"{repository}:{tag} was put back to {previous.digest}"
        client.delete_manifest(repository, digest)
        return f"the unverified {repository}@{digest} was deleted, so {tag} no longer resolves"
    except RegistryError as exc:
        return f"could not take {repository}:{tag} back ({exc}): it still points at the unverified image"
