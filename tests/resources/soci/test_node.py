"""The node module picks the index and the zTOC per layer by soci-snapshotter v0.15's rules."""

from __future__ import annotations

import dataclasses

from resources.oci import media_types as mt
from resources.oci.manifest import encode, parse_manifest
from resources.registry import RegistryClient
from resources.soci import node as nd
from resources.soci.convert import SociConverter
from resources.soci.index import SociVersion, build_soci_index, parse_soci_index, subject_descriptor

from .conftest import ImageFactory, gzip_layer, random_bytes


def _image(images: ImageFactory, repo: str):
    return images.push_image(
        repo, "1", [gzip_layer({"a.bin": random_bytes(200_000, 1)}), gzip_layer({"b.bin": random_bytes(150_000, 2)})]
    )


def test_duplicate_ztoc_descriptors_last_wins(images: ImageFactory, client: RegistryClient) -> None:
    pushed = _image(images, "node/dup")
    result = SociConverter(client, min_layer_size=1024, span_size=65536).convert(pushed.ref, pushed.ref.with_tag("s"))
    soci_digest = result.platforms[0].soci_index_digest
    soci = parse_soci_index(client.get_manifest("node/dup", soci_digest).data, name=soci_digest)
    first, second = soci.ztocs
    fake = dataclasses.replace(first, digest="sha256:" + "1" * 64)
    prefetch = dataclasses.replace(first, media_type=mt.SOCI_PREFETCH, digest="sha256:" + "2" * 64)
    prefetch_later = dataclasses.replace(prefetch, digest="sha256:" + "3" * 64)
    manifest = dataclasses.replace(soci.manifest, layers=[first, second, fake, prefetch, prefetch_later])
    twice = parse_soci_index(encode(manifest).data, name="twice")
    layer_a = (first.annotations or {})[mt.ANNOTATION_LAYER_DIGEST]
    chosen = nd.layer_ztocs(twice)
    assert chosen[layer_a].digest == fake.digest and twice.ztoc_for_layer(layer_a).digest == fake.digest
    assert chosen[(second.annotations or {})[mt.ANNOTATION_LAYER_DIGEST]].digest == second.digest
    assert nd.prefetch_artifacts(twice)[layer_a].digest == prefetch.digest  # prefetch: the first wins
    assert all(d.media_type == mt.SOCI_ZTOC for d in chosen.values())


def test_several_v1_referrers_first_wins_and_v1_is_off_by_default(images: ImageFactory, client: RegistryClient) -> None:
    pushed = _image(images, "node/v1")
    digests = []
    for span in (65536, 131072):
        r = SociConverter(client, min_layer_size=1024, span_size=span, format="v1").convert(
            pushed.ref, pushed.ref.with_tag(f"v1-{span}")
        )
        digests.append(r.platforms[0].soci_index_digest)
    assert len(set(digests)) == 2
    view = nd.read_image(client, pushed.ref)
    (image,) = view.images
    listed = [r["digest"] for r in client.referrers("node/v1", image.raw.digest, mt.SOCI_INDEX_V1)]
    assert set(listed) == set(digests)
    default = nd.find_soci_index(client, "node/v1", image)
    assert default.found is None and "off by default" in default.why_none(nd.NodeConfig())
    v1 = nd.find_soci_index(client, "node/v1", image, nd.NodeConfig(soci_v1=True)).found
    assert v1 is not None and v1.version is SociVersion.V1 and v1.digest == listed[0]
    located = {x.soci_index_digest for x in __import__("resources.soci.verify", fromlist=["x"]).locate_soci_indexes(
        client, pushed.ref, nd.NodeConfig(soci_v1=True))}
    assert located == {listed[0]}


def test_v2_annotation_beats_v1_referrers(images: ImageFactory, client: RegistryClient) -> None:
    pushed = _image(images, "node/both")
    dst = pushed.ref.with_tag("s")
    result = SociConverter(client, min_layer_size=1024, span_size=65536).convert(pushed.ref, dst)
    view = nd.read_image(client, dst)
    (image,) = view.images
    soci_digest = result.platforms[0].soci_index_digest
    v2 = parse_soci_index(client.get_manifest("node/both", soci_digest).data, name=soci_digest)
    subject = subject_descriptor(image.raw.media_type, image.raw.digest, len(image.raw.data))
    v1_manifest = build_soci_index(v2.ztocs, version=SociVersion.V1, build_tool_identifier="t", subject=subject)
    v1_digest = client.push_referrer("node/both", encode(v1_manifest).data, mt.OCI_MANIFEST)
    both = nd.find_soci_index(client, "node/both", image, nd.NodeConfig(soci_v1=True)).found
    assert both is not None and (both.digest, both.version) == (soci_digest, SociVersion.V2)
    only_v1 = nd.find_soci_index(client, "node/both", image, nd.NodeConfig(soci_v1=True, soci_v2=False)).found
    assert only_v1 is not None and (only_v1.digest, only_v1.version) == (v1_digest, SociVersion.V1)


def test_index_with_artifact_type_fails_the_node_reencode(images: ImageFactory, client: RegistryClient) -> None:
    pushed = _image(images, "node/art")
    result = SociConverter(client, min_layer_size=1024, span_size=65536).convert(pushed.ref, pushed.ref.with_tag("s"))
    soci_digest = result.platforms[0].soci_index_digest
    manifest = parse_manifest(client.get_manifest("node/art", soci_digest).data)
    manifest.artifact_type = mt.SOCI_INDEX_V2  # MarshalIndex drops it: the node's bytes differ
    encoded = encode(manifest)
    soci = parse_soci_index(encoded.data, name=encoded.digest)
    assert nd.reencode_problem(encoded.data, soci) is not None
    assert nd.reencode_problem(client.get_manifest("node/art", soci_digest).data,
                               parse_soci_index(client.get_manifest("node/art", soci_digest).data, name="x")) is None
