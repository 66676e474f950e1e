"""The real chain with `startup.enabled` on the local stack: the profile is recorded and stored next to the
candidate, the SOCI index holds prefetch artifacts only from node_compat v0.13, and the metadata leads with
the cost of a start."""

from __future__ import annotations

import json
import re

import dagster as dg
import pytest

from pipelines.supply_chain import startup
from pipelines.supply_chain.assets import VERIFY_CHECK, build_supply_chain
from resources.oci import media_types as mt
from resources.registry import RegistryClient
from resources.release.targets import load_targets
from resources.startup.store import find_image_profile
from tests.conftest import DockerEngine
from tests.pipelines.conftest import Project

START_SCRIPT = (
    "cat /models/config.json /app/lib.txt > /dev/null; head -c 4096 /models/weights.bin > /dev/null; echo started"
)
TO_START = re.compile(r"^to start: \d+\.\d MB of \d+\.\d MB \(\d+\.\d%\)")


def write_targets(project: Project, *, enabled: bool, node_compat: str, prefetch: str = "files") -> None:
    project.targets_file.write_text(
        "targets:\n"
        "  - name: svc\n"
        f"    source: {{git: {{repo: {project.repo}, ref: main, context: svc}}}}\n"
        f"    repository: {project.registry.addr}/team/svc\n"
        f"    soci: {{node_compat: '{node_compat}'}}\n"
        "    verify: {sample: 2, required_files: [models/config.json]}\n"
        f"    startup: {{enabled: {str(enabled).lower()}, command: [/bin/sh, -c, {json.dumps(START_SCRIPT)}], "
        f"ready: {{log: '^started$'}}, timeout_s: 60, prefetch: {prefetch}}}\n"
    )


def run(project: Project, engine: DockerEngine, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    assets, checks, _ = build_supply_chain(load_targets(project.targets_file))
    return dg.materialize(
        [*assets, *checks],
        partition_key="svc",
        instance=instance,
        resources=project.resources(engine),
        run_config={"ops": {"image": {"config": {"ref": "refs/heads/main"}}}},
        raise_on_error=False,
    )


def soci_index_layers(client: RegistryClient, value: dict) -> list[dict]:
    digest = value.platforms[0].soci_index_digest
    return json.loads(client.get_manifest("team/svc", digest).data)["layers"]


@pytest.mark.parametrize(("node_compat", "prefetch"), [("v0.12", "files"), ("v0.13", "ranges")])
def test_profile_recorded_stored_and_used(
    project: Project, docker_engine: DockerEngine, instance: dg.DagsterInstance, node_compat: str, prefetch: str
) -> None:
    write_targets(project, enabled=True, node_compat=node_compat, prefetch=prefetch)
    project.commit({"svc/app/v.txt": node_compat + "\n"})
    result = run(project, docker_engine, instance)
    assert result.success
    image = result.output_for_node("image")
    profile_meta = result.asset_materializations_for_node("startup_profile")[0].metadata
    assert profile_meta["recorded"].value is True and profile_meta["stopped_by"].value == "ready_log"
    paths = [r.data["path"] for r in profile_meta["files"].value.records]
    assert "/models/config.json" in paths and "/app/lib.txt" in paths and "/models/weights.bin" in paths

    with RegistryClient(project.registry.addr) as client:
        stored = find_image_profile(client, "team/svc", image.digest)  # next to the candidate, by its digest
        assert stored is not None
        assert stored.manifest_digest == result.output_for_node("startup_profile").artifact_digest
        weights = next(f for f in stored.profile.files if f.path == "/models/weights.bin")
        assert 0 < weights.bytes_read < weights.size  # 4 KiB of an 11 MiB file (page level)
        soci = result.output_for_node("soci_index")
        prefetch = [d for d in soci_index_layers(client, soci) if d["mediaType"] == mt.SOCI_PREFETCH]
        # what verify should read first (its `startup_files`): the profiled files in first-access order
        assert startup.profiled_paths(client, soci) == [f.path for f in stored.profile.files]

    meta = result.asset_materializations_for_node("soci_index")[0].metadata
    assert next(iter(meta)) == "to_start" and TO_START.match(meta["to_start"].value), meta["to_start"].value
    assert meta["node_compat"].value == node_compat
    if node_compat == "v0.12":
        assert prefetch == [] and meta["prefetch_artifacts"].value == 0
        assert "v0.12 < v0.13" in meta["prefetch_gate"].value
        assert "(lazy, as this index serves it)" in meta["to_start"].value
    else:
        assert len(prefetch) == 1 and meta["prefetch_artifacts"].value == 1
        assert prefetch[0]["annotations"][mt.ANNOTATION_LAYER_DIGEST] == weights.layer_digest
        assert ">= v0.13" in meta["prefetch_gate"].value and "lazy + prefetch (ranges)" in meta["to_start"].value
        assert [r.data["spans"] for r in meta["prefetch"].value.records] == [
            1
        ]  # the 4 KiB read: one span, not the file
    rows = {r.data["mode"]: r.data for r in meta["cost_of_a_start"].value.records}
    assert list(rows) == ["lazy", "lazy + prefetch (files)", "lazy + prefetch (ranges)", "full pull"]
    served = "lazy" if node_compat == "v0.12" else "lazy + prefetch (ranges)"
    assert meta["bytes_to_start"].value == rows[served]["bytes"]  # the two plotted series
    assert meta["image_bytes"].value == rows["full pull"]["bytes"]
    assert 0 < rows["lazy"]["bytes"] < rows["full pull"]["bytes"] / 2  # 4 KiB of the 11 MiB model, not all of it
    # prefetching whole files fetches the whole model: more than the ranges read
    assert rows["lazy + prefetch (files)"]["bytes"] > rows["lazy + prefetch (ranges)"]["bytes"]
    assert meta["span_size_advice"].value.records  # 512 KiB .. 8 MiB
    check = next(e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION")
    assert check.check_name == VERIFY_CHECK and check.passed and TO_START.match(check.metadata["to_start"].value)


def test_disabled_records_nothing_and_says_so(
    project: Project, docker_engine: DockerEngine, instance: dg.DagsterInstance
) -> None:
    write_targets(project, enabled=False, node_compat="v0.13")
    project.commit({"svc/app/v.txt": "off\n"})
    result = run(project, docker_engine, instance)
    assert result.success
    meta = result.asset_materializations_for_node("startup_profile")[0].metadata
    assert meta["recorded"].value is False and "startup.enabled is false for target svc" in meta["status"].value
    with RegistryClient(project.registry.addr) as client:
        assert find_image_profile(client, "team/svc", result.output_for_node("image").digest) is None
        assert not [
            d
            for d in soci_index_layers(client, result.output_for_node("soci_index"))
            if d["mediaType"] == mt.SOCI_PREFETCH
        ]
    soci_meta = result.asset_materializations_for_node("soci_index")[0].metadata
    assert "no startup profile" in soci_meta["to_start"].value
