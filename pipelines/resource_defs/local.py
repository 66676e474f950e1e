"""Resources for STREAMABLE_ENV=local: the Docker engine with embedded BuildKit and the registry of scripts/stack.sh."""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from pipelines.resource_defs.base import (
    BuilderResource,
    CanaryBase,
    RegistryResource,
    TargetsResource,
    WorkspaceResource,
    secret_env,
)
from pipelines.settings import Settings
from resources.builders.base import ImageBuilder
from resources.builders.local_docker import LocalDockerBuilder


class LocalBuilderResource(BuilderResource):
    """BuildKit embedded in the local stack's Docker engine."""

    docker_host: str = Field(default="unix:///var/lib/streamable-stack/docker.sock")
    docker_bin: str | None = Field(default=None, description="docker CLI with BuildKit; detected when unset")
    network: str = "none"

    def get_builder(self) -> ImageBuilder:
        return LocalDockerBuilder(docker_host=self.docker_host, docker_bin=self.docker_bin, network=self.network)


def workspace_resource(settings: Settings) -> WorkspaceResource:
    """Workspace from STREAMABLE_STATE_DIR and, for private remotes, STREAMABLE_GIT_USERNAME / _PASSWORD."""
    return WorkspaceResource(
        state_dir=settings.state_root,
        git_username=settings.git_username,
        git_password=secret_env("STREAMABLE_GIT_PASSWORD", settings.git_password_set),
    )


def local_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    """Resources for STREAMABLE_ENV=local (the stack started by scripts/stack.sh)."""
    return {
        "targets": TargetsResource(path=settings.targets),
        "registry": RegistryResource(
            username=settings.registry_username,
            password=secret_env("STREAMABLE_REGISTRY_PASSWORD", settings.registry_password_set),
        ),
        "builder": LocalBuilderResource(
            docker_host=settings.docker_host or f"unix://{settings.stack_dir}/docker.sock",
            docker_bin=settings.docker_bin,
        ),
        "workspace": workspace_resource(settings),
        "canary": CanaryBase(),
    }
