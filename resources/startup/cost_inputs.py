"""Read what the cost model needs for a SOCI-enabled image from its registry: sizes, layers, zTOCs."""

from __future__ import annotations

from resources.oci import media_types as mt
from resources.oci.manifest import Descriptor, parse_manifest
from resources.oci.refs import ImageRef
from resources.registry import RegistryClient
from resources.soci.index import parse_soci_index
from resources.soci.verify import locate_soci_indexes
from resources.soci.ztoc.flatbuf import parse_ztoc
from resources.startup.cost import (
    ImageDocuments,
    ImageLayer,
    NetworkModel,
    StartCostComparison,
    StartCostError,
    compare_start_costs,
)
from resources.startup.profile import StartupProfile


def load_cost_inputs(client: RegistryClient, ref: ImageRef, platform: str) -> tuple[list[ImageLayer], ImageDocuments]:
    """Layers (manifest order, each with the zTOC a node would pick: the last for its digest) and document sizes."""
    repo = ref.repository
    top = client.get_manifest(repo, ref.reference)
    located = locate_soci_indexes(client, ref)
    match = [x for x in located if x.platform in (platform, "(single manifest)")]
    if not match:
        found = ", ".join(x.platform for x in located) or "none"
        raise StartCostError(f"image {ref}: no SOCI index for platform {platform} (found: {found})")
    chosen = match[0]
    raw = client.get_manifest(repo, chosen.manifest_digest)
    manifest = parse_manifest(raw.data)
    soci_raw = client.get_manifest(repo, chosen.soci_index_digest)
    soci = parse_soci_index(soci_raw.data, name=chosen.soci_index_digest)
    by_layer: dict[str | None, Descriptor] = {}
    for d in soci.ztocs:  # the last zTOC descriptor for a layer digest wins (fs.go populateImageLayerToSociMapping)
        by_layer[(d.annotations or {}).get(mt.ANNOTATION_LAYER_DIGEST)] = d
    layers = []
    for layer in manifest.layers or []:
        ztoc_desc = by_layer.get(layer.digest)
        ztoc = parse_ztoc(client.get_blob(repo, ztoc_desc.digest)) if ztoc_desc is not None else None
        layers.append(ImageLayer(layer.digest, layer.size, ztoc, ztoc_desc.size if ztoc_desc is not None else 0))
    documents = ImageDocuments(
        manifest=len(raw.data),
        config=manifest.config.size,
        soci_index=len(soci_raw.data),
        image_index=len(top.data) if top.media_type in mt.IMAGE_INDEX_TYPES else 0,
    )
    return layers, documents


def start_cost_for_image(
    client: RegistryClient, ref: ImageRef, profile: StartupProfile, network: NetworkModel | None = None
) -> StartCostComparison:
    """Lazy, lazy + prefetch (files, ranges) and full pull for a profile on a SOCI-enabled image in a registry."""
    layers, documents = load_cost_inputs(client, ref, profile.platform)
    return compare_start_costs(profile.files, layers, documents, network)
