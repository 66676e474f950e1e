"""The resource bases every environment shares: targets, registry, builder, canary, workspace."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from pydantic import Field

from resources.builders.base import ImageBuilder
from resources.git.runner import GitCredentials
from resources.registry import RegistryClient
from resources.release.targets import TargetsConfig, load_targets


class TargetsResource(dg.ConfigurableResource):
    """The targets file (what to build); path defaults to $STREAMABLE_TARGETS or ./targets.yaml."""

    path: str | None = Field(default=None, description="targets YAML file")

    def load(self) -> TargetsConfig:
        return load_targets(self.path)


class RegistryResource(dg.ConfigurableResource):
    """OCI registry access (any Docker Registry v2 / OCI distribution registry)."""

    username: str | None = Field(default=None, description="registry user (Basic/Bearer auth)")
    password: str | None = Field(default=None, repr=False, description="registry password; pass as dg.EnvVar")
    docker_config: str | None = Field(default=None, description="docker config.json to read credentials from")
    plain_http: bool | None = Field(default=None, description="allow plain HTTP; None = loopback only")
    timeout_s: float = 60.0

    def prepare_repository(self, repository: str) -> list[str]:
        """Make sure a repository can receive pushes; returns notes for metadata (nothing to do for plain OCI)."""
        return []

    def release_tag(self, repository: str, tag: str) -> tuple[str, str | None, bool]:
        """(tag to release under, note when it differs, whether that tag is write-once); plain OCI: the tag, mutable."""
        return tag, None, False

    def ui_url(self, repository: str) -> str | None:
        """A web page of the repository when the registry has a known UI (plain OCI registries: none)."""
        return None

    def client(self, registry: str) -> RegistryClient:
        """A client for one registry host."""
        return RegistryClient(
            registry,
            username=self.username,
            password=self.password,
            docker_config=Path(self.docker_config) if self.docker_config else None,
            plain_http=self.plain_http,
            timeout=self.timeout_s,
        )


class BuilderResource(dg.ConfigurableResource):
    """Base for builder resources: anything that hands out an ImageBuilder."""

    def get_builder(self) -> ImageBuilder:
        raise NotImplementedError(f"{type(self).__name__} does not provide a builder")


class CanaryBase(dg.ConfigurableResource):
    """Canary verification on a cluster; this base means "no cluster configured" (STREAMABLE_ENV=local)."""

    def run_canary(self, image_ref: str, *, command: list[str], args: list[str], timeout_s: int) -> dict:
        """Start a pod for the image on a SOCI node; `canary_*` metadata on how it started. Raises when it did not."""
        raise RuntimeError(
            f"canary verification of {image_ref} is enabled for this target, but no cluster is configured "
            "(STREAMABLE_ENV=local); disable verify.canary or run with STREAMABLE_ENV=eks"
        )


class WorkspaceResource(dg.ConfigurableResource):
    """Where runs keep git caches and scratch checkouts."""

    state_dir: str = Field(default=".streamable")
    git_username: str | None = Field(default=None, description="HTTPS user for private git remotes")
    git_password: str | None = Field(default=None, repr=False, description="HTTPS password or token; pass as dg.EnvVar")

    def git_credentials(self) -> GitCredentials | None:
        """Credentials for fetching private remotes (handed to git through GIT_ASKPASS only)."""
        if self.git_username and self.git_password:
            return GitCredentials(self.git_username, self.git_password)
        return None

    @property
    def git_cache(self) -> Path:
        return Path(self.state_dir) / "git-cache"

    @property
    def scratch(self) -> Path:
        p = Path(self.state_dir) / "work"
        p.mkdir(parents=True, exist_ok=True)
        return p


def secret_env(name: str, is_set: bool) -> dg.EnvVar | None:
    """A dg.EnvVar (read at launch, hidden in the UI) for a secret variable that is set, else None."""
    return dg.EnvVar(name) if is_set else None
