"""Layers indexed in parallel give exactly what the sequential path gives (real registry, real builds)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from resources.oci import media_types as mt
from resources.oci.refs import ImageRef
from resources.registry import RegistryClient
from resources.soci.convert import ConvertResult, LayerIndexError, SociConverter
from resources.soci.parallel import (
    LayerBuilds,
    LayerJob,
    ParallelSettingError,
    prefetched,
    start_layer_builds,
)

from .conftest import (
    ImageFactory,
    Layer,
    gzip_layer,
    random_bytes,
    sha256,
    tar_layer,
    text_bytes,
)

SMALL = 1024


def _layers(seed: int) -> list[Layer]:
    return [
        gzip_layer({"a/big.bin": random_bytes(700_000, seed), "a/t.txt": text_bytes(200_000, seed + 1)}),
        tar_layer({"b/raw.bin": random_bytes(300_000, seed + 2)}),
        gzip_layer({"c/x.bin": random_bytes(500_000, seed + 3)}, level=1),
        gzip_layer({"d/tiny": b"small"}),  # below SMALL: skipped
        gzip_layer({"e/y.bin": random_bytes(400_000, seed + 4), "e/z.txt": text_bytes(90_000, seed + 5)}),
    ]


def _convert(client: RegistryClient, src: ImageRef, dst_repo: str, parallel: int, **kw: object) -> ConvertResult:
    dst = ImageRef(src.registry, dst_repo, "1-soci")
    return SociConverter(client, min_layer_size=SMALL, span_size=65536, max_parallel_layers=parallel, **kw).convert(
        src, dst
    )


def _snapshot(client: RegistryClient, result: ConvertResult, repo: str) -> dict[str, bytes]:
    """Every manifest and zTOC blob the conversion pushed, by digest."""
    out = {result.image_digest: client.get_manifest(repo, result.image_digest).data}
    for p in result.platforms:
        out[p.manifest_digest] = client.get_manifest(repo, p.manifest_digest).data
        if p.soci_index_digest:
            out[p.soci_index_digest] = client.get_manifest(repo, p.soci_index_digest).data
        for row in p.ztocs:
            out[row.ztoc_digest] = client.get_blob(repo, row.ztoc_digest)
    return out


def _comparable(result: ConvertResult) -> dict[str, object]:
    d = result.to_dict()
    d.pop("destination")
    return d


def test_parallel_equals_sequential_on_a_multi_layer_image(images: ImageFactory, client: RegistryClient) -> None:
    src = images.push_image("par/src", "1", _layers(10)).ref
    seq = _convert(client, src, "par/seq", 1)
    par = _convert(client, src, "par/par", 4)
    assert seq.layers_built == par.layers_built == 4 and seq.layers_reused == par.layers_reused == 0
    assert _comparable(seq) == _comparable(par)
    assert _snapshot(client, seq, "par/seq") == _snapshot(client, par, "par/par")
    assert [r.layer_digest for r in par.platforms[0].ztocs] == [
        layer.digest for i, layer in enumerate(_layers(10)) if i != 3
    ]


def test_parallel_equals_sequential_on_a_multi_platform_image_sharing_layers(images: ImageFactory,
                                                                             client: RegistryClient) -> None:
    shared = gzip_layer({"base/lib.so": random_bytes(600_000, 70)})
    amd = images.push_image("mp/src", None, [shared, gzip_layer({"bin/app": random_bytes(300_000, 71)})])
    arm = images.push_image("mp/src", None, [shared, gzip_layer({"bin/app": random_bytes(310_000, 72)})],
                            platform=("linux", "arm64", "v8"))
    src = images.push_index("mp/src", "1", [amd, arm]).ref
    seq = _convert(client, src, "mp/seq", 1, all_platforms=True)
    par = _convert(client, src, "mp/par", 3, all_platforms=True)
    assert _comparable(seq) == _comparable(par)
    assert _snapshot(client, seq, "mp/seq") == _snapshot(client, par, "mp/par")
    # The shared base layer is built once and reused for the second platform, in both modes.
    assert par.layers_built == 3 and par.layers_reused == 1
    assert [r.reused for p in par.platforms for r in p.ztocs] == [False, False, True, False]


def test_prebuilder_plans_each_layer_once_and_skips_reusable_ones(images: ImageFactory, client: RegistryClient) -> None:
    shared = gzip_layer({"base/lib.so": random_bytes(200_000, 80)})
    own = gzip_layer({"bin/app": random_bytes(200_000, 81)})
    amd = images.push_image("plan/app", None, [shared, own])
    arm = images.push_image("plan/app", None, [shared, gzip_layer({"bin/app": random_bytes(210_000, 82)})],
                            platform=("linux", "arm64", "v8"))
    src = images.push_index("plan/app", "1", [amd, arm]).ref
    first = images.push_image("plan/app", "base", [shared, own]).ref
    _convert(client, first, "plan/app", 1)  # `shared` and `own` now have zTOCs in plan/app
    conv = SociConverter(client, min_layer_size=SMALL, span_size=65536, max_parallel_layers=2, all_platforms=True)
    image = conv._load(src)
    selected = conv._select(src, image)
    plans = {img.raw.digest: conv._plan(src, img) for img in selected}
    builds = start_layer_builds(conv, src, "plan/app", selected, plans)
    assert builds is None  # only one layer (arm's bin/app) lacks a zTOC: nothing to run ahead of the loop
    conv2 = SociConverter(client, min_layer_size=SMALL, span_size=65536, max_parallel_layers=2, all_platforms=True)
    builds = start_layer_builds(conv2, src, "plan/fresh", selected, plans)
    assert builds is not None
    try:
        assert builds.planned == [shared.digest, own.digest, arm.layers[1].digest]
    finally:
        builds.close()


def test_corrupt_layer_in_parallel_names_the_layer_and_tags_nothing(
    images: ImageFactory, client: RegistryClient
) -> None:
    good = gzip_layer({"ok.bin": random_bytes(300_000, 90)})
    blob = bytearray(gzip_layer({"bad.bin": random_bytes(300_000, 91)}).blob)
    blob[len(blob) // 2] ^= 0xFF
    bad = Layer(bytes(blob), mt.OCI_LAYER_GZIP, sha256(b""), {})
    src = images.push_image("pbad/app", "1", [good, bad, gzip_layer({"after.bin": random_bytes(300_000, 92)})]).ref
    with pytest.raises(LayerIndexError) as err:
        _convert(client, src, "pbad/app", 3)
    assert bad.digest in str(err.value) and str(src) in str(err.value)
    assert images.tags("pbad/app") == ["1"]


def test_layer_builds_run_at_once_up_to_the_limit() -> None:
    running, peak, lock = 0, 0, threading.Lock()
    barrier = threading.Barrier(2, timeout=10)

    def build(name: str) -> str:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        if name in ("a", "b"):
            barrier.wait()  # only passes when a and b run at the same time
        time.sleep(0.01)
        with lock:
            running -= 1
        return name.upper()

    jobs = [LayerJob(n, (n,)) for n in "abcdef"] + [LayerJob("a", ("a",))]
    with LayerBuilds(build, jobs, 2) as builds:
        assert builds.planned == list("abcdef")
        assert [builds.result(n, (n,)) for n in "abcdef"] == list("ABCDEF")
        assert builds.result("zz", ("zz",)) == "ZZ"  # not planned: built on the caller's thread
    assert peak == 2


def test_running_builds_are_counted_and_busy_cores_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    both = threading.Barrier(3, timeout=10)
    release = threading.Event()

    def build(name: str) -> str:
        both.wait()  # a and b run, and the test thread looks
        release.wait(10)
        return name

    with LayerBuilds(build, [LayerJob(n, (n,)) for n in "ab"], 4) as builds:
        both.wait()
        assert builds.running == 2 and builds.cores_busy()
        release.set()
        assert [builds.result(n, (n,)) for n in "ab"] == ["a", "b"]
        assert builds.running == 0 and not builds.cores_busy()


def test_layer_build_error_surfaces_at_its_layer() -> None:
    def build(name: str) -> str:
        if name == "b":
            raise ValueError("layer b is corrupt")
        return name

    with LayerBuilds(build, [LayerJob(n, (n,)) for n in "abc"], 3) as builds:
        assert builds.result("a", ("a",)) == "a"
        with pytest.raises(ValueError, match="layer b is corrupt"):
            builds.result("b", ("b",))


def test_prefetched_reads_ahead_boundedly_and_passes_errors() -> None:
    produced: list[int] = []
    closed_on: list[str] = []

    def source(n: int, fail_at: int | None = None) -> Iterator[bytes]:
        try:
            for i in range(n):
                if i == fail_at:
                    raise OSError(f"connection reset at chunk {i}")
                produced.append(i)
                yield bytes([i % 256]) * 10
        finally:
            closed_on.append(threading.current_thread().name)

    gen = source(100)
    with prefetched(gen, depth=3) as chunks:
        first = next(chunks)
        time.sleep(0.2)
        assert first == b"\x00" * 10
        assert len(produced) <= 1 + 3 + 1  # the one taken, a full queue, one blocked in put
    gen.close()  # the reader thread has stopped: the owner closes the source on its own thread (no "already executing")
    assert closed_on == [threading.current_thread().name]
    closed_on.clear()
    produced.clear()
    with prefetched(source(10, fail_at=5), depth=2) as chunks:
        got: list[bytes] = []
        with pytest.raises(OSError, match="chunk 5"):
            got.extend(chunks)
        assert len(got) == 5
    with prefetched(source(7), depth=2) as chunks:
        assert sum(len(c) for c in chunks) == 70


def test_bad_parallel_setting_is_refused() -> None:
    with pytest.raises(ParallelSettingError, match="max_parallel_layers"):
        SociConverter(RegistryClient("127.0.0.1:9"), max_parallel_layers=1000)


def test_cli_parallel_flag_gives_the_same_image(images: ImageFactory, client: RegistryClient,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    import io
    import json

    from resources.cli import main

    src = images.push_image("cli/src", "1", _layers(30)).ref
    digests = []
    for n, repo in ((1, "cli/one"), (3, "cli/three")):
        out, err = io.StringIO(), io.StringIO()
        code = main(["soci", "convert", str(src), f"{src.registry}/{repo}:1-soci", "--parallel", str(n),
                     "--min-layer-size", str(SMALL), "--span-size", "65536"], out, err)
        assert code == 0, err.getvalue()
        digests.append(json.loads(out.getvalue())["image_digest"])
    assert digests[0] == digests[1]
    with pytest.raises(SystemExit) as exc:
        main(["soci", "convert", str(src), f"{src.registry}/cli/x:1", "--parallel", "0"], io.StringIO(), io.StringIO())
    assert exc.value.code == 2 and "--parallel" in capsys.readouterr().err
