"""Image references (`registry/repository:tag@digest`), tags and digests, per the distribution/reference grammar."""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass, replace

DEFAULT_REGISTRY = "docker.io"
MAX_NAME_LENGTH = 255

_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY_RE = re.compile(rf"^{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*$")
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_REGISTRY_RE = re.compile(rf"^(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|{_IPV6})(?::[0-9]+)?$")
_DIGEST_RE = re.compile(r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")
_KNOWN_DIGEST_HEX = {"sha256": 64, "sha512": 128}


def validate_tag(tag: str) -> str:
    """Return `tag` when it is a valid OCI tag, else raise ValueError naming it."""
    if not isinstance(tag, str) or not _TAG_RE.match(tag):
        raise ValueError(
            f"invalid tag {tag!r}: a tag is 1-128 characters of [A-Za-z0-9_.-] and must not start with '.' or '-'"
        )
    return tag


def validate_digest(digest: str) -> str:
    """Return `digest` when it is `algorithm:hex` (sha256/sha512 checked strictly), else raise ValueError."""
    if not isinstance(digest, str) or not _DIGEST_RE.match(digest):
        raise ValueError(f"invalid digest {digest!r}: expected 'algorithm:encoded', e.g. 'sha256:<64 hex>'")
    algorithm, encoded = digest.split(":", 1)
    expected = _KNOWN_DIGEST_HEX.get(algorithm)
    if expected is None:
        raise ValueError(f"invalid digest {digest!r}: unsupported algorithm {algorithm!r} (use sha256 or sha512)")
    if len(encoded) != expected or not re.fullmatch(r"[a-f0-9]+", encoded):
        raise ValueError(f"invalid digest {digest!r}: {algorithm} needs {expected} lowercase hex characters")
    return digest


def validate_repository(repository: str) -> str:
    """Return `repository` when it is a valid repository path (lowercase components), else raise ValueError."""
    if not isinstance(repository, str) or not _REPOSITORY_RE.match(repository):
        raise ValueError(
            f"invalid repository {repository!r}: use '/'-separated lowercase components of [a-z0-9] "
            "joined by '.', '_', '__' or '-'"
        )
    return repository


def validate_registry(registry: str) -> str:
    """Return `registry` when it is `host[:port]` (a DNS name, IPv4 or [IPv6] address), else raise ValueError."""
    if not isinstance(registry, str) or not _REGISTRY_RE.match(registry):
        raise ValueError(
            f"invalid registry {registry!r}: expected 'host[:port]', e.g. '123.dkr.ecr.us-east-1.amazonaws.com'"
        )
    return registry


def is_loopback_host(host: str) -> bool:
    """True for localhost, 127.0.0.0/8 and ::1 (brackets allowed)."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_digest(reference: str) -> bool:
    """True when a manifest reference is a digest rather than a tag."""
    return ":" in reference


def validate_reference(reference: str) -> str:
    """Return a manifest reference (a tag or a digest) when valid, else raise ValueError naming it."""
    return validate_digest(reference) if is_digest(reference) else validate_tag(reference)


def digest_algorithm(digest: str) -> str:
    """The algorithm part of a digest (`sha256`)."""
    return validate_digest(digest).split(":", 1)[0]


def compute_digest(data: bytes, algorithm: str = "sha256") -> str:
    """Digest of `data` as `algorithm:hex`."""
    if algorithm not in _KNOWN_DIGEST_HEX:
        raise ValueError(f"unsupported digest algorithm {algorithm!r} (use sha256 or sha512)")
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def _split_domain(name: str) -> tuple[str, str]:
    """Split a name into (registry, repository) as docker does: a first part with '.', ':' or 'localhost' is a host."""
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        return first, rest
    if sep and first != first.lower():
        # distribution/reference treats an uppercase first component as a domain too.
        return first, rest
    return DEFAULT_REGISTRY, name


@dataclass(frozen=True)
class ImageRef:
    """A parsed image reference: registry host, repository path, optional tag and optional digest."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    def __post_init__(self) -> None:
        validate_registry(self.registry)
        validate_repository(self.repository)
        if self.tag is not None:
            validate_tag(self.tag)
        if self.digest is not None:
            validate_digest(self.digest)
        if len(self.name) > MAX_NAME_LENGTH:
            raise ValueError(f"invalid image name {self.name!r}: longer than {MAX_NAME_LENGTH} characters")

    @classmethod
    def parse(cls, ref: str) -> ImageRef:
        """Parse `[registry/]repository[:tag][@digest]`; a bare name gets registry docker.io (and `library/`)."""
        if not isinstance(ref, str) or not ref.strip():
            raise ValueError(f"invalid image reference {ref!r}: empty")
        if ref != ref.strip() or any(c.isspace() for c in ref):
            raise ValueError(f"invalid image reference {ref!r}: contains whitespace")
        if "://" in ref:
            raise ValueError(f"invalid image reference {ref!r}: must not contain a URL scheme")
        name, digest = ref, None
        if "@" in ref:
            name, digest = ref.split("@", 1)
        tag = None
        last_slash = name.rfind("/")
        colon = name.rfind(":")
        if colon > last_slash:
            name, tag = name[:colon], name[colon + 1 :]
        if not name:
            raise ValueError(f"invalid image reference {ref!r}: missing repository name")
        registry, repository = _split_domain(name)
        if registry == DEFAULT_REGISTRY and "/" not in repository:
            repository = f"library/{repository}"
        try:
            return cls(registry=registry, repository=repository, tag=tag, digest=digest)
        except ValueError as exc:
            raise ValueError(f"invalid image reference {ref!r}: {exc}") from None

    @property
    def name(self) -> str:
        """`registry/repository` without tag or digest."""
        return f"{self.registry}/{self.repository}"

    @property
    def reference(self) -> str:
        """What to ask the registry for: the digest if set, else the tag, else `latest`."""
        return self.digest or self.tag or "latest"

    def with_tag(self, tag: str) -> ImageRef:
        """The same repository at `tag` (any digest is dropped, so the tag is what gets resolved)."""
        return replace(self, tag=validate_tag(tag), digest=None)

    def with_digest(self, digest: str) -> ImageRef:
        """The same repository pinned to `digest` (the tag is kept for readability only)."""
        return replace(self, digest=validate_digest(digest))

    def __str__(self) -> str:
        out = self.name
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out
