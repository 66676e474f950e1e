"""What the supply-chain assets hand each other: typed, frozen values (pickled by the IO manager)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class BuiltImage:
    """The `image` asset: a build pushed under its immutable candidate tag."""

    target: str
    registry: str
    repository: str
    candidate_tag: str
    digest: str
    commit: str
    ref: str | None
    dirty: bool
    builder: str
    overridden_build_args: tuple[str, ...] = ()
    """Run-config build args that differ from targets.yaml: such a build does not move the target's tags."""
    extra_tags: tuple[str, ...] = ()
    """Tags the run asked for explicitly (run config `extra_tags`)."""


@dataclass(frozen=True)
class PlatformIndex:
    """One platform of a SOCI-enabled image."""

    platform: str
    manifest_digest: str
    soci_index_digest: str | None
    """None when no layer of this platform could be indexed."""


@dataclass(frozen=True)
class SociImage:
    """The `soci_index` asset: the SOCI-enabled image made from a build."""

    image: BuiltImage
    soci_tag: str
    image_index_digest: str
    platforms: tuple[PlatformIndex, ...]
    startup: dict[str, Any] | None = None
    """The cost of a start from the candidate's startup profile (pipelines/supply_chain/startup.py), if any."""

    @property
    def registry(self) -> str:
        return self.image.registry

    @property
    def repository(self) -> str:
        return self.image.repository


@dataclass(frozen=True)
class ReleasedImage:
    """The `release` asset: the verified SOCI-enabled image and the tags moved to it."""

    soci: SociImage
    release_tags: tuple[str, ...]
    held_back_tags: tuple[str, ...] = ()
    """Tags of the target's scheme not moved (the build overrode build args)."""

    @property
    def registry(self) -> str:
        return self.soci.registry

    @property
    def repository(self) -> str:
        return self.soci.repository

    @property
    def image_index_digest(self) -> str:
        return self.soci.image_index_digest


@dataclass(frozen=True)
class StartupRecord:
    """The `startup_profile` asset: whether the candidate's start was recorded, and where the profile is stored."""

    recorded: bool
    image_digest: str
    manifest_digest: str | None = None
    artifact_digest: str | None = None
    blob_digest: str | None = None
