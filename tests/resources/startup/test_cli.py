"""`streamable soci profile` as a subprocess: the profile JSON on stdout, -o, --push, `-- CMD`, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from resources.startup.profile import StartupProfile
from resources.startup.store import find_profile
from tests.resources.startup.images import Entry, layer, push_image

STREAMABLE = Path(sys.executable).parent / "streamable"


def run(*args: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "STREAMABLE_REGISTRY_PASSWORD"}
    env["DOCKER_CONFIG"] = str(tmp / "no-docker-config")
    return subprocess.run([str(STREAMABLE), *args], capture_output=True, text=True, env=env, timeout=300, check=False)


def test_profile_command(client, registry, busybox, tmp_path: Path) -> None:
    data = layer([Entry("srv/config.json", b'{"port": 80}\n'), Entry("srv/unused", b"x" * 100)])
    digest = push_image(
        client,
        "t/cli",
        "v1",
        [busybox, data],
        config={"Entrypoint": ["/bin/sh", "-c", "cat /srv/config.json; echo up; sleep 30"]},
    )
    ref = f"{registry.addr}/t/cli:v1"
    work = tmp_path / "work"
    work.mkdir()

    proc = run(
        "soci",
        "profile",
        ref,
        "--ready-log",
        "^up$",
        "--timeout",
        "20",
        "-o",
        str(tmp_path / "p.json"),
        "--push",
        "--work-dir",
        str(work),
        tmp=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    profile = StartupProfile.from_json(proc.stdout)
    assert profile.stopped_by == "ready_log" and profile.manifest_digest == digest and profile.image == ref
    assert {f.path for f in profile.files} == {"/bin/busybox", "/srv/config.json"}
    assert StartupProfile.from_json((tmp_path / "p.json").read_text()) == profile
    stored = find_profile(client, "t/cli", digest)
    assert stored is not None and stored.profile == profile and stored.manifest_digest in proc.stderr

    proc = run("soci", "profile", ref, "--work-dir", str(work), "--", "/bin/cat", "/srv/unused", tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["command"] == ["/bin/cat", "/srv/unused"] and doc["stopped_by"] == "exit"
    assert [f["path"] for f in doc["files"]] == ["/bin/busybox", "/srv/unused"]


def test_profile_errors_are_one_line(client, registry, busybox, tmp_path: Path) -> None:
    push_image(
        client, "t/cli", "v1", [busybox], config={"Entrypoint": ["/bin/sh", "-c", "echo bad config >&2; exit 4"]}
    )
    ref = f"{registry.addr}/t/cli:v1"
    for args, needle in [((), "exited with status 4"), (("--", "/opt/missing"), "'/opt/missing' not found")]:
        proc = run("soci", "profile", ref, "--work-dir", str(tmp_path), *args, tmp=tmp_path)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("streamable: error: ") and needle in lines[0], proc.stderr
    assert "bad config" in run("soci", "profile", ref, "--work-dir", str(tmp_path), tmp=tmp_path).stderr
    proc = run("soci", "verify", ref, "--", "x", tmp=tmp_path)
    assert proc.returncode != 0 and "only for `soci profile`" in proc.stderr
