"""Benchmark: span size advice from one pass vs five real zTOC builds; member scan vs a build.

Generates a deterministic gzip layer (code-like text, binaries, a large "weights" file), then, in
one run, measures:

- `measure_layer` (one pass recording every deflate block boundary) + `advise_span_size` over the
  five span sizes 512 KiB .. 8 MiB, against building a real zTOC at each of the five sizes; checks
  that both give the same zTOC sizes, and prints the ratio;
- `scan_gzip_members` (what convert runs for a reused gzip zTOC under node_compat < v0.14) against
  one `ZtocBuilder.build` at 4 MiB.

Usage: python benchmarks/span_advice.py [--size-mib 256]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import random
import sys
import tarfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from resources.soci.ztoc.builder import ZtocBuilder
from resources.soci.ztoc.members import scan_gzip_members
from resources.startup.profile import ProfiledFile
from resources.startup.span_advice import SPAN_SIZES, advise_span_size, measure_layer

MIB = 1 << 20
CHUNK = 1 << 20
MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"


def _layer(size_mib: int) -> bytes:
    rnd = random.Random(16)
    words = b"def class return import self value result config layer span window offset size".split()
    text = b" ".join(rnd.choice(words) for _ in range(400_000))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        total, i = 0, 0
        while total < size_mib * MIB:
            kind = i % 10
            data = rnd.randbytes(4 * MIB) if kind == 0 else text[: rnd.randint(2_000, 2 * MIB)]
            info = tarfile.TarInfo(f"app/lib/f{i:05d}.{'bin' if kind == 0 else 'py'}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
            total += len(data)
            i += 1
    return gzip.compress(buf.getvalue(), 6, mtime=0)


def _chunks(blob: bytes):
    return (blob[i : i + CHUNK] for i in range(0, len(blob), CHUNK))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    args = parser.parse_args()
    blob = _layer(args.size_mib)
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    print(f"layer: {len(blob) / MIB:.1f} MiB compressed from ~{args.size_mib} MiB of tar")

    t0 = time.perf_counter()
    measured = measure_layer(digest, MEDIA_TYPE, _chunks(blob))
    name = measured.entries[1].name
    files = [ProfiledFile("/" + name, digest, measured.entries[1].uncompressed_size, 0.0, ((0, 4096),))]
    advice = advise_span_size([measured], files, ztoc_budget=10**12)
    one_pass = time.perf_counter() - t0

    t0 = time.perf_counter()
    real = {s: ZtocBuilder(span_size=s).build(_chunks(blob), MEDIA_TYPE).size for s in SPAN_SIZES}
    five_builds = time.perf_counter() - t0
    assert {o.span_size: o.ztoc_bytes for o in advice.options} == real, "one-pass zTOC sizes differ from real builds"

    t0 = time.perf_counter()
    members = scan_gzip_members(_chunks(blob))
    scan = time.perf_counter() - t0
    t0 = time.perf_counter()
    ZtocBuilder(span_size=4 * MIB).build(_chunks(blob), MEDIA_TYPE)
    build = time.perf_counter() - t0

    for row in advice.table():
        print(
            f"  span {row['span_size'] // 1024:>5} KiB: zTOC {row['ztoc_bytes']:>9} bytes, "
            f"bytes to start {row['bytes_to_start']:>9}"
        )
    print(f"advice, one pass + 5 span sizes: {one_pass:.2f} s")
    print(f"five real builds:                {five_builds:.2f} s   ratio {five_builds / one_pass:.2f}x")
    print(f"member scan ({len(members)} later members): {scan:.2f} s")
    print(f"one build at 4 MiB:              {build:.2f} s   scan/build {scan / build:.2f}")
    with open("/proc/loadavg") as f:
        print("loadavg:", f.read().strip())


if __name__ == "__main__":
    main()
