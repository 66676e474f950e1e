"""`make demo`: materialize the whole supply chain for the example target on the local stack and report.

Dagster's console log goes to `.streamable/demo-dagster.log`; the terminal gets the build's output as one block
(from the run's event log, so no Dagster prefixes in between) and then a summary. The result is also written to
`.streamable/demo-result.json`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
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


DAGSTER_LOG = STATE / "demo-dagster.log"
BUILD_STEP = "image"


@contextmanager
def output_to(path: Path) -> Iterator[None]:
    """Send everything written to stdout/stderr (Python and subprocesses alike) to `path` while inside."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with path.open("ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


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


def build_output(entries: list) -> list[str]:
    """The build step's output lines (BuildKit progress, push), in order, from the run's event log."""
    from pipelines.logstream import split_batch  # noqa: PLC0415

    lines: list[str] = []
    for entry in entries:
        if entry.step_key == BUILD_STEP and entry.dagster_event is None:
            batch = split_batch(entry.user_message)
            if batch is not None:
                lines.extend(batch)
    return lines


def print_build_block(lines: list[str]) -> None:
    """The build's output as one block, fenced so it reads apart from the summary."""
    print(f"---- build output of step `{BUILD_STEP}` (BuildKit, then the push): {len(lines)} lines ----")
    for line in lines:
        print(f"  {line}" if line else "")
    print("---- end of build output ----")


def summary_first_line(ok: bool, wall: float, run_id: str, startup: dict | None) -> str:
    """`streamable demo: OK in 2.7s (run ...); to start: X MB of Y MB (Z%) ...` (the cost of a start leads)."""
    lead = startup["lead"] if startup else "to start: no startup profile recorded"
    return f"streamable demo: {'OK' if ok else 'FAILED'} in {wall:.1f}s (run {run_id})\n  {lead}"


def main() -> int:
    os.chdir(ROOT)
    home = STATE / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text((ROOT / "deploy" / "local" / "dagster.yaml").read_text())
    os.environ["DAGSTER_HOME"] = str(home)
    if DEMO_REGISTRY:
        os.environ["STREAMABLE_TARGETS"] = str(_targets_for_registry(DEMO_REGISTRY))
    DAGSTER_LOG.write_bytes(b"")
    print(
        f"streamable demo: materializing build_and_release for {TARGET} "
        f"(Dagster's log: {DAGSTER_LOG.relative_to(ROOT)})",
        flush=True,
    )
    started = time.monotonic()
    with output_to(DAGSTER_LOG):
        from pipelines.definitions import BUILD_JOB, defs  # noqa: PLC0415

        job = defs().resolve_job_def(BUILD_JOB)
        with dg.DagsterInstance.get() as instance:
            result = job.execute_in_process(
                instance=instance,
                partition_key=TARGET,
                raise_on_error=False,
                run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},
            )
            wall = time.monotonic() - started
            events = list(instance.all_logs(result.run_id))
    print_build_block(build_output(events))
    steps = _step_seconds(events)
    if not result.success:
        for ev in (ev for ev in result.all_events if ev.is_failure):
            error = getattr(ev.event_specific_data, "error", None) if ev.event_specific_data else None
            print(f"step {ev.step_key} failed: {error.message if error else ev.message}", file=sys.stderr)
        print(
            f"demo run {result.run_id} failed after {wall:.1f}s; Dagster's log: {DAGSTER_LOG}; `make ui` shows the run",
            file=sys.stderr,
        )
        return 1
    return report(result, wall, steps)


def report(result: dg.ExecuteInProcessResult, wall: float, steps: dict[str, float]) -> int:
    """Check the released tag the way a node would, write demo-result.json and print the summary."""
    from resources.oci.refs import ImageRef  # noqa: PLC0415
    from resources.registry import RegistryClient  # noqa: PLC0415
    from resources.soci.verify import verify_image  # noqa: PLC0415
    from resources.startup.store import find_image_profile  # noqa: PLC0415

    release = result.output_for_node("release")
    digest = release.image_index_digest
    ref = ImageRef(registry=release.registry, repository=release.repository, tag=release.release_tags[0])
    with RegistryClient(ref.registry) as client:
        stored = find_image_profile(client, ref.repository, release.soci.image.digest)  # the candidate's profile
        report = verify_image(
            client, ref, sample=8, required_files=["app/bin/serve", "models/config.json", "models/weights.bin"],
            startup_files=[f.path for f in stored.profile.files] if stored else (),
        )
        resolved = client.head_manifest(ref.repository, ref.tag)
    platforms = release.soci.platforms
    out = {
        "registry": f"http://{ref.registry}",
        "image": str(ref),
        "image_index_digest": digest,
        "soci_index_digest": platforms[0].soci_index_digest if platforms else None,
        "manifest_digest": platforms[0].manifest_digest if platforms else None,
        "verification": {
            "passed": bool(report.passed),
            "files_checked": report.files_checked,
            "bytes_fetched": report.lazy_bytes_fetched,
        },
        "release_tags": list(release.release_tags),
        "startup": release.soci.startup,
        "run_id": result.run_id,
        "wall_seconds": round(wall, 2),
        "step_seconds": steps,
    }
    STATE.mkdir(exist_ok=True)
    (STATE / "demo-result.json").write_text(json.dumps(out, indent=2) + "\n")
    ok = report.passed and resolved is not None and resolved.digest == digest
    print()
    print(summary_first_line(ok, wall, result.run_id, release.soci.startup))
    print(f"  released   {ref}  ->  {digest}")
    print(f"  tags       {', '.join(release.release_tags)}")
    print(f"  SOCI index {out['soci_index_digest']} (v2, found via com.amazon.soci.index-digest)")
    print(
        f"  verify     {'passed' if report.passed else 'FAILED: ' + str(report.failure)}: "
        f"{report.files_checked} files lazily read, {report.lazy_bytes_fetched} bytes fetched "
        f"of {report.lazy_layer_bytes} bytes in their layers (verification reads whole files, the largest among them;"
        " a start needs only what the `to start` line says)"
    )
    for plat in report.platforms:
        for f in plat.files:
            print(
                f"    /{f.name}: {f.size} bytes, {f.why}; a cold lazy read fetches {f.spans_fetched} span(s), "
                f"{f.bytes_fetched} bytes"
            )
    print("  per step   " + ", ".join(f"{k} {v:.1f}s" for k, v in steps.items()))
    print(f"  result     {STATE / 'demo-result.json'}; Dagster's log {DAGSTER_LOG}")
    print('  next       `make ui` to browse the run (README: "In the UI"), `make down` to stop the stack')
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
