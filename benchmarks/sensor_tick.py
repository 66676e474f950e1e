"""Git push sensor tick time with many remotes on loopback.

Makes REMOTES repositories (one target each, served as file:// URLs or by `git daemon` on 127.0.0.1),
then times real ticks of `git_push_sensor` (build_sensor_context, persistent cursor):
  cold     first poll of every remote (records all refs, requests the default branches)
  steady   nothing changed (ls-remote of every remote)
  changes  CHANGED remotes got a commit (ls-remote + fetch into the partial clone + tree diff)
Target: every tick < 5 s for 50 remotes (Dagster ticks time out at 60 s).

    .venv/bin/python benchmarks/sensor_tick.py [--remotes 50] [--changed 10] [--transport file|daemon]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipelines.git_push.sensors import git_push_sensor
from pipelines.resource_defs.base import TargetsResource
from pipelines.resource_defs.git import GitRemotesResource
from tests.support.git import GIT_ENV, git
from tests.support.net import free_port


def make_repo(path: Path, n: int) -> None:
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], env=GIT_ENV, check=True)
    for d in ("svc", "docs"):
        (path / d).mkdir()
        (path / d / "file.txt").write_text(f"{n}\n")
    for i in range(20):
        (path / "svc" / f"m{i}.py").write_text(f"x = {i}\n")
    git(path, "add", "-A")
    git(path, "commit", "-qm", "initial")
    git(path, "branch", "release")
    git(path, "tag", "-a", "-m", "v1", "v1.0.0")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--remotes", type=int, default=50)
    ap.add_argument("--changed", type=int, default=10)
    ap.add_argument("--transport", choices=("file", "daemon"), default="file")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="sensor-bench-") as tmp:
        root = Path(tmp)
        remotes = root / "remotes"
        remotes.mkdir()
        for i in range(args.remotes):
            make_repo(remotes / f"r{i}", i)
        daemon = None
        if args.transport == "daemon":
            port = free_port()
            daemon = subprocess.Popen(["git", "daemon", "--reuseaddr", "--export-all", f"--base-path={remotes}",
                                       "--listen=127.0.0.1", f"--port={port}", str(remotes)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)
            url = lambda i: f"git://127.0.0.1:{port}/r{i}"  # noqa: E731
        else:
            url = lambda i: f"file://{remotes}/r{i}"  # noqa: E731
        targets = root / "targets.yaml"
        targets.write_text("targets:\n" + "".join(
            f"  - name: t{i}\n    source: {{git: {{repo: '{url(i)}', ref: main, context: svc}}}}\n"
            f"    repository: 127.0.0.1:5055/bench/t{i}\n" for i in range(args.remotes)))
        resources = {"targets": TargetsResource(path=str(targets)),
                     "git": GitRemotesResource(cache_dir=str(root / "cache"))}
        cursor: str | None = None
        try:
            (root / "home").mkdir()
            with dg.instance_for_test(temp_dir=str(root / "home")) as instance:
                def tick() -> tuple[float, int]:
                    nonlocal cursor
                    started = time.perf_counter()
                    ctx = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources)
                    result = git_push_sensor(ctx)
                    elapsed = time.perf_counter() - started
                    cursor = result.cursor
                    return elapsed, len(result.run_requests or [])

                cold, n_cold = tick()
                steady, n_steady = tick()
                for i in range(args.changed):
                    (remotes / f"r{i}" / "svc" / "m0.py").write_text("x = 'changed'\n")
                    git(remotes / f"r{i}", "commit", "-qam", "change")
                changes, n_changes = tick()
                after, _ = tick()
        finally:
            if daemon is not None:
                daemon.terminate()
                daemon.wait()
    print(f"remotes={args.remotes} transport={args.transport} changed={args.changed}")
    print(f"cold tick     {cold:6.2f} s  ({n_cold} runs requested)")
    print(f"steady tick   {steady:6.2f} s  ({n_steady} runs requested)")
    print(f"changes tick  {changes:6.2f} s  ({n_changes} runs requested; first fetch into each clone)")
    print(f"after tick    {after:6.2f} s")
    worst = max(cold, steady, changes, after)
    print(f"worst tick {worst:.2f} s (target < 5 s): {'OK' if worst < 5 else 'MISSED'}")
    assert n_cold == args.remotes and n_steady == 0 and n_changes == args.changed, "unexpected run requests"


if __name__ == "__main__":
    main()
