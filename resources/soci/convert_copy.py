"""Copying a source image into the destination repository before its SOCI index is written (convert's I/O)."""

from __future__ import annotations

from resources.oci import media_types as mt
from resources.oci.manifest import Manifest, parse_manifest
from resources.oci.manifest import RawManifest as RegistryManifest
from resources.registry import RegistryClient
from resources.soci import gojson
from resources.soci.node import ImageView, NotAnImage


def copy_image(client: RegistryClient, src_repo: str, dst_repo: str, image: ImageView, *, with_manifests: bool) -> None:
    """Make every blob (and carried-over manifest) of the source image exist in the destination repository.

    `with_manifests`: also put the image manifests themselves (v1 keeps them; v2 writes rewritten ones).
    """
    for img in image.images:
        _copy_manifest_blobs(client, src_repo, dst_repo, img.manifest)
        if with_manifests:
            client.put_manifest(dst_repo, img.raw.digest, img.raw.data, img.raw.media_type)
    for entry in image.others:
        raw = client.get_manifest(src_repo, entry.digest)
        if raw.media_type in mt.IMAGE_MANIFEST_TYPES:
            _copy_manifest_blobs(client, src_repo, dst_repo, _decode_manifest(raw, f"{src_repo}@{entry.digest}"))
        client.put_manifest(dst_repo, raw.digest, raw.data, raw.media_type)


def _copy_manifest_blobs(client: RegistryClient, src_repo: str, dst_repo: str, manifest: Manifest) -> None:
    for d in [manifest.config, *(manifest.layers or [])]:
        if mt.is_nondistributable(d.media_type) and d.urls:
            continue  # foreign layers stay where their urls say
        client.copy_blob(src_repo, dst_repo, d.digest, d.size)


def _decode_manifest(raw: RegistryManifest, name: str) -> Manifest:
    try:
        return parse_manifest(raw.data)
    except gojson.GoJSONError as exc:
        raise NotAnImage(f"manifest {name} is not a valid image manifest: {exc}") from None
