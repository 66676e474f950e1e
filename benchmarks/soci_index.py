"""Benchmark: zTOC build (one pass: hash + checkpoints + TOC) vs a plain baseline of the same blob.

Generates deterministic (seeded) >= 500 MiB layers in a temp dir on disk, four shapes:

- ``gzip-large``: source files, mid-size binaries and a few large float16-like "weights", gzip
  level 6 (the original shape); baseline a single-threaded ``zlib.decompressobj(31)``;
- ``tar``: the same tar, uncompressed; baseline reading the blob and hashing it with sha256;
- ``gzip-small``: >= 50,000 small text files; baseline inflate;
- ``gzip-200k``: 200,000 tiny files; baseline inflate; here the peak memory growth counts.

For each shape, in one run, interleaved and best of N: wall and CPU seconds (user+sys of all
threads, ``time.process_time``) of ``ZtocBuilder.build`` and of its baseline, their ratios, and
the build's peak memory growth (VmHWM growth in a fresh subprocess around the call, and the
tracemalloc peak of a second build). The first block of output keeps the original report for
``gzip-large``; a table at the end prints every ratio next to its target.

Usage: python benchmarks/soci_index.py [--size-mib 512] [--rounds 3] [--keep DIR] [--shapes a,b]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
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
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from resources.soci.ztoc.builder import ZtocBuilder
from resources.soci.ztoc.zlib_ctypes import InflateLibrary, inflate_library, system_zlib

zlib_ng: object | None
try:
    import zlib_ng.zlib_ng as zlib_ng
except ImportError:  # the build then runs on the system zlib too
    zlib_ng = None

LIBRARY = inflate_library()
CHUNK = 1 << 20
MIB = 1 << 20
MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
TAR_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar"
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


def generate_layer(path: Path, size_mib: int, seed: int = 20260101, compress: bool = True) -> int:
    """Write a tar layer of about ``size_mib`` MiB uncompressed (gzip level 6 when ``compress``);
    returns that size."""
    rnd = random.Random(seed)
    corpus = _source_corpus(rnd, 8 * MIB)
    target = size_mib * MIB
    written = 0
    with path.open("wb") as raw, _MaybeGzip(raw, compress) as out:
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:

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


def generate_small_files(path: Path, size_mib: int, files: int, mean: int, seed: int) -> int:
    """A gzip layer of at least ``files`` small text files and ``size_mib`` MiB of tar (ustar, as
    Go's writer emits for short names); returns the tar size."""
    rnd = random.Random(seed)
    corpus = _source_corpus(rnd, 8 * MIB)
    target = size_mib * MIB
    written = count = 0
    with path.open("wb") as raw, _MaybeGzip(raw, True) as out:
        with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            while written < target or count < files:
                size = min(int(rnd.expovariate(1 / mean)), 64 * 1024)
                start = rnd.randrange(len(corpus) - size)
                info = tarfile.TarInfo(f"usr/share/doc/pkg{rnd.randrange(500)}/file{count:06d}.txt")
                info.size, info.mtime, info.mode = size, 1_700_000_000, 0o644
                tar.addfile(info, io.BytesIO(corpus[start : start + size]))
                written += 512 + size + (-size % 512)
                count += 1
    return written


class _MaybeGzip:
    """A level-6 GzipFile (mtime 0) around ``raw``, or ``raw`` itself."""

    def __init__(self, raw: io.BufferedWriter, compress: bool) -> None:
        self._gz = gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) if compress else None
        self._raw = raw

    def __enter__(self) -> io.BufferedWriter | gzip.GzipFile:
        return self._gz if self._gz is not None else self._raw

    def __exit__(self, *exc: object) -> None:
        if self._gz is not None:
            self._gz.close()


@dataclass(frozen=True)
class Shape:
    """One benchmarked layer shape: file name, media type, baseline, targets."""

    name: str
    media_type: str
    baseline: str  # "inflate" or "sha256"
    cpu_target: float | None
    wall_target: float | None
    memory_target: int | None

    def generate(self, path: Path, size_mib: int) -> int:
        if self.name == "gzip-large":
            return generate_layer(path, size_mib)
        if self.name == "tar":
            return generate_layer(path, size_mib, compress=False)
        if self.name == "gzip-small":
            return generate_small_files(path, size_mib, files=50_000, mean=9_800, seed=7)
        return generate_small_files(path, size_mib, files=200_000, mean=2_000, seed=8)


SHAPES = {
    s.name: s
    for s in (
        Shape("gzip-large", MEDIA_TYPE, "inflate", 1.2, 1.0, TARGET_MEMORY),
        Shape("tar", TAR_MEDIA_TYPE, "sha256", 1.3, None, TARGET_MEMORY),
        Shape("gzip-small", MEDIA_TYPE, "inflate", 1.3, None, None),
        Shape("gzip-200k", MEDIA_TYPE, "inflate", None, None, 100 * MIB),
    )
}


def time_plain_inflate(path: Path, module: object = zlib) -> tuple[float, float]:
    """(wall, CPU) seconds for a single-threaded inflate of the blob (``module``: zlib or zlib_ng), in CHUNK pieces."""
    start, cpu = time.perf_counter(), time.process_time()
    inflater = module.decompressobj(31)  # type: ignore[attr-defined]
    total = 0
    with path.open("rb") as blob:
        while chunk := blob.read(CHUNK):
            total += len(inflater.decompress(chunk))
    total += len(inflater.flush())
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    assert inflater.eof and total > 0
    return elapsed, cpu


def time_read_sha256(path: Path) -> tuple[float, float]:
    """(wall, CPU) seconds for reading the blob in CHUNK pieces and hashing it with sha256."""
    start, cpu = time.perf_counter(), time.process_time()
    digest = hashlib.sha256()
    with path.open("rb") as blob:
        while chunk := blob.read(CHUNK):
            digest.update(chunk)
    digest.hexdigest()
    return time.perf_counter() - start, time.process_time() - cpu


def time_build(
    path: Path, media_type: str = MEDIA_TYPE, verified_digest: str | None = None, library: InflateLibrary | None = None
) -> tuple[float, float, float, dict[str, int]]:
    """(wall, process CPU, main-thread CPU) seconds for ZtocBuilder.build, plus facts about the result.

    With ``verified_digest`` the build runs as convert runs it: the registry client verifies the
    blob digest while streaming, so the builder does not hash the whole blob again.
    """
    start, cpu, main = time.perf_counter(), time.process_time(), time.thread_time()
    with path.open("rb") as blob:
        built = ZtocBuilder(library=library).build(blob, media_type, verified_digest=verified_digest)
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


def measure_memory_child(path: str, media_type: str) -> None:
    """(Subprocess) VmHWM growth around one build, then tracemalloc peak of a second build."""
    with open(path, "rb") as blob:  # warm imports and allocator state with a tiny read
        blob.read(1)
    before = _vm_hwm()
    with open(path, "rb") as blob:
        built = ZtocBuilder().build(blob, media_type)
    hwm_growth = _vm_hwm() - before
    del built
    tracemalloc.start()
    with open(path, "rb") as blob:
        ZtocBuilder().build(blob, media_type)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(json.dumps({"vmhwm_growth": hwm_growth, "tracemalloc_peak": peak}))


def _seconds(times: list[float]) -> str:
    """Comma-separated timings."""
    return ", ".join(f"{t:.3f}" for t in times)


@dataclass
class Result:
    """Best-of-N figures of one shape."""

    shape: Shape
    facts: dict[str, int]
    base_wall: float
    base_cpu: float
    build_wall: float
    build_cpu: float
    build_main: float
    memory: dict[str, int]
    own_wall: float  # the build hashing the whole blob itself (no verified_digest)
    own_cpu: float
    ng_base_cpu: float | None = None  # zlib_ng.decompressobj(31): the same inflater the build uses
    zlib_build_cpu: float | None = None  # the build on the system zlib (STREAMABLE_INFLATE_LIBRARY=zlib)
    zlib_build_wall: float | None = None

    @property
    def cpu_ratio(self) -> float:
        return self.build_cpu / self.base_cpu

    @property
    def wall_ratio(self) -> float:
        return self.build_wall / self.base_wall

    @property
    def own_cpu_ratio(self) -> float:
        return self.own_cpu / self.base_cpu

    def ok(self) -> bool:
        s = self.shape
        return (
            (s.cpu_target is None or self.cpu_ratio <= s.cpu_target)
            and (s.wall_target is None or self.wall_ratio <= s.wall_target)
            and (s.memory_target is None or max(self.memory.values()) < s.memory_target)
        )


def run_shape(shape: Shape, directory: Path, size_mib: int, rounds: int) -> Result:
    """Generate (or reuse) the shape's layer and measure build vs baseline, interleaved."""
    suffix = ".tar" if shape.media_type == TAR_MEDIA_TYPE else ".tar.gz"
    path = directory / f"layer-{shape.name}-{size_mib}MiB{suffix}"
    if not path.exists():
        started = time.perf_counter()
        size = shape.generate(path, size_mib)
        print(
            f"[{shape.name}] generated {size / MIB:.0f} MiB tar -> {path.stat().st_size / MIB:.0f} MiB blob "
            f"in {time.perf_counter() - started:.1f}s"
        )
    path.read_bytes()  # page cache
    baseline = time_plain_inflate if shape.baseline == "inflate" else time_read_sha256
    digest = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()  # what the registry client checks
    base_walls, base_cpus, walls, cpus, mains, own_walls, own_cpus = [], [], [], [], [], [], []
    ng_cpus, zlib_walls, zlib_cpus = [], [], []
    facts: dict[str, int] = {}
    gzip_shape = shape.baseline == "inflate"
    for _ in range(rounds):  # interleaved, best of N: the machine is shared
        wall, cpu = baseline(path)
        base_walls.append(wall)
        base_cpus.append(cpu)
        if gzip_shape and zlib_ng is not None:
            ng_cpus.append(time_plain_inflate(path, zlib_ng)[1])
        if gzip_shape and LIBRARY.name != "zlib":
            wall, cpu, _, _ = time_build(path, shape.media_type, verified_digest=digest, library=system_zlib())
            zlib_walls.append(wall)
            zlib_cpus.append(cpu)
        wall, cpu, main, facts = time_build(path, shape.media_type, verified_digest=digest)
        walls.append(wall)
        cpus.append(cpu)
        mains.append(main)
        wall, cpu, _, _ = time_build(path, shape.media_type)
        own_walls.append(wall)
        own_cpus.append(cpu)
    child = subprocess.run(
        [sys.executable, __file__, "--memory-child", str(path), "--media-type", shape.media_type],
        capture_output=True,
        text=True,
        check=True,
    )
    memory = json.loads(child.stdout.strip().splitlines()[-1])
    result = Result(
        shape, facts, min(base_walls), min(base_cpus), min(walls), min(cpus), min(mains), memory,
        min(own_walls), min(own_cpus), min(ng_cpus, default=None), min(zlib_cpus, default=None),
        min(zlib_walls, default=None),
    )  # fmt: skip
    print(
        f"[{shape.name}] layer: {facts['compressed'] / MIB:.1f} MiB blob, {facts['uncompressed'] / MIB:.1f} MiB tar, "
        f"{facts['entries']} entries, {facts['spans']} spans, zTOC {facts['ztoc_bytes'] / MIB:.2f} MiB"
    )
    label = "plain inflate (zlib.decompressobj(31))" if shape.baseline == "inflate" else "read + sha256          "
    print(
        f"[{shape.name}] {label}: wall {result.base_wall:.3f}s (all: {_seconds(base_walls)}), "
        f"CPU {result.base_cpu:.3f}s"
    )
    print(
        f"[{shape.name}] ZtocBuilder.build:                      wall {result.build_wall:.3f}s "
        f"(all: {_seconds(walls)}), "
        f"CPU {result.build_cpu:.3f}s (main thread {result.build_main:.3f}s; layer digest verified by the caller, "
        "as convert runs it)"
    )
    print(
        f"[{shape.name}] ZtocBuilder.build, own layer digest:    wall {result.own_wall:.3f}s "
        f"(all: {_seconds(own_walls)}), "
        f"CPU {result.own_cpu:.3f}s (one more sha256 pass over the blob)"
    )
    if result.ng_base_cpu is not None:
        print(
            f"[{shape.name}] plain inflate (zlib_ng.decompressobj(31)): CPU {result.ng_base_cpu:.3f}s; "
            f"build / same inflater = {result.build_cpu / result.ng_base_cpu:.3f}"
        )
    if result.zlib_build_cpu is not None and result.zlib_build_wall is not None:
        print(
            f"[{shape.name}] ZtocBuilder.build on the system zlib:   wall {result.zlib_build_wall:.3f}s, "
            f"CPU {result.zlib_build_cpu:.3f}s (ratio to zlib inflate {result.zlib_build_cpu / result.base_cpu:.3f})"
        )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="reuse/keep the generated layers in this directory")
    parser.add_argument("--shapes", default=",".join(SHAPES), help=f"comma-separated subset of {','.join(SHAPES)}")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    parser.add_argument("--media-type", default=MEDIA_TYPE, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        measure_memory_child(args.memory_child, args.media_type)
        return 0

    print(f"inflate library: {LIBRARY.describe()} (system zlib {system_zlib().version}; "
          "STREAMABLE_INFLATE_LIBRARY=zlib forces the system one)")
    # On disk (not /dev/shm): the default temp dir unless TMPDIR says otherwise.
    with tempfile.TemporaryDirectory(prefix="soci-bench-", dir=os.environ.get("TMPDIR", "/var/tmp")) as tmp:
        directory = args.keep or Path(tmp)
        directory.mkdir(parents=True, exist_ok=True)
        results = [run_shape(SHAPES[name], directory, args.size_mib, args.rounds) for name in args.shapes.split(",")]

    for r in results:
        if r.shape.name != "gzip-large":
            continue
        # The original report (README's benchmark table refers to it).
        ratio = r.wall_ratio
        print(f"plain inflate (zlib.decompressobj(31)): {r.base_wall:.3f}s")
        print(f"ZtocBuilder.build:                      {r.build_wall:.3f}s")
        print(f"ratio build/inflate (wall, best of {args.rounds}): {ratio:.3f}  (target <= {TARGET_RATIO})")
        print(
            f"CPU seconds: inflate {r.base_cpu:.3f}; build main thread {r.build_main:.3f} "
            f"(ratio {r.build_main / r.base_cpu:.3f}), build all threads {r.build_cpu:.3f} "
            f"(ratio {r.cpu_ratio:.3f}; sha256/CRC32 run on a second thread)"
        )
        print(
            f"peak memory growth of build: VmHWM +{r.memory['vmhwm_growth'] / MIB:.1f} MiB, "
            f"tracemalloc peak {r.memory['tracemalloc_peak'] / MIB:.1f} MiB  "
            f"(target < {TARGET_MEMORY // MIB} MiB)"
        )

    def target(value: float | None, fmt: str = "{:.2f}") -> str:
        return "-" if value is None else "<= " + fmt.format(value)

    print()
    print(f"{'shape':<11} {'entries':>8} {'CPU build/base':>22} {'target':>8} {'wall build/base':>22} {'target':>8} "
          f"{'VmHWM +MiB':>10} {'tracemalloc':>11} {'target':>8}  ok  {'CPU own digest/base':>22}")
    for r in results:
        mem_target = "-" if r.shape.memory_target is None else f"< {r.shape.memory_target // MIB}"
        print(
            f"{r.shape.name:<11} {r.facts['entries']:>8} "
            f"{f'{r.build_cpu:.2f}/{r.base_cpu:.2f} = {r.cpu_ratio:.3f}':>22} {target(r.shape.cpu_target):>8} "
            f"{f'{r.build_wall:.2f}/{r.base_wall:.2f} = {r.wall_ratio:.3f}':>22} {target(r.shape.wall_target):>8} "
            f"{r.memory['vmhwm_growth'] / MIB:>10.1f} {r.memory['tracemalloc_peak'] / MIB:>11.1f} {mem_target:>8}  "
            f"{'yes' if r.ok() else 'NO ':<3} {f'{r.own_cpu:.2f}/{r.base_cpu:.2f} = {r.own_cpu_ratio:.3f}':>22}"
        )
    print("baselines: gzip shapes = single-threaded zlib.decompressobj(31); tar = read + sha256 of the blob")
    print(
        "build = ZtocBuilder.build with verified_digest (convert: the registry client verifies the blob digest "
        "while streaming); 'own digest' = the builder also hashes the whole blob (CLI, no verifying caller)"
    )
    print(
        f"load average during the run: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs "
        "(wall-clock ratios are only meaningful on an idle machine; CPU ratios count all threads)"
    )
    ok = all(r.ok() for r in results)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
