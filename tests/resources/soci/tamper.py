"""Test helper: re-push a converted image with one zTOC changed, so that only the zTOC's content is wrong.

The zTOC is decoded with resources/soci/ztoc/ (flatbuf + model), changed, re-encoded, pushed under its new
digest; the SOCI index is rewritten to name it, the image manifest to name the new index, and the image
index to name both, all Go-canonical (only the content is wrong, not the wiring).
"""

from __future__ import annotations

from collections.abc import Callable

from resources.oci import media_types as mt
from resources.oci.manifest import Descriptor, ImageIndex, encode, parse_index, parse_manifest, sha256_digest
from resources.oci.refs import ImageRef
from resources.registry import RegistryClient
from resources.soci import gojson
from resources.soci.ztoc.flatbuf import parse_ztoc, serialize_ztoc
from resources.soci.ztoc.model import Ztoc


def republish(
    client: RegistryClient,
    ref: ImageRef,
    tag: str,
    *,
    ztoc: Callable[[Ztoc], Ztoc] | None = None,
    layers: Callable[[list[Descriptor], Callable[[Ztoc], Descriptor]], list[Descriptor]] | None = None,
) -> ImageRef:
    """A copy of the v2 image `ref` under `tag`, its first zTOC changed by `ztoc` or its blob list by `layers`.

    `layers(current, push)` gets the index's blob descriptors and a function that pushes a changed zTOC
    and returns its descriptor (annotations copied from the first zTOC).
    """
    repo = ref.repository
    index = parse_index(client.get_manifest(repo, ref.reference).data)
    soci_entry = next(e for e in index.manifests or [] if e.artifact_type == mt.SOCI_INDEX_V2)
    manifest_digest = (soci_entry.annotations or {})[mt.ANNOTATION_MANIFEST_DIGEST]
    soci = parse_manifest(client.get_manifest(repo, soci_entry.digest).data)
    blobs = list(soci.layers or [])
    first = blobs[0]
    original = parse_ztoc(client.get_blob(repo, first.digest))

    def push(changed: Ztoc) -> Descriptor:
        data = serialize_ztoc(changed)
        client.push_blob(repo, data)
        return Descriptor(media_type=first.media_type, digest=sha256_digest(data), size=len(data),
                          annotations=dict(first.annotations or {}))

    if ztoc is not None:
        blobs[0] = push(ztoc(original))
    if layers is not None:
        blobs = layers(blobs, push)
    soci.layers = blobs
    soci_bytes = gojson.marshal(soci)
    return publish_with_soci_index(client, ref, tag, index, soci_entry, manifest_digest, soci_bytes)


def publish_with_soci_index(client: RegistryClient, ref: ImageRef, tag: str, index: ImageIndex, soci_entry: Descriptor,
                            manifest_digest: str, soci_bytes: bytes) -> ImageRef:
    """Push `soci_bytes` as the SOCI index of the image manifest `manifest_digest`, re-point the manifest's
    annotation and the image index at it, and tag the result `tag` (only the SOCI index differs)."""
    repo = ref.repository
    soci_digest = client.put_manifest(repo, sha256_digest(soci_bytes), soci_bytes, mt.OCI_MANIFEST)
    manifest = parse_manifest(client.get_manifest(repo, manifest_digest).data)
    manifest.annotations = {**(manifest.annotations or {}), mt.ANNOTATION_INDEX_DIGEST: soci_digest}
    new_manifest = encode(manifest)
    client.put_manifest(repo, new_manifest.digest, new_manifest.data, mt.OCI_MANIFEST)
    for entry in index.manifests or []:
        if entry.digest == manifest_digest:
            entry.digest, entry.size, entry.annotations = new_manifest.digest, new_manifest.size, manifest.annotations
        elif entry is soci_entry:
            entry.digest, entry.size = soci_digest, len(soci_bytes)
            entry.annotations = {mt.ANNOTATION_MANIFEST_DIGEST: new_manifest.digest}
    client.put_manifest(repo, tag, gojson.marshal(index), mt.OCI_INDEX)
    return ref.with_tag(tag)
