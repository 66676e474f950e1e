"""Benchmark: zTOC build (one pass: hash + checkpoints + TOC) vs a plain inflate of the same blob.

Generates a deterministic >= 500 MiB tar layer (many small source files, mid-size binaries, a few
large float16-like "weights"), gzips it with the stdlib at level 6, then measures in one run:

- the time of ``ZtocBuilder.build`` on the blob (read in 1 MiB chunks),
- the time of a plain single-threaded ``zlib.decompressobj(31)`` over the same chunks,
- their ratio (target <= 1.25), and
- the build's peak memory growth: tracemalloc peak, and VmHWM growth measured in a fresh
  subprocess around the call (target < 64 MiB).

Usage: python benchmarks/soci_index.py [--size-mib 512] [--rounds 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import random
import subprocess
import sys
import tarfile
import tempfile
import time
import tracemalloc
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from resources.soci.ztoc.builder import ZtocBuilder

CHUNK = 1 << 20
MIB = 1 << 20
MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
TARGET_RATIO = 1.25
TARGET_MEMORY = 64 * MIB

_WORDS = (
    b"def class return import from self if else elif for while in not and or None True False "
    b"value result config path data items key name index buffer layer span window offset "
    b"size count error raise try except finally with as yield lambda async await print "
).split()


def _source_corpus(rnd: random.Random, size: int) -> bytes:
    """A block of code-like text to slice small files from."""
    lines = []
    total = 0
    while total < size:
        indent = b"    " * rnd.randint(0, 3)
        words = b" ".join(rnd.choice(_WORDS) for _ in range(rnd.randint(2, 12)))
        line = indent + words + (b"(%d)" % rnd.randint(0, 9999) if rnd.random() < 0.4 else b"") + b"\n"
        lines.append(line)
        total += len(line)
    return b"".join(lines)


def _float16_like(rnd: random.Random, count: int) -> bytes:
    """``count`` little-endian float16-ish values: random mantissa bytes, narrow exponent bytes."""
    low = rnd.randbytes(count)
    table = bytes((0x30 + (b % 16)) | (0x80 if b & 0x80 else 0) for b in range(256))
    high = rnd.randbytes(count).translate(table)
    out = bytearray(2 * count)
    out[0::2] = low
    out[1::2] = high
    return bytes(out)


def generate_layer(path: Path, size_mib: int, seed: int = 20260101) -> int:
    """Write a gzip (level 6) tar layer of about ``size_mib`` MiB uncompressed; returns that size."""
    rnd = random.Random(seed)
    corpus = _source_corpus(rnd, 8 * MIB)
    target = size_mib * MIB
    written = 0
    with path.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:

            def add(name: str, data: bytes) -> None:
                nonlocal written
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mtime = 1_700_000_000
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(data))
                written += len(data) + 512

            weights = 0
            while written < target:
                roll = rnd.random()
                if roll < 0.0006 and weights < 4:  # a few large semi-compressible weight files
                    weights += 1
                    add(
                        f"models/weights_{weights}.safetensors",
                        _float16_like(rnd, rnd.randint(24, 48) * MIB // 2),
                    )
                elif roll < 0.04:  # mid-size binaries (shared objects, images)
                    size = rnd.randint(64 * 1024, 4 * MIB)
                    half = rnd.randbytes(size // 2)
                    add(f"usr/lib/lib{rnd.randrange(10**6)}.so", half + corpus[: size - len(half)])
                else:  # many small source and text files
                    size = int(rnd.expovariate(1 / 6000)) + 1
                    start = rnd.randrange(len(corpus) - size)
                    add(
                        f"app/src/pkg{rnd.randrange(200)}/mod{rnd.randrange(10**6)}.py",
                        corpus[start : start + size],
                    )
    return written


def time_plain_inflate(path: Path) -> tuple[float, float]:
    """(wall, CPU) seconds for a single-threaded zlib inflate of the blob, read in CHUNK pieces."""
    start, cpu = time.perf_counter(), time.process_time()
    inflater = zlib.decompressobj(31)
    total = 0
    with path.open("rb") as blob:
        while chunk := blob.read(CHUNK):
            total += len(inflater.decompress(chunk))
    total += len(inflater.flush())
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    assert inflater.eof and total > 0
    return elapsed, cpu


def time_build(path: Path) -> tuple[float, float, float, dict[str, int]]:
    """(wall, process CPU, main-thread CPU) seconds for ZtocBuilder.build, plus facts about the result."""
    start, cpu, main = time.perf_counter(), time.process_time(), time.thread_time()
    with path.open("rb") as blob:
        built = ZtocBuilder().build(blob, MEDIA_TYPE)
    elapsed, cpu, main = time.perf_counter() - start, time.process_time() - cpu, time.thread_time() - main
    facts = {
        "entries": len(built.ztoc.entries),
        "spans": built.ztoc.compression.max_span_id + 1,
        "ztoc_bytes": built.size,
        "compressed": built.compressed_size,
        "uncompressed": built.decompressed_size,
    }
    return elapsed, cpu, main, facts


def _vm_hwm() -> int:
    """Peak resident set size of this process (bytes), from /proc/self/status."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("VmHWM not found")


def measure_memory_child(path: str) -> None:
    """(Subprocess) VmHWM growth around one build, then tracemalloc peak of a second build."""
    with open(path, "rb") as blob:  # warm imports and allocator state with a tiny read
        blob.read(1)
    before = _vm_hwm()
    with open(path, "rb") as blob:
        ZtocBuilder().build(blob, MEDIA_TYPE)
    hwm_growth = _vm_hwm() - before
    tracemalloc.start()
    with open(path, "rb") as blob:
        ZtocBuilder().build(blob, MEDIA_TYPE)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(json.dumps({"vmhwm_growth": hwm_growth, "tracemalloc_peak": peak}))


def _seconds(times: list[float]) -> str:
    """Comma-separated timings."""
    return ", ".join(f"{t:.3f}" for t in times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="reuse/keep the generated layer in this directory")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        measure_memory_child(args.memory_child)
        return 0

    with tempfile.TemporaryDirectory(prefix="soci-bench-") as tmp:
        directory = args.keep or Path(tmp)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"layer-{args.size_mib}MiB.tar.gz"
        if not path.exists():
            started = time.perf_counter()
            size = generate_layer(path, args.size_mib)
            print(
                f"generated {size / MIB:.0f} MiB tar -> {path.stat().st_size / MIB:.0f} MiB gzip "
                f"in {time.perf_counter() - started:.1f}s"
            )
        path.read_bytes()  # page cache

        inflate_times, build_times, inflate_cpu, build_cpu, build_main = [], [], [], [], []
        facts: dict[str, int] = {}
        for _ in range(args.rounds):  # interleaved, best of N: the machine is shared
            wall, cpu = time_plain_inflate(path)
            inflate_times.append(wall)
            inflate_cpu.append(cpu)
            wall, cpu, main, facts = time_build(path)
            build_times.append(wall)
            build_cpu.append(cpu)
            build_main.append(main)
        inflate, build = min(inflate_times), min(build_times)
        print(
            f"layer: {facts['compressed'] / MIB:.1f} MiB gzip, {facts['uncompressed'] / MIB:.1f} MiB tar, "
            f"{facts['entries']} entries, {facts['spans']} spans, zTOC {facts['ztoc_bytes'] / MIB:.2f} MiB"
        )
        print(f"plain inflate (zlib.decompressobj(31)): {inflate:.3f}s  (all: {_seconds(inflate_times)})")
        print(f"ZtocBuilder.build:                      {build:.3f}s  (all: {_seconds(build_times)})")
        ratio = build / inflate
        print(f"ratio build/inflate (wall, best of {args.rounds}): {ratio:.3f}  (target <= {TARGET_RATIO})")
        print(
            f"CPU seconds: inflate {min(inflate_cpu):.3f}; build main thread {min(build_main):.3f} "
            f"(ratio {min(build_main) / min(inflate_cpu):.3f}), build all threads {min(build_cpu):.3f} "
            f"(ratio {min(build_cpu) / min(inflate_cpu):.3f}; sha256/CRC32 run on a second thread)"
        )
        print(
            f"load average during the run: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs "
            "(wall-clock ratios are only meaningful on an idle machine)"
        )

        child = subprocess.run(
            [sys.executable, __file__, "--memory-child", str(path)],
            capture_output=True,
            text=True,
            check=True,
        )
        memory = json.loads(child.stdout.strip().splitlines()[-1])
        print(
            f"peak memory growth of build: VmHWM +{memory['vmhwm_growth'] / MIB:.1f} MiB, "
            f"tracemalloc peak {memory['tracemalloc_peak'] / MIB:.1f} MiB  "
            f"(target < {TARGET_MEMORY // MIB} MiB)"
        )
        ok = ratio <= TARGET_RATIO and max(memory.values()) < TARGET_MEMORY
        print("PASS" if ok else "FAIL")
        return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
