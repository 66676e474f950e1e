"""Build secrets: values from the environment into private files that BuildKit mounts, never into argv or logs."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from resources.errors import StreamableError


class BuildSecretError(StreamableError, RuntimeError):
    """A build secret's environment variable is missing; names the target, the secret id and the variable."""


def write_build_secrets(target: str, secrets: Mapping[str, str], directory: Path) -> dict[str, Path]:
    """Write each secret's value to a 0600 file in a 0700 directory; returns secret id -> file."""
    if not secrets:
        return {}
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    files: dict[str, Path] = {}
    for sid, env_name in secrets.items():
        value = os.environ.get(env_name)
        if value is None:
            raise BuildSecretError(
                f"target {target!r}: build secret {sid!r} needs environment variable {env_name}, which is not set"
            )
        path = directory / sid
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(value)
        files[sid] = path
    return files
