"""Benchmark: what a start costs, lazy vs lazy + prefetch (files, ranges) vs full pull, and the time to record it.

Two images in a private registry on loopback, each recorded for real (sandbox, exact page ranges), its
profile pushed next to it, converted to a SOCI-enabled image with the profile (node_compat v0.15,
prefetch artifacts written), then the cost model reads the index and zTOCs back from the registry:

- the demo image (examples/demo-app, built by the local stack's BuildKit, as `make demo` builds it);
- a generated image with a --large-mib model (default 1024 MiB; benchmarks/startup_record.py's image:
  busybox, a library tree, the model; the start reads five modules, the model's header and a few pages).

Printed side by side per image: MB to start, % of the image, requests, round trips and estimated
seconds for each way to start (estimates at the targets' default network, 1000 Mbit/s and 20 ms per
round trip), and the seconds to record the profile and to convert (span advice included). The demo is
converted with its target's soci settings (span_size auto), the large image with the defaults (4 MiB).
(benchmarks/startup_cost.py models
a synthetic profile on a generated image without recording; benchmarks/startup_record.py compares
exact ranges with disk readahead.)

    .venv/bin/python benchmarks/startup.py [--large-mib 1024] [--work-dir /var/tmp]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from startup_record import build_image, start_registry

from resources.builders.base import BuildRequest
from resources.builders.local_docker import LocalDockerBuilder
from resources.oci.refs import ImageRef
from resources.registry import RegistryClient
from resources.release.targets import SociSettings, Target, load_targets
from resources.soci.convert import SociConverter
from resources.soci.node_compat import NodeCompat
from resources.startup.cost import MB, StartCostComparison
from resources.startup.cost_inputs import start_cost_for_image
from resources.startup.index_plan import plan_index
from resources.startup.recorder import StartupRecorder
from resources.startup.settings import StartupSettings
from resources.startup.store import push_profile

ROOT = Path(__file__).resolve().parent.parent
STACK = os.environ.get("STREAMABLE_STACK_DIR", "/var/lib/streamable-stack")


def build_demo(addr: str) -> tuple[ImageRef, Target]:
    """Build examples/demo-app with the stack's BuildKit and push it to `addr`."""
    target = load_targets(ROOT / "targets.yaml").get("demo-app")
    ref = f"{addr}/bench/demo-app:v1"
    builder = LocalDockerBuilder(
        docker_host=os.environ.get("STREAMABLE_DOCKER_HOST", f"unix://{STACK}/docker.sock"),
        docker_bin=os.environ.get("STREAMABLE_DOCKER_BIN") or None,
    )
    builder.build(
        BuildRequest(
            target="demo-app",
            image_ref=ref,
            context_dir=ROOT / "examples" / "demo-app",
            build_args=dict(target.build_args),
        ),
        lambda _line: None,
    )
    return ImageRef.parse(ref), target


def measure(
    client: RegistryClient, ref: ImageRef, settings: StartupSettings, soci: SociSettings, work: Path
) -> tuple[StartCostComparison, float, float, int, int]:
    """(costs, record seconds, convert seconds, files, span size) for one image, converted as the pipeline does
    (span size and prefetch from the profile found next to the image, node_compat v0.15)."""
    work.mkdir(parents=True)
    t0 = time.monotonic()
    profile = (
        StartupRecorder(client, work_root=work)
        .record(ref, command=settings.command, readiness=settings.readiness(), timeout_s=settings.timeout_s)
        .profile
    )
    record_s = time.monotonic() - t0
    push_profile(client, ref.repository, profile)
    t0 = time.monotonic()
    plan = plan_index(
        client,
        ref.repository,
        profile.manifest_digest,
        span_size=soci.span_size,
        node_compat=NodeCompat.parse("v0.15"),
        startup=settings,
        min_layer_size=soci.min_layer_size,
        ztoc_budget_percent=soci.ztoc_budget_percent,
    )
    converter = SociConverter(client, **plan.converter_kwargs(), min_layer_size=soci.min_layer_size, all_platforms=True)
    result = converter.convert(
        ImageRef(ref.registry, ref.repository, digest=profile.manifest_digest),
        ImageRef(ref.registry, ref.repository, tag="v1-soci"),
    )
    convert_s = time.monotonic() - t0
    out = ImageRef(ref.registry, ref.repository, digest=result.image_digest)
    cost = start_cost_for_image(client, out, profile, settings.network())
    return cost, record_s, convert_s, len(profile.files), plan.span_size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large-mib", type=int, default=1024)
    parser.add_argument("--work-dir", default="/var/tmp")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="startup-bench-", dir=args.work_dir))
    (tmp / "reg").mkdir()
    proc, addr = start_registry(tmp / "reg")
    rows = []
    try:
        with RegistryClient(addr) as client:
            demo, target = build_demo(addr)
            rows.append(("demo-app", *measure(client, demo, target.startup, target.soci, tmp / "work-demo")))
            print("demo-app measured", file=sys.stderr)
            build_image(client, "bench/large", args.large_mib, tmp)
            large = StartupSettings(enabled=True, ready={"log": "^ready$"}, timeout_s=600)  # type: ignore[arg-type]
            rows.append(
                (
                    f"generated {args.large_mib} MiB model",
                    *measure(
                        client, ImageRef.parse(f"{addr}/bench/large:v1"), large, SociSettings(), tmp / "work-large"
                    ),
                )
            )
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    net = StartupSettings().describe_network()
    print(f"estimates: {net}")
    for name, cmp, record_s, convert_s, files, span in rows:
        print(
            f"\n{name}: image {cmp.full_pull.image_bytes / MB:.1f} MB; "
            f"profile of {files} files recorded in {record_s:.2f} s; "
            f"span advice + conversion in {convert_s:.2f} s ({span // 1024} KiB spans)"
        )
        print(
            f"  {'mode':<26}{'MB to start':>12}{'% of image':>11}{'requests':>10}{'round trips':>13}"
            f"{'est. s':>9}{'vs full':>9}"
        )
        for c in cmp.modes:
            print(
                f"  {c.mode:<26}{c.bytes_to_start / MB:>12.2f}{100 * c.fraction:>10.2f}%"
                f"{c.requests:>10}{c.round_trips:>13}"
                f"{c.seconds:>9.3f}{c.seconds / cmp.full_pull.seconds:>8.3f}x"
            )
        print(f"  {cmp.lazy.summary}")
    print("\nload average:", Path("/proc/loadavg").read_text().strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
