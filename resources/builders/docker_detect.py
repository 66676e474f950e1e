"""Find a Docker CLI that can build with BuildKit (embedded in the engine, or via buildx)."""

from __future__ import annotations

import os
import shutil
import subprocess

from resources.errors import StreamableError

CANDIDATES = ("/usr/bin/docker", "/usr/local/bin/docker", "docker")


class NoBuildKitDockerError(StreamableError, RuntimeError):
    """No Docker CLI on this machine can run BuildKit builds."""


def cli_supports_buildkit(docker_bin: str) -> bool:
    """True when `docker build` of this CLI goes through BuildKit (20.10 embedded, or buildx present)."""
    try:
        ver = subprocess.run(
            [docker_bin, "version", "--format", "{{.Client.Version}}"],
            capture_output=True, text=True, timeout=10, check=False,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return False
    if not ver:
        return False
    try:
        major = int(ver.split(".")[0])
    except ValueError:
        return False
    if major < 23:
        return True  # classic CLI with DOCKER_BUILDKIT=1 talks to the engine's embedded BuildKit
    buildx = subprocess.run([docker_bin, "buildx", "version"], capture_output=True, text=True, check=False)
    return buildx.returncode == 0


def find_buildkit_docker() -> str:
    """Path of the first Docker CLI that builds with BuildKit; STREAMABLE_DOCKER_BIN wins when set."""
    explicit = os.environ.get("STREAMABLE_DOCKER_BIN")
    tried: list[str] = []
    for cand in ([explicit] if explicit else []) + list(CANDIDATES):
        path = shutil.which(cand) if os.sep not in cand else (cand if os.path.exists(cand) else None)
        if not path or path in tried:
            continue
        tried.append(path)
        if cli_supports_buildkit(path):
            return path
    raise NoBuildKitDockerError(
        "no Docker CLI with BuildKit found (tried: "
        + (", ".join(tried) or "none")
        + "); install Debian's docker.io (`bash scripts/stack.sh install`) or a CLI with buildx"
    )
