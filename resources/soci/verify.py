"""Verify that an image in a registry would lazy-load on a soci-snapshotter node.

The checks follow what a node does (docs/soci-format.md sections 1-4), then go further:

1. resolve the reference; for each platform manifest find its SOCI index through the manifest
   annotation `com.amazon.soci.index-digest` (v2) or the referrers of the manifest (v1);
2. fetch the SOCI index manifest and check it re-encodes to the same bytes under Go's
   encoding/json (the node re-encodes and checks the digest), and its config `{}` exists;
3. for every zTOC: the blob exists, hashes to its digest, parses, describes the layer it
   annotates (compressed size == layer size, span layout consistent with its span digests),
   and a sample of spans, range-read from the layer blob, hash to the recorded span digests;
4. lazy-read a sample of real files (always the largest regular file, every required file, and
   the config's entrypoint when it is in an indexed layer) through range requests and the
   zTOC checkpoints, and compare each file's sha256 with the same file read by streaming the
   whole layer through Python's tarfile/zlib (an independent code path).

The first failed check stops verification: `VerifyReport.passed` is False and `failure` says
what failed, naming the platform, layer, zTOC or file.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import posixpath
import random
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import BinaryIO

from resources.errors import StreamableError
from resources.oci import media_types as mt
from resources.oci import platforms as plat
from resources.oci.manifest import Descriptor, ImageIndex, Manifest, Platform, parse_index, parse_manifest
from resources.oci.refs import ImageRef
from resources.registry import DigestMismatchError, RegistryClient, RegistryNotFoundError
from resources.oci.manifest import RawManifest as RegistryManifest
from resources.soci import gojson
from resources.soci.index import SociIndex, SociIndexError, SociVersion, parse_soci_index, soci_version_of
from resources.soci.ztoc.flatbuf import parse_ztoc
from resources.soci.ztoc.lazy import LazyLayerReader, LazyReadError
from resources.soci.ztoc.model import FileMetadata, Ztoc, ZtocFormatError

READ_PIECE = 8 << 20
MAX_SYMLINK_HOPS = 16


class VerifyFailure(StreamableError):
    """One check failed; the message is the report's `failure`."""


@dataclass
class FileCheck:
    """One file read lazily and from the full layer stream."""

    name: str
    layer_digest: str
    size: int
    sha256: str
    stream_sha256: str | None
    spans_fetched: int
    """Spans this file needs on its own (a cold read); shared spans are fetched once per layer."""
    bytes_fetched: int
    """Compressed bytes of those spans."""
    why: str
    """largest | required | entrypoint | sample"""
    lazy: bool = True
    """False when the file lives in a layer without a zTOC (fetched in full at pull time)."""


@dataclass
class LayerCheck:
    """One image layer and what its zTOC says about it."""

    layer_digest: str
    media_type: str
    layer_size: int
    ztoc_digest: str | None
    ztoc_size: int | None = None
    spans: int | None = None
    spans_checked: int = 0
    files: int | None = None


@dataclass
class PlatformReport:
    """Checks for one platform manifest."""

    platform: str
    manifest_digest: str
    soci_index_digest: str | None = None
    soci_version: str | None = None
    layers_indexed: int = 0
    layers_skipped: int = 0
    layers: list[LayerCheck] = field(default_factory=list)
    files: list[FileCheck] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class VerifyReport:
    """The verdict: would this image lazy-load, and the evidence."""

    image: str
    image_digest: str | None = None
    platforms: list[PlatformReport] = field(default_factory=list)
    passed: bool = False
    failure: str | None = None
    files_checked: int = 0
    lazy_bytes_fetched: int = 0
    """Compressed bytes actually range-read to lazily read the checked files (each span at most once per layer)."""
    lazy_layer_bytes: int = 0
    """Total size of the layers those files live in (what a full pull of them fetches)."""
    span_check_bytes: int = 0
    image_layer_bytes: int = 0

    def to_dict(self) -> dict[str, object]:
        """Plain JSON-ready dict."""
        return asdict(self)

    def to_json(self) -> str:
        """Indented JSON text."""
        return json.dumps(self.to_dict(), indent=2)


def verify_image(
    client: RegistryClient,
    ref: ImageRef,
    *,
    sample: int = 8,
    required_files: Sequence[str] = (),
    platform: str | None = None,
    seed: int = 0,
) -> VerifyReport:
    """Check that `ref` has a usable SOCI index and that lazily read files match the layers.

    Registry errors other than "not found" for index/zTOC/layer content (auth, unreachable)
    are raised, not reported: they say nothing about the image.
    """
    report = VerifyReport(image=str(ref))
    verifier = _Verifier(client, ref, report, sample, required_files, platform, seed)
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
    ) -> None:
        self.client = client
        self.ref = ref
        self.repo = ref.repository
        self.report = report
        self.sample = max(0, sample)
        self.required = [_clean(name) for name in required]
        self.platform = plat.parse(platform) if platform else None
        self.rng = random.Random(seed)
        self._configs: dict[str, dict[str, object]] = {}

    # ---- image and index discovery -------------------------------------------------------------

    def run(self) -> None:
        top = self.client.get_manifest(self.repo, self.ref.reference)
        self.report.image_digest = top.digest
        index: ImageIndex | None = None
        targets: list[tuple[Platform | None, RegistryManifest]] = []
        if top.media_type in mt.IMAGE_INDEX_TYPES:
            index = self._decode(parse_index, top, f"image index {self.ref}")
            for entry in index.manifests or []:
                if entry.artifact_type in mt.SOCI_ARTIFACT_TYPES or entry.media_type not in mt.IMAGE_MANIFEST_TYPES:
                    continue
                if plat.is_unknown(entry.platform):
                    continue
                assert entry.platform is not None
                if self.platform is not None and not plat.matches(self.platform, entry.platform):
                    continue
                targets.append((plat.normalize(entry.platform), self.client.get_manifest(self.repo, entry.digest)))
            if not targets:
                wanted = f" for platform {self.platform}" if self.platform else ""
                raise VerifyFailure(f"image index {self.ref} has no image manifest{wanted}")
        elif top.media_type in mt.IMAGE_MANIFEST_TYPES:
            targets.append((None, top))
        else:
            raise VerifyFailure(f"{self.ref} ({top.digest}) has mediaType {top.media_type!r}: not an image")

        found_any = False
        for platform, raw in targets:
            manifest = self._decode(parse_manifest, raw, f"image manifest {self.repo}@{raw.digest}")
            if soci_version_of(manifest) is not None:
                raise VerifyFailure(f"{self.ref} ({raw.digest}) is a SOCI index, not an image")
            platform = platform or self._config_platform(manifest)
            soci_digest, version = self._find_index(raw, manifest, index, platform)
            if soci_digest is None:
                if len(targets) > 1 and self.platform is None:
                    self.report.platforms.append(
                        PlatformReport(str(platform), raw.digest, notes=["no SOCI index for this platform"])
                    )
                    continue
                raise VerifyFailure(
                    f"no SOCI index found for {self.ref} ({platform}, manifest {raw.digest}): no "
                    f"{mt.ANNOTATION_INDEX_DIGEST} annotation and no v1 referrers"
                )
            found_any = True
            self._verify_platform(platform, raw, manifest, soci_digest, version)
        if not found_any:
            raise VerifyFailure(f"no SOCI index found for any platform of {self.ref} ({top.digest})")

    def _find_index(
        self, raw: RegistryManifest, manifest: Manifest, index: ImageIndex | None, platform: Platform
    ) -> tuple[str | None, SociVersion | None]:
        digest = (manifest.annotations or {}).get(mt.ANNOTATION_INDEX_DIGEST)
        if digest:
            if index is not None:
                listed = [
                    e
                    for e in index.manifests or []
                    if e.artifact_type == mt.SOCI_INDEX_V2 and e.digest == digest
                ]
                if not listed:
                    raise VerifyFailure(
                        f"manifest {raw.digest} ({platform}) names SOCI index {digest}, but the image index "
                        f"{self.report.image_digest} does not list it (registries may garbage-collect it)"
                    )
                named = (listed[0].annotations or {}).get(mt.ANNOTATION_MANIFEST_DIGEST)
                if named != raw.digest:
                    raise VerifyFailure(
                        f"image index entry for SOCI index {digest} names image manifest {named}, not {raw.digest}"
                    )
            return digest, SociVersion.V2
        referrers = self.client.referrers(self.repo, raw.digest, mt.SOCI_INDEX_V1)
        digests = [r.get("digest") for r in referrers if isinstance(r.get("digest"), str)]
        if digests:
            return digests[-1], SociVersion.V1
        return None, None

    def _config_platform(self, manifest: Manifest) -> Platform:
        config = self._config(manifest)
        return plat.normalize(
            Platform(architecture=str(config.get("architecture") or ""), os=str(config.get("os") or ""),
                     variant=str(config.get("variant") or ""))
        )

    def _config(self, manifest: Manifest) -> dict[str, object]:
        digest = manifest.config.digest
        if digest not in self._configs:
            try:
                value = gojson.loads(self.client.get_blob(self.repo, digest))
            except gojson.GoJSONError as exc:
                raise VerifyFailure(f"image config {digest} is not JSON: {exc}") from None
            self._configs[digest] = value if isinstance(value, dict) else {}
        return self._configs[digest]

    @staticmethod
    def _decode(parse: Callable[[bytes], object], raw: RegistryManifest, name: str):
        try:
            return parse(raw.data)
        except gojson.GoJSONError as exc:
            raise VerifyFailure(f"{name} does not decode: {exc}") from None

    # ---- one platform ----------------------------------------------------------------------

    def _verify_platform(
        self, platform: Platform, raw: RegistryManifest, manifest: Manifest, soci_digest: str, version: SociVersion | None
    ) -> None:
        pr = PlatformReport(platform=str(platform), manifest_digest=raw.digest, soci_index_digest=soci_digest)
        self.report.platforms.append(pr)
        soci = self._fetch_soci_index(soci_digest, raw, platform, version)
        pr.soci_version = soci.version.value

        layers = manifest.layers or []
        layer_digests = {layer.digest for layer in layers}
        for d in soci.ztocs:
            named = (d.annotations or {}).get(mt.ANNOTATION_LAYER_DIGEST)
            if named not in layer_digests:
                raise VerifyFailure(f"SOCI index {soci_digest} has zTOC {d.digest} for layer {named}, not in manifest {raw.digest}")
        indexed: list[_IndexedLayer] = []
        for layer in layers:
            self.report.image_layer_bytes += layer.size
            d = soci.ztoc_for_layer(layer.digest)
            check = LayerCheck(layer.digest, layer.media_type, layer.size, d.digest if d else None)
            pr.layers.append(check)
            if d is None:
                pr.layers_skipped += 1
                continue
            pr.layers_indexed += 1
            indexed.append(self._check_ztoc(layer, d, check, pr))
        if not indexed:
            raise VerifyFailure(f"SOCI index {soci_digest} ({platform}) indexes no layer of manifest {raw.digest}")
        self._check_files(platform, manifest, layers, indexed, pr)

    def _fetch_soci_index(
        self, digest: str, raw: RegistryManifest, platform: Platform, version: SociVersion | None
    ) -> SociIndex:
        where = f"SOCI index {digest} ({platform})"
        try:
            fetched = self.client.get_manifest(self.repo, digest)
        except RegistryNotFoundError:
            raise VerifyFailure(f"{where} is not in {self.ref.name}") from None
        except DigestMismatchError as exc:
            raise VerifyFailure(f"{where} does not match its digest: {exc}") from None
        if fetched.media_type != mt.OCI_MANIFEST:
            raise VerifyFailure(f"{where} has mediaType {fetched.media_type!r}, not {mt.OCI_MANIFEST}")
        try:
            soci = parse_soci_index(fetched.data, name=digest)
        except SociIndexError as exc:
            raise VerifyFailure(str(exc)) from None
        reencoded = gojson.marshal(soci.manifest)
        if reencoded != fetched.data:
            at = next((i for i, (a, b) in enumerate(zip(reencoded, fetched.data)) if a != b), min(len(reencoded), len(fetched.data)))
            raise VerifyFailure(
                f"{where} is not Go-canonical JSON: re-encoding it with Go's rules changes the bytes from offset {at} "
                f"({fetched.data[at:at + 40]!r} vs {reencoded[at:at + 40]!r}), so the node's digest check fails"
            )
        if version is not None and soci.version is not version:
            raise VerifyFailure(f"{where} is a {soci.version.value} index, found the {version.value} way")
        if soci.version is SociVersion.V1:
            subject = soci.manifest.subject
            if subject is None or subject.digest != raw.digest:
                raise VerifyFailure(f"{where}: v1 subject is {subject.digest if subject else None}, not manifest {raw.digest}")
        elif soci.manifest.subject is not None:
            raise VerifyFailure(f"{where}: a v2 index must not have a subject")
        config = soci.manifest.config
        if config.digest != mt.EMPTY_CONFIG_DIGEST or self.client.blob_size(self.repo, config.digest) != len(mt.EMPTY_CONFIG):
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
            reader = LazyLayerReader(ztoc, self._fetcher(layer.digest), layer=layer.digest)
        except (ZtocFormatError, LazyReadError, ValueError) as exc:
            raise VerifyFailure(f"{where} is corrupt: {exc}") from None
        if ztoc.compressed_archive_size != layer.size:
            raise VerifyFailure(
                f"{where} describes a {ztoc.compressed_archive_size}-byte blob, but the layer is {layer.size} bytes"
            )
        span_text = annotations.get(mt.ANNOTATION_SPAN_SIZE)
        if span_text is not None and span_text != str(reader.span_size):
            raise VerifyFailure(f"{where}: span-size annotation {span_text} but the zTOC uses {reader.span_size}")
        check.ztoc_size = len(data)
        check.spans = ztoc.compression.max_span_id + 1
        check.files = len(ztoc.entries)
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
        return _IndexedLayer(layer, ztoc, LazyLayerReader(ztoc, self._fetcher(layer.digest), layer=layer.digest))

    def _fetcher(self, layer_digest: str) -> Callable[[int, int], bytes]:
        def fetch(start: int, end: int) -> bytes:
            try:
                return self.client.get_blob_range(self.repo, layer_digest, start, end)
            except RegistryNotFoundError:
                raise VerifyFailure(f"layer {layer_digest} is missing from {self.ref.name}") from None

        return fetch

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
        regular = [(il, e) for il in indexed for e in il.ztoc.entries if e.type == "reg"]
        if regular:
            il, e = max(regular, key=lambda pair: pair[1].uncompressed_size)
            chosen[(il.layer.digest, e.name)] = "largest"
        not_lazy: list[tuple[str, str]] = []
        for name in self.required:
            hit = self._resolve(name, indexed)
            if hit is None:
                if self._in_unindexed_layer(name, layers, indexed):
                    not_lazy.append((name, "required"))
                    continue
                raise VerifyFailure(f"required file /{name} is not in image {self.ref} ({platform})")
            if hit[1].type not in ("reg", "hardlink"):
                raise VerifyFailure(f"required file /{name} in layer {hit[0].layer.digest} is a {hit[1].type}, not a file")
            chosen.setdefault((hit[0].layer.digest, hit[1].name), "required")
        for name in self._entrypoint(manifest):
            hit = self._resolve(name, indexed)
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
            if not wanted:
                continue
            il = by_layer[layer.digest]
            # read in archive order, like a node's span cache sees them: spans shared by files are fetched once
            ordered = sorted(wanted.items(), key=lambda item: self._archive_position(il, item[0]))
            lazy = {name: self._lazy_read(il, name, why) for name, why in ordered}
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
                            for piece in iter(lambda: extracted.read(1 << 20), b""):  # noqa: B023 - used at once
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

    def _resolve(self, name: str, indexed: list[_IndexedLayer]) -> tuple[_IndexedLayer, FileMetadata] | None:
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

    def _in_unindexed_layer(self, name: str, layers: list[Descriptor], indexed: list[_IndexedLayer]) -> bool:
        """Whether a path exists in a gzip/tar layer that has no zTOC (small layers are pulled whole)."""
        indexed_digests = {il.layer.digest for il in indexed}
        path = _clean(name)
        for layer in reversed(layers):
            if layer.digest in indexed_digests:
                continue
            if mt.layer_compression(layer.media_type) not in (mt.LayerCompression.GZIP, mt.LayerCompression.UNCOMPRESSED):
                continue
            try:
                with self.client.open_blob(self.repo, layer.digest) as blob, _open_layer_tar(blob, layer.media_type) as tar:
                    if any(_clean(m.name) == path for m in tar):
                        return True
            except (tarfile.TarError, OSError, EOFError) as exc:
                raise VerifyFailure(f"layer {layer.digest} does not stream as a tar archive: {exc}") from None
        return False

    def _entrypoint(self, manifest: Manifest) -> list[str]:
        """Candidate paths of the config's entrypoint (or cmd) executable."""
        config = self._config(manifest).get("config")
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


def _clean(name: str) -> str:
    """A tar path without leading `./` or `/` and without a trailing `/`."""
    cleaned = posixpath.normpath("/" + name).lstrip("/")
    return cleaned or "."


@dataclass(frozen=True)
class LocatedIndex:
    """A SOCI index found for one platform manifest of an image."""

    platform: str
    manifest_digest: str
    soci_index_digest: str
    version: str
    ztocs: list[Descriptor]


def locate_soci_indexes(client: RegistryClient, ref: ImageRef) -> list[LocatedIndex]:
    """Every SOCI index a node could find for `ref` (v2 annotation, else v1 referrers), without checking them."""
    repo = ref.repository
    top = client.get_manifest(repo, ref.reference)
    targets: list[tuple[str, RegistryManifest]] = []
    if top.media_type in mt.IMAGE_INDEX_TYPES:
        for entry in parse_index(top.data).manifests or []:
            if entry.artifact_type in mt.SOCI_ARTIFACT_TYPES or entry.media_type not in mt.IMAGE_MANIFEST_TYPES:
                continue
            if plat.is_unknown(entry.platform):
                continue
            assert entry.platform is not None
            targets.append((str(plat.normalize(entry.platform)), client.get_manifest(repo, entry.digest)))
    elif top.media_type in mt.IMAGE_MANIFEST_TYPES:
        targets.append(("(single manifest)", top))
    found: list[LocatedIndex] = []
    for platform, raw in targets:
        manifest = parse_manifest(raw.data)
        digest = (manifest.annotations or {}).get(mt.ANNOTATION_INDEX_DIGEST)
        digests = [digest] if digest else [
            r["digest"] for r in client.referrers(repo, raw.digest, mt.SOCI_INDEX_V1) if isinstance(r.get("digest"), str)
        ]
        for soci_digest in digests:
            soci = parse_soci_index(client.get_manifest(repo, soci_digest).data, name=soci_digest)
            found.append(LocatedIndex(platform, raw.digest, soci_digest, soci.version.value, soci.ztocs))
    return found


def _open_layer_tar(blob: BinaryIO, media_type: str) -> tarfile.TarFile:
    """A streaming tar reader over a layer blob; gzip through GzipFile so every member is read (tarfile's
    own "r|gz" stops after the first gzip member)."""
    if mt.layer_compression(media_type) is mt.LayerCompression.GZIP:
        return tarfile.open(fileobj=gzip.GzipFile(fileobj=blob, mode="rb"), mode="r|")
    return tarfile.open(fileobj=blob, mode="r|")
