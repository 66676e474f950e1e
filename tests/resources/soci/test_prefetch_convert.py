"""Convert with prefetch on a real registry; the node_compat gate (prefetch v0.13+, member-spanning zTOCs v0.14+)."""

from __future__ import annotations

import base64
import gzip
import io
import json
import subprocess
from pathlib import Path

import pytest

from resources.oci import media_types as mt
from resources.oci.manifest import parse_manifest
from resources.registry import RegistryClient
from resources.soci.convert import EmptySociIndexError, SociConverter
from resources.soci.index import parse_soci_index
from resources.soci.node import NodeConfig
from resources.soci.node_compat import NodeCompat, NodeCompatError
from resources.soci.prefetch import (
    Granularity,
    LayerZtoc,
    check_prefetch_entries,
    parse_artifact,
    plan_for_profile,
)
from resources.soci.verify import verify_image
from resources.soci.ztoc.builder import ZtocBuilder
from resources.soci.ztoc.flatbuf import parse_ztoc
from resources.soci.ztoc.members import (
    crossing_spans,
    proves_single_member,
    scan_gzip_members,
)
from resources.startup.cost_inputs import start_cost_for_image
from resources.startup.profile import StartupProfile

from .conftest import (
    ImageFactory,
    Layer,
    PushedImage,
    gzip_layer,
    random_bytes,
    sha256,
    tar_bytes,
    tar_layer,
    text_bytes,
)
from .test_cli import run
from .test_prefetch import go_reference  # noqa: F401 - the compiled Go reference (fixture)

SMALL = 64 * 1024
SPAN = 65536


def test_node_compat_parses_known_releases_only() -> None:
    assert NodeCompat.parse("v0.13") == NodeCompat(0, 13) == NodeCompat.parse("0.13")
    assert not NodeCompat.parse("v0.12").prefetch_artifacts and NodeCompat.parse("v0.13").prefetch_artifacts
    assert not NodeCompat.parse("v0.13").member_spanning_ztocs and NodeCompat.parse("v0.14").member_spanning_ztocs
    for bad in ("v0.11", "v1.0", "latest", "v0.13.1"):
        with pytest.raises(NodeCompatError, match="node_compat"):
            NodeCompat.parse(bad)


# ---- prefetch in a converted image -----------------------------------------------------------------


def _image(images: ImageFactory) -> PushedImage:
    base = gzip_layer({
        "app/model.bin": random_bytes(600_000, 1),
        "app/config.json": b'{"threads": 1}\n',
        "app/vocab.txt": text_bytes(200_000, 2),
    })
    override = gzip_layer({"app/config.json": random_bytes(70_000, 3), "app/extra.bin": random_bytes(90_000, 4)})
    tiny = tar_layer({"app/run.sh": b"#!/bin/sh\nexec /app/server\n"})
    return images.push_image("pf/app", "1", [base, override, tiny])


def _profile(img: PushedImage) -> StartupProfile:
    base, override, tiny = img.layers
    doc = {
        "version": 1, "image": str(img.ref), "manifest_digest": img.digest, "platform": "linux/amd64",
        "command": ["/app/run.sh"], "stopped_by": "exit", "duration_ms": 40,
        "files": [
            {"path": "/app/run.sh", "layer_digest": tiny.digest, "size": 27, "first_access_ms": 0, "ranges": [[0, 27]],
             "kind": "command"},
            {"path": "/app/config.json", "layer_digest": override.digest, "size": 70_000, "first_access_ms": 1,
             "ranges": [[0, 4096]], "kind": "file"},
            {"path": "/app/model.bin", "layer_digest": base.digest, "size": 600_000, "first_access_ms": 2,
             "ranges": [[0, 4096], [400_000, 401_408]], "kind": "file"},
        ],
    }
    return StartupProfile.from_json(json.dumps(doc))


def _soci_layers(client: RegistryClient, repo: str, digest: str):
    return parse_soci_index(client.get_manifest(repo, digest).data, name=digest).manifest.layers or []


@pytest.mark.parametrize("granularity", ["files", "ranges"])
def test_convert_writes_prefetch_after_the_ztocs_and_verify_passes(images: ImageFactory, client, granularity) -> None:
    img = _image(images)
    profile = _profile(img)
    dst = img.ref.with_tag("soci")
    result = SociConverter(
        client, span_size=SPAN, min_layer_size=SMALL, prefetch_profile=profile,
        prefetch_granularity=granularity, node_compat="v0.13",
    ).convert(img.ref, dst)
    (platform,) = result.platforms
    base, override, tiny = img.layers
    layers = _soci_layers(client, dst.repository, platform.soci_index_digest)
    kinds = [(d.media_type, d.annotations[mt.ANNOTATION_LAYER_DIGEST]) for d in layers]
    assert kinds == [
        (mt.SOCI_ZTOC, base.digest), (mt.SOCI_ZTOC, override.digest),
        (mt.SOCI_PREFETCH, base.digest), (mt.SOCI_PREFETCH, override.digest),
    ]
    assert [set(d.annotations) for d in layers[2:]] == [{mt.ANNOTATION_LAYER_DIGEST}] * 2
    ztocs = {
        d.annotations[mt.ANNOTATION_LAYER_DIGEST]: parse_ztoc(client.get_blob(dst.repository, d.digest))
        for d in layers[:2]
    }
    expected = plan_for_profile(
        [
            LayerZtoc(base.digest, ztocs[base.digest]),
            LayerZtoc(override.digest, ztocs[override.digest]),
            LayerZtoc(tiny.digest, None),
        ],
        profile.files,
        Granularity(granularity),
    )
    for d, want in zip(layers[2:], expected.artifacts, strict=True):
        data = client.get_blob(dst.repository, d.digest)
        assert data == want.data and d.digest == sha256(data) and d.size == len(data)
        parse_artifact(data)
    assert platform.prefetch is not None and platform.prefetch.gated is None
    assert platform.prefetch.unindexed == ["/app/run.sh"] and platform.prefetch.not_found == []
    assert result.node_compat == "v0.13"
    model_spans = expected.artifacts[0].span_count
    # model.bin is ~10 spans: files prefetches all of them, ranges only the spans of two small reads.
    assert model_spans >= 10 if granularity == "files" else model_spans <= 3
    report = verify_image(client, dst, sample=4)
    assert report.passed, report.failure
    # The cost of a start, read back from the registry: documents and layers as served.
    cost = start_cost_for_image(client, dst, profile)
    top = client.get_manifest(dst.repository, "soci")
    manifest = client.get_manifest(dst.repository, platform.manifest_digest)
    config = parse_manifest(manifest.data).config.size
    assert cost.full_pull.image_bytes == len(top.data) + len(manifest.data) + config + sum(x.size for x in img.layers)
    ztoc_bytes = sum(z.ztoc_size for z in platform.ztocs)
    rows = {r.layer_digest: r for r in cost.lazy.layers}
    assert rows[tiny.digest].bytes_to_start == tiny.size  # the unindexed layer is fetched whole, not dropped
    assert cost.lazy.bytes_to_start == (
        len(top.data) + len(manifest.data) + config + platform.soci_index_size + ztoc_bytes
        + sum(r.bytes_to_start for r in cost.lazy.layers)
    )
    # (64 KiB spans: zTOCs dominate here)
    assert cost.prefetch_ranges.bytes_to_start < cost.prefetch_files.bytes_to_start


def test_node_compat_v0_12_writes_no_prefetch_and_says_why(images: ImageFactory, client) -> None:
    img = _image(images)
    plain = SociConverter(client, span_size=SPAN, min_layer_size=SMALL).convert(img.ref, img.ref.with_tag("plain"))
    gated = SociConverter(
        client, span_size=SPAN, min_layer_size=SMALL, prefetch_profile=_profile(img)
    ).convert(img.ref, img.ref.with_tag("gated"))
    (p,) = gated.platforms
    assert p.prefetch is not None and p.prefetch.artifacts == []
    assert "v0.12 < v0.13" in (p.prefetch.gated or "") and gated.node_compat == "v0.12"
    # byte-identical to a conversion that never asked for prefetch
    assert p.soci_index_digest == plain.platforms[0].soci_index_digest
    assert all(d.media_type == mt.SOCI_ZTOC for d in _soci_layers(client, "pf/app", p.soci_index_digest))


def test_prefetch_file_paths_on_the_cli(images: ImageFactory, registry, tmp_path: Path) -> None:
    img = _image(images)
    dst = f"{img.ref.registry}/pf/app:cli"
    proc = run("soci", "convert", str(img.ref), dst, "--span-size", str(SPAN), "--min-layer-size", str(SMALL),
               "--prefetch-file", "/app/config.json", "--prefetch-file", "app/vocab.txt", "--prefetch-file", "/nope",
               "--node-compat", "v0.15", tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (platform,) = json.loads(proc.stdout)["platforms"]
    rows = platform["prefetch"]["artifacts"]
    base, override, _ = img.layers
    assert [r["layer_digest"] for r in rows] == [base.digest, override.digest]  # vocab in base, config.json in override
    assert platform["prefetch"]["not_found"] == ["/nope"]
    bad = run("soci", "convert", str(img.ref), dst, "--node-compat", "v0.9", tmp=tmp_path)
    assert bad.returncode == 2 and "node_compat 'v0.9'" in bad.stderr


def test_profile_of_another_manifest_is_refused(images: ImageFactory, client) -> None:
    img = _image(images)
    other = _profile(img).__class__(**{**_profile(img).__dict__, "manifest_digest": "sha256:" + "9" * 64})
    with pytest.raises(Exception, match="recorded on manifest sha256:9999"):
        SociConverter(client, min_layer_size=SMALL, prefetch_profile=other, node_compat="v0.13").convert(
            img.ref, img.ref.with_tag("x")
        )


# ---- zTOCs whose spans cross gzip members -------------------------------------------------------------


def _two_member_layer() -> Layer:
    files = {f"data/part-{i}.bin": random_bytes(90_000, 50 + i) for i in range(4)}
    tar = tar_bytes(files)
    half = len(tar) // 2
    blob = gzip.compress(tar[:half], 6, mtime=0) + gzip.compress(tar[half:], 6, mtime=0)
    return Layer(blob, mt.OCI_LAYER_GZIP, sha256(tar), files)


def test_crossing_spans_from_the_builder_and_the_scanner_agree() -> None:
    layer = _two_member_layer()
    wide = ZtocBuilder(span_size=SPAN).build(io.BytesIO(layer.blob), layer.media_type)
    assert len(wide.gzip_member_starts) == 1
    assert list(wide.gzip_member_starts) == scan_gzip_members(
        [layer.blob[i : i + 4096] for i in range(0, len(layer.blob), 4096)]
    )
    assert crossing_spans(wide.ztoc, wide.gzip_member_starts)  # a 64 KiB span runs over the member end
    # With tiny spans a checkpoint sits right after the second header: no span crosses.
    narrow = ZtocBuilder(span_size=1024).build(io.BytesIO(layer.blob), layer.media_type)
    assert crossing_spans(narrow.ztoc, narrow.gzip_member_starts) == []
    single = gzip_layer(layer.files)
    built = ZtocBuilder(span_size=SPAN).build(io.BytesIO(single.blob), single.media_type)
    assert built.gzip_member_starts == () and crossing_spans(built.ztoc, ()) == []


@pytest.mark.parametrize("compat", ["v0.12", "v0.13"])
def test_member_spanning_ztocs_are_left_out_before_v0_14(images: ImageFactory, client, compat) -> None:
    multi = _two_member_layer()
    plain = gzip_layer({"srv/app.bin": random_bytes(200_000, 7)})
    img = images.push_image("mm/app", "1", [plain, multi])
    result = SociConverter(client, span_size=SPAN, min_layer_size=0, node_compat=compat).convert(
        img.ref, img.ref.with_tag("s")
    )
    (p,) = result.platforms
    assert [z.layer_digest for z in p.ztocs] == [plain.digest]
    (skipped,) = p.skipped_layers
    assert skipped.layer_digest == multi.digest and f"node_compat {compat} < v0.14" in skipped.reason
    assert verify_image(client, img.ref.with_tag("s"), sample=4).passed
    # A reused zTOC is gated too: build it under v0.14, then convert again under the old setting.
    built = SociConverter(client, span_size=SPAN, min_layer_size=0, node_compat="v0.14").convert(
        img.ref, img.ref.with_tag("new")
    )
    assert [z.layer_digest for z in built.platforms[0].ztocs] == [plain.digest, multi.digest]
    logs: list[str] = []
    again = SociConverter(client, span_size=SPAN, min_layer_size=0, node_compat=compat, log_fn=logs.append).convert(
        img.ref, img.ref.with_tag("again")
    )
    assert again.layers_built == 0 and [s.layer_digest for s in again.platforms[0].skipped_layers] == [multi.digest]
    # the single-member layer is proven so by two span fetches; only the two-member layer is streamed
    scanned = [line for line in logs if "scanning its gzip members" in line]
    assert len(scanned) == 1 and multi.digest in scanned[0]
    only_multi = images.push_image("mm/only", "1", [multi])
    with pytest.raises(EmptySociIndexError, match="v0.14"):
        SociConverter(client, span_size=SPAN, min_layer_size=0, node_compat=compat).convert(
            only_multi.ref, only_multi.ref.with_tag("s")
        )


def test_check_prefetch_entries_passes_our_index_and_names_what_is_wrong(images: ImageFactory, client) -> None:
    img = _image(images)
    dst = img.ref.with_tag("soci")
    result = SociConverter(
        client, span_size=SPAN, min_layer_size=SMALL, prefetch_profile=_profile(img), node_compat="v0.13"
    ).convert(img.ref, dst)
    (platform,) = result.platforms
    layers = _soci_layers(client, dst.repository, platform.soci_index_digest)
    counts = {z.layer_digest: z.spans for z in platform.ztocs}
    blobs = {d.digest: client.get_blob(dst.repository, d.digest) for d in layers}
    assert check_prefetch_entries(layers, lambda d: blobs[d.digest], counts) == []
    swapped = [layers[2], *layers[:2], *layers[3:]]
    assert any("comes before a zTOC" in p for p in check_prefetch_entries(swapped, lambda d: blobs[d.digest], counts))
    short = {**counts, img.layers[0].digest: 1}
    assert any("outside layer" in p for p in check_prefetch_entries(layers, lambda d: blobs[d.digest], short))
    twice = [*layers, layers[2]]
    assert any("only the first" in p for p in check_prefetch_entries(twice, lambda d: blobs[d.digest], counts))


def test_v1_index_holds_prefetch_after_the_ztocs_too(images: ImageFactory, client) -> None:
    img = _image(images)
    result = SociConverter(
        client,
        span_size=SPAN,
        min_layer_size=SMALL,
        format="v1",
        prefetch_files=["/app/vocab.txt"],
        node_compat="v0.13",
    ).convert(img.ref, img.ref.with_tag("v1"))
    (platform,) = result.platforms
    layers = _soci_layers(client, "pf/app", platform.soci_index_digest)
    assert [d.media_type for d in layers] == [mt.SOCI_ZTOC, mt.SOCI_ZTOC, mt.SOCI_PREFETCH]
    assert layers[2].annotations == {mt.ANNOTATION_LAYER_DIGEST: img.layers[0].digest}
    assert verify_image(client, img.ref.with_tag("v1"), sample=4, node=NodeConfig(soci_v1=True)).passed


def test_a_node_reencodes_the_index_with_prefetch_to_the_same_bytes(images: ImageFactory, client, go_reference) -> None:  # noqa: F811
    img = _image(images)
    result = SociConverter(
        client, span_size=SPAN, min_layer_size=SMALL, prefetch_profile=_profile(img), node_compat="v0.13"
    ).convert(img.ref, img.ref.with_tag("soci"))
    data = client.get_manifest("pf/app", result.platforms[0].soci_index_digest).data
    assert mt.SOCI_PREFETCH.encode() in data
    line = json.dumps({"index": base64.b64encode(data).decode()}) + "\n"
    out = subprocess.run([str(go_reference)], input=line, capture_output=True, text=True, check=True, timeout=60).stdout
    assert base64.b64decode(json.loads(out)["reencoded"]) == data
    pretty = json.dumps(json.loads(data), indent=1).encode()  # the same index, not Go-canonical: the check can fail
    line = json.dumps({"index": base64.b64encode(pretty).decode()}) + "\n"
    out = subprocess.run([str(go_reference)], input=line, capture_output=True, text=True, check=True, timeout=60).stdout
    assert base64.b64decode(json.loads(out)["reencoded"]) == data != pretty


@pytest.mark.parametrize("span", [SPAN, 4 << 20])
def test_single_member_proof_from_two_spans(span: int) -> None:
    tar = tar_bytes({"a.bin": random_bytes(300_000, 1), "b.txt": text_bytes(500_000, 2)})
    cases = {
        "single": (gzip.compress(tar, 6, mtime=0), True),
        "two members": (gzip.compress(tar[:1000], 6, mtime=0) + gzip.compress(tar[1000:], 6, mtime=0), False),
        "empty first member": (gzip.compress(b"", mtime=0) + gzip.compress(tar, mtime=0), False),
        "empty last member": (gzip.compress(tar, mtime=0) + gzip.compress(b"", mtime=0), False),  # not proven: scanned
    }
    for name, (blob, single) in cases.items():
        ztoc = ZtocBuilder(span_size=span).build(io.BytesIO(blob), mt.OCI_LAYER_GZIP).ztoc
        fetched: list[tuple[int, int]] = []
        assert proves_single_member(ztoc, lambda s, e, b=blob, f=fetched: f.append((s, e)) or b[s:e]) is single, name
        assert len(fetched) <= 2


def test_verify_cli_reads_the_profile_first_and_prints_the_cost_of_a_start(images: ImageFactory, client,
                                                                           tmp_path: Path) -> None:
    img = _image(images)
    dst = img.ref.with_tag("verify-profile")
    SociConverter(client, span_size=SPAN, min_layer_size=SMALL).convert(img.ref, dst)
    profile = _profile(img)
    path = tmp_path / "profile.json"
    path.write_text(profile.to_json())
    expected = start_cost_for_image(client, dst, profile)  # what the registry serves, computed independently
    proc = run("soci", "verify", str(dst), "--profile", str(path), "--json", tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["startup"]["to_start"] == expected.lazy.summary and doc["startup"]["to_start"].startswith("to start: ")
    assert [m["mode"] for m in doc["startup"]["modes"]] == [m["mode"] for m in expected.table()]
    files = [f for p in doc["platforms"] for f in p["files"]]
    # the profiled files in indexed layers are read, each from the layer the profile names (run.sh's layer has
    # no zTOC: a node pulls it whole)
    layer_of = {f.path.lstrip("/"): f.layer_digest for f in profile.files}
    startup = {f["name"]: f["layer_digest"] for f in files if f["why"] == "startup"}
    assert startup == {name: layer_of[name] for name in ("app/config.json", "app/model.bin")}
    plain = run("soci", "verify", str(dst), "--profile", str(path), tmp=tmp_path)  # piped: JSON; force the summary
    assert plain.returncode == 0 and json.loads(plain.stdout)["startup"]["to_start"] == expected.lazy.summary
