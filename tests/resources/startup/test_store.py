"""Profiles stored next to the image as OCI artifacts (referrers tag fallback on the local registry) and found again."""

from __future__ import annotations

import json

from resources.registry import OCI_INDEX, RegistryClient, referrers_tag
from resources.startup.profile import ProfiledFile, StartupProfile
from resources.startup.store import (
    PROFILE_ARTIFACT_TYPE,
    PROFILE_MEDIA_TYPE,
    find_profile,
    push_profile,
)
from tests.resources.startup.images import Entry, layer, push_image


def _profile(digest: str, stopped_by: str = "exit") -> StartupProfile:
    return StartupProfile(
        image="x/app:v1",
        manifest_digest=digest,
        platform="linux/amd64",
        command=("/bin/true",),
        stopped_by=stopped_by,
        duration_ms=3.5,  # type: ignore[arg-type]
        files=(ProfiledFile("/bin/busybox", "sha256:" + "a" * 64, 10, 0.0, ((0, 10),), "command"),),
    )


def test_push_and_find_profile(client: RegistryClient, busybox) -> None:
    digest = push_image(
        client, "t/app", "v1", [busybox, layer([Entry("x", b"1")])], config={"Entrypoint": ["/bin/true"]}
    )
    assert find_profile(client, "t/app", digest) is None
    first = push_profile(client, "t/app", _profile(digest))
    found = find_profile(client, "t/app", digest)
    assert found is not None and found.profile == _profile(digest) and found.manifest_digest == first.manifest_digest

    artifact = client.get_manifest("t/app", first.manifest_digest).json()
    assert artifact["artifactType"] == PROFILE_ARTIFACT_TYPE and artifact["subject"]["digest"] == digest
    assert artifact["layers"][0]["mediaType"] == PROFILE_MEDIA_TYPE
    assert client.get_blob("t/app", artifact["layers"][0]["digest"]) == _profile(digest).to_json().encode()
    # the local registry has no referrers API: the sha256-<hex> tag index lists the artifact
    tag_index = client.get_manifest("t/app", referrers_tag(digest), accept=(OCI_INDEX,)).json()
    assert [m["digest"] for m in tag_index["manifests"]] == [first.manifest_digest]
    assert tag_index["manifests"][0]["artifactType"] == PROFILE_ARTIFACT_TYPE

    second = push_profile(client, "t/app", _profile(digest, "timeout"))  # a newer recording wins
    found = find_profile(client, "t/app", digest)
    assert (
        found is not None and found.manifest_digest == second.manifest_digest and found.profile.stopped_by == "timeout"
    )
    assert (
        push_profile(client, "t/app", _profile(digest, "timeout")).manifest_digest == second.manifest_digest
    )  # idempotent
    assert len(json.loads(client.get_manifest("t/app", referrers_tag(digest)).data)["manifests"]) == 2
