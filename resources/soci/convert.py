"""Convert an image in a registry into a SOCI-enabled image (v2 by default, v1 on request).

Straight from the registry, without containerd: each layer that needs a zTOC is streamed once
through `ZtocBuilder`; layers already indexed in the destination repository (same layer digest,
same span size) are reused instead of decompressed again (`reuse.py`).

Write order, so that a tag never points at something incomplete: every zTOC blob, the `{}`
config, the SOCI index manifests and the rewritten image manifests are pushed by digest first;
then the SOCI-enabled image index by digest; the destination tag is moved last. When no layer of
any selected platform gets a zTOC, nothing at all is pushed (EmptySociIndexError).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from resources.defaults import SOCI_BUILD_TOOL_IDENTIFIER, SOCI_MIN_LAYER_SIZE, SOCI_SPAN_SIZE
from resources.errors import StreamableError
from resources.oci import media_types as mt
from resources.oci import platforms as plat
from resources.oci.manifest import Descriptor, encode
from resources.oci.refs import ImageRef
from resources.registry import DigestMismatchError, RegistryClient
from resources.soci import parallel as par
from resources.soci.convert_copy import copy_image
from resources.soci.convert_prefetch import ConvertGates, PrefetchOptions
from resources.soci.convert_results import ConvertResult, PlatformResult, SkippedLayer, ZtocRow
from resources.soci.index import (
    RewrittenManifest,
    SociVersion,
    build_soci_index,
    new_image_index,
    rewrite_image_manifest,
    soci_enabled_index,
    soci_index_entry,
    subject_descriptor,
    ztoc_descriptor,
)
from resources.soci.node import ImageView, NotAnImage, PlatformImage, read_image
from resources.soci.node_compat import DEFAULT_NODE_COMPAT, NodeCompat
from resources.soci.node_rules import ztoc_rule_violation
from resources.soci.prefetch import Granularity
from resources.soci.reuse import ZtocInfo, ZtocReuseIndex
from resources.soci.ztoc.builder import BuiltZtoc, ZtocBuilder, ZtocBuildError
from resources.soci.ztoc.gzip_index import GzipFormatError
from resources.soci.ztoc.model import ZtocFormatError
from resources.soci.ztoc.toc import TarFormatError
from resources.soci.ztoc.zlib_ctypes import ZlibError
from resources.startup.profile import StartupProfile

log = logging.getLogger(__name__)

LayerProgress = Callable[[str, int, int], None]
"""Called as bytes of a layer are read: (layer digest, bytes read so far, layer size)."""


class SociConvertError(StreamableError, RuntimeError):
    """The image cannot be converted; the message names the image (and layer) and nothing was tagged."""


class EmptySociIndexError(SociConvertError):
    """No layer of any selected platform gets a zTOC: the image is not lazily loadable. Nothing was pushed."""

    def __init__(self, message: str, skipped: Sequence[SkippedLayer]) -> None:
        super().__init__(message)
        self.skipped = list(skipped)


class NotAnImageError(SociConvertError):
    """The reference points at something that is not a container image (a SOCI index, an artifact, ...)."""


class PlatformNotFoundError(SociConvertError):
    """A requested platform is not in the image."""


# soci-snapshotter splits a zTOC blob at the first occurrence of this marker (prefetch data follows it).
PREFETCH_SEPARATOR = b"---SOCI-PREFETCH---"


class LayerSkippedError(SociConvertError):
    """A layer indexes fine but its zTOC would not load on a node; the layer is skipped with this reason."""


class LayerIndexError(SociConvertError):
    """A layer blob could not be indexed (corrupt gzip, bad tar, wrong size or digest)."""


@dataclass(frozen=True)
class _LayerPlan:
    position: int
    layer: Descriptor
    skip_reason: str | None


class SociConverter:
    """Builds and pushes SOCI indexes for images in one registry; reuse cache lives as long as the converter."""

    def __init__(
        self,
        client: RegistryClient,
        *,
        span_size: int = SOCI_SPAN_SIZE,
        min_layer_size: int = SOCI_MIN_LAYER_SIZE,
        build_tool_identifier: str = SOCI_BUILD_TOOL_IDENTIFIER,
        format: str = "v2",  # noqa: A002 - public keyword, passed by name by the CLI, pipelines and backfill
        platforms: Sequence[str] | None = None,
        all_platforms: bool = False,
        progress: LayerProgress | None = None,
        log_fn: Callable[[str], None] | None = None,
        prefetch_profile: StartupProfile | None = None,
        prefetch_granularity: str = Granularity.FILES.value,
        prefetch_files: Sequence[str] = (),
        node_compat: str | NodeCompat = DEFAULT_NODE_COMPAT,
        max_parallel_layers: int | None = None,
    ) -> None:
        if span_size <= 0:
            raise ValueError(f"span size must be positive, got {span_size}")
        if min_layer_size < 0:
            raise ValueError(f"min layer size must be >= 0, got {min_layer_size}")
        if platforms and all_platforms:
            raise ValueError("give platforms or all_platforms, not both")
        try:
            self.version = SociVersion(format)
        except ValueError:
            raise ValueError(f"unknown SOCI index format {format!r}: use 'v2' (default) or 'v1'") from None
        self.client = client
        self.span_size = span_size
        self.min_layer_size = min_layer_size
        self.build_tool_identifier = build_tool_identifier
        self.platforms = [plat.parse(p) for p in platforms or []]
        self.all_platforms = all_platforms
        self.progress = par.serialized(progress)
        self.max_parallel_layers = par.check_max_parallel_layers(
            max_parallel_layers or par.default_max_parallel_layers()
        )
        self._layer_builds: par.LayerBuilds[BuiltZtoc] | None = None
        self._log = log_fn or log.info
        self._builder = ZtocBuilder(span_size=span_size, build_tool_identifier=build_tool_identifier,
                                    inline_digests_when=lambda: par.cores_busy(self._layer_builds))
        self.reuse = ZtocReuseIndex(client, log_fn=self._log)
        self._built = 0
        self._reused = 0
        self.node_compat = node_compat if isinstance(node_compat, NodeCompat) else NodeCompat.parse(node_compat)
        prefetch = PrefetchOptions(
            prefetch_profile, Granularity(prefetch_granularity), tuple(prefetch_files), self.node_compat
        )
        self.gates = ConvertGates(client, prefetch, self._log)
        self._prefetch: dict[str, list[Descriptor]] = {}

    # ---- entry point -------------------------------------------------------------------------

    def convert(self, src: ImageRef, dst: ImageRef) -> ConvertResult:
        """Index `src` and push the SOCI-enabled image (v2) or the image plus its v1 index to `dst`."""
        if src.registry != dst.registry:
            raise SociConvertError(
                f"cannot convert {src} into {dst}: source and destination must be in the same registry "
                f"(this converter talks to {self.client.registry})"
            )
        if dst.digest:
            raise SociConvertError(f"destination {dst} must be a tag, not a digest")
        if src.registry != self.client.registry:
            raise SociConvertError(f"image {src} is not in registry {self.client.registry} of this converter")
        dst_tag = dst.tag or "latest"
        self._built = self._reused = 0
        self._prefetch = {}

        image = self._load(src)
        selected = self._select(src, image)
        profile = self.gates.options.profile
        if profile is not None and profile.manifest_digest not in {img.raw.digest for img in selected}:
            raise SociConvertError(
                f"image {src}: the prefetch profile was recorded on manifest {profile.manifest_digest} "
                f"({profile.platform}), "
                "which is not among the manifests being converted"
            )
        plans = {img.raw.digest: self._plan(src, img) for img in selected}
        if not any(p.skip_reason is None for plan in plans.values() for p in plan):
            skipped = [
                SkippedLayer(p.layer.digest, p.layer.media_type, p.layer.size, p.skip_reason or "")
                for plan in plans.values()
                for p in plan
            ]
            names = ", ".join(str(img.platform) for img in selected)
            details = "; ".join(f"{s.layer_digest} ({s.layer_size} bytes): {s.reason}" for s in skipped) or "no layers"
            raise EmptySociIndexError(
                f"image {src} ({names}): no layer gets a zTOC, so the SOCI index would be empty and the image "
                f"is not lazily loadable; nothing was pushed. Layers: {details}",
                skipped,
            )

        if src.repository != dst.repository:
            try:
                copy_image(self.client, src.repository, dst.repository, image,
                           with_manifests=self.version is SociVersion.V1)
            except NotAnImage as exc:
                raise NotAnImageError(str(exc)) from None

        results: list[PlatformResult] = []
        ztoc_lists: dict[str, list[Descriptor]] = {}
        self._layer_builds = par.start_layer_builds(self, src, dst.repository, selected, plans)
        for img in selected:
            result, descriptors = self._index_platform(src, dst.repository, img, plans[img.raw.digest])
            results.append(result)
            if descriptors:
                ztoc_lists[img.raw.digest] = descriptors
        if self._layer_builds is not None:
            self._layer_builds.close()
        if not ztoc_lists:
            skipped = [s for r in results for s in r.skipped_layers]
            details = "; ".join(f"{s.layer_digest}: {s.reason}" for s in skipped)
            raise EmptySociIndexError(
                f"image {src}: no layer got a usable zTOC; nothing was tagged. Layers: {details}", skipped
            )
        self.client.push_blob(dst.repository, mt.EMPTY_CONFIG, digest=mt.EMPTY_CONFIG_DIGEST)

        if self.version is SociVersion.V2:
            top_digest, top_media_type, top_size = self._finish_v2(dst.repository, dst_tag, image, results, ztoc_lists)
        else:
            top_digest, top_media_type, top_size = self._finish_v1(dst.repository, dst_tag, image, results, ztoc_lists)

        return ConvertResult(
            source=str(src),
            destination=str(ImageRef(dst.registry, dst.repository, dst_tag)),
            format=self.version.value,
            span_size=self.span_size,
            min_layer_size=self.min_layer_size,
            image_digest=top_digest,
            image_media_type=top_media_type,
            image_size=top_size,
            platforms=results,
            layers_built=self._built,
            layers_reused=self._reused,
            node_compat=str(self.node_compat),
        )

    # ---- reading the source ----------------------------------------------------------------------

    def _load(self, src: ImageRef) -> ImageView:
        try:
            return read_image(self.client, src)
        except NotAnImage as exc:
            raise NotAnImageError(str(exc)) from None

    def _select(self, src: ImageRef, image: ImageView) -> list[PlatformImage]:
        if self.all_platforms:
            return list(image.images)
        available = ", ".join(str(img.platform) for img in image.images)
        if image.index is None:
            (only,) = image.images
            if self.platforms and not any(plat.matches(w, only.platform) for w in self.platforms):
                requested = ", ".join(str(w) for w in self.platforms)
                raise PlatformNotFoundError(f"image {src} is {only.platform} only; requested {requested}")
            return [only]
        wanted = self.platforms or [plat.host_default()]
        chosen: list[PlatformImage] = []
        for w in plat.dedupe(wanted):
            match = next((img for img in image.images if plat.matches(w, img.platform)), None)
            if match is None:
                raise PlatformNotFoundError(
                    f"image {src} has no manifest for platform {w} (it has: {available}); "
                    "pass --platform or --all-platforms"
                )
            if match not in chosen:
                chosen.append(match)
        return [img for img in image.images if img in chosen]

    def _plan(self, src: ImageRef, img: PlatformImage) -> list[_LayerPlan]:
        """Which layers get a zTOC (docs/soci-format.md section 3); errors on a non-layer mediaType."""
        plan: list[_LayerPlan] = []
        for position, layer in enumerate(img.manifest.layers or []):
            if not mt.is_layer_type(layer.media_type):
                raise NotAnImageError(
                    f"image {src} ({img.platform}): layer {position} ({layer.digest}) has mediaType "
                    f"{layer.media_type!r}, which is not a layer type"
                )
            reason = self._skip_reason(layer)
            plan.append(_LayerPlan(position, layer, reason))
        return plan

    def _skip_reason(self, layer: Descriptor) -> str | None:
        compression = mt.layer_compression(layer.media_type)
        if layer.size < self.min_layer_size:
            return f"size {layer.size} is below the min layer size {self.min_layer_size}"
        if compression is mt.LayerCompression.ZSTD:
            return f"zstd-compressed layer ({layer.media_type}): SOCI indexes only gzip and uncompressed tar layers"
        if mt.is_nondistributable(layer.media_type):
            return f"non-distributable layer ({layer.media_type}): registries need not serve it"
        if compression is mt.LayerCompression.OTHER:
            return f"unsupported layer encoding ({layer.media_type})"
        return None

    # ---- zTOCs -----------------------------------------------------------------------------------

    def _index_platform(
        self, src: ImageRef, dst_repo: str, img: PlatformImage, plan: list[_LayerPlan]
    ) -> tuple[PlatformResult, list[Descriptor]]:
        result = PlatformResult(
            platform=str(img.platform),
            source_manifest_digest=img.raw.digest,
            manifest_digest=img.raw.digest,
            soci_index_digest=None,
            soci_index_size=None,
        )
        descriptors: list[Descriptor] = []
        for p in plan:
            layer = p.layer
            if p.skip_reason is not None:
                result.skipped_layers.append(SkippedLayer(layer.digest, layer.media_type, layer.size, p.skip_reason))
                continue
            try:
                info, reused = self._ztoc_for_layer(src, dst_repo, img, layer)
            except LayerSkippedError as exc:
                result.skipped_layers.append(SkippedLayer(layer.digest, layer.media_type, layer.size, str(exc)))
                continue
            result.ztocs.append(
                ZtocRow(
                    layer_digest=layer.digest,
                    media_type=layer.media_type,
                    layer_size=layer.size,
                    ztoc_digest=info.digest,
                    ztoc_size=info.size,
                    spans=info.spans,
                    files=info.files,
                    reused=reused,
                )
            )
            descriptors.append(
                ztoc_descriptor(
                    ztoc_digest=info.digest,
                    ztoc_size=info.size,
                    layer_digest=layer.digest,
                    layer_media_type=layer.media_type,
                    span_size=self.span_size,
                    disable_xattrs=info.disable_xattrs,
                )
            )
        kept = {d.annotations[mt.ANNOTATION_LAYER_DIGEST]: d.digest for d in descriptors if d.annotations}
        if descriptors:
            prefetch, result.prefetch = self.gates.prefetch(dst_repo, img.raw.digest, img.manifest.layers or [], kept)
            self._prefetch[img.raw.digest] = prefetch
        if not descriptors:
            result.skipped_reason = "no layer of this platform gets a zTOC: " + "; ".join(
                f"{s.layer_digest}: {s.reason}" for s in result.skipped_layers
            )
        return result, descriptors

    def _ztoc_for_layer(
        self, src: ImageRef, dst_repo: str, img: PlatformImage, layer: Descriptor
    ) -> tuple[ZtocInfo, bool]:
        found = self.reuse.lookup(dst_repo, layer.digest, layer.size, self.span_size)
        if found is not None:
            reason = self.gates.member_gate_for_reused(dst_repo, src.repository, layer, found.digest)
            if reason is not None:
                raise LayerSkippedError(reason)
            self._reused += 1
            self._log(f"layer {layer.digest}: reusing zTOC {found.digest}")
            return found, True
        built = (
            self._layer_builds.result(layer.digest, (src, img, layer))
            if self._layer_builds
            else self._build(src, img, layer)
        )
        self.client.push_blob(dst_repo, built.data, digest=built.digest)
        info = ZtocInfo(
            digest=built.digest,
            size=built.size,
            layer_digest=layer.digest,
            span_size=self.span_size,
            spans=built.ztoc.compression.max_span_id + 1,
            files=len(built.ztoc.entries),
            disable_xattrs=built.disable_xattrs,
        )
        self.reuse.record(dst_repo, info)
        self._built += 1
        self._log(f"layer {layer.digest}: built zTOC {built.digest} ({info.spans} spans, {info.files} entries)")
        return info, False

    def _build(self, src: ImageRef, img: PlatformImage, layer: Descriptor) -> BuiltZtoc:
        where = f"image {src} ({img.platform}): layer {layer.digest} ({layer.media_type}, {layer.size} bytes)"
        try:
            with (
                self.client.stream_blob(src.repository, layer.digest, size=layer.size) as raw,
                par.prefetched(raw) as chunks,
            ):
                built = self._builder.build(
                    with_progress(chunks, layer, self.progress),
                    layer.media_type,
                    layer=layer.digest,
                    verified_digest=layer.digest,
                )
                for _ in chunks:  # drain, so the client verifies the blob digest (the builder does not hash it again)
                    pass
        except (
            ZtocBuildError,
            GzipFormatError,
            TarFormatError,
            ZtocFormatError,
            ZlibError,
            DigestMismatchError,
        ) as exc:
            raise LayerIndexError(f"{where}: cannot build its zTOC: {exc}") from exc
        if built.compressed_size != layer.size:
            raise LayerIndexError(f"{where}: the blob is {built.compressed_size} bytes, the manifest says {layer.size}")
        if built.layer_digest != layer.digest:
            raise LayerIndexError(f"{where}: the blob hashes to {built.layer_digest}")
        violation = ztoc_rule_violation(built.ztoc, layer.size)
        if violation is not None:
            raise LayerSkippedError(violation)
        if PREFETCH_SEPARATOR in built.data:
            raise LayerSkippedError(
                f"its zTOC would contain the bytes {PREFETCH_SEPARATOR.decode()!r} (from the layer's content), which "
                "soci-snapshotter reads as the start of prefetch data: the node could not parse it"
            )
        reason = self.gates.member_gate_for_built(layer, built.ztoc, built.gzip_member_starts)
        if reason is not None:
            raise LayerSkippedError(reason)
        return built

    # ---- writing the result --------------------------------------------------------------------

    def _finish_v2(
        self,
        repo: str,
        tag: str,
        image: ImageView,
        results: list[PlatformResult],
        ztoc_lists: dict[str, list[Descriptor]],
    ) -> tuple[str, str, int]:
        soci_digests: dict[str, tuple[str, int]] = {}
        encoded_indexes = {}
        for digest, descriptors in ztoc_lists.items():
            index = build_soci_index(
                descriptors, version=SociVersion.V2, build_tool_identifier=self.build_tool_identifier,
                prefetch=self._prefetch.get(digest, []),
            )
            encoded = encode(index)
            self.client.put_manifest(repo, encoded.digest, encoded.data, mt.OCI_MANIFEST)
            soci_digests[digest] = (encoded.digest, encoded.size)
            encoded_indexes[digest] = encoded

        rewritten: list[RewrittenManifest] = []
        soci_entries: list[Descriptor] = []
        for img in image.images:
            soci = soci_digests.get(img.raw.digest)
            manifest = rewrite_image_manifest(img.manifest, soci[0] if soci else None)
            encoded = encode(manifest)
            self.client.put_manifest(repo, encoded.digest, encoded.data, mt.OCI_MANIFEST)
            rewritten.append(RewrittenManifest(img.raw.digest, manifest, encoded))
            if soci is not None:
                soci_entries.append(soci_index_entry(encoded_indexes[img.raw.digest], img.platform, encoded.digest))
            for result in results:
                if result.source_manifest_digest == img.raw.digest:
                    result.manifest_digest = encoded.digest
                    if soci is not None:
                        result.soci_index_digest, result.soci_index_size = soci

        base = image.index if image.index is not None else new_image_index(image.images[0].entry)
        final = encode(soci_enabled_index(base, rewritten, soci_entries))
        self.client.put_manifest(repo, final.digest, final.data, mt.OCI_INDEX)
        self.client.put_manifest(repo, tag, final.data, mt.OCI_INDEX)
        self._log(f"{repo}:{tag} -> SOCI-enabled image index {final.digest}")
        return final.digest, mt.OCI_INDEX, final.size

    def _finish_v1(
        self,
        repo: str,
        tag: str,
        image: ImageView,
        results: list[PlatformResult],
        ztoc_lists: dict[str, list[Descriptor]],
    ) -> tuple[str, str, int]:
        for img in image.images:
            descriptors = ztoc_lists.get(img.raw.digest)
            if not descriptors:
                continue
            subject = subject_descriptor(img.raw.media_type, img.raw.digest, len(img.raw.data))
            manifest = build_soci_index(
                descriptors, version=SociVersion.V1, build_tool_identifier=self.build_tool_identifier, subject=subject,
                prefetch=self._prefetch.get(img.raw.digest, []),
            )
            encoded = encode(manifest)
            self.client.push_referrer(repo, encoded.data, mt.OCI_MANIFEST)
            for result in results:
                if result.source_manifest_digest == img.raw.digest:
                    result.soci_index_digest, result.soci_index_size = encoded.digest, encoded.size
        top = image.top
        self.client.put_manifest(repo, top.digest, top.data, top.media_type)
        self.client.put_manifest(repo, tag, top.data, top.media_type)
        self._log(f"{repo}:{tag} -> image {top.digest} with v1 SOCI index(es) as referrers")
        return top.digest, top.media_type, len(top.data)


def with_progress(chunks: Iterable[bytes], layer: Descriptor, progress: LayerProgress | None) -> Iterator[bytes]:
    """The chunks, reporting (layer digest, bytes so far, layer size) to `progress` as they pass."""
    done = 0
    for chunk in chunks:
        done += len(chunk)
        if progress is not None:
            progress(layer.digest, done, layer.size)
        yield chunk
