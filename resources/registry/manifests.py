"""Manifests (containerd's resolver + pusher for manifests): GET/HEAD/PUT/DELETE with digest checks, a size cap,
an overall deadline, and PUTs retried while the registry settles on blobs it has just stored."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

import httpx

from resources.oci import media_types as mt
from resources.oci.manifest import Descriptor, RawManifest
from resources.oci.refs import compute_digest, digest_algorithm, is_digest, validate_digest
from resources.registry import retry
from resources.registry.errors import DigestMismatchError, RegistryError, describe_target
from resources.registry.transport import Transport

MAX_MANIFEST_BYTES = 32 << 20
# distribution answers a manifest PUT with 400 and these codes when a blob it names is not (yet) visible:
# with eventually consistent storage (S3), right after that blob was uploaded (registry/handlers/manifests.go).
SETTLING_CODES = frozenset({"DIGEST_INVALID", "MANIFEST_BLOB_UNKNOWN", "BLOB_UNKNOWN", "MANIFEST_UNKNOWN"})


def content_type(response: httpx.Response) -> str:
    """The media type of a response, without parameters."""
    return response.headers.get("content-type", "").split(";", 1)[0].strip()


def get_manifest(t: Transport, repo: str, ref: str, accept: Sequence[str], deadline: retry.Deadline) -> RawManifest:
    """Fetch a manifest or index by tag or digest, read within the deadline, capped, digest verified."""
    on_deadline = t.deadline_error("pull manifest", repo, ref)
    response = t.request(
        "GET", f"/v2/{repo}/manifests/{ref}", action="pull manifest", repository=repo, reference=ref,
        headers={"Accept": ", ".join(accept)}, stream=True, deadline=deadline,
    )
    failure: RegistryError | None = None
    body = bytearray()
    try:
        for chunk in response.iter_bytes():
            deadline.check(on_deadline)
            body += chunk
            if len(body) > MAX_MANIFEST_BYTES:
                raise t.error(
                    f"manifest {describe_target(repo, ref)} is larger than {MAX_MANIFEST_BYTES} bytes", repo, ref
                )
    except httpx.TransportError as exc:
        failure = t.transport_error(exc, "pull manifest", repo, ref, 1)
    finally:
        response.close()
    if failure is not None:
        raise failure
    data = bytes(body)
    header_digest = response.headers.get("docker-content-digest")
    expected = ref if is_digest(ref) else header_digest
    algorithm = digest_algorithm(expected) if expected and ":" in expected else "sha256"
    digest = compute_digest(data, algorithm)
    if expected and digest != expected:
        source = "requested" if is_digest(ref) else "announced by Docker-Content-Digest"
        raise DigestMismatchError(
            f"registry {t.label}: manifest {describe_target(repo, ref)} hashes to {digest}, "
            f"not the {source} {expected}",
            registry=t.registry,
            repository=repo,
            reference=ref,
        )
    media_type = content_type(response)
    if media_type not in mt.MANIFEST_MEDIA_TYPES:
        try:
            media_type = json.loads(data).get("mediaType") or media_type
        except (ValueError, AttributeError):
            pass
    return RawManifest(media_type=media_type, digest=digest, data=data)


def head_manifest(t: Transport, repo: str, ref: str, deadline: retry.Deadline) -> Descriptor | None | bool:
    """Descriptor from HEAD, None when absent, False when the answer lacks what a descriptor needs (GET instead)."""
    response = t.request(
        "HEAD", f"/v2/{repo}/manifests/{ref}", action="check manifest", repository=repo, reference=ref,
        headers={"Accept": ", ".join(mt.MANIFEST_MEDIA_TYPES)}, expect=(200, 404), deadline=deadline,
    )
    if response.status_code == 404:
        return None
    digest = response.headers.get("docker-content-digest")
    size = response.headers.get("content-length", "")
    media_type = content_type(response)
    if not digest or not size.isdigit() or media_type not in mt.MANIFEST_MEDIA_TYPES:
        return False
    if is_digest(ref) and digest != ref:
        raise DigestMismatchError(f"registry {t.label}: HEAD {repo}@{ref} announced digest {digest}",
                                  registry=t.registry, repository=repo, reference=ref)
    return Descriptor(media_type=media_type, digest=validate_digest(digest), size=int(size))


def check_manifest_input(repo: str, ref: str, data: bytes, media_type: str) -> str:
    """The digest of manifest bytes to push; ValueError when they contradict the reference or media type."""
    digest = compute_digest(data, digest_algorithm(ref) if is_digest(ref) else "sha256")
    if is_digest(ref) and ref != digest:
        raise ValueError(f"manifest for {repo}@{ref} hashes to {digest}; refusing to push it under another digest")
    try:
        declared = json.loads(data).get("mediaType")
    except (ValueError, AttributeError):
        raise ValueError(f"manifest for {describe_target(repo, ref)} is not a JSON object") from None
    if declared and declared != media_type:
        raise ValueError(
            f"manifest for {describe_target(repo, ref)} declares mediaType {declared!r} but is pushed as {media_type!r}"
        )
    return digest


def referenced(data: bytes) -> tuple[list[str], list[str]]:
    """(blob digests, manifest digests) a manifest or index names: config + layers, or its manifests."""
    doc = json.loads(data)
    blobs = [
        d["digest"]
        for d in [doc.get("config") or {}, *(doc.get("layers") or [])]
        if isinstance(d, dict) and d.get("digest")
    ]
    children = [d["digest"] for d in doc.get("manifests") or [] if isinstance(d, dict) and d.get("digest")]
    return blobs, children


def put_manifest(
    t: Transport, repo: str, ref: str, data: bytes, media_type: str, deadline: retry.Deadline,
    blob_exists: Callable[[str], bool], manifest_exists: Callable[[str], bool],
) -> tuple[str, httpx.Response]:
    """PUT manifest bytes; a 400 naming blobs that HEAD shows exist is retried (bounded); returns (digest, response).

    `blob_exists` / `manifest_exists` are asked only after such a 400, for what the manifest names.
    """
    digest = check_manifest_input(repo, ref, data, media_type)
    action = "push manifest"

    def attempt(number: int) -> httpx.Response:
        try:
            return t.request(
                "PUT", f"/v2/{repo}/manifests/{ref}", action=action, repository=repo, reference=ref,
                scopes=[f"repository:{repo}:pull,push"], headers={"Content-Type": media_type}, content=data,
                expect=(200, 201, 202), deadline=deadline,
            )
        except RegistryError as exc:
            if exc.status != 400 or not SETTLING_CODES & set(exc.codes):
                raise
            blobs, children = referenced(data)
            missing = [d for d in blobs if not blob_exists(d)] + [d for d in children if not manifest_exists(d)]
            if missing:
                raise t.error(f"cannot push manifest {describe_target(repo, ref)}: the repository lacks "
                              f"{', '.join(missing)} ({exc})", repo, ref, status=400) from None
            raise retry.Retry(
                t.error(f"kept refusing manifest {describe_target(repo, ref)} with HTTP 400 {', '.join(exc.codes)} "
                        f"although every blob and manifest it names exists (checked by HEAD), after {number + 1} "
                        "attempts", repo, ref, status=400),
                kind="settle",
            ) from None

    response = retry.run(attempt, policy=t.policy, deadline=deadline, what=f"registry {t.label}: {action}",
                         on_deadline=t.deadline_error(action, repo, ref))
    announced = response.headers.get("docker-content-digest")
    if (
        announced
        and ":" in announced
        and digest_algorithm(announced) == digest_algorithm(digest)
        and announced != digest
    ):
        raise DigestMismatchError(
            f"registry {t.label}: stored manifest {describe_target(repo, ref)} as {announced}, "
            f"but its bytes hash to {digest}",
            registry=t.registry,
            repository=repo,
            reference=ref,
        )
    return digest, response


def delete_manifest(t: Transport, repo: str, digest: str, deadline: retry.Deadline) -> None:
    """Delete a manifest by digest (RegistryNotFoundError when absent)."""
    t.request(
        "DELETE", f"/v2/{repo}/manifests/{digest}", action="delete manifest", repository=repo, reference=digest,
        scopes=[f"repository:{repo}:delete"], expect=(200, 202), deadline=deadline,
    )
