"""Image reference, tag and digest grammar."""

from __future__ import annotations

import dataclasses

import pytest

from resources.oci.refs import (
    ImageRef,
    compute_digest,
    is_loopback_host,
    validate_digest,
    validate_reference,
    validate_repository,
    validate_tag,
)

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        ("127.0.0.1:5055/team/app:v1", "127.0.0.1:5055", "team/app", "v1", None),
        ("127.0.0.1:5055/team/app", "127.0.0.1:5055", "team/app", None, None),
        (
            f"123.dkr.ecr.us-east-1.amazonaws.com/team/app@{DIGEST}",
            "123.dkr.ecr.us-east-1.amazonaws.com",
            "team/app",
            None,
            DIGEST,
        ),
        (
            f"registry.example.com:443/a/b/c:1.2.3-rc.1@{DIGEST}",
            "registry.example.com:443",
            "a/b/c",
            "1.2.3-rc.1",
            DIGEST,
        ),
        ("localhost/app:latest", "localhost", "app", "latest", None),
        ("localhost:5000/app", "localhost:5000", "app", None, None),
        ("[::1]:5000/app:t", "[::1]:5000", "app", "t", None),
        ("ubuntu", "docker.io", "library/ubuntu", None, None),
        ("ubuntu:22.04", "docker.io", "library/ubuntu", "22.04", None),
        ("team/app:v1", "docker.io", "team/app", "v1", None),
        ("docker.io/team/app", "docker.io", "team/app", None, None),
        ("Registry/team/app", "Registry", "team/app", None, None),
        ("r.io/a__b/c-d--e/f.g_h:_tag", "r.io", "a__b/c-d--e/f.g_h", "_tag", None),
    ],
)
def test_parse(text: str, registry: str, repository: str, tag: str | None, digest: str | None) -> None:
    ref = ImageRef.parse(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (registry, repository, tag, digest)
    assert ImageRef.parse(str(ref)) == ref


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("", "empty"),
        ("127.0.0.1:5055/Team/app:v1", "repository 'Team/app'"),
        ("127.0.0.1:5055/team/app:-bad", "tag '-bad'"),
        ("127.0.0.1:5055/team/app:", "tag ''"),
        ("127.0.0.1:5055/team/app@sha256:abc", "'sha256:abc'"),
        ("127.0.0.1:5055/team/app@md5:" + "a" * 32, "unsupported algorithm"),
        ("127.0.0.1:5055/team//app", "repository 'team//app'"),
        ("127.0.0.1:5055/team/app/", "repository 'team/app/'"),
        ("http://127.0.0.1:5055/team/app", "URL scheme"),
        ("127.0.0.1:5055/team/app:v 1", "whitespace"),
        ("bad_host:5000/app", "registry 'bad_host:5000'"),
        ("r.io/" + "a" * 260, "longer than 255"),
        ("r.io/app:" + "t" * 129, "tag"),
    ],
)
def test_parse_errors_name_the_bad_part(text: str, named: str) -> None:
    with pytest.raises(ValueError) as exc:
        ImageRef.parse(text)
    assert named in str(exc.value)
    if text:
        assert repr(text) in str(exc.value) or text in str(exc.value)


def test_reference_and_str() -> None:
    ref = ImageRef("127.0.0.1:5055", "team/app")
    assert ref.reference == "latest"
    assert str(ref) == "127.0.0.1:5055/team/app"
    tagged = ref.with_tag("v1")
    assert tagged.reference == "v1"
    assert str(tagged) == "127.0.0.1:5055/team/app:v1"
    pinned = tagged.with_digest(DIGEST)
    assert pinned.reference == DIGEST
    assert pinned.tag == "v1"
    assert str(pinned) == f"127.0.0.1:5055/team/app:v1@{DIGEST}"
    retagged = pinned.with_tag("v2")
    assert retagged.digest is None and retagged.reference == "v2"
    assert ref.name == "127.0.0.1:5055/team/app"


def test_constructor_validates_and_is_frozen() -> None:
    with pytest.raises(ValueError, match="invalid tag"):
        ImageRef("r.io", "app", tag="no/slash")
    with pytest.raises(ValueError, match="invalid digest"):
        ImageRef("r.io", "app", digest="sha256:" + "A" * 64)
    ref = ImageRef("r.io", "app")
    with pytest.raises(dataclasses.FrozenInstanceError):
        ref.tag = "x"  # type: ignore[misc]


@pytest.mark.parametrize("tag", ["a", "_", "v1.2.3", "A_b-c.d", "x" * 128, "0"])
def test_valid_tags(tag: str) -> None:
    assert validate_tag(tag) == tag


@pytest.mark.parametrize("tag", ["", ".a", "-a", "a/b", "a:b", "x" * 129, "ä"])
def test_invalid_tags_name_the_tag(tag: str) -> None:
    with pytest.raises(ValueError) as exc:
        validate_tag(tag)
    assert repr(tag) in str(exc.value)


def test_digests_and_references() -> None:
    assert validate_digest(compute_digest(b"x")) == compute_digest(b"x")
    assert compute_digest(b"", "sha512").startswith("sha512:")
    assert validate_digest(compute_digest(b"", "sha512"))
    assert validate_reference("v1") == "v1"
    assert validate_reference(DIGEST) == DIGEST
    with pytest.raises(ValueError, match="lowercase hex"):
        validate_digest("sha256:" + "g" * 64)
    with pytest.raises(ValueError, match="invalid repository"):
        validate_repository("a/B")


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.9.9.9", True), ("localhost", True), ("[::1]", True), ("::1", True),
     ("128.0.0.1", False), ("126.255.255.255", False), ("registry.example.com", False),
     ("localhost.example.com", False)],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback
