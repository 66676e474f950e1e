"""A temporary DOCKER_CONFIG directory holding push credentials for one buildctl call."""

from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class RegistryCredential:
    """Basic credentials for one registry host; the password never appears in repr()."""

    registry: str
    username: str
    password: str = field(repr=False)

    def __post_init__(self) -> None:
        if not self.registry or "/" in self.registry:
            raise ValueError(f"registry must be a host[:port] without a path, got {self.registry!r}")
        if not self.username or ":" in self.username:
            raise ValueError(f"username for {self.registry} must be non-empty and contain no ':'")

    def auth_field(self) -> str:
        """The config.json `auth` value: base64 of `username:password`."""
        return base64.b64encode(f"{self.username}:{self.password}".encode()).decode()


CredentialsProvider = Callable[[], Sequence[RegistryCredential]]
"""Called once per buildctl call, so short-lived tokens (ECR: 12 h) are fresh for each build."""


def docker_config_json(credentials: Iterable[RegistryCredential]) -> dict:
    """The config.json document for these credentials (`auths` only; no helpers, no stores)."""
    auths: dict[str, dict[str, str]] = {}
    for cred in credentials:
        if cred.registry in auths:
            raise ValueError(f"two credentials given for registry {cred.registry}")
        auths[cred.registry] = {"auth": cred.auth_field()}
    return {"auths": auths}


@contextmanager
def temporary_docker_config(
    credentials: Iterable[RegistryCredential], parent: str | Path | None = None
) -> Iterator[Path]:
    """A 0700 directory with a 0600 config.json, removed on exit (also when the body raises).

    Pass the path to a subprocess as DOCKER_CONFIG in its env; never log the file's content.
    """
    doc = docker_config_json(credentials)
    tmp = Path(tempfile.mkdtemp(prefix="streamable-docker-config-", dir=parent))
    try:
        os.chmod(tmp, 0o700)
        fd = os.open(tmp / "config.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(doc, fh)
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
