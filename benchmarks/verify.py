"""Benchmark: the complete proof of one layer (resources/soci/proof.py) vs a plain inflate of the same blob.

Generates the deterministic >= 500 MiB gzip tar layer of benchmarks/soci_index.py, builds its zTOC once
(not timed), then measures in one run, interleaved, best of N:

- ``prove_layer`` over the blob in 1 MiB chunks: span digests, zlib inflate, Python tarfile parse and
  field-by-field TOC comparison, checkpoint resumes, archive sizes;
- a plain single-threaded ``zlib.decompressobj(31)`` over the same chunks;
- their ratio (target <= 1.3), and the proof's peak memory growth (VmHWM in a fresh subprocess around
  the call, and tracemalloc peak; target < 64 MiB). The registry client's own layer-digest check is
  outside both (verify pays it for any full read).

Usage: python benchmarks/verify.py [--size-mib 512] [--rounds 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.soci_index import generate_layer, time_plain_inflate
from resources.soci.node_rules import span_layout
from resources.soci.proof import prove_layer
from resources.soci.ztoc.builder import ZtocBuilder
from resources.soci.ztoc.model import Ztoc

CHUNK = 1 << 20
MIB = 1 << 20
MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
TARGET_RATIO = 1.3
TARGET_MEMORY = 64 * MIB


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as blob:
        while chunk := blob.read(CHUNK):
            yield chunk


def time_proof(path: Path, ztoc: Ztoc) -> tuple[float, float, float, int]:
    """(wall, process CPU, main-thread CPU) seconds of prove_layer over the blob, and the entries it proved."""
    layout = span_layout(ztoc)
    start, cpu, main = time.perf_counter(), time.process_time(), time.thread_time()
    proof = prove_layer(_chunks(path), ztoc, layout, layer="bench", media_type=MEDIA_TYPE, wanted=())
    return time.perf_counter() - start, time.process_time() - cpu, time.thread_time() - main, proof.entries


def _vm_hwm() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("VmHWM not found")


def measure_memory_child(path: str, ztoc_path: str) -> None:
    """(Subprocess) VmHWM growth around one proof, then the tracemalloc peak of a second one."""
    ztoc = pickle.loads(Path(ztoc_path).read_bytes())
    layout = span_layout(ztoc)
    before = _vm_hwm()
    prove_layer(_chunks(Path(path)), ztoc, layout, layer="bench", media_type=MEDIA_TYPE)
    growth = _vm_hwm() - before
    tracemalloc.start()
    prove_layer(_chunks(Path(path)), ztoc, layout, layer="bench", media_type=MEDIA_TYPE)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(json.dumps({"vmhwm_growth": growth, "tracemalloc_peak": peak}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="reuse/keep the generated layer in this directory")
    parser.add_argument("--memory-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        measure_memory_child(*args.memory_child)
        return 0
    with tempfile.TemporaryDirectory(prefix="verify-bench-") as tmp:
        directory = args.keep or Path(tmp)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"layer-{args.size_mib}MiB.tar.gz"
        if not path.exists():
            size = generate_layer(path, args.size_mib)
            print(f"generated {size / MIB:.0f} MiB tar -> {path.stat().st_size / MIB:.0f} MiB gzip")
        with path.open("rb") as blob:
            ztoc = ZtocBuilder().build(blob, MEDIA_TYPE).ztoc
        ztoc_path = Path(tmp) / "ztoc.pickle"
        ztoc_path.write_bytes(pickle.dumps(ztoc))
        inflates, proofs, inflate_cpu, proof_cpu, proof_main = [], [], [], [], []
        entries = 0
        for _ in range(args.rounds):
            wall, cpu = time_plain_inflate(path)
            inflates.append(wall)
            inflate_cpu.append(cpu)
            wall, cpu, main, entries = time_proof(path, ztoc)
            proofs.append(wall)
            proof_cpu.append(cpu)
            proof_main.append(main)
        inflate, proof = min(inflates), min(proofs)
        print(
            f"layer: {ztoc.compressed_archive_size / MIB:.1f} MiB gzip, "
            f"{ztoc.uncompressed_archive_size / MIB:.1f} MiB tar, "
            f"{entries} entries proven, {ztoc.compression.max_span_id + 1} spans and checkpoints"
        )
        print(
            f"plain inflate (zlib.decompressobj(31)): {inflate:.3f}s  (all: {', '.join(f'{t:.3f}' for t in inflates)})"
        )
        print(f"prove_layer (complete proof):           {proof:.3f}s  (all: {', '.join(f'{t:.3f}' for t in proofs)})")
        ratio = proof / inflate
        print(f"ratio proof/inflate (wall, best of {args.rounds}): {ratio:.3f}  (target <= {TARGET_RATIO})")
        print(
            f"CPU seconds: inflate {min(inflate_cpu):.3f}; proof main thread {min(proof_main):.3f} "
            f"(ratio {min(proof_main) / min(inflate_cpu):.3f}), all threads {min(proof_cpu):.3f} "
            f"(ratio {min(proof_cpu) / min(inflate_cpu):.3f}; span sha256 runs on a second thread)"
        )
        print(f"load average during the run: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
        child = subprocess.run([sys.executable, __file__, "--memory-child", str(path), str(ztoc_path)],
                               capture_output=True, text=True, check=True)
        memory = json.loads(child.stdout.strip().splitlines()[-1])
        print(
            f"peak memory growth of the proof: VmHWM +{memory['vmhwm_growth'] / MIB:.1f} MiB, "
            f"tracemalloc peak {memory['tracemalloc_peak'] / MIB:.1f} MiB  (target < {TARGET_MEMORY // MIB} MiB)"
        )
        ok = ratio <= TARGET_RATIO and max(memory.values()) < TARGET_MEMORY
        print("PASS" if ok else "FAIL")
        return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
