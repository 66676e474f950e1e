"""Build targets: the YAML file that says what to build, from where, and how to index and verify it."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from resources import defaults
from resources.errors import StreamableError
from resources.soci import limits
from resources.soci.node_compat import DEFAULT_NODE_COMPAT, NodeCompat, NodeCompatError
from resources.startup.settings import StartupSettings
from resources.startup.span_advice import DEFAULT_ZTOC_BUDGET_FRACTION

TARGETS_ENV_VAR = "STREAMABLE_TARGETS"
DEFAULT_TARGETS_FILE = "targets.yaml"
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_REPO_RE = re.compile(
    r"^[A-Za-z0-9.-]+(:[0-9]+)?/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$"
)
_PLATFORM_RE = re.compile(r"^[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?$")


class TargetsFileError(StreamableError, ValueError):
    """The targets file is missing or invalid; the message names the file, target and field."""


class FieldValueError(StreamableError, ValueError):
    """A check across fields of a model; `field` is the one the message is about (relative to the model)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GitSource(_Strict):
    """A git repository to build from."""

    repo: str = Field(description="clone URL or local path of the repository")
    ref: str = Field(default="main", description="default branch built when no commit is given")
    context: str = Field(default=".", description="build context directory inside the repository")

    @field_validator("context")
    @classmethod
    def _relative_context(cls, v: str) -> str:
        p = Path(v)
        if p.is_absolute() or ".." in p.parts:
            raise ValueError("must be a relative path inside the repository (no '..')")
        return v


class Source(_Strict):
    """Where the build context comes from: a git repository or a local directory."""

    git: GitSource | None = None
    local: Path | None = Field(default=None, description="local build context directory")

    @model_validator(mode="after")
    def _exactly_one(self) -> Source:
        if (self.git is None) == (self.local is None):
            raise ValueError("set exactly one of 'git' or 'local'")
        return self


class TagScheme(_Strict):
    """Release tags, like docker/metadata-action: sha-<7>, branch name, latest on the default branch, semver."""

    sha: bool = True
    branch: bool = True
    latest: bool = True
    semver: bool = True
    extra: tuple[str, ...] = ()


class SociSettings(_Strict):
    """How the SOCI index is built."""

    format: Literal["v2", "v1"] = "v2"
    span_size: int | Literal["auto"] = Field(
        default=defaults.SOCI_SPAN_SIZE,
        description="bytes per span, or 'auto': the span size (512 KiB .. 8 MiB) with the fewest bytes to start for "
        "the target's startup profile whose zTOCs stay within ztoc_budget_percent of the indexed layers",
    )
    ztoc_budget_percent: float = Field(
        default=100 * DEFAULT_ZTOC_BUDGET_FRACTION,
        gt=0,
        le=100,
        description="with span_size 'auto': zTOC bytes allowed, in % of the layers' bytes",
    )
    min_layer_size: int = Field(
        default=defaults.SOCI_MIN_LAYER_SIZE, ge=limits.MIN_LAYER_SIZE.low, le=limits.MIN_LAYER_SIZE.high
    )
    max_parallel_layers: int | None = Field(
        default=None,
        ge=limits.PARALLEL_LAYERS.low,
        le=limits.PARALLEL_LAYERS.high,
        description="layers indexed at once; None = min(4, cores)",
    )
    node_compat: str = Field(
        default=str(DEFAULT_NODE_COMPAT),
        description="oldest soci-snapshotter release on the nodes: v0.12 (default) writes no prefetch artifacts and no "
        "zTOC whose spans cross gzip members; v0.13+ writes prefetch artifacts; v0.14+ member-spanning zTOCs",
    )

    @field_validator("span_size", mode="before")
    @classmethod
    def _span_size(cls, v: object) -> object:
        if v == "auto":
            return v
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return limits.SPAN_SIZE.check("span_size", v)
        raise ValueError(
            f"must be a positive number of bytes or 'auto' (bytes: {limits.SPAN_SIZE.low}.."
            f"{limits.SPAN_SIZE.high}), got {v!r}"
        )

    @field_validator("node_compat", mode="before")
    @classmethod
    def _node_compat(cls, v: object) -> str:
        try:
            return str(NodeCompat.parse(str(v)))
        except NodeCompatError as exc:
            raise ValueError(str(exc)) from None

    @property
    def compat(self) -> NodeCompat:
        """`node_compat` parsed."""
        return NodeCompat.parse(self.node_compat)


class CanarySettings(_Strict):
    """Optional canary pod on a SOCI node (EKS only)."""

    enabled: bool = False
    command: tuple[str, ...] = Field(default=(), description="replaces the image's entrypoint (empty: keep it)")
    args: tuple[str, ...] = Field(default=(), description="replaces the image's CMD, e.g. ['--version']")
    timeout_s: int = Field(default=300, gt=0)


class VerifySettings(_Strict):
    """How the SOCI-enabled image is verified before release."""

    sample: int = Field(default=8, ge=limits.SAMPLE.low, le=limits.SAMPLE.high)
    required_files: tuple[str, ...] = ()
    canary: CanarySettings = CanarySettings()


class Target(_Strict):
    """One image to build, index, verify and release."""

    name: str
    source: Source
    dockerfile: str = "Dockerfile"
    build_args: dict[str, str] = Field(default_factory=dict)
    secrets: dict[str, str] = Field(
        default_factory=dict,
        description="BuildKit secret id -> environment variable holding the value "
        "(mounted with RUN --mount=type=secret)",
    )
    cache: Literal["registry", "none"] = Field(
        default="registry", description="registry: import/export BuildKit cache at <repository>:buildcache (buildctl)"
    )
    target_stage: str | None = None
    platforms: tuple[str, ...] = ()
    allow_platform_mismatch: bool = Field(
        default=False,
        description="accept a build whose base image is of another platform (BuildKit warns "
        "InvalidBaseImagePlatform and labels the image with the requested platform anyway); default: fail the build",
    )
    repository: str = Field(description="destination repository, e.g. 123.dkr.ecr.us-east-1.amazonaws.com/team/app")
    tags: TagScheme = TagScheme()
    soci: SociSettings = SociSettings()
    verify: VerifySettings = VerifySettings()
    startup: StartupSettings = StartupSettings()

    @model_validator(mode="after")
    def _auto_span_needs_profile(self) -> Target:
        if self.soci.span_size == "auto" and not self.startup.enabled:
            raise FieldValueError(
                "soci.span_size",
                "'auto' picks the span size from the startup profile: set "
                "startup.enabled: true (or a span size in bytes)",
            )
        return self

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError("must be lowercase letters, digits, '-' or '_' (max 63), starting with a letter or digit")
        return v

    @field_validator("repository")
    @classmethod
    def _repository(cls, v: str) -> str:
        if not _REPO_RE.match(v):
            raise ValueError("must be '<registry host[:port]>/<path>' in lowercase, without tag or digest")
        return v

    @field_validator("platforms")
    @classmethod
    def _platforms(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for p in v:
            if not _PLATFORM_RE.match(p):
                raise ValueError(f"{p!r} is not an OS/ARCH[/VARIANT] platform")
        return v

    @field_validator("build_args")
    @classmethod
    def _build_args(cls, v: dict[str, str]) -> dict[str, str]:
        for k in v:
            if not k or "=" in k:
                raise ValueError(f"build arg name {k!r} must be non-empty and contain no '='")
        return v

    @field_validator("secrets")
    @classmethod
    def _secrets(cls, v: dict[str, str]) -> dict[str, str]:
        for sid, env in v.items():
            if not re.match(r"^[A-Za-z0-9_.-]+$", sid):
                raise ValueError(f"secret id {sid!r} must be letters, digits, '_', '.' or '-'")
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", env):
                raise ValueError(f"secret {sid!r}: {env!r} is not an environment variable name")
        return v

    @property
    def cache_ref(self) -> str | None:
        """Registry reference for BuildKit's cache, or None when disabled."""
        return f"{self.repository}:buildcache" if self.cache == "registry" else None

    @property
    def registry(self) -> str:
        """Registry host of the destination repository."""
        return self.repository.split("/", 1)[0]

    @property
    def repository_path(self) -> str:
        """Repository path without the registry host."""
        return self.repository.split("/", 1)[1]

    @property
    def routing_key(self) -> str:
        """Stable key that keeps this target on a warm builder: repo + context path."""
        if self.source.git is not None:
            return f"{self.source.git.repo}:{self.source.git.context}"
        return f"local:{self.source.local}"


class TargetsConfig(_Strict):
    """The whole targets file."""

    targets: tuple[Target, ...]
    path: Path | None = None

    @model_validator(mode="after")
    def _unique(self) -> TargetsConfig:
        seen: set[str] = set()
        for t in self.targets:
            if t.name in seen:
                raise ValueError(f"target name {t.name!r} is used twice")
            seen.add(t.name)
        return self

    def get(self, name: str) -> Target:
        """The target called `name`, or a clear error listing the known ones."""
        for t in self.targets:
            if t.name == name:
                return t
        known = ", ".join(t.name for t in self.targets) or "none"
        raise KeyError(f"no target {name!r} in {self.path or 'the targets file'} (known: {known})")

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.targets]


def targets_path(path: str | Path | None = None) -> Path:
    """The targets file to use: explicit path, else $STREAMABLE_TARGETS, else ./targets.yaml."""
    return Path(path or os.environ.get(TARGETS_ENV_VAR) or DEFAULT_TARGETS_FILE)


def _describe(loc: tuple[int | str, ...], raw: dict) -> str:
    """Human location of a validation error: target name and field path."""
    parts = list(loc)
    if len(parts) >= 2 and parts[0] == "targets" and isinstance(parts[1], int):
        idx = parts[1]
        items = raw.get("targets") or []
        name = items[idx].get("name") if idx < len(items) and isinstance(items[idx], dict) else None
        who = f"target {name!r}" if name else f"target #{idx + 1}"
        field = ".".join(str(p) for p in parts[2:]) or "(the target itself)"
        return f"{who}, field {field!r}"
    return "field " + repr(".".join(str(p) for p in parts) or "(top level)")


def _loc(error: Any) -> tuple[int | str, ...]:
    """The error's location, extended by the field a cross-field check names (FieldValueError)."""
    cause = (error.get("ctx") or {}).get("error")
    extra = tuple(cause.field.split(".")) if isinstance(cause, FieldValueError) else ()
    return tuple(error["loc"]) + extra


def load_targets(path: str | Path | None = None) -> TargetsConfig:
    """Load and validate the targets file; errors name the file, the target and the field."""
    p = targets_path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise TargetsFileError(f"{p}: cannot read targets file ({exc.strerror or exc})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise TargetsFileError(f"{p}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict) or "targets" not in raw:
        raise TargetsFileError(f"{p}: expected a mapping with a 'targets' list")
    base = p.parent.resolve()
    for item in raw.get("targets") or []:
        local = (
            item.get("source", {}).get("local")
            if isinstance(item, dict) and isinstance(item.get("source"), dict)
            else None
        )
        if isinstance(local, str) and not Path(local).is_absolute():
            item["source"]["local"] = str(base / local)
        git = (
            item.get("source", {}).get("git")
            if isinstance(item, dict) and isinstance(item.get("source"), dict)
            else None
        )
        if isinstance(git, dict) and isinstance(git.get("repo"), str) and git["repo"].startswith("./"):
            git["repo"] = str(base / git["repo"])
    try:
        return TargetsConfig.model_validate({**raw, "path": p})
    except ValidationError as exc:
        lines = [f"{p}: {_describe(_loc(e), raw)}: {e['msg']}" for e in exc.errors()]
        raise TargetsFileError("invalid targets file\n" + "\n".join(lines)) from None
