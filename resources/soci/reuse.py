"""Find zTOCs already built for a layer in a repository, so conversions never decompress a layer twice.

A zTOC depends only on the layer blob and the span size (plus the build tool string it carries),
so any SOCI index in the destination repository that indexes the same layer digest with the
same span size gives a zTOC we can point at instead of rebuilding it. This is what makes
backfills of images that share base layers cheap.

Where we look: every tag of the repository; tags that resolve to an image index contribute their
v2 SOCI entries (artifactType `application/vnd.amazon.soci.index.v2+json`); `sha256-<hex>`
referrers tags (v1 on registries without the referrers API) contribute their v1 indexes; tags that
point straight at a SOCI index manifest count too. Each repository is scanned once per
`ZtocReuseIndex`; zTOCs pushed later are recorded as they are pushed.

zTOCs confirmed earlier in another repository of the same registry (by this object, e.g. during
a backfill) are mounted into the destination instead of rebuilt.

A candidate is only used after its blob has been fetched from the repository, hashed (the
registry client checks the digest), parsed, and found to describe a layer of the right size.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from resources.oci import media_types as mt
from resources.oci.manifest import Descriptor, parse_index, parse_manifest
from resources.registry import RegistryClient, RegistryError, RegistryNotFoundError, is_referrers_tag
from resources.soci import gojson
from resources.soci.index import soci_version_of
from resources.soci.ztoc.flatbuf import parse_ztoc
from resources.soci.ztoc.lazy import LazyLayerReader, LazyReadError
from resources.soci.ztoc.model import Ztoc, ZtocFormatError

if TYPE_CHECKING:
    from resources.soci.ztoc_catalog import ZtocCatalog

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class ZtocInfo:
    """A zTOC blob in a repository and what it says about its layer."""

    digest: str
    size: int
    layer_digest: str
    span_size: int
    spans: int
    files: int
    disable_xattrs: bool


def should_disable_xattrs(ztoc: Ztoc) -> bool:
    """soci's rule: no `SCHILY.xattr.*` record in any entry and no opaque-whiteout name."""
    for entry in ztoc.entries:
        if entry.name.endswith(mt.WHITEOUT_OPAQUE):
            return False
        if any(x.key.startswith("SCHILY.xattr.") for x in entry.xattrs):
            return False
    return True


def describe_ztoc(ztoc: Ztoc, *, digest: str, size: int, layer_digest: str, span_size: int) -> ZtocInfo:
    """The ZtocInfo of a parsed zTOC."""
    return ZtocInfo(
        digest=digest,
        size=size,
        layer_digest=layer_digest,
        span_size=span_size,
        spans=ztoc.compression.max_span_id + 1,
        files=len(ztoc.entries),
        disable_xattrs=should_disable_xattrs(ztoc),
    )


@dataclass(frozen=True)
class _Candidate:
    digest: str
    size: int


class ZtocReuseIndex:
    """Per-repository map of (layer digest, span size) -> zTOC, filled lazily by one scan."""

    def __init__(self, client: RegistryClient, *, log_fn: Callable[[str], None] | None = None) -> None:
        self._client = client
        self._log = log_fn or log.info
        self._candidates: dict[str, dict[tuple[str, int], list[_Candidate]]] = {}
        self._confirmed: dict[tuple[str, str, int], ZtocInfo] = {}
        self._rejected: set[tuple[str, str]] = set()
        self.catalog: ZtocCatalog | None = None
        """A registry-wide zTOC catalog (ztoc_catalog.py) looked up before the repository scan; None = scan only."""

    # ---- public API ----------------------------------------------------------------------

    def lookup(self, repository: str, layer_digest: str, layer_size: int, span_size: int) -> ZtocInfo | None:
        """A verified zTOC for this layer and span size in `repository`, or None."""
        key = (repository, layer_digest, span_size)
        known = self._confirmed.get(key)
        if known is not None:
            if self._client.blob_size(repository, known.digest) == known.size:
                return known
            del self._confirmed[key]
        if self.catalog is not None and (
            found := self.catalog.lookup(self, repository, layer_digest, layer_size, span_size)
        ):
            return found
        for candidate in self._scan(repository).get((layer_digest, span_size), []):
            if (repository, candidate.digest) in self._rejected:
                continue
            info = self._verify(repository, candidate, layer_digest, layer_size, span_size)
            if info is not None:
                self._confirmed[key] = info
                return info
            self._rejected.add((repository, candidate.digest))
        return self._copy_from_other_repository(repository, layer_digest, span_size)

    def record(self, repository: str, info: ZtocInfo) -> None:
        """Remember a zTOC that was just pushed to `repository`."""
        self._confirmed[(repository, info.layer_digest, info.span_size)] = info
        if self.catalog is not None:
            self.catalog.add_info(repository, info)

    def scanned(self, repository: str) -> bool:
        """True once `repository` has been scanned."""
        return repository in self._candidates

    def _copy_from_other_repository(self, repository: str, layer_digest: str, span_size: int) -> ZtocInfo | None:
        """A zTOC this index already confirmed in another repository, mounted (or copied) into `repository`."""
        for (other, digest, size), info in list(self._confirmed.items()):
            if other == repository or digest != layer_digest or size != span_size:
                continue
            try:
                if self._client.blob_size(other, info.digest) != info.size:
                    continue
                if not self._client.mount_blob(repository, info.digest, other):
                    self._client.push_blob(repository, self._client.get_blob(other, info.digest), digest=info.digest)
            except RegistryError as exc:
                self._log(f"zTOC reuse: could not bring {other}@{info.digest} into {repository}: {exc}")
                continue
            self._log(f"zTOC reuse: {info.digest} for layer {layer_digest} brought from {other} into {repository}")
            self.record(repository, info)
            return info
        return None

    # ---- scanning ------------------------------------------------------------------------

    def _scan(self, repository: str) -> dict[tuple[str, int], list[_Candidate]]:
        found = self._candidates.get(repository)
        if found is not None:
            return found
        found = {}
        self._candidates[repository] = found
        if self.catalog is not None and self.catalog.covers(repository):
            return found  # its SOCI indexes are in the catalog already
        try:
            tags = self._client.list_tags(repository)
        except RegistryNotFoundError:
            return found  # a new repository: nothing to reuse
        seen_manifests: set[str] = set()
        image_manifests: set[str] = set()
        soci_indexes: set[str] = set()
        for tag in sorted(tags):
            try:
                top = self._client.get_manifest(repository, tag)
            except RegistryNotFoundError:
                continue  # deleted while we scanned
            if top.digest in seen_manifests:
                continue
            seen_manifests.add(top.digest)
            try:
                if top.media_type in mt.IMAGE_INDEX_TYPES:
                    index = parse_index(top.data)
                    for entry in index.manifests or []:
                        if entry.artifact_type in mt.SOCI_ARTIFACT_TYPES or is_referrers_tag(tag):
                            soci_indexes.add(entry.digest)
                        elif entry.media_type in mt.IMAGE_MANIFEST_TYPES:
                            image_manifests.add(entry.digest)
                elif top.media_type in mt.IMAGE_MANIFEST_TYPES:
                    manifest = parse_manifest(top.data)
                    if soci_version_of(manifest) is not None:
                        self._add_index(found, manifest.layers or [])
                    else:
                        image_manifests.add(top.digest)
            except gojson.GoJSONError as exc:
                self._log(f"zTOC reuse: skipping {repository}:{tag}: {exc}")
        if image_manifests and self._client.supports_referrers(repository):
            for digest in sorted(image_manifests):
                for referrer in self._client.referrers(repository, digest, mt.SOCI_INDEX_V1):
                    if isinstance(referrer.get("digest"), str):
                        soci_indexes.add(referrer["digest"])
        for digest in sorted(soci_indexes):
            try:
                manifest = parse_manifest(self._client.get_manifest(repository, digest).data)
            except (RegistryNotFoundError, gojson.GoJSONError) as exc:
                self._log(f"zTOC reuse: skipping SOCI index {repository}@{digest}: {exc}")
                continue
            if soci_version_of(manifest) is not None:
                self._add_index(found, manifest.layers or [])
        count = sum(len(v) for v in found.values())
        self._log(f"zTOC reuse: {repository} has {count} indexed layer(s) in {len(soci_indexes)} SOCI index(es)")
        return found

    @staticmethod
    def _add_index(found: dict[tuple[str, int], list[_Candidate]], layers: list[Descriptor]) -> None:
        for d in layers:
            annotations = d.annotations or {}
            layer_digest = annotations.get(mt.ANNOTATION_LAYER_DIGEST)
            span_text = annotations.get(mt.ANNOTATION_SPAN_SIZE, "")
            if d.media_type != mt.SOCI_ZTOC or not layer_digest or not span_text.isdigit():
                continue
            candidates = found.setdefault((layer_digest, int(span_text)), [])
            candidate = _Candidate(digest=d.digest, size=d.size)
            if candidate not in candidates:
                candidates.append(candidate)

    def _verify(
        self, repository: str, candidate: _Candidate, layer_digest: str, layer_size: int, span_size: int
    ) -> ZtocInfo | None:
        """Fetch, hash and parse a candidate zTOC; None (logged) when it does not fit the layer."""
        where = f"{repository}@{candidate.digest}"
        try:
            data = self._client.get_blob(repository, candidate.digest)
        except RegistryError as exc:
            self._log(f"zTOC reuse: {where} is not usable: {exc}")
            return None
        if len(data) != candidate.size:
            self._log(f"zTOC reuse: {where} is {len(data)} bytes, its descriptor says {candidate.size}")
            return None
        try:
            ztoc = parse_ztoc(data)
            layout = LazyLayerReader(ztoc, _no_fetch, layer=layer_digest)
        except (ZtocFormatError, LazyReadError, ValueError) as exc:
            self._log(f"zTOC reuse: {where} does not parse: {exc}")
            return None
        if layout.span_size != span_size:
            self._log(f"zTOC reuse: {where} has span size {layout.span_size}, not {span_size}")
            return None
        if ztoc.compressed_archive_size != layer_size:
            self._log(
                f"zTOC reuse: {where} describes a {ztoc.compressed_archive_size}-byte layer, "
                f"but {layer_digest} is {layer_size} bytes"
            )
            return None
        # The annotations say which layer this zTOC is for; check it on the bytes (first and last span digests),
        # so a zTOC made for another layer of the same size is never reused.
        reader = LazyLayerReader(
            ztoc,
            lambda start, end: self._client.get_blob_range(repository, layer_digest, start, end),
            layer=layer_digest,
        )
        try:
            for span_id in sorted({0, ztoc.compression.max_span_id}):
                reader.fetch_span(span_id)
        except (LazyReadError, RegistryError) as exc:
            self._log(f"zTOC reuse: {where} does not match layer {layer_digest}: {exc}")
            return None
        return describe_ztoc(
            ztoc, digest=candidate.digest, size=candidate.size, layer_digest=layer_digest, span_size=span_size
        )


def _no_fetch(start: int, end: int) -> bytes:
    raise LazyReadError("zTOC reuse never reads layer bytes")
