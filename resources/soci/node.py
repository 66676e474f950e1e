"""Read an image the way a soci-snapshotter v0.15 node does: the one copy of the image walk and index search.

Used by verify, convert, backfill and promote. Every rule cites its upstream file (docs/soci-node-rules.md):
- index discovery (fs/fs.go `findSociIndexDesc`): the v2 `com.amazon.soci.index-digest` annotation of the
  image manifest when SOCI v2 is enabled, else, when SOCI v1 is enabled, the first referrer of artifact type
  v1 (fs/client.go `SelectReferrer` with `defaultIndexSelectionPolicy = SelectFirstPolicy`, fs/fs.go). v1 is
  off by default since v0.10 (config/defaults.go `DefaultSOCIV1Enable = false`);
- the index bytes must survive the node's re-encode (fs/artifact_fetcher.go `FetchSociArtifacts` decodes the
  index, `soci.MarshalIndex` re-encodes it with Go's encoding/json and stores it under the fetched digest);
- layer -> zTOC: among the blobs of media type application/octet-stream, the last one per
  `com.amazon.soci.image-layer-digest` wins (fs/fs.go `populateImageLayerToSociMapping`);
- prefetch artifacts are told apart by media type; the first per layer wins (fs/fs.go `findPrefetchArtifact`);
- every blob the index lists is fetched before the first mount (fs/artifact_fetcher.go `FetchSociArtifacts`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from resources.errors import StreamableError
from resources.oci import media_types as mt
from resources.oci import platforms as plat
from resources.oci.manifest import (
    Descriptor,
    ImageIndex,
    Manifest,
    Platform,
    parse_index,
    parse_manifest,
)
from resources.oci.refs import ImageRef
from resources.registry import (
    DigestMismatchError,
    RegistryClient,
    RegistryNotFoundError,
)
from resources.registry import Manifest as RegistryManifest
from resources.soci import gojson
from resources.soci.index import (
    SociIndex,
    SociIndexError,
    SociVersion,
    parse_soci_index,
    soci_version_of,
)


class NodeReadError(StreamableError):
    """The image (or its SOCI index) cannot be read the way a node reads it; the message names it."""


class NotAnImage(NodeReadError):
    """The reference is not a runnable container image (a SOCI index, an artifact, a nested index)."""


@dataclass(frozen=True)
class NodeConfig:
    """The pull modes of the nodes we serve (config/pull_modes.go; defaults from config/defaults.go)."""

    soci_v1: bool = False
    soci_v2: bool = True


DEFAULT_NODE = NodeConfig()


@dataclass
class PlatformImage:
    """One runnable image manifest of an image, decoded."""

    entry: Descriptor
    platform: Platform
    raw: RegistryManifest
    manifest: Manifest


@dataclass
class ImageView:
    """An image as a node (or soci convert) sees it: the top document and its runnable manifests."""

    ref: ImageRef
    top: RegistryManifest
    index: ImageIndex | None
    images: list[PlatformImage]
    others: list[Descriptor] = field(default_factory=list)
    """Index entries that are not runnable images (attestations, SOCI indexes, artifacts)."""
    configs: dict[str, dict[str, object]] = field(default_factory=dict)


def _decode(parse: Callable[[bytes], object], raw: RegistryManifest, name: str):
    try:
        return parse(raw.data)
    except gojson.GoJSONError as exc:
        raise NotAnImage(f"{name} is not a valid image manifest: {exc}") from None


def image_config(
    client: RegistryClient, repository: str, digest: str, view: ImageView | None = None
) -> dict[str, object]:
    """The image config JSON object (cached on `view`)."""
    if view is not None and digest in view.configs:
        return view.configs[digest]
    try:
        value = gojson.loads(client.get_blob(repository, digest))
    except gojson.GoJSONError as exc:
        raise NotAnImage(f"image config {digest} in {repository} is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise NotAnImage(f"image config {digest} in {repository} is not a JSON object")
    if view is not None:
        view.configs[digest] = value
    return value


def config_platform(config: dict[str, object]) -> Platform:
    """The platform recorded in an image config (what soci's images.Platforms reads)."""
    features = config.get("os.features")
    return plat.normalize(
        Platform(
            architecture=str(config.get("architecture") or ""),
            os=str(config.get("os") or ""),
            os_version=str(config.get("os.version") or ""),
            os_features=[str(f) for f in features] if isinstance(features, list) and features else None,
            variant=str(config.get("variant") or ""),
        )
    )


def read_image(
    client: RegistryClient,
    ref: ImageRef,
    *,
    top: RegistryManifest | None = None,
    config_platform_of_manifest: bool = True,
) -> ImageView:
    """Resolve `ref` (or use `top`, already fetched) and decode its runnable image manifests in index order.

    A single manifest's platform comes from its config (one blob GET) unless `config_platform_of_manifest`
    is False. NotAnImage when there is no runnable image.
    """
    repo = ref.repository
    top = top or client.get_manifest(repo, ref.reference)
    if top.media_type in mt.IMAGE_MANIFEST_TYPES:
        manifest = _decode(parse_manifest, top, f"manifest {ref}")
        name = f"{ref} ({top.digest})"
        version = soci_version_of(manifest)
        if version is not None:
            raise NotAnImage(f"{name} is a SOCI index ({version.artifact_type}), not an image")
        if manifest.config.media_type not in mt.IMAGE_CONFIG_TYPES:
            raise NotAnImage(f"{name} is not a container image: its config mediaType is {manifest.config.media_type!r}")
        view = ImageView(ref, top, None, [])
        platform = (
            config_platform(image_config(client, repo, manifest.config.digest, view))
            if config_platform_of_manifest else Platform()
        )
        entry = Descriptor(media_type=top.media_type, digest=top.digest, size=len(top.data), platform=platform)
        view.images.append(PlatformImage(entry, platform, top, manifest))
        return view
    if top.media_type not in mt.IMAGE_INDEX_TYPES:
        raise NotAnImage(f"{ref} ({top.digest}) has mediaType {top.media_type!r}: not an image manifest or image index")
    try:
        index = parse_index(top.data)
    except gojson.GoJSONError as exc:
        raise NotAnImage(f"image index {ref} ({top.digest}) is not a valid OCI index: {exc}") from None
    view = ImageView(ref, top, index, [])
    for entry in index.manifests or []:
        if entry.media_type in mt.IMAGE_INDEX_TYPES:
            raise NotAnImage(
                f"image index {ref} ({top.digest}) nests another index ({entry.digest}); "
                "nested indexes are not supported"
            )
        if (
            entry.artifact_type in mt.SOCI_ARTIFACT_TYPES
            or entry.media_type not in mt.IMAGE_MANIFEST_TYPES
            or plat.is_unknown(entry.platform)
        ):
            view.others.append(entry)
            continue
        raw = client.get_manifest(repo, entry.digest)
        manifest = _decode(parse_manifest, raw, f"manifest {ref.name}@{entry.digest}")
        if soci_version_of(manifest) is not None or manifest.config.media_type not in mt.IMAGE_CONFIG_TYPES:
            view.others.append(entry)
            continue
        assert entry.platform is not None
        view.images.append(PlatformImage(entry, plat.normalize(entry.platform), raw, manifest))
    if not view.images:
        raise NotAnImage(f"image index {ref} ({top.digest}) lists no runnable image manifest")
    return view


# ---- index discovery --------------------------------------------------------------------------


@dataclass(frozen=True)
class FoundIndex:
    """The SOCI index a node picks for one image manifest, and how it found it."""

    digest: str
    version: SociVersion
    how: str
    """e.g. 'v2 annotation' or 'v1 referrer 1 of 3 (the first, SelectFirstPolicy)'."""


@dataclass(frozen=True)
class Discovery:
    """Result of the node's index search for one image manifest."""

    found: FoundIndex | None
    v1_referrers: list[str]
    """Digests of v1 SOCI index referrers, in the order the registry lists them (whether or not v1 is enabled)."""

    def why_none(self, node: NodeConfig) -> str:
        """Why no index was found, in the node's terms."""
        if self.v1_referrers and not node.soci_v1:
            return (
                f"no {mt.ANNOTATION_INDEX_DIGEST} annotation, and the {len(self.v1_referrers)} v1 SOCI index "
                "referrer(s) are ignored: SOCI v1 is off by default since v0.10 (pull_modes.soci_v1.enable)"
            )
        return f"no {mt.ANNOTATION_INDEX_DIGEST} annotation and no v1 referrers"


def find_soci_index(
    client: RegistryClient, repository: str, image: PlatformImage, node: NodeConfig | None = None
) -> Discovery:
    """The node's search (fs/fs.go findSociIndexDesc): v2 annotation first, then the first v1 referrer."""
    node = node or DEFAULT_NODE
    annotated = (image.manifest.annotations or {}).get(mt.ANNOTATION_INDEX_DIGEST) if node.soci_v2 else None
    if annotated:
        return Discovery(FoundIndex(annotated, SociVersion.V2, "v2 annotation"), [])
    referrers = [
        r["digest"]
        for r in client.referrers(repository, image.raw.digest, mt.SOCI_INDEX_V1)
        if isinstance(r.get("digest"), str)
    ]
    if node.soci_v1 and referrers:
        how = f"v1 referrer 1 of {len(referrers)} (the first: SelectFirstPolicy)"
        return Discovery(FoundIndex(referrers[0], SociVersion.V1, how), referrers)
    return Discovery(None, referrers)


def v2_binding_problem(view: ImageView, image: PlatformImage, soci_digest: str) -> str | None:
    """A v2 index must be listed in the image index and bound to its manifest, else registries may GC it."""
    if view.index is None:
        return None
    listed = [e for e in view.index.manifests or [] if e.artifact_type == mt.SOCI_INDEX_V2 and e.digest == soci_digest]
    if not listed:
        return (
            f"manifest {image.raw.digest} ({image.platform}) names SOCI index {soci_digest}, but the image index "
            f"{view.top.digest} does not list it (registries may garbage-collect it)"
        )
    named = (listed[0].annotations or {}).get(mt.ANNOTATION_MANIFEST_DIGEST)
    if named != image.raw.digest:
        return f"image index entry for SOCI index {soci_digest} names image manifest {named}, not {image.raw.digest}"
    return None


def node_reencode(soci: SociIndex) -> bytes:
    """soci.MarshalIndex (soci/soci_index.go): schemaVersion 2, manifest type, config, blobs, subject, annotations."""
    m = soci.manifest
    return gojson.marshal(
        Manifest(schema_version=2, media_type=mt.OCI_MANIFEST, config=m.config, layers=m.layers,
                 subject=m.subject, annotations=m.annotations)
    )


def reencode_problem(data: bytes, soci: SociIndex) -> str | None:
    """Where the node's re-encode changes the index bytes (its digest check then fails: the image is pulled whole)."""
    again = node_reencode(soci)
    if again == data:
        return None
    at = next((i for i, (a, b) in enumerate(zip(again, data)) if a != b), min(len(again), len(data)))
    return (
        f"is not Go-canonical JSON: re-encoding it with Go's rules changes the bytes from offset {at} "
        f"({data[at:at + 40]!r} vs {again[at:at + 40]!r}), so the node's digest check fails"
    )


def fetch_soci_index(client: RegistryClient, repository: str, found: FoundIndex, where: str) -> SociIndex:
    """Fetch and decode a SOCI index as FetchSociArtifacts does; NodeReadError naming `where` on any node failure."""
    try:
        fetched = client.get_manifest(repository, found.digest)
    except RegistryNotFoundError:
        raise NodeReadError(f"{where} is not in {repository}") from None
    except DigestMismatchError as exc:
        raise NodeReadError(f"{where} does not match its digest: {exc}") from None
    if fetched.media_type != mt.OCI_MANIFEST:
        raise NodeReadError(f"{where} has mediaType {fetched.media_type!r}, not {mt.OCI_MANIFEST}")
    try:
        soci = parse_soci_index(fetched.data, name=found.digest)
    except SociIndexError as exc:
        raise NodeReadError(str(exc)) from None
    problem = reencode_problem(fetched.data, soci)
    if problem is not None:
        raise NodeReadError(f"{where} {problem}")
    if soci.version is not found.version:
        raise NodeReadError(f"{where} is a {soci.version.value} index, found the {found.version.value} way")
    return soci


# ---- what the index says ---------------------------------------------------------------------


def layer_ztocs(soci: SociIndex) -> dict[str, Descriptor]:
    """Layer digest -> zTOC descriptor, the last one per annotation winning (populateImageLayerToSociMapping)."""
    out: dict[str, Descriptor] = {}
    for d in soci.manifest.layers or []:
        if d.media_type == mt.SOCI_ZTOC:
            out[(d.annotations or {}).get(mt.ANNOTATION_LAYER_DIGEST, "")] = d
    return out


def prefetch_artifacts(soci: SociIndex) -> dict[str, Descriptor]:
    """Layer digest -> prefetch artifact descriptor, the first one per layer winning (findPrefetchArtifact)."""
    out: dict[str, Descriptor] = {}
    for d in soci.manifest.layers or []:
        layer = (d.annotations or {}).get(mt.ANNOTATION_LAYER_DIGEST)
        if d.media_type == mt.SOCI_PREFETCH and layer is not None:
            out.setdefault(layer, d)
    return out


# ---- pullability ------------------------------------------------------------------------------


def missing_blob(client: RegistryClient, repository: str, blobs: Iterable[tuple[Descriptor, str]]) -> str | None:
    """HEAD every (descriptor, what) once; the first one missing or of another size, described, else None."""
    seen: set[str] = set()
    for d, what in blobs:
        if d.digest in seen or (mt.is_nondistributable(d.media_type) and d.urls):
            continue
        seen.add(d.digest)
        size = client.blob_size(repository, d.digest)
        if size is None:
            return f"{what} {d.digest} is missing from {repository}"
        if size != d.size:
            return f"{what} {d.digest} in {repository} is {size} bytes, its descriptor says {d.size}"
    return None


def image_blobs(image: PlatformImage) -> list[tuple[Descriptor, str]]:
    """The blobs a plain pull of one image manifest fetches: config, then every layer."""
    where = f"({image.platform}, manifest {image.raw.digest})"
    out = [(image.manifest.config, f"config {where}")]
    out += [(layer, f"layer {i} {where}") for i, layer in enumerate(image.manifest.layers or [])]
    return out


def index_blobs(soci: SociIndex) -> list[tuple[Descriptor, str]]:
    """The blobs a node fetches for a SOCI index before the first mount: config and every listed blob."""
    out = [(soci.manifest.config, f"config of SOCI index {soci.digest}")]
    for d in soci.manifest.layers or []:
        kind = (
            "zTOC"
            if d.media_type == mt.SOCI_ZTOC
            else "prefetch artifact"
            if d.media_type == mt.SOCI_PREFETCH
            else "blob"
        )
        layer = (d.annotations or {}).get(mt.ANNOTATION_LAYER_DIGEST)
        out.append((d, f"{kind} of SOCI index {soci.digest}" + (f" for layer {layer}" if layer else "")))
    return out
