"""Fixtures for the automation tests: git repositories made by the test, and a daemon-like sensor harness."""

from __future__ import annotations

import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import pytest

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x",
           "PATH": "/usr/bin:/bin", "HOME": "/nonexistent"}


def git(repo: Path, *args: str) -> str:
    """Run git in `repo` (argv, no shell) and return stdout."""
    return subprocess.run(["git", "-C", str(repo), *args], env=GIT_ENV, check=True, capture_output=True,
                          text=True).stdout.strip()


@dataclass
class Repo:
    """A git repository playing the remote: commits, branches, tags, force-pushes happen right here."""

    path: Path

    @property
    def url(self) -> str:
        return f"file://{self.path}"

    def commit(self, files: dict[str, str], message: str = "change", *, amend: bool = False) -> str:
        for name, text in files.items():
            p = self.path / name
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
        git(self.path, "add", "-A")
        git(self.path, "commit", "-q", "--allow-empty", "-m", message, *(["--amend"] if amend else []))
        return self.head()

    def head(self, ref: str = "HEAD") -> str:
        return git(self.path, "rev-parse", f"{ref}^{{commit}}")

    def checkout(self, branch: str, *, create: bool = False) -> None:
        git(self.path, "checkout", "-q", *(["-b"] if create else []), branch)

    def tag(self, name: str, *, annotated: bool = True) -> None:
        git(self.path, "tag", *(["-a", "-m", name] if annotated else []), name)

    def delete_branch(self, name: str) -> None:
        git(self.path, "branch", "-q", "-D", name)


@pytest.fixture
def make_repo(tmp_path: Path) -> Callable[..., Repo]:
    """Factory: a new repository on branch main with an initial commit of `files`."""

    def make(name: str, files: dict[str, str]) -> Repo:
        path = tmp_path / "remotes" / name
        path.mkdir(parents=True)
        subprocess.run(["git", "init", "-q", "-b", "main", str(path)], env=GIT_ENV, check=True)
        repo = Repo(path)
        repo.commit(files, "initial")
        return repo

    return make


@pytest.fixture
def hanging_git_server() -> Iterator[str]:
    """A git:// URL whose server accepts the connection and never answers (a remote that times out)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    conns: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conns.append(srv.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield f"git://127.0.0.1:{srv.getsockname()[1]}/stuck.git"
    stop.set()
    t.join()
    for c in conns:
        c.close()
    srv.close()


def write_targets(path: Path, entries: list[dict]) -> Path:
    """Write a targets file: entries of name, repo, context (and optional ref)."""
    lines = ["targets:"]
    for e in entries:
        lines += [
            f"  - name: {e['name']}",
            f"    source: {{git: {{repo: '{e['repo']}', ref: {e.get('ref', 'main')}, context: '{e.get('context', '.')}'}}}}",
            f"    repository: 127.0.0.1:5055/team/{e['name']}",
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class Tick:
    """What one sensor tick produced."""

    result: dg.SensorResult
    requested: list[dg.RunRequest]
    """Requests that survive run_key de-duplication against runs already in the instance (what the daemon launches)."""

    @property
    def keys(self) -> list[str]:
        return sorted(r.run_key or "" for r in self.requested)

    @property
    def raw_keys(self) -> list[str]:
        return sorted(r.run_key or "" for r in self.result.run_requests or [])


@dataclass
class SensorHarness:
    """Evaluates a sensor the way the daemon does: the cursor lives in a persistent instance (opened anew every
    tick, i.e. a restart each time), dynamic partition requests are applied, and a run_key that already has a run
    in the instance is not launched again."""

    home: Path
    sensor: dg.SensorDefinition
    resources: dict
    job_name: str = "build_and_release"
    ticks: list[Tick] = field(default_factory=list)

    @property
    def _cursor_key(self) -> str:
        return f"test-sensor-cursor:{self.sensor.name}"

    def tick(self, *, store_cursor: bool = True) -> Tick:
        """One evaluation; `store_cursor=False` plays a daemon that launched the runs but died before saving the cursor."""
        from dagster._core.storage.dagster_run import RunsFilter  # noqa: PLC0415
        from dagster._core.test_utils import create_run_for_test  # noqa: PLC0415

        self.home.mkdir(parents=True, exist_ok=True)
        with dg.instance_for_test(temp_dir=str(self.home)) as instance:
            cursor = instance.run_storage.get_cursor_values({self._cursor_key}).get(self._cursor_key)
            with dg.build_sensor_context(instance=instance, cursor=cursor, resources=self.resources) as ctx:
                result = self.sensor(ctx)
            assert isinstance(result, dg.SensorResult)
            for preq in result.dynamic_partitions_requests or []:
                if isinstance(preq, dg.AddDynamicPartitionsRequest):
                    instance.add_dynamic_partitions(preq.partitions_def_name, list(preq.partition_keys))
                else:
                    for key in preq.partition_keys:
                        instance.delete_dynamic_partition(preq.partitions_def_name, key)
            fresh = []
            for req in result.run_requests or []:
                if req.run_key and instance.get_runs(RunsFilter(tags={"dagster/run_key": req.run_key}), limit=1):
                    continue
                tags = {**req.tags, "dagster/run_key": req.run_key or "", "dagster/sensor_name": self.sensor.name}
                if req.partition_key:
                    tags["dagster/partition"] = req.partition_key
                create_run_for_test(instance, job_name=self.job_name, run_config=req.run_config, tags=tags)
                fresh.append(req)
            new_cursor = result.cursor if result.cursor is not None else ctx.cursor
            if new_cursor is not None and store_cursor:
                instance.run_storage.set_cursor_values({self._cursor_key: new_cursor})
        tick = Tick(result=result, requested=fresh)
        self.ticks.append(tick)
        return tick

    def stored_cursor(self) -> str | None:
        with dg.instance_for_test(temp_dir=str(self.home)) as instance:
            return instance.run_storage.get_cursor_values({self._cursor_key}).get(self._cursor_key)
