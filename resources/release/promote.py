"""Move release tags to a verified image, only after everything it references exists."""

from __future__ import annotations

from dataclasses import dataclass

from resources.errors import StreamableError
from resources.oci.media_types import IMAGE_INDEX_TYPES as INDEX_TYPES
from resources.oci.refs import ImageRef
from resources.registry import RegistryClient
from resources.soci import node as soci_node


class PromotionError(StreamableError, RuntimeError):
    """A release tag could not be moved; names the repository, tag and missing content."""


@dataclass(frozen=True)
class TagMove:
    """One release tag: where it pointed before and where it points now."""

    tag: str
    previous: str | None
    current: str


def check_complete(client: RegistryClient, repository: str, digest: str) -> int:
    """Raise unless the manifest `digest` and everything it references exist; returns objects checked."""
    manifest = client.get_manifest(repository, digest)
    doc = manifest.json()
    checked = 1
    if manifest.media_type in INDEX_TYPES or doc.get("manifests") is not None:
        for child in doc.get("manifests", []):
            checked += check_complete(client, repository, child["digest"])
        return checked
    blobs = [doc["config"], *doc.get("layers", [])] if "config" in doc else doc.get("layers", [])
    for blob in blobs:
        size = client.blob_size(repository, blob["digest"])
        if size is None:
            raise PromotionError(f"{repository}@{digest}: referenced blob {blob['digest']} is missing")
        if size != blob["size"]:
            raise PromotionError(
                f"{repository}@{digest}: blob {blob['digest']} has size {size}, manifest says {blob['size']}"
            )
        checked += 1
    return checked


def check_node_pull(client: RegistryClient, repository: str, digest: str) -> None:
    """Raise unless a node could pull `digest`: the SOCI index each platform names (found as a node finds it,
    resources/soci/node.py) decodes and re-encodes exactly, and its blobs exist with their sizes."""
    ref = ImageRef(client.registry, repository, digest=digest)
    try:
        view = soci_node.read_image(client, ref, config_platform_of_manifest=False)
    except soci_node.NotAnImage:
        return  # not a container image: check_complete is all there is to check
    for image in view.images:
        found = soci_node.find_soci_index(client, repository, image).found
        if found is None:
            continue
        where = f"{repository}@{digest}: SOCI index {found.digest} ({image.platform})"
        try:
            soci = soci_node.fetch_soci_index(client, repository, found, where)
        except soci_node.NodeReadError as exc:
            raise PromotionError(str(exc)) from None
        missing = soci_node.missing_blob(client, repository, soci_node.index_blobs(soci))
        if missing is not None:
            raise PromotionError(f"{where}: {missing}")


def promote(client: RegistryClient, repository: str, digest: str, tags: list[str]) -> list[TagMove]:
    """Point every tag at `digest` after checking the whole image graph exists; returns the moves."""
    check_complete(client, repository, digest)
    check_node_pull(client, repository, digest)
    manifest = client.get_manifest(repository, digest)
    moves: list[TagMove] = []
    for tag in tags:
        before = client.head_manifest(repository, tag)
        if before is not None and before.digest == digest:
            moves.append(TagMove(tag, digest, digest))
            continue
        got = client.put_manifest(repository, tag, manifest.data, manifest.media_type)
        if got != digest:
            raise PromotionError(f"{repository}:{tag}: registry stored {got}, expected {digest}")
        moves.append(TagMove(tag, before.digest if before else None, digest))
    return moves


def describe(client: RegistryClient, repository: str, digest: str) -> dict:
    """Summary of an image for metadata: media type, platforms, layers and total size."""
    manifest = client.get_manifest(repository, digest)
    doc = manifest.json()
    if manifest.media_type in INDEX_TYPES or doc.get("manifests") is not None:
        children = []
        for child in doc.get("manifests", []):
            art = child.get("artifactType") or ""
            if "soci" in art:
                continue
            sub = describe(client, repository, child["digest"])
            plat = child.get("platform") or {}
            sub["platform"] = "/".join(x for x in (plat.get("os"), plat.get("architecture"), plat.get("variant")) if x)
            children.append(sub)
        return {"media_type": manifest.media_type, "digest": digest, "manifests": children,
                "size": sum(c["size"] for c in children)}
    layers = [
        {"digest": layer["digest"], "media_type": layer["mediaType"], "size": layer["size"]}
        for layer in doc.get("layers", [])
    ]
    return {"media_type": manifest.media_type, "digest": digest, "layers": layers,
            "size": sum(layer["size"] for layer in layers) + doc.get("config", {}).get("size", 0)}


def layer_rows(summary: dict) -> list[dict]:
    """Flatten describe() output into one row per layer (with platform)."""
    if "manifests" in summary:
        return [dict(row, platform=m.get("platform", "")) for m in summary["manifests"] for row in layer_rows(m)]
    return [dict(layer) for layer in summary.get("layers", [])]
