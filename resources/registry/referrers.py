"""Referrers (OCI distribution spec v1.1): the referrers API, and the `sha256-<hex>` tag index for registries
without it, updated by read-merge-write until a re-read shows it stable (registries offer no compare-and-swap)."""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from resources.oci import media_types as mt
from resources.oci.manifest import Descriptor, RawManifest
from resources.oci.refs import validate_digest
from resources.registry import retry
from resources.registry.transport import Transport

MAX_PAGES = 100_000
REFERRERS_UNSUPPORTED = (400, 404, 405, 406)
SETTLE_SECONDS = 0.5  # between writing the tag index and re-reading it; a concurrent writer's PUT lands within it
STABLE_READS = 2  # consecutive re-reads that must show our entry
MAX_ROUNDS = 10
_REFERRERS_TAG_RE = re.compile(r"^sha256-[0-9a-f]{64}$")


def is_referrers_tag(tag: str | None) -> bool:
    """True for an OCI referrers fallback tag (`sha256-<hex>`)."""
    return tag is not None and _REFERRERS_TAG_RE.match(tag) is not None


def referrers_tag(digest: str) -> str:
    """The fallback tag that holds the referrers of `digest` (`sha256-<hex>`), per the OCI distribution spec."""
    algorithm, encoded = validate_digest(digest).split(":", 1)
    return f"{algorithm}-{encoded}"[:128]


def referrer_descriptor(manifest: RawManifest) -> dict[str, Any]:
    """The referrers-index entry for a manifest: descriptor + artifactType (or config mediaType) + annotations."""
    doc = manifest.json()
    entry: dict[str, Any] = manifest.descriptor().to_dict()
    artifact_type = doc.get("artifactType") or (doc.get("config") or {}).get("mediaType")
    if artifact_type:
        entry["artifactType"] = artifact_type
    if doc.get("annotations"):
        entry["annotations"] = doc["annotations"]
    return entry


def referrers_api(t: Transport, repo: str, digest: str, artifact_type: str | None,
                  deadline: retry.Deadline) -> list[dict[str, Any]] | None:
    """Referrers from `GET /v2/<repo>/referrers/<digest>`, or None when the registry lacks the API."""
    params = {"artifactType": artifact_type} if artifact_type else None
    url: str | httpx.URL = f"/v2/{repo}/referrers/{digest}"
    found: list[dict[str, Any]] = []
    filtered = False
    for _ in range(MAX_PAGES):
        response = t.request(
            "GET", url, action="list referrers of", repository=repo, reference=digest, params=params,
            headers={"Accept": mt.OCI_INDEX}, expect=(200, *REFERRERS_UNSUPPORTED), deadline=deadline,
        )
        if response.status_code != 200:
            return None
        try:
            doc = response.json()
        except ValueError:
            return None
        if (
            not isinstance(doc, dict)
            or doc.get("mediaType") != mt.OCI_INDEX
            or not isinstance(doc.get("manifests"), list)
        ):
            return None
        filtered = filtered or "artifactType" in response.headers.get("oci-filters-applied", "")
        found.extend(m for m in doc["manifests"] if isinstance(m, dict))
        nxt = response.links.get("next", {}).get("url")
        if not nxt:
            break
        url, params = response.request.url.join(nxt), None
    if artifact_type and not filtered:
        found = [m for m in found if m.get("artifactType") == artifact_type]
    return found


def read_tag_index(
    t: Transport, get: Callable[[str], RawManifest | None], repo: str, subject: str
) -> list[dict[str, Any]] | None:
    """The entries of the `sha256-<hex>` tag index (`get(tag)` fetches it, None when absent)."""
    tag = referrers_tag(subject)
    manifest = get(tag)
    if manifest is None:
        return None
    doc = manifest.json()
    if manifest.media_type != mt.OCI_INDEX or not isinstance(doc.get("manifests"), list):
        raise t.error(f"referrers tag {repo}:{tag} is a {manifest.media_type}, not an OCI index", repo, tag)
    return [m for m in doc["manifests"] if isinstance(m, dict)]


def add_to_tag_index(
    t: Transport, repo: str, subject: str, descriptor: Mapping[str, Any] | Descriptor, *,
    get: Callable[[str], RawManifest | None], put: Callable[[str, bytes], str], settle: float = SETTLE_SECONDS,
) -> str:
    """Add a referrer to the tag index of `subject` so that no concurrent writer loses it; returns the index digest.

    Read, merge (every entry kept, ours replacing one with the same digest), write; then re-read after a short
    settle time until `STABLE_READS` reads in a row hold our entry. A writer that read before our write and
    wrote after it dropped our entry: the re-read sees that and merges again.
    """
    entry = descriptor.to_dict() if isinstance(descriptor, Descriptor) else dict(descriptor)
    Descriptor.from_dict(entry)  # validates mediaType/digest/size
    tag = referrers_tag(subject)
    entries = read_tag_index(t, get, repo, subject) or []
    written = ""
    for _ in range(MAX_ROUNDS):
        if not any(m.get("digest") == entry["digest"] and m == entry for m in entries):
            merged = [m for m in entries if m.get("digest") != entry["digest"]] + [entry]
            index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": merged}
            written = put(tag, json.dumps(index, separators=(",", ":")).encode())
        stable = 0
        while stable < STABLE_READS:
            time.sleep(settle * random.uniform(1.0, 1.5))
            entries = read_tag_index(t, get, repo, subject) or []
            if not any(m.get("digest") == entry["digest"] for m in entries):
                break
            stable += 1
        else:
            return written or _digest_of(get, tag)
    raise t.error(f"referrers tag {repo}:{tag} kept losing the entry {entry['digest']} to concurrent writers "
                  f"after {MAX_ROUNDS} rounds", repo, tag)


def _digest_of(get: Callable[[str], RawManifest | None], tag: str) -> str:
    manifest = get(tag)
    return manifest.digest if manifest is not None else ""
