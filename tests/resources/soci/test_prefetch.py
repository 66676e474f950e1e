"""Prefetch artifacts: bytes against upstream's examples and real Go, spans against hand-worked offsets."""

from __future__ import annotations

import base64
import io
import json
import os
import random
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from resources.oci import media_types as mt
from resources.oci.manifest import Descriptor
from resources.soci import gojson
from resources.soci.prefetch import (
    Granularity,
    LayerZtoc,
    PrefetchArtifact,
    PrefetchError,
    PrefetchSpan,
    SpanLocator,
    artifact_descriptor,
    encode_artifact,
    normalize_spans,
    parse_artifact,
    plan_for_paths,
    plan_for_profile,
    prefetch_entry_for_layer,
)
from resources.soci.ztoc.builder import ZtocBuilder
from resources.soci.ztoc.lazy import LazyLayerReader
from resources.startup.errors import ProfileFormatError
from resources.startup.profile import ProfiledFile, StartupProfile

from .conftest import gzip_layer, random_bytes, sha256, tar_bytes, tar_layer

GO = shutil.which("go")
GO_SOURCE = Path(__file__).parent / "prefetch_reference" / "main.go"
SPAN = 65536

if GO is None:  # `make test` installs it (scripts/test-deps.sh); a missing reference is a failure, not a skip
    raise RuntimeError("Go toolchain not installed: run `bash scripts/test-deps.sh` (the Go encoding/json reference)")


# ---- bytes ----------------------------------------------------------------------------------------


def test_artifact_bytes_match_upstream_examples() -> None:
    # soci/prefetch_test.go TestMarshalPrefetchArtifact_Success: one span 0..2, priority omitted.
    assert encode_artifact([(0, 2)]) == b'{"version":"1.0","prefetch_spans":[{"start_span":0,"end_span":2}]}'
    # docs/prefetch.md "Example Prefetch Artifact": spans 10..15 and 50..55.
    assert encode_artifact([(10, 15), (50, 55)]) == (
        b'{"version":"1.0","prefetch_spans":[{"start_span":10,"end_span":15},{"start_span":50,"end_span":55}]}'
    )
    # TestUnmarshalPrefetchArtifact_Success: 5..10 with priority 1 (the only way priority appears).
    with_priority = gojson.marshal(PrefetchArtifact(prefetch_spans=[PrefetchSpan(5, 10, 1)]))
    assert with_priority == b'{"version":"1.0","prefetch_spans":[{"start_span":5,"end_span":10,"priority":1}]}'
    assert parse_artifact(with_priority).prefetch_spans == [PrefetchSpan(5, 10, 1)]


def test_empty_and_wrong_version_artifacts_are_refused() -> None:
    with pytest.raises(PrefetchError, match="empty"):
        encode_artifact([])
    with pytest.raises(PrefetchError, match="version"):
        parse_artifact(b'{"version":"0.9","prefetch_spans":[{"start_span":1,"end_span":1}]}')
    with pytest.raises(PrefetchError, match="empty"):
        parse_artifact(b'{"version":"1.0","prefetch_spans":[]}')


@pytest.fixture(scope="module")
def go_reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    binary = tmp_path_factory.mktemp("prefetch_reference") / "prefetch_reference"
    env = {**os.environ, "GO111MODULE": "off", "CGO_ENABLED": "0"}
    subprocess.run([GO, "build", "-o", str(binary), str(GO_SOURCE)], check=True, env=env, timeout=600)
    return binary


def test_artifacts_and_descriptors_match_go(go_reference: Path) -> None:
    rng = random.Random(16)
    cases = []
    for i in range(300):
        n = rng.choice([1, 1, 2, 3, 10, 200])
        spans = [
            [rng.randrange(0, 2**31 - 1 if i % 7 == 0 else 5000), 0, rng.choice([0, 0, 0, 1, 7, -3])] for _ in range(n)
        ]
        for s in spans:
            s[1] = s[0] + rng.randrange(0, 50)
        layer = "sha256:" + rng.randbytes(32).hex()
        cases.append({"layer": layer, "spans": spans})
    stdin = "".join(json.dumps(c) + "\n" for c in cases)
    out = subprocess.run(
        [str(go_reference)], input=stdin, capture_output=True, text=True, check=True, timeout=120
    ).stdout
    results = [json.loads(line) for line in out.splitlines()]
    assert len(results) == len(cases)
    for case, want in zip(cases, results, strict=True):
        artifact = PrefetchArtifact(prefetch_spans=[PrefetchSpan(s, e, p) for s, e, p in case["spans"]])
        data = gojson.marshal(artifact)
        assert data == base64.b64decode(want["artifact"])
        if all(p == 0 for _, _, p in case["spans"]):
            assert encode_artifact([(s, e) for s, e, _ in case["spans"]]) == data
        assert gojson.marshal(artifact_descriptor(case["layer"], data)) == base64.b64decode(want["descriptor"])


def test_normalize_merges_overlapping_and_adjacent_like_upstream() -> None:
    assert normalize_spans([(5, 6), (0, 2), (3, 4), (10, 12), (11, 11), (20, 20), (20, 20)]) == [
        (0, 6),
        (10, 12),
        (20, 20),
    ]
    assert normalize_spans([(4, 9), (1, 2)]) == [(1, 2), (4, 9)]  # a gap of one span stays a gap


# ---- spans on real zTOCs --------------------------------------------------------------------------


def _tar_offsets(tar: bytes) -> dict[str, tuple[int, int]]:
    """name -> (data offset, size), read with Python's tarfile (independent of our TOC builder)."""
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        return {m.name: (m.offset_data, m.size) for m in t.getmembers() if m.isfile()}


def _built(layer_blob: bytes, media_type: str, span: int = SPAN):
    return ZtocBuilder(span_size=span).build(io.BytesIO(layer_blob), media_type).ztoc


def test_uncompressed_layer_spans_are_offset_over_span_size() -> None:
    # Sizes chosen so that one file ends exactly on a span boundary and one is empty.
    files = {"a/first.bin": random_bytes(1000, 1), "a/empty": b"", "a/cross.bin": random_bytes(3 * SPAN + 17, 2)}
    tar = tar_bytes(files)
    offsets = _tar_offsets(tar)
    o, _ = offsets["a/cross.bin"]
    files["a/cross.bin"] = random_bytes(4 * SPAN - o, 2)  # the last file: ends exactly on a span boundary
    layer = tar_layer(files)
    offsets = _tar_offsets(tar_bytes(files))
    o, n = offsets["a/cross.bin"]
    assert (o + n) % SPAN == 0
    ztoc = _built(layer.blob, mt.OCI_LAYER_TAR)
    plan = plan_for_paths([LayerZtoc(layer.digest, ztoc)], ["/a/cross.bin"])
    # upstream: span(offset) .. span(offset + size): the end offset is exclusive, so the next span is named too.
    assert plan.artifacts[0].spans == ((o // SPAN, (o + n) // SPAN),)
    eo, _ = offsets["a/empty"]
    empty = plan_for_paths([LayerZtoc(layer.digest, ztoc)], ["a/empty"])
    assert empty.artifacts[0].spans == ((eo // SPAN, eo // SPAN),)
    # ranges: only the spans holding the bytes [start, end) (end - 1 is the last byte).
    profile_file = ProfiledFile("/a/cross.bin", layer.digest, n, 1.0, ((0, 10), (2 * SPAN, 2 * SPAN + 1), (n - 1, n)))
    ranges = plan_for_profile([LayerZtoc(layer.digest, ztoc)], [profile_file], Granularity.RANGES)
    want = normalize_spans([(o // SPAN,) * 2, ((o + 2 * SPAN) // SPAN,) * 2, ((o + n - 1) // SPAN,) * 2])
    assert ranges.artifacts[0].spans == tuple(want)
    files_mode = plan_for_profile([LayerZtoc(layer.digest, ztoc)], [profile_file], Granularity.FILES)
    assert files_mode.artifacts[0].data == plan.artifacts[0].data


def test_gzip_spans_cover_what_a_node_reads() -> None:
    files = {f"srv/f{i}.bin": random_bytes(size, 10 + i) for i, size in enumerate([10, 150_000, 0, 70_000, 300_000])}
    layer = gzip_layer(files)
    ztoc = _built(layer.blob, mt.OCI_LAYER_GZIP)
    reader = LazyLayerReader(ztoc, lambda s, e: layer.blob[s:e], layer=layer.digest, cached_spans=0)
    locator = SpanLocator(ztoc)
    for name, data in files.items():
        plan = plan_for_paths([LayerZtoc(layer.digest, ztoc)], [name])
        ((start, end),) = plan.artifacts[0].spans
        entry = reader.entry(name)
        reader.touched.clear()
        assert reader.read_file(name) == data
        node_end = locator.span_of(entry.uncompressed_offset + entry.uncompressed_size)  # soci's GetContents end
        assert set(range(start, end + 1)) == reader.touched | {locator.span_of(entry.uncompressed_offset), node_end}
        if len(data) > 2 * SPAN:
            assert end > start  # a file across span boundaries gets a multi-span range


def test_topmost_layer_with_a_ztoc_wins_and_unindexed_layers_are_reported() -> None:
    bottom = gzip_layer({"app/config.json": random_bytes(5000, 1), "app/lib.so": random_bytes(200_000, 2)})
    middle = gzip_layer({"app/config.json": random_bytes(7000, 3)})
    top = tar_layer({"app/lib.so": random_bytes(100, 4)})
    layers = [
        LayerZtoc(bottom.digest, _built(bottom.blob, bottom.media_type)),
        LayerZtoc(middle.digest, _built(middle.blob, middle.media_type)),
        LayerZtoc(top.digest, None),  # too small to index
    ]
    plan = plan_for_paths(layers, ["/app/config.json", "app/lib.so", "/missing"])
    # upstream looks only at layers with a zTOC, top down: config.json from middle, lib.so from bottom.
    assert [a.layer_digest for a in plan.artifacts] == [bottom.digest, middle.digest]  # manifest order
    assert plan.not_found == ["/missing"]
    profiled = [
        ProfiledFile("/app/config.json", middle.digest, 7000, 1.0, ((0, 7000),)),
        ProfiledFile("/app/lib.so", top.digest, 100, 2.0, ((0, 100),)),  # the profile knows the top layer
    ]
    from_profile = plan_for_profile(layers, profiled, Granularity.FILES)
    assert [a.layer_digest for a in from_profile.artifacts] == [middle.digest]
    assert from_profile.unindexed == ["/app/lib.so"]
    descriptors = from_profile.descriptors
    assert descriptors[0].annotations == {mt.ANNOTATION_LAYER_DIGEST: middle.digest}
    assert descriptors[0].digest == sha256(from_profile.artifacts[0].data)
    index_layers = [
        Descriptor(media_type=mt.SOCI_ZTOC, digest="sha256:" + "0" * 64, size=1),
        *descriptors,
        *descriptors,
    ]
    assert prefetch_entry_for_layer(index_layers, middle.digest) is index_layers[1]


def test_profile_reader_names_the_bad_field() -> None:
    good = {
        "version": 1, "image": "127.0.0.1:5000/a:1", "manifest_digest": "sha256:" + "1" * 64, "platform": "linux/amd64",
        "command": ["/app/run"], "stopped_by": "exit", "duration_ms": 12,
        "files": [{"path": "/a", "layer_digest": "sha256:" + "2" * 64, "size": 10, "first_access_ms": 1,
                   "ranges": [[0, 10]], "kind": "file"}],
    }
    assert StartupProfile.from_json(json.dumps(good)).files[0].ranges == ((0, 10),)
    bad = json.loads(json.dumps(good))
    bad["files"][0]["ranges"] = [[0, 11]]
    with pytest.raises(ProfileFormatError, match=r"files\[0\]\.ranges\[0\]"):
        StartupProfile.from_dict(bad)


def test_dot_slash_names_and_hard_links() -> None:
    buf = io.BytesIO()
    data = random_bytes(3 * SPAN, 9)
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        info = tarfile.TarInfo("./app/data.bin")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("./app/link.bin")
        link.type, link.linkname = tarfile.LNKTYPE, "./app/data.bin"
        t.addfile(link)
    blob = buf.getvalue()
    digest = sha256(blob)
    ztoc = _built(blob, mt.OCI_LAYER_TAR)
    layers = [LayerZtoc(digest, ztoc)]
    # upstream compares the raw tar name "./app/data.bin" with the cleaned path "app/data.bin": no match.
    assert plan_for_paths(layers, ["/app/data.bin"]).not_found == ["/app/data.bin"]
    offset = _tar_offsets(blob)["./app/data.bin"][0]
    linked = ProfiledFile("/app/link.bin", digest, len(data), 0.0, ((2 * SPAN, 2 * SPAN + 1),))
    plan = plan_for_profile(layers, [linked], Granularity.RANGES)  # the link's bytes are its target's
    assert plan.artifacts[0].spans == (((offset + 2 * SPAN) // SPAN,) * 2,)
