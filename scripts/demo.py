"""`make demo`: materialize the whole supply chain for the example target on the local stack and report."""

from __future__ import annotations

import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import dagster as dg

ROOT = Path(__file__).resolve().parent.parent
STATE = Path(os.environ.get("STREAMABLE_STATE_DIR") or ROOT / ".streamable").resolve()
TARGET = os.environ.get("STREAMABLE_DEMO_TARGET", "demo-app")
# Push somewhere else than the shared stack registry (e.g. 127.0.0.1:5077), so concurrent demos do not
# move each other's `latest` and branch tags.
DEMO_REGISTRY = os.environ.get("STREAMABLE_DEMO_REGISTRY")


def _targets_for_registry(registry: str) -> Path:
    """A copy of targets.yaml (in STATE) whose repositories live on `registry`; local paths made absolute."""
    import yaml  # noqa: PLC0415

    raw = yaml.safe_load((ROOT / "targets.yaml").read_text())
    for target in raw["targets"]:
        target["repository"] = registry + "/" + target["repository"].split("/", 1)[1]
        local = (target.get("source") or {}).get("local")
        if local and not Path(local).is_absolute():
            target["source"]["local"] = str(ROOT / local)
    path = STATE / "targets.demo.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _step_seconds(entries: list) -> dict[str, float]:
    """Wall seconds per step from the run's STEP_START / STEP_SUCCESS|FAILURE event log entries."""
    start: dict[str, float] = {}
    took: dict[str, float] = defaultdict(float)
    for entry in entries:
        if entry.dagster_event is None or entry.step_key is None:
            continue
        kind = entry.dagster_event.event_type_value
        if kind == "STEP_START":
            start[entry.step_key] = entry.timestamp
        elif kind in ("STEP_SUCCESS", "STEP_FAILURE") and entry.step_key in start:
            took[entry.step_key] = round(entry.timestamp - start[entry.step_key], 2)
    return dict(took)


def main() -> int:
    os.chdir(ROOT)
    home = STATE / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text((ROOT / "deploy" / "local" / "dagster.yaml").read_text())
    os.environ["DAGSTER_HOME"] = str(home)
    if DEMO_REGISTRY:
        os.environ["STREAMABLE_TARGETS"] = str(_targets_for_registry(DEMO_REGISTRY))
    from pipelines.definitions import BUILD_JOB, defs  # noqa: PLC0415
    from resources.oci.refs import ImageRef  # noqa: PLC0415
    from resources.registry import RegistryClient  # noqa: PLC0415
    from resources.soci.verify import verify_image  # noqa: PLC0415

    definitions = defs()
    job = definitions.resolve_job_def(BUILD_JOB)
    started = time.monotonic()
    with dg.DagsterInstance.get() as instance:
        result = job.execute_in_process(
            instance=instance, partition_key=TARGET, raise_on_error=False,
            run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},
        )
        wall = time.monotonic() - started
        events = list(instance.all_logs(result.run_id))
    steps = _step_seconds(events)
    if not result.success:
        failures = [ev for ev in result.all_events if ev.is_failure]
        for ev in failures:
            print(f"step {ev.step_key} failed: {ev.event_specific_data.error.message if ev.event_specific_data and getattr(ev.event_specific_data, 'error', None) else ev.message}", file=sys.stderr)
        print(f"demo run {result.run_id} failed after {wall:.1f}s; see `make ui` for its logs", file=sys.stderr)
        return 1
    release = result.output_for_node("release")
    digest = release["image_index_digest"]
    ref = ImageRef(registry=release["registry"], repository=release["repository"], tag=release["release_tags"][0])
    with RegistryClient(ref.registry) as client:
        report = verify_image(client, ref, sample=8, required_files=["app/bin/serve", "models/config.json", "models/weights.bin"])
        resolved = client.head_manifest(ref.repository, ref.tag)
    platforms = release["platforms"]
    out = {
        "registry": f"http://{ref.registry}",
        "image": str(ref),
        "image_index_digest": digest,
        "soci_index_digest": platforms[0]["soci_index_digest"] if platforms else None,
        "manifest_digest": platforms[0]["manifest_digest"] if platforms else None,
        "verification": {"passed": bool(report.passed), "files_checked": report.files_checked,
                         "bytes_fetched": report.lazy_bytes_fetched},
        "release_tags": release["release_tags"],
        "startup": release.get("startup"),  # wire16: cost of a start (pipelines.supply_chain.startup.startup_value)
        "run_id": result.run_id,
        "wall_seconds": round(wall, 2),
        "step_seconds": steps,
    }
    STATE.mkdir(exist_ok=True)
    (STATE / "demo-result.json").write_text(json.dumps(out, indent=2) + "\n")
    ok = report.passed and resolved is not None and resolved.digest == digest
    print()
    print(f"streamable demo: {'OK' if ok else 'FAILED'} in {wall:.1f}s (run {result.run_id})")
    print(f"  {release['startup']['lead'] if release.get('startup') else 'to start: no startup profile'}")  # wire16
    print(f"  released   {ref}  ->  {digest}")
    print(f"  tags       {', '.join(release['release_tags'])}")
    print(f"  SOCI index {out['soci_index_digest']} (v2, found via com.amazon.soci.index-digest)")
    print(f"  verify     {'passed' if report.passed else 'FAILED: ' + str(report.failure)}: "
          f"{report.files_checked} files lazily read, {report.lazy_bytes_fetched} bytes fetched "
          f"of {report.lazy_layer_bytes} bytes in their layers")
    for plat in report.platforms:
        for f in plat.files:
            print(f"    /{f.name}: {f.size} bytes, {f.why}; a cold lazy read fetches {f.spans_fetched} span(s), {f.bytes_fetched} bytes")
    print("  per step   " + ", ".join(f"{k} {v:.1f}s" for k, v in steps.items()))
    print(f"  result     {STATE / 'demo-result.json'}; `make ui` to browse the run, `make down` to stop the stack")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
