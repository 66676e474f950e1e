"""Fixtures for running the real supply chain: a git repo made by the test, a targets file, resources."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from tests.support.docker import DockerEngine
from tests.support.registry import RunningRegistry

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x",
           "PATH": "/usr/bin:/bin"}

APP_DOCKERFILE = """\
FROM streamable/busybox:local AS weights
RUN mkdir -p /models && head -c 11534336 /dev/urandom > /models/weights.bin && echo '{"dim": 8}' > /models/config.json
FROM streamable/busybox:local
COPY --from=weights /models /models
COPY app/ /app/
ARG MSG=default
RUN printf '%s' "$MSG" > /app/msg.txt
"""


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], env=GIT_ENV, check=True, capture_output=True, text=True
    ).stdout.strip()


@dataclass
class Project:
    """A git repository with one buildable service, and a targets file pointing at it."""

    repo: Path
    targets_file: Path
    registry: RunningRegistry
    state_dir: Path

    def commit(self, files: dict[str, str], message: str = "change") -> str:
        for name, text in files.items():
            p = self.repo / name
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
        git(self.repo, "add", ".")
        git(self.repo, "commit", "-qm", message)
        return git(self.repo, "rev-parse", "HEAD")

    def write_targets(self, *, required_files: list[str] | None = None, dockerfile: str = "Dockerfile") -> None:
        req = required_files if required_files is not None else ["models/config.json", "app/run.sh"]
        self.targets_file.write_text(
            "targets:\n"
            "  - name: svc\n"
            f"    source: {{git: {{repo: {self.repo}, ref: main, context: svc}}}}\n"
            f"    dockerfile: {dockerfile}\n"
            f"    repository: {self.registry.addr}/team/svc\n"
            "    verify:\n"
            "      sample: 4\n"
            f"      required_files: {req}\n"
        )

    def resources(self, engine: DockerEngine) -> dict:
        from pipelines.resource_defs.base import CanaryBase, RegistryResource, TargetsResource, WorkspaceResource
        from pipelines.resource_defs.local import LocalBuilderResource
        from pipelines.resource_defs.startup import StartupRecorderResource

        return {
            "targets": TargetsResource(path=str(self.targets_file)),
            "registry": RegistryResource(),
            "builder": LocalBuilderResource(docker_host=engine.host, docker_bin=engine.docker_bin),
            "workspace": WorkspaceResource(state_dir=str(self.state_dir)),
            "canary": CanaryBase(),
            "startup_recorder": StartupRecorderResource(),
        }


@pytest.fixture
def project(tmp_path: Path, registry: RunningRegistry) -> Project:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    proj = Project(repo=repo, targets_file=tmp_path / "targets.yaml", registry=registry, state_dir=tmp_path / "state")
    proj.commit(
        {"svc/Dockerfile": APP_DOCKERFILE, "svc/app/run.sh": "#!/bin/sh\necho run\n", "svc/app/lib.txt": "lib\n" * 100},
        "init",
    )
    proj.write_targets()
    return proj


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as inst:
        yield inst
