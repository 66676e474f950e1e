"""Run config of the supply chain (UI launchpad, sensors)."""

import re

import dagster as dg
from pydantic import Field, field_validator

_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


class ImageBuildConfig(dg.Config):
    """Run config for a build, e.g. from the UI launchpad or a sensor."""

    commit: str | None = Field(default=None, description="commit SHA to build; default: head of the target's branch")
    ref: str | None = Field(default=None, description="git ref the commit belongs to (refs/heads/x, refs/tags/v1.2.3)")
    build_args: dict[str, str] = Field(
        default_factory=dict,
        description="build args merged over the target's; a build that overrides any is not the target as "
        "targets.yaml defines it, so it moves none of the target's release tags (only extra_tags)",
    )
    no_cache: bool = Field(
        default=False,
        description="rebuild every step (--no-cache), e.g. after a build secret "
        "rotated: BuildKit keeps secret contents out of its cache key",
    )
    extra_tags: list[str] = Field(
        default_factory=list, description="more tags to release the verified image under (e.g. 'try-greeting')"
    )

    @field_validator("extra_tags")
    @classmethod
    def _valid_tags(cls, tags: list[str]) -> list[str]:
        bad = [t for t in tags if not _TAG_RE.match(t)]
        if bad:
            raise ValueError(f"extra_tags: {', '.join(repr(t) for t in bad)} is not a valid OCI tag")
        return tags
