"""Where backfill images come from: partition keys for images, and catalogs that list a registry's images."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from resources.aws.ecr import EcrRegistry, tag_is_immutable
from resources.registry import RegistryClient, RegistryNotFoundError

KEY_DIGEST_CHARS = 12
_KEY_RE = re.compile(r"^(?P<repo>[a-z0-9._~-]+)=(?P<tag>[A-Za-z0-9_.%-]+)\+(?P<digest>[0-9a-f]{12})$")


# --------------------------------------------------------------------------------------------- partition keys


@dataclass(frozen=True)
class ImageKey:
    """What a partition key names: repository, tag, and the start of the manifest digest's hex."""

    repository: str
    tag: str
    digest_prefix: str

    def matches(self, digest: str) -> bool:
        """True when `digest` is the content this key was made for."""
        return digest.split(":", 1)[-1].startswith(self.digest_prefix)


def image_key(repository: str, tag: str, digest: str) -> str:
    """Partition key for `repository:tag@digest`: `team~app=v1.2.3+<12 hex>`.

    Free of `, / | : @` and `...`; injective for valid repositories and tags ('~', '=', '+', '%' appear in
    neither), so `parse_image_key` gives the repository and tag back.
    """
    tag_part = tag.replace(".", "%2E") if "..." in tag else tag
    hex_part = digest.split(":", 1)[-1][:KEY_DIGEST_CHARS]
    if len(hex_part) != KEY_DIGEST_CHARS:
        raise ValueError(f"image {repository}:{tag}: digest {digest!r} is too short for a partition key")
    return f"{repository.replace('/', '~')}={tag_part}+{hex_part}"


def parse_image_key(key: str) -> ImageKey:
    """Inverse of `image_key`; a clear error names a key that was not made by it."""
    m = _KEY_RE.match(key)
    if not m:
        raise ValueError(f"partition key {key!r} is not an image key (expected '<repo with ~ for />=<tag>+<12 hex>')")
    return ImageKey(m["repo"].replace("~", "/"), m["tag"].replace("%2E", "."), m["digest"])


# --------------------------------------------------------------------------------------------- listing


@dataclass(frozen=True)
class ListedImage:
    """A tag in a repository, with what the listing already knows about it."""

    repository: str
    tag: str
    digest: str | None = None
    artifact_media_type: str | None = None


class ImageCatalog(Protocol):
    """Lists repositories and their tagged images."""

    def repositories(self) -> list[str]: ...

    def images(self, repository: str) -> list[ListedImage]: ...

    def tag_immutable(self, repository: str, tag: str) -> bool: ...


class OciCatalog:
    """Any OCI/Docker registry: `/v2/_catalog` and `/tags/list` (digests are resolved later)."""

    def __init__(self, client: RegistryClient, repositories: Sequence[str] | None = None) -> None:
        self.client = client
        self._repositories = list(repositories) if repositories is not None else None

    def repositories(self) -> list[str]:
        return sorted(self._repositories if self._repositories is not None else self.client.catalog())

    def images(self, repository: str) -> list[ListedImage]:
        try:
            return [ListedImage(repository, t) for t in self.client.list_tags(repository)]
        except RegistryNotFoundError:
            return []

    def tag_immutable(self, repository: str, tag: str) -> bool:
        return False


class EcrCatalog:
    """Amazon ECR through `resources.aws.ecr.EcrRegistry` (boto3 paging); knows which tags are immutable."""

    def __init__(self, ecr: EcrRegistry) -> None:
        self.ecr = ecr

    def repositories(self) -> list[str]:
        kwargs = {"registryId": self.ecr.registry_id} if self.ecr.registry_id else {}
        pages = self.ecr.client.get_paginator("describe_repositories").paginate(**kwargs)
        return sorted(r["repositoryName"] for page in pages for r in page.get("repositories", []))

    def images(self, repository: str) -> list[ListedImage]:
        return [ListedImage(repository, tag, d.get("imageDigest"), d.get("artifactMediaType"))
                for d in self.ecr.describe_images(repository, tag_status="TAGGED") for tag in d.get("imageTags") or []]

    def tag_immutable(self, repository: str, tag: str) -> bool:
        repo = self.ecr.describe_repository(repository) or {}
        exclusions = [f.get("filter", "") for f in repo.get("imageTagMutabilityExclusionFilters") or []]
        return tag_is_immutable(tag, repo.get("imageTagMutability", "MUTABLE"), exclusions)
