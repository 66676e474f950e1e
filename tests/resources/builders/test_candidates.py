"""Discarding what a failed build pushed, against a real registry (docker-registry with deletes on and off)."""

from __future__ import annotations

from pathlib import Path

from resources.builders.candidates import discard_one, discard_pushed
from resources.oci.refs import ImageRef
from resources.registry import RegistryClient
from tests.conftest import RunningRegistry, start_registry
from tests.support.images import gzip_layer, push_image, random_files


def _push(client: RegistryClient, repo: str, tag: str, seed: str) -> str:
    digest, _ = push_image(client, repo, tag, [gzip_layer(random_files(seed, 4096))])
    return digest


def test_the_failed_candidate_is_deleted(registry: RunningRegistry) -> None:
    with RegistryClient(registry.addr) as client:
        digest = _push(client, "fixtures/pushkill", "push-1", "a")
        logs: list[str] = []
        (outcome,) = discard_pushed([(f"{registry.addr}/fixtures/pushkill:push-1", digest)],
                                    lambda _host: RegistryClient(registry.addr), logs.append)
        assert outcome.deleted and outcome.detail == "manifest deleted"
        assert client.head_manifest("fixtures/pushkill", "push-1") is None
        assert client.head_manifest("fixtures/pushkill", digest) is None
    assert any("deleted (manifest deleted)" in line for line in logs)


def test_a_digest_shared_with_another_tag_is_kept(registry: RunningRegistry) -> None:
    # A rebuild of a released commit can produce the very same digest: deleting by digest would delete the release.
    with RegistryClient(registry.addr) as client:
        digest = _push(client, "team/app", "build-1", "b")
        manifest = client.get_manifest("team/app", digest)
        client.put_manifest("team/app", "v1.0.0", manifest.data, manifest.media_type)
        outcome = discard_one(client, ImageRef.parse(f"{registry.addr}/team/app:build-1"), digest)
        assert not outcome.deleted and "also tagged v1.0.0" in outcome.detail
        assert client.head_manifest("team/app", "v1.0.0") is not None


def test_a_tag_that_moved_is_left_alone(registry: RunningRegistry) -> None:
    with RegistryClient(registry.addr) as client:
        old = _push(client, "team/app", "build-2", "c")
        new = _push(client, "team/app", "build-2", "d")
        outcome = discard_one(client, ImageRef.parse(f"{registry.addr}/team/app:build-2"), old)
        assert not outcome.deleted and new in outcome.detail
        assert client.head_manifest("team/app", "build-2").digest == new


def test_a_registry_that_forbids_deletes_leaves_it_recorded_as_failed(tmp_path: Path) -> None:
    reg = start_registry(tmp_path / "nodelete")
    try:
        config = reg.root / "config.yml"
        config.write_text(config.read_text().replace("delete:\n    enabled: true", "delete:\n    enabled: false"))
        reg.start()
        with RegistryClient(reg.addr) as client:
            digest = _push(client, "team/app", "build-3", "e")
            outcome = discard_one(client, ImageRef.parse(f"{reg.addr}/team/app:build-3"), digest)
            assert not outcome.deleted and outcome.detail.startswith("the registry refused the delete")
            assert client.head_manifest("team/app", "build-3") is not None
    finally:
        reg.stop()
