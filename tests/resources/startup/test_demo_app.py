"""examples/demo-app: its layers are byte-identical on a rebuild, and its start reads a small part of it."""

from __future__ import annotations

import json
from pathlib import Path

from resources.oci.refs import ImageRef
from resources.release.targets import load_targets
from resources.startup.recorder import StartupRecorder
from tests.conftest import DockerEngine, RunningRegistry

REPO = Path(__file__).resolve().parents[3]
DEMO = REPO / "examples" / "demo-app"
MODULES = {
    "/app/lib/demo_00/__init__.py",
    "/app/lib/demo_00/mod_00.py",
    "/app/lib/demo_00/mod_01.py",
    "/app/lib/demo_07/__init__.py",
    "/app/lib/demo_07/mod_03.py",
}


def _layers(engine: DockerEngine, tag: str) -> list[str]:
    return json.loads(engine.run("image", "inspect", "--format", "{{json .RootFS.Layers}}", tag).stdout)


def test_demo_app_rebuilds_identically_and_starts_small(
    docker_engine: DockerEngine, registry: RunningRegistry, client, tmp_path: Path
) -> None:
    tag = f"{registry.addr}/streamable/demo-app:test"
    target = load_targets(REPO / "targets.yaml").get("demo-app")
    build_args = [a for k, v in target.build_args.items() for a in ("--build-arg", f"{k}={v}")]
    try:
        docker_engine.run("build", "--network=none", *build_args, "-t", tag, str(DEMO))
        first = _layers(docker_engine, tag)
        docker_engine.run("build", "--network=none", "--no-cache", *build_args, "-t", tag, str(DEMO))
        assert _layers(docker_engine, tag) == first, "a rebuild from the same files changed a layer"
        docker_engine.run("push", tag)
    finally:
        docker_engine.run("rmi", tag, check=False)

    work = tmp_path / "work"
    work.mkdir()
    settings = target.startup
    assert settings.enabled
    rec = StartupRecorder(client, work_root=work).record(
        ImageRef.parse(tag), command=settings.command, readiness=settings.readiness(), timeout_s=settings.timeout_s
    )
    p = rec.profile
    by = {f.path: f for f in p.files}
    assert p.stopped_by == "ready_log"
    assert set(by) == {"/app/bin/serve", "/bin/busybox", "/models/config.json", "/models/weights.bin", *MODULES}
    assert by["/app/bin/serve"].kind == "command" and by["/bin/busybox"].kind == "command"
    weights = by["/models/weights.bin"]
    assert weights.size == (24 << 20) + 4096
    # exactly the pages read: the 4 KiB header + 2 pages of `embed` (offset 4096), 1 page of `layer.0`
    # (after embed's 8 blocks of 256 KiB) and 1 page of `lm_head` (the last tensor)
    assert weights.ranges[:2] == ((0, 3 * 4096), (4096 + 8 * 262144, 4096 + 8 * 262144 + 4096)), weights.ranges
    assert len(weights.ranges) == 3 and weights.ranges[2][1] - weights.ranges[2][0] == 4096, weights.ranges
    assert weights.ranges[2][0] == weights.size - 8 * 262144  # lm_head: the last 8 blocks
    lib_layer = {by[m].layer_digest for m in MODULES}
    assert len(lib_layer) == 1 and lib_layer != {weights.layer_digest}
