"""Discard the candidate image a failed build already pushed, so no tag points at content that was not verified.

BuildKit pushes the image before it exports the registry cache, so a build can fail (daemon killed during the cache
export, platform mismatch found after the push) while its candidate tag is already in the registry
(tests/fakes/buildctl_transcripts/v0.23.2/build-killed-after-push). The OCI distribution API deletes manifests
by digest only, which removes every tag of that digest: the manifest is deleted only when no other tag points at
it (an identical earlier build may have been released under the same digest). When it cannot be deleted, the
outcome says so, and the caller records the candidate as failed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass

from resources.builders.base import LogFn
from resources.oci.refs import ImageRef
from resources.registry import RegistryClient, RegistryError, RegistryNotFoundError


@dataclass(frozen=True)
class DiscardOutcome:
    """What happened to one pushed candidate of a failed build."""

    image: str
    """`registry/repository:tag@digest` as BuildKit pushed it."""
    deleted: bool
    detail: str


def _other_tags(client: RegistryClient, repository: str, tag: str | None, digest: str) -> list[str]:
    """Tags of the repository other than `tag` that resolve to `digest`."""
    out = []
    for other in client.list_tags(repository):
        if other == tag:
            continue
        desc = client.head_manifest(repository, other)
        if desc is not None and desc.digest == digest:
            out.append(other)
    return out


def discard_one(client: RegistryClient, ref: ImageRef, digest: str) -> DiscardOutcome:
    """Delete the manifest `digest` that `ref`'s tag points at, unless another tag shares it or it moved."""
    image = f"{ref}@{digest}"
    try:
        current = client.head_manifest(ref.repository, ref.tag) if ref.tag else None
        if ref.tag and current is None:
            return DiscardOutcome(image, True, "the candidate tag is not in the registry")
        if current is not None and current.digest != digest:
            return DiscardOutcome(image, False, f"the candidate tag now points at {current.digest}; left alone")
        shared = _other_tags(client, ref.repository, ref.tag, digest)
        if shared:
            return DiscardOutcome(image, False, f"digest also tagged {', '.join(sorted(shared)[:5])}; not deleted")
        client.delete_manifest(ref.repository, digest)
    except RegistryNotFoundError:
        return DiscardOutcome(image, True, "already gone")
    except RegistryError as exc:
        return DiscardOutcome(image, False, f"the registry refused the delete: {exc}")
    return DiscardOutcome(image, True, "manifest deleted")


def discard_pushed(
    pushed: Iterable[tuple[str, str]], client_for: Callable[[str], AbstractContextManager[RegistryClient]], log: LogFn
) -> list[DiscardOutcome]:
    """Discard every (reference, digest) a failed build pushed; one outcome each, logged."""
    outcomes = []
    for reference, digest in pushed:
        ref = ImageRef.parse(reference)
        with client_for(ref.registry) as client:
            outcome = discard_one(client, ref, digest)
        log(f"failed build's candidate {outcome.image}: {'deleted' if outcome.deleted else 'KEPT'} ({outcome.detail})")
        outcomes.append(outcome)
    return outcomes
