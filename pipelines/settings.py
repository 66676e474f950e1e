"""Every STREAMABLE_* setting of the code location, read once from the environment into one typed model.

Secrets are not kept here: the model only records *whether* a secret variable is set, and the resource
definitions pass it on as a `dg.EnvVar` (read at launch, hidden in the UI). A bad or missing value is a
`SettingError` that names the variable.
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_core import PydanticUseDefault
from pydantic_settings import BaseSettings, SettingsConfigDict

from resources.errors import StreamableError

PREFIX = "STREAMABLE_"
LOCAL_STATE_DIR = ".streamable"
EKS_STATE_DIR = "/tmp/streamable"
SECRET_VARIABLES = ("STREAMABLE_REGISTRY_PASSWORD", "STREAMABLE_GIT_PASSWORD", "AWS_SECRET_ACCESS_KEY",
                    "AWS_SESSION_TOKEN")
"""Variables that hold secrets: only their presence is read here; their values go through dg.EnvVar."""


class SettingError(StreamableError, ValueError):
    """A setting is missing or has a bad value; the message names the variable and what it needs."""


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        quoted = ", ".join(repr(a) for a in allowed[:-1]) + f" or {allowed[-1]!r}"
        raise ValueError(f"{name} must be {quoted}, got {value!r}")
    return value


def _csv(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


class Settings(BaseSettings):
    """The code location's environment: STREAMABLE_* variables (and the AWS_* ones boto3 also reads)."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="ignore", frozen=True)

    env: str = Field(default="local", description="local (the stack of scripts/stack.sh) or eks")
    state_dir: str | None = Field(default=None, description="git caches and scratch checkouts; default per env")
    stack_dir: str = "/var/lib/streamable-stack"
    targets: str | None = Field(default=None, description="targets YAML file; default ./targets.yaml")
    docker_host: str | None = Field(default=None, description="Docker engine of the local stack")
    docker_bin: str | None = Field(default=None, description="docker CLI with BuildKit; detected when unset")
    registry: str = Field(default="127.0.0.1:5055", description="registry the backfill scans when none is set")
    registry_username: str | None = None
    registry_password_set: bool = Field(default=False, exclude=True)
    git_username: str | None = Field(default=None, description="HTTPS user for private git remotes")
    git_password_set: bool = Field(default=False, exclude=True)
    soci_filters: str = Field(default="*:*", description="comma-separated repository:tag globs to index")
    backfill_registry: str | None = None
    push_queue_url: str | None = Field(default=None, description="SQS queue of ECR push events; enables the sensor")
    gc_policy_files: str | None = Field(default=None, description="comma-separated buildkitd.toml/daemon.json files")
    # EKS
    ecr_region: str | None = None
    ecr_registry_id: str | None = None
    ecr_endpoint_url: str | None = None
    ecr_tag_mutability: str = "MUTABLE"
    builder_discovery: str = "statefulset"
    builder_addrs: str | None = None
    builder_tls: str = "secret"
    builder_tls_ca: str | None = None
    builder_tls_cert: str | None = None
    builder_tls_key: str | None = None
    builder_namespace: str | None = None
    builder_statefulset: str | None = None
    builder_max_parallel: int = 2
    buildctl: str = "buildctl"
    kubeconfig: str | None = None
    canary_namespace: str | None = None
    recorder_image: str | None = Field(default=None, description="image of the startup recorder pod (EKS)")
    startup_work_dir: str | None = Field(default=None, description="disk directory for startup-recorder rootfs")
    inflate_library: str = Field(
        default="auto", description="inflate behind zTOC builds and lazy reads: auto (zlib-ng when installed), "
        "zlib-ng or zlib; read by resources/soci/ztoc/zlib_ctypes.py, checked here"
    )
    io_bucket: str | None = None
    io_prefix: str = "streamable"
    s3_endpoint_url: str | None = None
    # Read by boto3 too; not prefixed.
    aws_region: str | None = Field(default=None, validation_alias=AliasChoices("AWS_REGION"))
    aws_default_region: str | None = Field(default=None, validation_alias=AliasChoices("AWS_DEFAULT_REGION"))
    aws_access_key_id: str | None = Field(default=None, validation_alias=AliasChoices("AWS_ACCESS_KEY_ID"))
    aws_secret_access_key_set: bool = Field(default=False, exclude=True)
    aws_session_token_set: bool = Field(default=False, exclude=True)

    @field_validator("*", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        """An empty or blank variable counts as not set (the default applies)."""
        if isinstance(value, str):
            value = value.strip()
            if not value:
                raise PydanticUseDefault()
        return value

    @field_validator("env")
    @classmethod
    def _env_choice(cls, value: str) -> str:
        if value not in ("local", "eks"):
            raise ValueError(f"STREAMABLE_ENV={value!r} is not one of: local, eks")
        return value

    @field_validator("builder_discovery")
    @classmethod
    def _discovery_choice(cls, value: str) -> str:
        return _choice("STREAMABLE_BUILDER_DISCOVERY", value, ("statefulset", "static"))

    @field_validator("inflate_library")
    @classmethod
    def _inflate_choice(cls, value: str) -> str:
        return _choice("STREAMABLE_INFLATE_LIBRARY", value.lower(), ("auto", "zlib-ng", "zlib"))  # as zlib_ctypes

    @field_validator("builder_tls")
    @classmethod
    def _tls_choice(cls, value: str) -> str:
        return _choice("STREAMABLE_BUILDER_TLS", value, ("secret", "files", "none"))

    # ---- derived values ---------------------------------------------------------------------------

    @property
    def state_root(self) -> str:
        """Where runs keep state: STREAMABLE_STATE_DIR, else the environment's default."""
        return self.state_dir or (EKS_STATE_DIR if self.env == "eks" else LOCAL_STATE_DIR)

    @property
    def soci_filter_list(self) -> list[str]:
        return _csv(self.soci_filters)

    @property
    def builder_addr_list(self) -> list[str]:
        return _csv(self.builder_addrs)

    @property
    def gc_policy_file_list(self) -> list[str] | None:
        """The GC policy files to check, or None to use the repository's own buildkitd.toml."""
        return None if self.gc_policy_files is None else _csv(self.gc_policy_files)

    @property
    def region(self) -> str | None:
        """The ECR region: STREAMABLE_ECR_REGION, else AWS_REGION, else AWS_DEFAULT_REGION."""
        return self.ecr_region or self.aws_region or self.aws_default_region

    def require(self, field: str, hint: str) -> Any:
        """The field's value; SettingError naming its variable when it is not set."""
        value = getattr(self, field)
        if value in (None, "", [], ()):
            raise SettingError(f"{variable_name(field)} is not set: {hint}")
        return value


def variable_name(field: str) -> str:
    """The environment variable a Settings field is read from."""
    info = Settings.model_fields[field]
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return PREFIX + field.upper()


def load_settings() -> Settings:
    """Read the settings once from the process environment; SettingError names a bad variable."""
    present = {name: bool(os.environ.get(name, "").strip()) for name in SECRET_VARIABLES}
    try:
        return Settings(
            registry_password_set=present["STREAMABLE_REGISTRY_PASSWORD"],
            git_password_set=present["STREAMABLE_GIT_PASSWORD"],
            aws_secret_access_key_set=present["AWS_SECRET_ACCESS_KEY"],
            aws_session_token_set=present["AWS_SESSION_TOKEN"],
        )
    except ValidationError as exc:
        raise SettingError(_explain(exc)) from None


def _explain(exc: ValidationError) -> str:
    """One line per bad variable, naming it (and never echoing a secret: none is validated here)."""
    lines = []
    for err in exc.errors():
        cause = (err.get("ctx") or {}).get("error")
        field = str(err["loc"][0]) if err["loc"] else ""
        if isinstance(cause, ValueError):
            lines.append(str(cause))
        else:
            name = variable_name(field) if field in Settings.model_fields else field
            lines.append(f"{name}: {err['msg']}")
    return "; ".join(lines)
