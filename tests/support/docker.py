"""The local stack's Docker engine, driven through the docker CLI (argv, no shell)."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass


@dataclass(frozen=True)
class DockerEngine:
    """The local stack's Docker engine (embedded BuildKit)."""

    docker_bin: str
    host: str

    def env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": self.host, "DOCKER_BUILDKIT": "1"}

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.docker_bin, *args], env=self.env(), check=check, capture_output=True, text=True)
