"""The image asset's build options on the local stack: no_cache reaches the builder; a failed build's pushed
candidate is discarded before the step fails."""

from __future__ import annotations

import dagster as dg
import pytest

from pipelines.supply_chain.assets import build_supply_chain, raise_build_failure
from resources.builders.base import BuildError
from resources.registry import RegistryClient
from resources.release.targets import load_targets
from tests.conftest import DockerEngine, RunningRegistry
from tests.pipelines.conftest import Project
from tests.support.images import gzip_layer, push_image, random_files


def _build(project: Project, engine: DockerEngine, instance: dg.DagsterInstance, sha: str, *, no_cache: bool):
    assets, checks, _ = build_supply_chain(load_targets(project.targets_file))
    return dg.materialize([*assets, *checks], selection=["image"], partition_key="svc", instance=instance,
                          resources=project.resources(engine),
                          run_config={"ops": {"image": {"config": {"commit": sha, "ref": "refs/heads/main",
                                                                   "no_cache": no_cache}}}})


def test_no_cache_rebuilds_every_step_of_the_image(project: Project, docker_engine: DockerEngine,
                                                   instance: dg.DagsterInstance) -> None:
    sha = project.commit({"svc/app/v.txt": "nocache\n"})
    warm = _build(project, docker_engine, instance, sha, no_cache=False)
    again = _build(project, docker_engine, instance, sha, no_cache=False)
    fresh = _build(project, docker_engine, instance, sha, no_cache=True)

    def meta(result):
        (mat,) = result.asset_materializations_for_node("image")
        return {k: getattr(v, "value", v) for k, v in mat.metadata.items()}

    assert warm.success and again.success and fresh.success
    assert meta(again)["cache_hits"] >= 3, "the second build came from the cache"
    # With --no-cache only the FROM of a local base image still shows CACHED (BuildKit does not re-resolve it).
    assert meta(fresh)["no_cache"] is True and meta(fresh)["cache_hits"] <= 1, "no_cache rebuilt every step"


def test_a_failed_build_that_pushed_discards_its_candidate(registry: RunningRegistry) -> None:
    with RegistryClient(registry.addr) as client:
        digest, _ = push_image(client, "team/svc", "build-0123456789ab-deadbeef", [gzip_layer(random_files("x", 2048))])
    ref = f"{registry.addr}/team/svc:build-0123456789ab-deadbeef"
    err = BuildError(
        "svc", "buildctl on bk0 exited with 1", step="exporting cache to registry", pushed=((ref, digest),)
    )
    logs: list[str] = []
    with pytest.raises(dg.Failure) as exc:
        raise_build_failure(err, lambda host: RegistryClient(host), logs.append)
    md = {k: getattr(v, "value", v) for k, v in exc.value.metadata.items()}
    assert md["pushed_candidates_deleted"] == f"{ref}@{digest}" and md["pushed_candidates_kept_failed"] == ""
    assert md["failed_step"] == "exporting cache to registry"
    assert "build of target 'svc' failed" in exc.value.description
    with RegistryClient(registry.addr) as client:
        assert client.head_manifest("team/svc", "build-0123456789ab-deadbeef") is None
    plain = BuildError("svc", "a RUN failed", step="[2/2] RUN make")
    with pytest.raises(BuildError):  # nothing was pushed: the build error itself fails the step
        raise_build_failure(plain, lambda host: RegistryClient(host), logs.append)
