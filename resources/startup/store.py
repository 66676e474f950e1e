"""Store a startup profile next to its image: an OCI artifact manifest whose `subject` is the image manifest.

The artifact (OCI image-spec v1.1 "artifacts" guidance, image-spec `manifest.md`):
`artifactType` = PROFILE_ARTIFACT_TYPE, the empty config (`application/vnd.oci.empty.v1+json`, `{}`),
one layer = the profile JSON (media type PROFILE_MEDIA_TYPE), `subject` = the image manifest.
Registries without the referrers API (the local `docker-registry`) get the `sha256-<hex>` referrers
tag fallback, maintained by `RegistryClient.push_referrer`; `find_profile` reads either.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from resources.oci import media_types as mt
from resources.oci.refs import compute_digest
from resources.registry import OCI_MANIFEST, RegistryClient, RegistryNotFoundError
from resources.startup.errors import ProfileFormatError, StartupError
from resources.startup.profile import StartupProfile

PROFILE_ARTIFACT_TYPE = "application/vnd.streamable.startup-profile.v1+json"
PROFILE_MEDIA_TYPE = "application/vnd.streamable.startup-profile.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
ANNOTATION_STOPPED_BY = "dev.streamable.startup.stopped-by"
ANNOTATION_FILES = "dev.streamable.startup.files"


@dataclass(frozen=True)
class StoredProfile:
    """Where a profile is stored: the artifact manifest digest and the profile blob digest."""

    manifest_digest: str
    blob_digest: str
    profile: StartupProfile


def profile_manifest(
    profile: StartupProfile, subject_size: int, subject_media_type: str = OCI_MANIFEST
) -> tuple[bytes, bytes]:
    """(artifact manifest bytes, profile blob bytes) for `profile`, deterministic for the same profile."""
    blob = profile.to_json().encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": PROFILE_ARTIFACT_TYPE,
        "config": {"mediaType": OCI_EMPTY, "digest": mt.EMPTY_CONFIG_DIGEST, "size": len(mt.EMPTY_CONFIG)},
        "layers": [{"mediaType": PROFILE_MEDIA_TYPE, "digest": compute_digest(blob), "size": len(blob)}],
        "subject": {"mediaType": subject_media_type, "digest": profile.manifest_digest, "size": subject_size},
        "annotations": {ANNOTATION_STOPPED_BY: profile.stopped_by, ANNOTATION_FILES: str(len(profile.files))},
    }
    return json.dumps(manifest, separators=(",", ":")).encode(), blob


def push_profile(client: RegistryClient, repository: str, profile: StartupProfile) -> StoredProfile:
    """Push the profile blob, the empty config and the artifact manifest (a referrer of the image manifest)."""
    subject = client.head_manifest(repository, profile.manifest_digest)
    if subject is None:
        raise StartupError(
            f"image manifest {profile.manifest_digest} is not in {client.registry}/{repository}: nothing to "
            "attach the profile to"
        )
    data, blob = profile_manifest(profile, subject.size, subject.media_type)
    blob_digest = compute_digest(blob)
    client.push_blob(repository, mt.EMPTY_CONFIG, digest=mt.EMPTY_CONFIG_DIGEST)
    client.push_blob(repository, blob, digest=blob_digest)
    digest = client.push_referrer(repository, data, OCI_MANIFEST)
    return StoredProfile(manifest_digest=digest, blob_digest=blob_digest, profile=profile)


def find_profile(client: RegistryClient, repository: str, manifest_digest: str) -> StoredProfile | None:
    """The newest startup profile attached to an image manifest (referrers API or `sha256-<hex>` tag), or None."""
    found = client.referrers(repository, manifest_digest, artifact_type=PROFILE_ARTIFACT_TYPE)
    for entry in reversed(found):
        try:
            manifest = client.get_manifest(repository, entry["digest"], accept=(OCI_MANIFEST,))
        except RegistryNotFoundError:
            continue  # a stale entry in the fallback tag index
        layers = [d for d in manifest.json().get("layers") or [] if d.get("mediaType") == PROFILE_MEDIA_TYPE]
        if not layers:
            raise ProfileFormatError(
                f"startup profile artifact {manifest.digest} in {repository} has no {PROFILE_MEDIA_TYPE} layer"
            )
        profile = StartupProfile.from_json(client.get_blob(repository, layers[0]["digest"]))
        if profile.manifest_digest != manifest_digest:
            raise ProfileFormatError(
                f"startup profile artifact {manifest.digest} in {repository} is attached to {manifest_digest} "
                f"but its field 'manifest_digest' says {profile.manifest_digest}"
            )
        return StoredProfile(manifest_digest=manifest.digest, blob_digest=layers[0]["digest"], profile=profile)
    return None


def find_image_profile(client: RegistryClient, repository: str, image_digest: str) -> StoredProfile | None:
    """The profile of an image by its top digest: attached to that manifest, or (an image index) to one of its
    platform manifests, in index order; None when there is none."""
    found = find_profile(client, repository, image_digest)
    if found is not None:
        return found
    top = client.get_manifest(repository, image_digest)
    if top.media_type not in mt.IMAGE_INDEX_TYPES:
        return None
    for entry in json.loads(top.data).get("manifests") or []:
        if entry.get("mediaType") in mt.IMAGE_MANIFEST_TYPES:
            found = find_profile(client, repository, entry["digest"])
            if found is not None:
                return found
    return None
