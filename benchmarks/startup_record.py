"""Recording a startup profile: time to record, and bytes read to start (page ranges vs whole files).

Two generated images in a private registry on loopback, each [busybox, a library tree, a model file]:
a small one (24 MiB model) and a large one (--large-mib, default 1024 MiB model). The entrypoint reads
five library modules, the model's 4 KiB header and a few pages at spread offsets. Each image is
recorded twice side by side: on the no-readahead loop device (exact pages) and on the work disk itself
(its readahead widens every range). Printed per image: record seconds, files, bytes of the profiled
files, bytes in their ranges, and the ratios.

    .venv/bin/python benchmarks/startup_record.py [--large-mib 1024] [--work-dir /var/tmp]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import random
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from resources.oci import media_types as mt
from resources.oci.refs import ImageRef
from resources.registry import RegistryClient
from resources.startup.recorder import StartupRecorder
from resources.startup.sandbox import Readiness

CHUNK = 1 << 20
SCRIPT = """busybox cat /app/lib/pkg_00/mod_00.py /app/lib/pkg_00/mod_01.py /app/lib/pkg_03/mod_02.py \
/app/lib/pkg_05/mod_07.py /app/lib/pkg_09/mod_09.py > /dev/null
busybox head -c 4096 /models/model.bin > /dev/null
for page in {pages}; do busybox dd if=/models/model.bin bs=4096 skip=$page count=1 2>/dev/null > /dev/null; done
echo ready"""


def start_registry(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        addr = f"127.0.0.1:{s.getsockname()[1]}"
    (root / "config.yml").write_text(
        f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
        f"http:\n  addr: {addr}\n"
    )
    proc = subprocess.Popen(
        ["docker-registry", "serve", str(root / "config.yml")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    for _ in range(100):
        try:
            httpx.get(f"http://{addr}/v2/", timeout=1)
            return proc, addr
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("registry did not start")


def _layer(files: dict[str, bytes | tuple[int, int]], path: Path) -> tuple[str, str, int]:
    """Write a gzip tar layer to `path`: values are bytes or (size, seed) for seeded pseudo-random content."""
    raw = hashlib.sha256()
    with open(path, "wb") as out:
        with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=1, mtime=0) as gz:

            class Tee(io.RawIOBase):
                def write(self, b):  # type: ignore[no-untyped-def]
                    raw.update(b)
                    return gz.write(b)

            with tarfile.open(fileobj=Tee(), mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[arg-type]
                for name, content in files.items():
                    info = tarfile.TarInfo(name)
                    info.mtime, info.mode = 1577836800, 0o755 if name.startswith("bin/") else 0o644
                    if isinstance(content, bytes):
                        info.size = len(content)
                        tar.addfile(info, io.BytesIO(content))
                    else:
                        size, seed = content
                        info.size = size
                        rng = random.Random(seed)
                        block = rng.randbytes(CHUNK)

                        class Gen(io.RawIOBase):
                            left = size
                            i = 0

                            def readable(self) -> bool:
                                return True

                            def readinto(self, b):  # type: ignore[no-untyped-def]
                                n = min(len(b), self.left, CHUNK)
                                start = (self.i * 7919) % (CHUNK - n + 1)
                                b[:n] = block[start : start + n]  # noqa: B023 - read during the same loop iteration
                                self.left -= n
                                self.i += 1
                                return n

                        tar.addfile(info, io.BufferedReader(Gen(), CHUNK))
    return _digest(path), "sha256:" + raw.hexdigest(), path.stat().st_size


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def build_image(client: RegistryClient, repo: str, model_mib: int, tmp: Path) -> None:
    rng = random.Random(7)
    base = {"bin/busybox": Path("/bin/busybox").read_bytes(), "etc/passwd": b"root:x:0:0::/:/bin/busybox\n"}
    lib = {
        f"app/lib/pkg_{p:02d}/mod_{m:02d}.py": (
            "\n".join(f"X_{i} = {rng.getrandbits(64)}" for i in range(600)) + "\n"
        ).encode()
        for p in range(40)
        for m in range(20)
    }
    size = model_mib << 20
    pages = sorted(rng.randrange(1, size // 4096) for _ in range(6))
    model = {"models/model.bin": (size, 11)}
    layers = []
    for name, files in (("base", base), ("lib", lib), ("model", model)):
        layers.append(_layer(files, tmp / f"{repo.replace('/', '_')}-{name}.tgz"))
    for (digest, _diff, _size), name in zip(layers, ("base", "lib", "model")):
        with open(tmp / f"{repo.replace('/', '_')}-{name}.tgz", "rb") as f:
            client.push_blob_stream(repo, iter(lambda f=f: f.read(CHUNK), b""), digest=digest, size=_size)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Entrypoint": ["/bin/busybox", "sh", "-c", SCRIPT.format(pages=" ".join(map(str, pages)))]},
            "rootfs": {"type": "layers", "diff_ids": [d for _g, d, _s in layers]},
        }
    ).encode()
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    client.push_blob(repo, config, digest=config_digest)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": {"mediaType": mt.OCI_CONFIG, "digest": config_digest, "size": len(config)},
            "layers": [{"mediaType": mt.OCI_LAYER_GZIP, "digest": g, "size": s} for g, _d, s in layers],
        }
    ).encode()
    client.put_manifest(repo, "v1", manifest, mt.OCI_MANIFEST)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large-mib", type=int, default=1024)
    parser.add_argument("--work-dir", default="/var/tmp")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="startup-bench-", dir=args.work_dir))
    (tmp / "reg").mkdir()
    proc, addr = start_registry(tmp / "reg")
    try:
        with RegistryClient(addr) as client:
            rows = []
            for label, mib in (("small", 24), ("large", args.large_mib)):
                repo = f"bench/{label}"
                started = time.monotonic()
                build_image(client, repo, mib, tmp)
                print(
                    f"{label}: image with a {mib} MiB model pushed in {time.monotonic() - started:.1f}s",
                    file=sys.stderr,
                )
                for exact in (True, False):
                    work = tmp / f"work-{label}-{exact}"
                    work.mkdir()
                    t0 = time.monotonic()
                    rec = StartupRecorder(client, work_root=work, exact_ranges=exact).record(
                        ImageRef.parse(f"{addr}/{repo}:v1"), readiness=Readiness(log="^ready$"), timeout_s=600
                    )
                    took = time.monotonic() - t0
                    files = rec.profile.files
                    rows.append(
                        (
                            label,
                            mib,
                            "exact (readahead 0)" if exact else f"disk (readahead {rec.readahead_kb} KiB)",
                            took,
                            len(files),
                            sum(f.size for f in files),
                            rec.profile.bytes_read,
                        )
                    )
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"{'image':<6} {'model':>8} {'ranges from':<26} {'record s':>9} {'files':>6} "
        f"{'file MiB':>9} {'range MiB':>10} {'range/file':>11}"
    )
    for label, mib, how, took, n, fbytes, rbytes in rows:
        print(
            f"{label:<6} {mib:>6}Mi {how:<26} {took:>9.2f} {n:>6} "
            f"{fbytes / 2**20:>9.2f} {rbytes / 2**20:>10.3f} {rbytes / fbytes:>11.4f}"
        )
    for label in ("small", "large"):
        exact, disk = [r for r in rows if r[0] == label]
        print(
            f"{label}: exact ranges are {exact[6] / disk[6]:.3f}x the disk-readahead ranges; "
            f"recording with the loop device took {exact[3] / disk[3]:.2f}x the time"
        )
    print("load average:", open("/proc/loadavg").read().strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
