"""Verify that an image in a registry would lazy-load on a soci-snapshotter node, by the node's own rules.

1. read the image and find each platform's SOCI index exactly as a node does (resources/soci/node.py):
   the v2 annotation, else (when the node enables SOCI v1) the first v1 referrer; the index must survive
   the node's Go re-encode; layer -> zTOC is the last zTOC descriptor per layer annotation;
2. the image is pullable: every blob of the image manifest and of its SOCI index exists with its size;
3. every zTOC passes the node's checks (resources/soci/node_rules.py, shared with convert);
4. complete mode (default): every indexed layer is streamed once and proven against its zTOC
   (resources/soci/proof.py): the TOC equals Python's tarfile parse of the layer entry for entry and field
   for field, every span digest, every checkpoint resumes inflation to the stream's bytes, sizes exact.
   Quick mode (`quick=True`): a sample of spans is range-read and checked instead;
5. a few real files (profiled startup files first, the largest, required files, the entrypoint, a sample)
   are read lazily through range requests and the zTOC checkpoints, as a node would fetch them, and
   compared with the same files from the layer stream.

The first failed check stops verification: `VerifyReport.passed` is False and `failure` names the
platform, layer, zTOC, entry or file.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import posixpath
import random
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from resources.errors import StreamableError
from resources.oci import media_types as mt
from resources.oci import platforms as plat
from resources.oci.manifest import Descriptor, Manifest, Platform
from resources.oci.refs import ImageRef
from resources.registry import (
    DigestMismatchError,
    RegistryClient,
    RegistryNotFoundError,
)
from resources.soci import node as nd
from resources.soci.index import SociIndex, SociVersion
from resources.soci.node_rules import span_layout, ztoc_rule_violation
from resources.soci.proof import ProofFailure, prove_layer
from resources.soci.verify_report import (
    FileCheck,
    LayerCheck,
    PlatformReport,
    VerifyReport,
)
from resources.soci.ztoc.flatbuf import parse_ztoc
from resources.soci.ztoc.lazy import LazyLayerReader, LazyReadError
from resources.soci.ztoc.model import FileMetadata, Ztoc, ZtocFormatError
from resources.soci.ztoc.zlib_ctypes import system_zlib

__all__ = ["FileCheck", "LayerCheck", "LocatedIndex", "PlatformReport", "VerifyFailure", "VerifyReport",
           "locate_soci_indexes", "verify_image"]

READ_PIECE = 8 << 20
MAX_SYMLINK_HOPS = 16


class VerifyFailure(StreamableError):
    """One check failed; the message is the report's `failure`."""


def verify_image(
    client: RegistryClient,
    ref: ImageRef,
    *,
    sample: int = 8,
    required_files: Sequence[str] = (),
    platform: str | None = None,
    seed: int = 0,
    quick: bool = False,
    startup_files: Sequence[str] = (),
    node: nd.NodeConfig = nd.DEFAULT_NODE,
) -> VerifyReport:
    """Check that `ref` has a SOCI index a node uses and that every indexed layer reads right.

    `quick` samples spans instead of proving every layer in full. `startup_files` (ordered, e.g. a
    startup profile) are read lazily first. Registry errors other than "not found" for index/zTOC/layer
    content (auth, unreachable) are raised, not reported: they say nothing about the image.
    """
    report = VerifyReport(image=str(ref), mode="quick" if quick else "complete")
    verifier = _Verifier(client, ref, report, sample, required_files, platform, seed, quick, startup_files, node)
    try:
        verifier.run()
        report.passed = True
    except VerifyFailure as exc:
        report.passed = False
        report.failure = str(exc)
    return report


@dataclass
class _IndexedLayer:
    layer: Descriptor
    ztoc: Ztoc
    reader: LazyLayerReader
    check: LayerCheck


class _Verifier:
    def __init__(
        self,
        client: RegistryClient,
        ref: ImageRef,
        report: VerifyReport,
        sample: int,
        required: Sequence[str],
        platform: str | None,
        seed: int,
        quick: bool,
        startup: Sequence[str],
        node: nd.NodeConfig,
    ) -> None:
        self.client = client
        self.ref = ref
        self.repo = ref.repository
        self.report = report
        self.sample = max(0, sample)
        self.required = [_clean(name) for name in required]
        self.startup = list(dict.fromkeys(_clean(name) for name in startup))
        self.platform = plat.parse(platform) if platform else None
        self.rng = random.Random(seed)
        self.quick = quick
        self.node = node
        self.view: nd.ImageView | None = None
        self._cold: set[int] = set()

    # ---- image and index discovery -------------------------------------------------------------

    def run(self) -> None:
        try:
            view = self.view = nd.read_image(self.client, self.ref)
        except nd.NotAnImage as exc:
            raise VerifyFailure(str(exc)) from None
        self.report.image_digest = view.top.digest
        targets = [img for img in view.images if self.platform is None or plat.matches(self.platform, img.platform)]
        if not targets:
            wanted = f" for platform {self.platform}" if self.platform else ""
            raise VerifyFailure(f"image index {self.ref} has no image manifest{wanted}")
        found_any = False
        for image in targets:
            discovery = nd.find_soci_index(self.client, self.repo, image, self.node)
            if discovery.found is None:
                missing = nd.missing_blob(self.client, self.repo, nd.image_blobs(image))
                if missing:
                    raise VerifyFailure(f"image {self.ref} ({image.platform}) is not pullable: {missing}")
                if len(targets) > 1:
                    self.report.platforms.append(
                        PlatformReport(
                            str(image.platform),
                            image.raw.digest,
                            notes=[f"no SOCI index: {discovery.why_none(self.node)}"],
                        )
                    )
                    continue
                raise VerifyFailure(
                    f"no SOCI index found for {self.ref} ({image.platform}, manifest {image.raw.digest}): "
                    f"{discovery.why_none(self.node)}"
                )
            found_any = True
            self._verify_platform(image, discovery.found)
        if not found_any:
            raise VerifyFailure(f"no SOCI index found for any platform of {self.ref} ({view.top.digest})")

    def _verify_platform(self, image: nd.PlatformImage, found: nd.FoundIndex) -> None:
        assert self.view is not None
        platform, raw, manifest = image.platform, image.raw, image.manifest
        pr = PlatformReport(platform=str(platform), manifest_digest=raw.digest, soci_index_digest=found.digest,
                            index_found_by=found.how)
        self.report.platforms.append(pr)
        if found.version is SociVersion.V2:
            problem = nd.v2_binding_problem(self.view, image, found.digest)
            if problem:
                raise VerifyFailure(problem)
        soci = self._fetch_soci_index(found, image)
        pr.soci_version = soci.version.value
        layers = manifest.layers or []
        layer_digests = {layer.digest for layer in layers}
        for d in soci.ztocs:
            named = (d.annotations or {}).get(mt.ANNOTATION_LAYER_DIGEST)
            if named not in layer_digests:
                raise VerifyFailure(
                    f"SOCI index {found.digest} has zTOC {d.digest} for layer {named}, not in manifest {raw.digest}"
                )
        missing = nd.missing_blob(self.client, self.repo, nd.image_blobs(image) + nd.index_blobs(soci))
        if missing:
            raise VerifyFailure(f"image {self.ref} ({platform}) is not pullable: {missing}")
        by_layer = nd.layer_ztocs(soci)
        indexed: list[_IndexedLayer] = []
        for layer in layers:
            self.report.image_layer_bytes += layer.size
            chosen = by_layer.get(layer.digest)
            check = LayerCheck(layer.digest, layer.media_type, layer.size, chosen.digest if chosen else None)
            pr.layers.append(check)
            if chosen is None:
                pr.layers_skipped += 1
                continue
            pr.layers_indexed += 1
            indexed.append(self._check_ztoc(layer, chosen, check, pr))
        if not indexed:
            raise VerifyFailure(f"SOCI index {found.digest} ({platform}) indexes no layer of manifest {raw.digest}")
        self._check_files(platform, manifest, layers, indexed, pr)

    def _fetch_soci_index(self, found: nd.FoundIndex, image: nd.PlatformImage) -> SociIndex:
        where = f"SOCI index {found.digest} ({image.platform})"
        try:
            soci = nd.fetch_soci_index(self.client, self.repo, found, where)
        except nd.NodeReadError as exc:
            raise VerifyFailure(str(exc)) from None
        if soci.version is SociVersion.V1:
            subject = soci.manifest.subject
            if subject is None or subject.digest != image.raw.digest:
                raise VerifyFailure(
                    f"{where}: v1 subject is {subject.digest if subject else None}, not manifest {image.raw.digest}"
                )
        elif soci.manifest.subject is not None:
            raise VerifyFailure(f"{where}: a v2 index must not have a subject")
        config = soci.manifest.config
        if (
            config.digest != mt.EMPTY_CONFIG_DIGEST
            or self.client.blob_size(self.repo, config.digest) != len(mt.EMPTY_CONFIG)
        ):
            raise VerifyFailure(f"{where}: config blob {config.digest} is missing or not the 2-byte {{}}")
        return soci

    def _check_ztoc(self, layer: Descriptor, d: Descriptor, check: LayerCheck, pr: PlatformReport) -> _IndexedLayer:
        where = f"zTOC {d.digest} of layer {layer.digest} ({pr.platform})"
        annotations = d.annotations or {}
        if annotations.get(mt.ANNOTATION_LAYER_MEDIA_TYPE) != layer.media_type:
            pr.notes.append(
                f"{where}: layer mediaType annotation {annotations.get(mt.ANNOTATION_LAYER_MEDIA_TYPE)!r} "
                f"differs from the manifest's {layer.media_type!r}"
            )
        try:
            data = self.client.get_blob(self.repo, d.digest)
        except RegistryNotFoundError:
            raise VerifyFailure(f"{where} is missing from {self.ref.name}") from None
        except DigestMismatchError as exc:
            raise VerifyFailure(f"{where} is corrupt: {exc}") from None
        if len(data) != d.size:
            raise VerifyFailure(f"{where} is {len(data)} bytes, its descriptor says {d.size}")
        try:
            ztoc = parse_ztoc(data)
        except (ZtocFormatError, ValueError) as exc:
            raise VerifyFailure(f"{where} is corrupt: {exc}") from None
        rule = ztoc_rule_violation(ztoc, layer.size)
        if rule is not None:
            raise VerifyFailure(f"{where}: {rule}")
        try:
            reader = self._reader(ztoc, layer.digest)
        except (LazyReadError, ValueError) as exc:
            raise VerifyFailure(f"{where} is corrupt: {exc}") from None
        span_text = annotations.get(mt.ANNOTATION_SPAN_SIZE)
        if span_text is not None and span_text != str(reader.span_size):
            raise VerifyFailure(f"{where}: span-size annotation {span_text} but the zTOC uses {reader.span_size}")
        check.ztoc_size = len(data)
        check.spans = ztoc.compression.max_span_id + 1
        check.files = len(ztoc.entries)
        if self.quick:
            spans = check.spans
            chosen = sorted({0, spans - 1} | set(self.rng.sample(range(spans), min(spans, max(0, self.sample - 2)))))
            for span_id in chosen:
                try:
                    fetched = reader.fetch_span(span_id)
                except LazyReadError as exc:
                    raise VerifyFailure(f"{where}: {exc}") from None
                self.report.span_check_bytes += len(fetched)
                check.spans_checked += 1
        # A fresh reader for the file reads, so their byte counts owe nothing to the span checks' cache.
        return _IndexedLayer(layer, ztoc, self._reader(ztoc, layer.digest), check)

    def _reader(self, ztoc: Ztoc, layer_digest: str) -> LazyLayerReader:
        """Lazy reads of one layer as a node makes them: spans resumed on the system zlib (soci links it via cgo)."""
        return LazyLayerReader(ztoc, self._fetcher(layer_digest), layer=layer_digest, library=system_zlib())

    def _prove(self, il: _IndexedLayer, names: set[str]) -> dict[str, str]:
        """Stream the layer once and prove its zTOC completely; sha256 of the named files from that stream."""
        layer = il.layer
        try:
            with self.client.stream_blob(self.repo, layer.digest) as chunks:
                proof = prove_layer(chunks, il.ztoc, span_layout(il.ztoc), layer=layer.digest,
                                    media_type=layer.media_type, wanted=names)
        except ProofFailure as exc:
            raise VerifyFailure(f"image {self.ref}: {exc}") from None
        except RegistryNotFoundError:
            raise VerifyFailure(f"layer {layer.digest} is missing from {self.ref.name}") from None
        except DigestMismatchError as exc:
            raise VerifyFailure(f"layer {layer.digest} is corrupt: {exc}") from None
        il.check.proven = True
        il.check.entries_proven = proof.entries
        il.check.checkpoints_checked = proof.checkpoints_checked
        il.check.spans_checked = proof.spans
        self.report.span_check_bytes += proof.compressed_size
        return proof.file_hashes

    def _fetcher(self, layer_digest: str) -> Callable[[int, int], bytes]:
        def fetch(start: int, end: int) -> bytes:
            try:
                return self.client.get_blob_range(self.repo, layer_digest, start, end)
            except RegistryNotFoundError:
                raise VerifyFailure(f"layer {layer_digest} is missing from {self.ref.name}") from None

        return fetch

    def _config(self, manifest: Manifest) -> dict[str, object]:
        try:
            return nd.image_config(self.client, self.repo, manifest.config.digest, self.view)
        except nd.NotAnImage as exc:
            raise VerifyFailure(str(exc)) from None

    # ---- files ---------------------------------------------------------------------------

    def _check_files(
        self,
        platform: Platform,
        manifest: Manifest,
        layers: list[Descriptor],
        indexed: list[_IndexedLayer],
        pr: PlatformReport,
    ) -> None:
        chosen: dict[tuple[str, str], str] = {}  # (layer digest, entry name) -> why
        for name in self.startup:  # profiled startup files first, in profile order
            hit = resolve_entry(name, indexed)
            if hit is None or hit[1].type not in ("reg", "hardlink"):
                pr.notes.append(f"startup file /{name} is not a file in a layer with a zTOC; not lazily read")
                continue
            chosen.setdefault((hit[0].layer.digest, hit[1].name), "startup")
        regular = [(il, e) for il in indexed for e in il.ztoc.entries if e.type == "reg"]
        if regular:
            il, e = max(regular, key=lambda pair: pair[1].uncompressed_size)
            chosen.setdefault((il.layer.digest, e.name), "largest")
        not_lazy: list[tuple[str, str]] = []
        for name in self.required:
            hit = resolve_entry(name, indexed)
            if hit is None:
                if self._in_unindexed_layer(name, layers, indexed):
                    not_lazy.append((name, "required"))
                    continue
                raise VerifyFailure(f"required file /{name} is not in image {self.ref} ({platform})")
            if hit[1].type not in ("reg", "hardlink"):
                raise VerifyFailure(
                    f"required file /{name} in layer {hit[0].layer.digest} is a {hit[1].type}, not a file"
                )
            chosen.setdefault((hit[0].layer.digest, hit[1].name), "required")
        for name in self._entrypoint(manifest):
            hit = resolve_entry(name, indexed)
            if hit is not None and hit[1].type in ("reg", "hardlink"):
                chosen.setdefault((hit[0].layer.digest, hit[1].name), "entrypoint")
                break
        else:
            if self._entrypoint(manifest):
                pr.notes.append("the entrypoint is not in a layer with a zTOC; not lazily read")
        remaining = [(il, e) for il, e in regular if (il.layer.digest, e.name) not in chosen]
        extra = max(0, self.sample - len(chosen))
        for il, e in self.rng.sample(remaining, min(extra, len(remaining))):
            chosen[(il.layer.digest, e.name)] = "sample"

        by_layer = {il.layer.digest: il for il in indexed}
        for layer in layers:
            wanted = {name: why for (digest, name), why in chosen.items() if digest == layer.digest}
            found = by_layer.get(layer.digest)
            if found is None or (self.quick and not wanted):
                continue
            il = found
            if not self.quick:
                # before any lazy read: the precise failure first
                streamed = self._prove(il, {_clean(n) for n in wanted})
            if not wanted:
                continue
            # read in archive order, like a node's span cache sees them: spans shared by files are fetched once
            ordered = sorted(wanted.items(), key=lambda item: self._archive_position(il, item[0]))
            self._cold = set()
            lazy = {name: self._lazy_read(il, name, why) for name, why in ordered}
            pr.cold_start_spans += len(self._cold)
            pr.cold_start_bytes += sum(il.reader.span(i).end - il.reader.span(i).start for i in self._cold)
            if self.quick:
                streamed = self._stream_layer(layer, {_clean(n) for n in wanted})
            self.report.lazy_layer_bytes += layer.size
            for name, check in lazy.items():
                check.stream_sha256 = streamed.get(_clean(name))
                pr.files.append(check)
                self.report.files_checked += 1
                if check.stream_sha256 is None:
                    raise VerifyFailure(
                        f"file /{_clean(name)} is in zTOC of layer {layer.digest} but not in the layer's tar stream"
                    )
                if check.stream_sha256 != check.sha256:
                    raise VerifyFailure(
                        f"file /{_clean(name)} in layer {layer.digest} ({platform}): lazily read bytes hash to "
                        f"{check.sha256}, the layer stream has {check.stream_sha256}"
                    )
        for name, why in not_lazy:
            pr.notes.append(f"{why} file /{name} is in a layer without a zTOC (fetched in full at pull time)")

    @staticmethod
    def _archive_position(il: _IndexedLayer, name: str) -> int:
        """Uncompressed offset of an entry (-1 when the zTOC does not name it; the read reports that)."""
        try:
            return il.reader.entry(name).uncompressed_offset
        except LazyReadError:
            return -1

    def _lazy_read(self, il: _IndexedLayer, name: str, why: str) -> FileCheck:
        reader = il.reader
        before_bytes = reader.bytes_fetched
        reader.touched.clear()
        try:
            entry = reader.entry(name)
            if entry.type == "reg":
                hasher = hashlib.sha256()
                piece = max(READ_PIECE, reader.span_size)
                offset, left = entry.uncompressed_offset, entry.uncompressed_size
                while left:
                    n = min(piece, left)
                    hasher.update(reader.read_range(offset, n))
                    offset += n
                    left -= n
                digest, size = hasher.hexdigest(), entry.uncompressed_size
            else:
                content = reader.read_entry(entry)
                digest, size = hashlib.sha256(content).hexdigest(), len(content)
        except LazyReadError as exc:
            raise VerifyFailure(f"lazy read of /{_clean(name)} from layer {il.layer.digest} failed: {exc}") from None
        # Report-level bytes are what went over the network (spans shared with an earlier file come from
        # the cache, as on a node); per-file numbers are what this file alone needs with a cold cache.
        self.report.lazy_bytes_fetched += reader.bytes_fetched - before_bytes
        self._cold |= reader.touched
        spans = [reader.span(i) for i in sorted(reader.touched)]
        return FileCheck(
            name=_clean(name),
            layer_digest=il.layer.digest,
            size=size,
            sha256=digest,
            stream_sha256=None,
            spans_fetched=len(spans),
            bytes_fetched=sum(span.end - span.start for span in spans),
            why=why,
        )

    def _stream_layer(self, layer: Descriptor, names: set[str]) -> dict[str, str]:
        """sha256 of the named regular files (hard links resolved), reading the whole layer once."""
        hashes: dict[str, str] = {}
        all_hashes: dict[str, str] = {}
        try:
            with self.client.open_blob(self.repo, layer.digest) as blob:
                with _open_layer_tar(blob, layer.media_type) as tar:
                    for member in tar:
                        name = _clean(member.name)
                        if member.isfile():
                            extracted = tar.extractfile(member)
                            assert extracted is not None
                            hasher = hashlib.sha256()
                            for piece in iter(functools.partial(extracted.read, 1 << 20), b""):
                                hasher.update(piece)
                            all_hashes[name] = hasher.hexdigest()
                        elif member.islnk() and _clean(member.linkname) in all_hashes:
                            all_hashes[name] = all_hashes[_clean(member.linkname)]
                        if name in names and name in all_hashes:
                            hashes[name] = all_hashes[name]
                while blob.read(1 << 20):
                    pass  # read to EOF so the client checks the layer digest
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise VerifyFailure(f"layer {layer.digest} does not stream as a tar archive: {exc}") from None
        except DigestMismatchError as exc:
            raise VerifyFailure(f"layer {layer.digest} is corrupt: {exc}") from None
        return hashes

    def _in_unindexed_layer(self, name: str, layers: list[Descriptor], indexed: list[_IndexedLayer]) -> bool:
        """Whether a path exists in a gzip/tar layer that has no zTOC (small layers are pulled whole)."""
        indexed_digests = {il.layer.digest for il in indexed}
        path = _clean(name)
        for layer in reversed(layers):
            if layer.digest in indexed_digests:
                continue
            if mt.layer_compression(layer.media_type) not in (
                mt.LayerCompression.GZIP,
                mt.LayerCompression.UNCOMPRESSED,
            ):
                continue
            try:
                with (
                    self.client.open_blob(self.repo, layer.digest) as blob,
                    _open_layer_tar(blob, layer.media_type) as tar,
                ):
                    if any(_clean(m.name) == path for m in tar):
                        return True
            except (tarfile.TarError, OSError, EOFError) as exc:
                raise VerifyFailure(f"layer {layer.digest} does not stream as a tar archive: {exc}") from None
        return False

    def _entrypoint(self, manifest: Manifest) -> list[str]:
        """Candidate paths of the config's entrypoint (or cmd) executable."""
        return entrypoint_paths(self._config(manifest).get("config"))


def _clean(name: str) -> str:
    """A tar path without leading `./` or `/` and without a trailing `/`."""
    cleaned = posixpath.normpath("/" + name).lstrip("/")
    return cleaned or "."


@dataclass(frozen=True)
class LocatedIndex:
    """The SOCI index a node picks for one platform manifest of an image."""

    platform: str
    manifest_digest: str
    soci_index_digest: str
    version: str
    ztocs: list[Descriptor]
    """zTOC descriptors a node uses, one per layer (the last per layer annotation), in index order."""


def locate_soci_indexes(
    client: RegistryClient, ref: ImageRef, node: nd.NodeConfig = nd.DEFAULT_NODE
) -> list[LocatedIndex]:
    """The SOCI index a node picks for each platform of `ref` (node.find_soci_index), without checking it."""
    view = nd.read_image(client, ref)
    found: list[LocatedIndex] = []
    for image in view.images:
        hit = nd.find_soci_index(client, ref.repository, image, node).found
        if hit is None:
            continue
        soci = nd.fetch_soci_index(client, ref.repository, hit, f"SOCI index {hit.digest} ({image.platform})")
        chosen = {id(d) for d in nd.layer_ztocs(soci).values()}
        ztocs = [d for d in soci.ztocs if id(d) in chosen]
        found.append(LocatedIndex(str(image.platform), image.raw.digest, hit.digest, soci.version.value, ztocs))
    return found


def _open_layer_tar(blob: BinaryIO, media_type: str) -> tarfile.TarFile:
    """A streaming tar reader over a layer blob; gzip through GzipFile so every member is read (tarfile's
    own "r|gz" stops after the first gzip member)."""
    if mt.layer_compression(media_type) is mt.LayerCompression.GZIP:
        return tarfile.open(fileobj=gzip.GzipFile(fileobj=blob, mode="rb"), mode="r|")
    return tarfile.open(fileobj=blob, mode="r|")


def resolve_entry(name: str, indexed: list[_IndexedLayer]) -> tuple[_IndexedLayer, FileMetadata] | None:
    """The topmost indexed entry for a path, following symlinks (relative or absolute)."""
    path = _clean(name)
    for _ in range(MAX_SYMLINK_HOPS):
        hit = None
        for il in reversed(indexed):
            try:
                hit = (il, il.reader.entry(path))
                break
            except LazyReadError:
                continue
        if hit is None or hit[1].type != "symlink":
            return hit
        target = hit[1].linkname
        path = _clean(target if target.startswith("/") else posixpath.join(posixpath.dirname(path), target))
    return None


def entrypoint_paths(config: object) -> list[str]:
    """Candidate paths of an image config's entrypoint (or cmd) executable, resolved as a runtime would."""
    if not isinstance(config, dict):
        return []
    argv = config.get("Entrypoint") or config.get("Cmd") or []
    if not isinstance(argv, list) or not argv or not isinstance(argv[0], str):
        return []
    exe = argv[0]
    if exe.startswith("/"):
        return [exe]
    if "/" in exe:
        workdir = config.get("WorkingDir") if isinstance(config.get("WorkingDir"), str) else "/"
        return [posixpath.join(str(workdir or "/"), exe)]
    path_var = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    for item in config.get("Env") or []:
        if isinstance(item, str) and item.startswith("PATH="):
            path_var = item[5:]
    return [posixpath.join(d, exe) for d in path_var.split(":") if d.startswith("/")]
