"""Release and candidate tags for a build, following docker/metadata-action conventions."""

from __future__ import annotations

import re
from dataclasses import dataclass

from resources.release.targets import TagScheme

_SEMVER_RE = re.compile(
    r"^v?(?P<major>0|[1-9]\d*)\.(?P<minor>0|[1-9]\d*)\.(?P<patch>0|[1-9]\d*)"
    r"(?:-(?P<pre>[0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$"
)
_TAG_INVALID = re.compile(r"[^A-Za-z0-9_.-]")


def sanitize_tag(value: str) -> str:
    """A valid OCI tag from a branch name: invalid characters become '-', at most 128 characters."""
    tag = _TAG_INVALID.sub("-", value).lstrip(".-")
    if not tag:
        raise ValueError(f"cannot make a tag from {value!r}")
    return tag[:128]


@dataclass(frozen=True)
class GitRef:
    """A git ref name split into its kind and short name."""

    kind: str  # "branch" | "tag" | "other"
    name: str

    @classmethod
    def parse(cls, ref: str | None) -> GitRef | None:
        """Parse `refs/heads/x`, `refs/tags/x` or a bare branch name."""
        if not ref:
            return None
        if ref.startswith("refs/heads/"):
            return cls("branch", ref[len("refs/heads/"):])
        if ref.startswith("refs/tags/"):
            return cls("tag", ref[len("refs/tags/"):])
        if ref.startswith("refs/"):
            return cls("other", ref)
        return cls("branch", ref)


CANDIDATE_TAG_RE = re.compile(r"^build-[0-9a-f]{12}-[0-9a-f]{8}(-soci)?$")


def candidate_tag(commit: str, run_id: str) -> str:
    """Immutable tag a fresh build is pushed under before it is indexed and verified."""
    return f"build-{commit[:12]}-{run_id.replace('-', '')[:8]}"


def is_candidate_tag(tag: str | None) -> bool:
    """True for the pipeline's own staging tags (`build-<sha12>-<run8>` and its `-soci` output)."""
    return tag is not None and CANDIDATE_TAG_RE.match(tag) is not None


def soci_tag(candidate: str) -> str:
    """Tag of the SOCI-enabled image made from a candidate."""
    return f"{candidate}-soci"


def release_tags(scheme: TagScheme, *, commit: str, ref: str | None, default_branch: str) -> list[str]:
    """Tags a verified image is released under, in a stable order without duplicates."""
    tags: list[str] = []
    if scheme.sha and commit.strip("0"):  # a context outside git has no commit to name
        tags.append(f"sha-{commit[:7]}")
    parsed = GitRef.parse(ref)
    if parsed and parsed.kind == "branch":
        if scheme.branch:
            tags.append(sanitize_tag(parsed.name))
        if scheme.latest and parsed.name == default_branch:
            tags.append("latest")
    if parsed and parsed.kind == "tag":
        m = _SEMVER_RE.match(parsed.name)
        if m and scheme.semver:
            major, minor, patch, pre = m["major"], m["minor"], m["patch"], m["pre"]
            tags.append(f"{major}.{minor}.{patch}" + (f"-{pre}" if pre else ""))
            if not pre:
                tags += [f"{major}.{minor}", major] if major != "0" else [f"{major}.{minor}"]
                if scheme.latest:
                    tags.append("latest")
        elif not m:
            tags.append(sanitize_tag(parsed.name))
    tags.extend(scheme.extra)
    return list(dict.fromkeys(tags))
