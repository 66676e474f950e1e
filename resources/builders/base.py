"""The contract every image builder implements: a build request in, a pushed image digest out."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from resources.errors import StreamableError
from resources.log import LogFn


@dataclass(frozen=True)
class BuildRequest:
    """One image build: what to build, with which inputs, and where to push it."""

    target: str
    image_ref: str
    """Full destination reference with the immutable candidate tag, e.g. `reg/repo:cand-<sha>`."""
    dockerfile: str = "Dockerfile"
    """Dockerfile path relative to the context."""
    context_dir: Path | None = None
    """Local build context (a checked-out tree). Exactly one of context_dir / git_context."""
    git_context: str | None = None
    """Remote git context for buildctl, `https://host/repo.git#<ref>:<subdir>`."""
    build_args: Mapping[str, str] = field(default_factory=dict)
    secrets: Mapping[str, Path] = field(default_factory=dict)
    """BuildKit secret id -> file holding the value (never passed as a build arg)."""
    target_stage: str | None = None
    platforms: tuple[str, ...] = ()
    cache_ref: str | None = None
    """Registry cache reference (`repo:buildcache`); None disables cache import/export."""
    routing_key: str = ""
    """Stable key (repo + context path) used to pick a warm builder."""
    labels: Mapping[str, str] = field(default_factory=dict)
    no_cache: bool = False
    """Build every step afresh (`--no-cache`): e.g. after a build secret rotated (secrets are not in the cache key)."""
    allow_platform_mismatch: bool = False
    """Accept a base image of another platform than the build's (BuildKit's InvalidBaseImagePlatform warning)."""


@dataclass(frozen=True)
class BuildResult:
    """What a finished build pushed and how it went."""

    image_ref: str
    digest: str
    """Digest of the pushed manifest (or image index for multi-platform builds)."""
    builder: str
    duration_s: float
    cache_hits: int | None = None
    steps_total: int | None = None
    log_tail: str = ""
    warnings: tuple[str, ...] = ()
    """BuildKit's `WARN:` lines (e.g. `InvalidBaseImagePlatform: ...`)."""


@dataclass(frozen=True)
class PruneResult:
    """Cache usage of one builder before and after a prune."""

    builder: str
    bytes_before: int
    bytes_after: int
    freed_bytes: int


class BuildError(StreamableError, RuntimeError):
    """A build failed; carries the target, the failing step and its output."""

    def __init__(self, target: str, message: str, *, step: str | None = None, output: str = "",
                 pushed: tuple[tuple[str, str], ...] = (), warnings: tuple[str, ...] = ()) -> None:
        self.target = target
        self.step = step
        self.output = output
        self.pushed = pushed
        """(reference, digest) of images the builder pushed before the build failed: candidates to discard."""
        self.warnings = warnings
        where = f" at step {step!r}" if step else ""
        tail = f"\n--- output of the failing step ---\n{output}" if output else ""
        super().__init__(f"build of target {target!r} failed{where}: {message}{tail}")


class ImageBuilder(Protocol):
    """Anything that can build and push an image and manage its build cache."""

    def build(self, request: BuildRequest, log: LogFn) -> BuildResult: ...

    def prune(
        self,
        *,
        keep_storage_bytes: int | None = None,
        keep_duration_s: int | None = None,
        free_storage_bytes: int | None = None,
        log: LogFn,
    ) -> list[PruneResult]: ...
