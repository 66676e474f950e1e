"""verify_image: passes on good SOCI images, fails with a clear reason on each kind of damage."""

from __future__ import annotations

import dataclasses
import json

import httpx
import pytest

from resources.oci import media_types as mt
from resources.oci.manifest import parse_index, parse_manifest, sha256_digest
from resources.oci.refs import ImageRef
from resources.registry import RegistryClient
from resources.soci import gojson
from resources.soci.convert import ConvertResult, SociConverter
from resources.soci.verify import verify_image
from resources.soci.ztoc.flatbuf import parse_ztoc, serialize_ztoc
from tests.resources.soci.tamper import publish_with_soci_index

from .conftest import ImageFactory, gzip_layer, random_bytes, text_bytes

SPAN = 65536
FILES = {
    "opt/app/weights-a.bin": random_bytes(300_000, 1),
    "opt/app/weights-b.bin": random_bytes(200_000, 2),
    "opt/app/config.yaml": text_bytes(3_000, 3),
    "opt/app/vocab.txt": text_bytes(150_000, 4),
    "opt/app/run.sh": b"#!/bin/sh\nexec /opt/app/server\n",
}


@pytest.fixture
def converted(images: ImageFactory, client: RegistryClient) -> tuple[ImageRef, ConvertResult]:
    src = images.push_image("verify/app", "1", [gzip_layer(FILES)], entrypoint=["/opt/app/run.sh"]).ref
    dst = src.with_tag("1-soci")
    return dst, SociConverter(client, min_layer_size=1024, span_size=SPAN).convert(src, dst)


def _republish(
    client: RegistryClient, ref: ImageRef, tag: str, *, soci_bytes: bytes | None = None, ztoc_bytes: bytes | None = None
) -> ImageRef:
    """Push a copy of a converted image whose SOCI index (or its zTOC) is replaced."""
    repo = ref.repository
    index = parse_index(client.get_manifest(repo, ref.reference).data)
    soci_entry = next(e for e in index.manifests or [] if e.artifact_type == mt.SOCI_INDEX_V2)
    manifest_digest = (soci_entry.annotations or {})[mt.ANNOTATION_MANIFEST_DIGEST]
    soci = parse_manifest(client.get_manifest(repo, soci_entry.digest).data)
    if ztoc_bytes is not None:
        client.push_blob(repo, ztoc_bytes)
        (soci.layers or [])[0].digest = sha256_digest(ztoc_bytes)
        (soci.layers or [])[0].size = len(ztoc_bytes)
    if soci_bytes is None:
        soci_bytes = gojson.marshal(soci)
    return publish_with_soci_index(client, ref, tag, index, soci_entry, manifest_digest, soci_bytes)


def _ztoc(client: RegistryClient, ref: ImageRef, result: ConvertResult):
    return parse_ztoc(client.get_blob(ref.repository, result.platforms[0].ztocs[0].ztoc_digest))


def test_good_image_passes_and_reads_little(converted, client) -> None:
    ref, result = converted
    report = verify_image(client, ref, sample=3, required_files=["/opt/app/config.yaml", "opt/app/vocab.txt"])
    assert report.passed and report.failure is None
    p = report.platforms[0]
    assert p.soci_index_digest == result.platforms[0].soci_index_digest and p.soci_version == "v2"
    assert (p.layers_indexed, p.layers_skipped) == (1, 0)
    assert p.layers[0].spans_checked >= 2 and p.layers[0].spans == result.platforms[0].ztocs[0].spans
    files = {f.name: f for f in p.files}
    assert files["opt/app/weights-a.bin"].why == "largest"
    assert files["opt/app/config.yaml"].why == "required" and files["opt/app/vocab.txt"].why == "required"
    assert files["opt/app/run.sh"].why == "entrypoint"
    assert all(f.sha256 == f.stream_sha256 for f in p.files)
    layer_size = result.platforms[0].ztocs[0].layer_size
    small = files["opt/app/config.yaml"]
    assert small.spans_fetched <= 2 and small.bytes_fetched < layer_size // 4
    assert report.lazy_layer_bytes == layer_size and report.files_checked == len(p.files) >= 4


def test_image_without_index_fails(images: ImageFactory, client) -> None:
    ref = images.push_image("verify/plain", "1", [gzip_layer(FILES)]).ref
    report = verify_image(client, ref)
    assert not report.passed
    assert "no SOCI index found" in (report.failure or "") and "verify/plain:1" in (report.failure or "")


def test_non_canonical_index_json_fails(converted, client) -> None:
    ref, result = converted
    canonical = client.get_manifest(ref.repository, result.platforms[0].soci_index_digest).data
    pretty = json.dumps(json.loads(canonical), indent=2).encode()
    bad = _republish(client, ref, "pretty", soci_bytes=pretty)
    report = verify_image(client, bad)
    assert not report.passed and "not Go-canonical" in (report.failure or "")
    # The same content, canonical again, passes: the check is about the bytes.
    assert verify_image(client, _republish(client, ref, "canonical", soci_bytes=canonical)).passed


def test_missing_ztoc_fails(converted, client, registry) -> None:
    ref, result = converted
    ztoc_digest = result.platforms[0].ztocs[0].ztoc_digest
    httpx.delete(f"{registry.url}/v2/{ref.repository}/blobs/{ztoc_digest}", timeout=10).raise_for_status()
    report = verify_image(client, ref)
    assert not report.passed
    assert ztoc_digest in (report.failure or "") and "missing" in (report.failure or "")


def test_corrupt_ztoc_fails(converted, client) -> None:
    ref, _ = converted
    bad = _republish(client, ref, "garbage", ztoc_bytes=random_bytes(5000, 9))
    report = verify_image(client, bad)
    assert not report.passed and "corrupt" in (report.failure or "")


def test_ztoc_for_another_layer_size_fails(converted, client) -> None:
    ref, result = converted
    ztoc = _ztoc(client, ref, result)
    wrong = dataclasses.replace(ztoc, compressed_archive_size=ztoc.compressed_archive_size + 1)
    report = verify_image(client, _republish(client, ref, "size", ztoc_bytes=serialize_ztoc(wrong)))
    assert not report.passed and "bytes" in (report.failure or "") and "describes" in (report.failure or "")


def test_span_digest_mismatch_fails(converted, client) -> None:
    ref, result = converted
    ztoc = _ztoc(client, ref, result)
    digests = list(ztoc.compression.span_digests)
    digests[1] = "sha256:" + "0" * 64
    tampered = dataclasses.replace(ztoc, compression=dataclasses.replace(ztoc.compression, span_digests=digests))
    report = verify_image(client, _republish(client, ref, "span", ztoc_bytes=serialize_ztoc(tampered)))
    assert not report.passed
    assert "span 1" in (report.failure or "") and "0" * 64 in (report.failure or "")


def test_lazy_bytes_that_differ_from_the_layer_fail(converted, client) -> None:
    ref, result = converted
    ztoc = _ztoc(client, ref, result)
    entries = [
        dataclasses.replace(e, uncompressed_offset=e.uncompressed_offset + 512)
        if e.name == "opt/app/config.yaml"
        else e
        for e in ztoc.entries
    ]
    tampered = dataclasses.replace(ztoc, entries=entries)
    bad = _republish(client, ref, "offset", ztoc_bytes=serialize_ztoc(tampered))
    report = verify_image(client, bad, required_files=["opt/app/config.yaml"], quick=True)
    assert not report.passed
    assert "/opt/app/config.yaml" in (report.failure or "") and "lazily read bytes" in (report.failure or "")
    # The complete proof names the entry and field before any lazy read.
    complete = verify_image(client, bad, required_files=["opt/app/config.yaml"])
    assert not complete.passed and "'opt/app/config.yaml': field uncompressed_offset" in (complete.failure or "")


def test_required_file_missing_fails(converted, client) -> None:
    ref, _ = converted
    report = verify_image(client, ref, required_files=["/opt/app/server"])
    assert not report.passed and "required file /opt/app/server is not in image" in (report.failure or "")


def test_unknown_platform_fails(converted, client) -> None:
    ref, _ = converted
    report = verify_image(client, ref, platform="linux/riscv64")
    assert not report.passed and "linux/riscv64" in (report.failure or "")
