"""Refuse images whose base is of another platform than the one they are labelled with (BuildKit only warns)."""

from __future__ import annotations

from resources.builders.base import BuildError, BuildRequest
from resources.builders.progress import ProgressParser


def check_platforms(request: BuildRequest, parser: ProgressParser, *, pushed: tuple[tuple[str, str], ...],
                    builder: str) -> None:
    """BuildError when BuildKit used a base image of another platform, unless the request allows it."""
    mismatches = parser.platform_warnings
    if mismatches and not request.allow_platform_mismatch:
        raise BuildError(
            request.target,
            f"the image built on {builder} is not what its platform says: {mismatches[0]} "
            f"({len(mismatches)} warning(s)); use a base image for {', '.join(request.platforms) or 'that platform'} "
            "or set allow_platform_mismatch: true on the target",
            step="platform check", output="\n".join(f"WARN: {w}" for w in mismatches), pushed=pushed,
            warnings=tuple(parser.warnings),
        )
