"""Benchmark: the cost of a start on a generated >= 1 GiB image, lazy vs prefetch (files, ranges) vs full pull.

The image has the shape issue 16 describes: a library tree (code-like text and shared objects), a
large model file of which the start reads the header and a few scattered pages, and a small app
layer (below the 10 MiB min layer size, so it has no zTOC and is fetched whole). zTOCs are built
with the real builder at 4 MiB spans; the profile is synthetic (which files and pages a start
reads), so this measures the cost model, not a recorder. Prints, side by side, the bytes, requests,
round trips and estimated seconds of each way to start, at the default network (100 MB/s, 20 ms).

Usage: python benchmarks/startup_cost.py [--model-mib 600] [--lib-mib 500] [--keep DIR]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import random
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from resources.soci.ztoc.builder import ZtocBuilder
from resources.startup.cost import ImageDocuments, ImageLayer, compare_start_costs
from resources.startup.profile import ProfiledFile

MIB = 1 << 20
PAGE = 4096
GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


def _write_layer(path: Path, files: list[tuple[str, int, int]], rnd: random.Random, text: bytes) -> None:
    """files: (name, size, kind) with kind 0 random bytes, 1 text."""
    with (
        open(path, "wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1, mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w|") as tar,
    ):
        for name, size, kind in files:
            info = tarfile.TarInfo(name)
            info.size = size
            if kind == 0:
                data = b"".join(rnd.randbytes(min(MIB, size - i)) for i in range(0, size, MIB))
            else:
                data = (text * (size // len(text) + 1))[:size]
            tar.addfile(info, io.BytesIO(data))


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(MIB), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-mib", type=int, default=600)
    parser.add_argument("--lib-mib", type=int, default=500)
    parser.add_argument("--keep", type=Path, default=None)
    args = parser.parse_args()
    rnd = random.Random(16)
    text = b" ".join(rnd.choice(b"def class return import self value config layer".split()) for _ in range(50_000))
    workdir = Path(args.keep or tempfile.mkdtemp(prefix="startup-cost-"))
    workdir.mkdir(parents=True, exist_ok=True)

    lib_files: list[tuple[str, int, int]] = []
    total = 0
    while total < args.lib_mib * MIB:
        i = len(lib_files)
        size = rnd.randint(50_000, 8 * MIB) if i % 8 == 0 else rnd.randint(500, 200_000)
        lib_files.append(
            (f"usr/lib/python3/site-packages/pkg{i // 50}/m{i}.{'so' if i % 8 == 0 else 'py'}", size, int(i % 8 != 0))
        )
        total += size
    model = [("models/weights.bin", args.model_mib * MIB, 0)]
    app = [("app/config.json", 300, 1), ("app/server.py", 40_000, 1)]
    specs = {"lib": lib_files, "model": model, "app": app}
    t0 = time.perf_counter()
    paths = {}
    for name, files in specs.items():
        paths[name] = workdir / f"{name}.tar.gz"
        if not paths[name].exists():
            _write_layer(paths[name], files, rnd, text)
    gen = time.perf_counter() - t0

    layers, ztocs = [], {}
    t0 = time.perf_counter()
    for name in specs:
        size = paths[name].stat().st_size
        digest = _digest(paths[name])
        if size >= 10 * MIB:
            with open(paths[name], "rb") as f:
                built = ZtocBuilder().build(f, GZIP)
            ztocs[name] = built.ztoc
            layers.append(ImageLayer(digest, size, built.ztoc, built.size))
        else:
            layers.append(ImageLayer(digest, size, None, 0))
    build = time.perf_counter() - t0

    # The start: the interpreter imports 1 in 10 library modules (read whole), maps 1 in 4 shared objects
    # and touches 16 pages of each, reads the model's header and 64 scattered pages, and the app files.
    pick = random.Random(7)
    files: list[ProfiledFile] = []
    t = 0.0
    for name, size, kind in lib_files:
        if kind == 1 and pick.random() < 0.1:
            files.append(ProfiledFile("/" + name, layers[0].digest, size, t, ((0, size),)))
        elif kind == 0 and pick.random() < 0.25:
            pages = sorted({pick.randrange(0, size // PAGE) for _ in range(16)})
            files.append(
                ProfiledFile(
                    "/" + name, layers[0].digest, size, t, tuple((p * PAGE, min(size, p * PAGE + PAGE)) for p in pages)
                )
            )
        t += 0.1
    msize = model[0][1]
    pages = sorted({pick.randrange(1, msize // PAGE) for _ in range(64)})
    files.append(
        ProfiledFile(
            "/models/weights.bin",
            layers[1].digest,
            msize,
            t,
            ((0, 16 * PAGE), *((p * PAGE, p * PAGE + PAGE) for p in pages)),
        )
    )
    files += [ProfiledFile("/" + n, layers[2].digest, s, t + 1, ((0, s),)) for n, s, _ in app]

    docs = ImageDocuments(manifest=1200, config=2500, soci_index=1500, image_index=800)
    t0 = time.perf_counter()
    cmp = compare_start_costs(files, layers, docs)
    model_time = time.perf_counter() - t0
    image = cmp.full_pull.image_bytes
    print(
        f"image: {image / MIB:.0f} MiB in {len(layers)} layers ({sum(1 for x in layers if x.ztoc)} with a zTOC); "
        f"profile: {len(files)} files, {sum(e - s for f in files for s, e in f.ranges) / MIB:.1f} MiB read"
    )
    print(f"{'mode':<26}{'MB to start':>12}{'% of image':>11}{'requests':>10}{'round trips':>13}{'est. s':>9}")
    for c in cmp.modes:
        print(
            f"{c.mode:<26}{c.bytes_to_start / 1e6:>12.1f}{100 * c.fraction:>10.1f}%"
            f"{c.requests:>10}{c.round_trips:>13}{c.seconds:>9.2f}"
        )
    print(cmp.summary)
    print(f"generate {gen:.1f} s, build zTOCs {build:.1f} s, cost model {model_time * 1000:.0f} ms")
    with open("/proc/loadavg") as f:
        print("loadavg:", f.read().strip())


if __name__ == "__main__":
    main()
