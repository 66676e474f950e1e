"""Release tags follow docker/metadata-action conventions."""

from __future__ import annotations

from resources.release.tags import GitRef, candidate_tag, release_tags, sanitize_tag, soci_tag
from resources.release.targets import TagScheme

SHA = "0123456789abcdef0123456789abcdef01234567"


def test_default_branch_gets_sha_branch_latest() -> None:
    assert release_tags(TagScheme(), commit=SHA, ref="refs/heads/main", default_branch="main") == [
        "sha-0123456",
        "main",
        "latest",
    ]


def test_feature_branch_is_sanitized_and_not_latest() -> None:
    tags = release_tags(TagScheme(), commit=SHA, ref="refs/heads/feature/Add+x", default_branch="main")
    assert tags == ["sha-0123456", "feature-Add-x"]


def test_semver_tag_expands() -> None:
    assert release_tags(TagScheme(), commit=SHA, ref="refs/tags/v1.2.3", default_branch="main") == [
        "sha-0123456", "1.2.3", "1.2", "1", "latest"]
    assert release_tags(TagScheme(), commit=SHA, ref="refs/tags/v1.2.3-rc.1", default_branch="main") == [
        "sha-0123456",
        "1.2.3-rc.1",
    ]
    assert release_tags(TagScheme(latest=False), commit=SHA, ref="refs/tags/0.4.0", default_branch="main") == [
        "sha-0123456",
        "0.4.0",
        "0.4",
    ]


def test_non_semver_tag_and_disabled_parts() -> None:
    assert release_tags(TagScheme(), commit=SHA, ref="refs/tags/nightly", default_branch="main") == [
        "sha-0123456",
        "nightly",
    ]
    assert release_tags(TagScheme(sha=False, extra=("stable",)), commit=SHA, ref="main", default_branch="main") == [
        "main",
        "latest",
        "stable",
    ]


def test_candidate_and_helpers() -> None:
    assert candidate_tag(SHA, "a1b2c3d4-e5f6-7890") == "build-0123456789ab-a1b2c3d4"
    assert soci_tag("build-x") == "build-x-soci"
    assert sanitize_tag(".-x/y") == "x-y"
    assert GitRef.parse("refs/pull/1/head") == GitRef("other", "refs/pull/1/head")
