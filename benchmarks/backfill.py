"""SOCI backfill of N images that share one large base layer, against a private registry on loopback.

Each image lives in its own repository: [shared base layer (--base-mib, gzip), its own small layer].
Two fresh registries with the same layout are backfilled side by side, one holding 1 image and one
holding N, with the same code path as the on-demand job (scan, one converter, verify every result):
the base layer is decompressed once in both, so time(N) / time(1) stays close to 1.
Target: <= 1.5 for N = 10.

    .venv/bin/python benchmarks/backfill.py [--images 10] [--base-mib 256] [--verify-sample 4]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from resources.oci import media_types as mt
from resources.oci.refs import ImageRef
from resources.registry import RegistryClient
from resources.release.backfill import BackfillSettings
from resources.release.batch import run_backfill
from resources.release.catalog import OciCatalog
from resources.soci.verify import verify_image
from tests.support.registry import start_registry


def layer(files: dict[str, bytes]) -> tuple[bytes, str]:
    """(gzip blob, diff id) of a tar holding `files`."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1700000000
            tar.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    return gzip.compress(raw, compresslevel=1, mtime=0), "sha256:" + hashlib.sha256(raw).hexdigest()


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def push_images(client: RegistryClient, n: int, base: tuple[bytes, str]) -> None:
    """n repositories bench/imgI:v1 = [base, own 1 MiB layer]; the base blob is uploaded once and mounted after."""
    base_blob, base_diff = base
    for i in range(n):
        repo = f"bench/img{i}"
        if i == 0:
            client.push_blob(repo, base_blob, digest=digest(base_blob))
        elif not client.mount_blob(repo, digest(base_blob), "bench/img0"):
            client.push_blob(repo, base_blob, digest=digest(base_blob))
        own_blob, own_diff = layer({f"app/{i}.bin": os.urandom(1 << 20)})
        client.push_blob(repo, own_blob, digest=digest(own_blob))
        config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                             "rootfs": {"type": "layers", "diff_ids": [base_diff, own_diff]}}).encode()
        client.push_blob(repo, config, digest=digest(config))
        manifest = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
                               "config": {"mediaType": mt.OCI_CONFIG, "digest": digest(config), "size": len(config)},
                               "layers": [{"mediaType": mt.OCI_LAYER_GZIP, "digest": digest(b), "size": len(b)}
                                          for b in (base_blob, own_blob)]}).encode()
        client.put_manifest(repo, "v1", manifest, mt.OCI_MANIFEST)


def backfill(addr: str, sample: int) -> tuple[float, int, int]:
    """Seconds for one full backfill (scan + index + verify), layers built, images indexed."""
    client = RegistryClient(addr)
    settings = BackfillSettings(registry=addr)

    def verify(ref: ImageRef) -> tuple[bool, str]:
        report = verify_image(client, ref, sample=sample)
        return report.passed, report.failure or "ok"

    started = time.perf_counter()
    report = run_backfill(client, OciCatalog(client), settings, verify=verify if sample else None)
    elapsed = time.perf_counter() - started
    bad = [r for r in report.records if r.status.value != "indexed"]
    if bad:
        raise SystemExit(f"backfill did not index everything: {bad}")
    return elapsed, report.layers_built, len(report.records)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=10)
    ap.add_argument("--base-mib", type=int, default=256)
    ap.add_argument("--verify-sample", type=int, default=4)
    args = ap.parse_args()
    base = layer({f"base/f{i}.bin": os.urandom(1 << 20) for i in range(args.base_mib)})
    procs = []
    with tempfile.TemporaryDirectory(prefix="backfill-bench-") as tmp:
        try:
            procs += [start_registry(Path(tmp) / "one"), start_registry(Path(tmp) / "many")]
            one, many = procs[0].addr, procs[1].addr
            push_images(RegistryClient(one), 1, base)
            push_images(RegistryClient(many), args.images, base)
            t1, built1, n1 = backfill(one, args.verify_sample)
            tn, builtn, nn = backfill(many, args.verify_sample)
        finally:
            for p in procs:
                p.stop()
    ratio = tn / t1
    print(f"base layer {len(base[0]) / 2**20:.0f} MiB gzip, images with their own 1 MiB layer, "
          f"verify sample {args.verify_sample}")
    print(f"time(1)  = {t1:6.2f} s  ({n1} image, {built1} layer(s) decompressed)")
    print(f"time({args.images}) = {tn:6.2f} s  ({nn} images, {builtn} layer(s) decompressed)")
    print(f"time({args.images}) / time(1) = {ratio:.2f} (target <= 1.5): {'OK' if ratio <= 1.5 else 'MISSED'}")


if __name__ == "__main__":
    main()
