"""Registry credentials from a Docker `config.json` (auths, identity tokens and credential helpers)."""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resources.errors import StreamableError

log = logging.getLogger(__name__)

DOCKER_HUB_CONFIG_KEY = "https://index.docker.io/v1/"
_DOCKER_HUB_HOSTS = {"docker.io", "index.docker.io", "registry-1.docker.io"}
HELPER_TIMEOUT_SECONDS = 30.0


class DockerConfigError(StreamableError, ValueError):
    """The Docker config file is unreadable or has an invalid entry; names the file and registry, never a secret."""


@dataclass(frozen=True)
class Credentials:
    """Username and password, or an OAuth2 identity (refresh) token; the secrets never appear in repr()."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    identity_token: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        kind = "identity-token" if self.identity_token else "password" if self.password is not None else "none"
        return f"Credentials(username={self.username!r}, secret=<{kind} hidden>)"


def default_config_path() -> Path:
    """`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`."""
    base = os.environ.get("DOCKER_CONFIG")
    return Path(base) / "config.json" if base else Path.home() / ".docker" / "config.json"


def normalize_registry_key(key: str) -> str:
    """The `host[:port]` of a config key (`https://host/v1/` -> `host`; Docker Hub's aliases -> `docker.io`)."""
    host = key.strip()
    for scheme in ("https://", "http://"):
        if host.lower().startswith(scheme):
            host = host[len(scheme) :]
    host = host.split("/", 1)[0].lower()
    return "docker.io" if host in _DOCKER_HUB_HOSTS else host


def decode_basic_token(token: str) -> tuple[str, str] | None:
    """(username, password) from base64 `username:password` (a config `auth` field, an ECR authorization token)."""
    decoded: str | None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        decoded = None
    if decoded is None:
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep and user else None


def _decode_auth(value: str, path: Path, key: str) -> tuple[str, str]:
    """Split a base64 `user:password` auth field; errors name the file and registry, not the value."""
    pair = decode_basic_token(value)
    if pair is None:
        raise DockerConfigError(
            f"{path}: auths[{key!r}].auth is not valid base64 of 'username:password' (with a non-empty username)"
        )
    return pair


def _entry_credentials(entry: Any, path: Path, key: str) -> Credentials | None:
    """Credentials from one `auths` entry, or None when it holds none."""
    if not isinstance(entry, dict):
        raise DockerConfigError(f"{path}: auths[{key!r}] must be an object")
    identity = entry.get("identitytoken")
    if identity:
        return Credentials(username=entry.get("username") or None, identity_token=str(identity))
    if entry.get("auth"):
        user, password = _decode_auth(str(entry["auth"]), path, key)
        return Credentials(username=user, password=password)
    if entry.get("username") and entry.get("password") is not None:
        return Credentials(username=str(entry["username"]), password=str(entry["password"]))
    return None


def run_credential_helper(helper: str, registry: str) -> Credentials | None:
    """Ask `docker-credential-<helper> get` for `registry`; None when the helper is missing or has no entry."""
    binary = shutil.which(f"docker-credential-{helper}")
    if binary is None:
        log.warning(
            "docker config names credential helper %r for %s but docker-credential-%s is not on PATH; "
            "falling back to the auths section",
            helper, registry, helper,
        )
        return None
    server = DOCKER_HUB_CONFIG_KEY if registry == "docker.io" else registry
    proc: subprocess.CompletedProcess[str] | None = None
    try:
        proc = subprocess.run(
            [binary, "get"], input=server, capture_output=True, text=True,
            timeout=HELPER_TIMEOUT_SECONDS, check=False,
        )
    except subprocess.TimeoutExpired:
        pass
    if proc is None:  # outside the except block: TimeoutExpired holds the helper's partial output
        raise DockerConfigError(
            f"credential helper docker-credential-{helper} did not answer for {registry} "
            f"in {HELPER_TIMEOUT_SECONDS:.0f}s"
        )
    if proc.returncode != 0:
        message = proc.stdout.strip() or proc.stderr.strip()
        if "credentials not found" in message.lower():
            return None
        raise DockerConfigError(
            f"credential helper docker-credential-{helper} failed for {registry} (exit {proc.returncode})"
        )
    username: str | None
    secret: str | None
    try:
        answer = json.loads(proc.stdout)
        username, secret = str(answer["Username"]), str(answer["Secret"])
    except (ValueError, KeyError, TypeError):
        username = secret = None
    if username is None or secret is None:  # outside the except block: the parse error holds the secret
        raise DockerConfigError(f"credential helper docker-credential-{helper} returned malformed JSON for {registry}")
    if username == "<token>":
        return Credentials(identity_token=secret)
    return Credentials(username=username, password=secret)


def load_credentials(registry: str, config_path: Path | None = None) -> Credentials | None:
    """Credentials for `registry` from a Docker config: credHelpers, then credsStore, then auths; None when absent."""
    path = config_path or default_config_path()
    if not path.exists():
        if config_path is not None:
            raise DockerConfigError(f"docker config {path} does not exist")
        return None
    config: Any = None
    problem = ""
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        problem = type(exc).__name__
    if problem:  # outside the except block: a JSON error holds the whole document, secrets included
        raise DockerConfigError(f"cannot read docker config {path}: {problem}")
    if not isinstance(config, dict):
        raise DockerConfigError(f"{path}: top level must be a JSON object")
    wanted = normalize_registry_key(registry)

    helpers = config.get("credHelpers") or {}
    if not isinstance(helpers, dict):
        raise DockerConfigError(f"{path}: credHelpers must be an object")
    helper = next((h for k, h in helpers.items() if normalize_registry_key(k) == wanted), None)
    if helper is None:
        helper = config.get("credsStore") or None
    if helper:
        creds = run_credential_helper(str(helper), wanted)
        if creds is not None:
            return creds

    auths = config.get("auths") or {}
    if not isinstance(auths, dict):
        raise DockerConfigError(f"{path}: auths must be an object")
    for key, entry in auths.items():
        if normalize_registry_key(key) == wanted:
            creds = _entry_credentials(entry, path, key)
            if creds is not None:
                return creds
    return None
