"""The real flow on the local stack: dockerd BuildKit, a real registry, a real git repo, a real Dagster instance."""

from __future__ import annotations

import dagster as dg
import httpx
import pytest

from pipelines.resource_defs.base import RegistryResource
from pipelines.supply_chain.assets import VERIFY_CHECK, build_supply_chain
from resources.release.targets import load_targets
from tests.pipelines.conftest import Project
from tests.support.docker import DockerEngine

OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def run_chain(project: Project, engine: DockerEngine, instance: dg.DagsterInstance, *, commit: str | None = None,
              selection: list[str] | None = None, build_args: dict[str, str] | None = None,
              extra_tags: list[str] | None = None) -> dg.ExecuteInProcessResult:
    assets, checks, _ = build_supply_chain(load_targets(project.targets_file))
    run_config = {
        "ops": {
            "image": {
                "config": {
                    "commit": commit,
                    "ref": "refs/heads/main",
                    "build_args": build_args or {},
                    "extra_tags": extra_tags or [],
                }
            }
        }
    }
    if selection is not None and "image" not in selection:
        run_config = {}
    return dg.materialize(
        [*assets, *checks],
        selection=selection,
        partition_key="svc",
        instance=instance,
        resources=project.resources(engine),
        run_config=run_config,
        raise_on_error=False,
    )


def tag_digest(project: Project, tag: str) -> str | None:
    r = httpx.head(f"{project.registry.url}/v2/team/svc/manifests/{tag}", headers={"Accept": OCI_INDEX})
    return r.headers["Docker-Content-Digest"] if r.status_code == 200 else None


def check_evaluations(result: dg.ExecuteInProcessResult) -> list:
    return [e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]


def test_full_chain_releases_verified_soci_image(
    project: Project, docker_engine: DockerEngine, instance: dg.DagsterInstance
) -> None:
    sha = project.commit({"svc/app/v.txt": "1\n"})
    result = run_chain(project, docker_engine, instance, commit=sha)
    assert result.success
    evals = check_evaluations(result)
    assert len(evals) == 1 and evals[0].passed and evals[0].check_name == VERIFY_CHECK
    meta = evals[0].metadata
    assert int(meta["files_checked"].value) >= 2  # the largest file and the required config.json, both lazily read
    names = {r.data["name"] for r in meta["files"].records}
    assert {"models/config.json", "models/weights.bin"} <= names
    read = {r.data["what"]: r.data["bytes"] for r in meta["bytes"].records}
    fetched, touched = read["fetched by the lazy reads"], read["layers those reads touched"]
    assert 0 < fetched and touched > 11_000_000
    # config.json and weights.bin share the layer's first span: it is fetched once, never more than the layer
    assert fetched <= touched
    release = result.output_for_node("release")
    digest = release.image_index_digest
    assert release.release_tags == (f"sha-{sha[:7]}", "main", "latest")
    for tag in release.release_tags:
        assert tag_digest(project, tag) == digest
    moves = result.asset_materializations_for_node("release")[0].metadata["tag_moves"].records
    assert [(m.data["tag"], m.data["to"]) for m in moves] == [(t, digest[:19]) for t in release.release_tags]
    assert all(m.data["from"] is None for m in moves)  # new tags: nothing before (an empty cell, no placeholder)
    mats = {m.asset_key.to_user_string(): m for m in result.asset_materializations_for_node("image")}
    meta = mats["image"].metadata
    assert meta["commit"].value == sha and meta["digest"].value.startswith("sha256:")
    assert meta["size_bytes"].value > 11_000_000 and meta["layer_count"].value >= 3
    soci_meta = result.asset_materializations_for_node("soci_index")[0].metadata
    assert soci_meta["image_index_digest"].value == digest
    assert soci_meta["ztocs"].records and all(r.data["layer"].startswith("sha256:") for r in soci_meta["ztocs"].records)
    assert "skipped_layers" not in soci_meta or soci_meta["skipped_layers"].records  # no empty table


def test_overridden_build_args_release_only_extra_tags(project: Project, docker_engine: DockerEngine,
                                                       instance: dg.DagsterInstance) -> None:
    """A build with other args than targets.yaml moves none of the target's tags, only the run's extra tags."""
    first = project.commit({"svc/app/v.txt": "1\n"})
    assert run_chain(project, docker_engine, instance, commit=first).success
    before = {t: tag_digest(project, t) for t in (f"sha-{first[:7]}", "main", "latest")}
    assert all(before.values())
    result = run_chain(project, docker_engine, instance, commit=first, build_args={"MSG": "x;y"},
                       extra_tags=["try-msg"])
    assert result.success
    release = result.output_for_node("release")
    assert release.release_tags == ("try-msg",)
    assert release.held_back_tags == (f"sha-{first[:7]}", "main", "latest")
    assert tag_digest(project, "try-msg") == release.image_index_digest != before["latest"]
    assert {t: tag_digest(project, t) for t in before} == before  # the target's tags did not move
    built = result.output_for_node("image")
    assert built.overridden_build_args == ("MSG",)
    assert tag_digest(project, built.candidate_tag) is not None  # still reachable under its candidate tag
    meta = result.asset_materializations_for_node("release")[0].metadata
    assert "MSG" in meta["notes"].value and built.candidate_tag in meta["release_rule"].value
    assert meta["tags_not_moved"].value == f"sha-{first[:7]}, main, latest"
    assert result.asset_materializations_for_node("image")[0].metadata["build_args_overridden"].value == "MSG"
    # without extra tags, nothing but the candidate tag names the image
    again = run_chain(project, docker_engine, instance, commit=first, build_args={"MSG": "other"})
    assert again.success and again.output_for_node("release").release_tags == ()
    assert {t: tag_digest(project, t) for t in before} == before


def test_failing_build_surfaces_step_output_and_moves_no_tag(
    project: Project, docker_engine: DockerEngine, instance: dg.DagsterInstance
) -> None:
    good = project.commit({"svc/app/v.txt": "1\n"})
    assert run_chain(project, docker_engine, instance, commit=good).success
    before = tag_digest(project, "latest")
    assert before is not None
    bad = project.commit(
        {"svc/Dockerfile": "FROM streamable/busybox:local\nRUN echo 'fatal: cannot compile widget.c' && exit 7\n"}
    )
    result = run_chain(project, docker_engine, instance, commit=bad)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE" and e.step_key == "image")
    text = str(failure.event_specific_data.error.to_string())
    assert "fatal: cannot compile widget.c" in text and "exit code: 7" in text and "RUN echo" in text
    assert tag_digest(project, "latest") == before
    assert tag_digest(project, f"sha-{bad[:7]}") is None


def test_failed_verification_leaves_release_tags_untouched(
    project: Project, docker_engine: DockerEngine, instance: dg.DagsterInstance
) -> None:
    good = project.commit({"svc/app/v.txt": "1\n"})
    assert run_chain(project, docker_engine, instance, commit=good).success
    before = tag_digest(project, "latest")
    project.write_targets(required_files=["models/config.json", "models/does-not-exist.bin"])
    newer = project.commit({"svc/app/v.txt": "2\n"})
    result = run_chain(project, docker_engine, instance, commit=newer)
    assert not result.success
    evals = check_evaluations(result)
    assert len(evals) == 1 and not evals[0].passed
    assert "does-not-exist.bin" in evals[0].metadata["reason"].value
    assert tag_digest(project, "latest") == before
    assert tag_digest(project, f"sha-{newer[:7]}") is None
    # release run on its own still refuses: the check for this digest did not pass
    alone = run_chain(project, docker_engine, instance, selection=["release"])
    assert not alone.success
    assert tag_digest(project, "latest") == before


def test_registry_outage_fails_clearly_and_rerun_converges(
    project: Project, docker_engine: DockerEngine, instance: dg.DagsterInstance
) -> None:
    sha = project.commit({"svc/app/v.txt": "3\n"})
    assert run_chain(project, docker_engine, instance, commit=sha, selection=["image"]).success
    project.registry.stop()
    try:
        down = run_chain(project, docker_engine, instance, selection=["soci_index", "release"])
        assert not down.success
        failure = next(e for e in down.all_events if e.event_type_value == "STEP_FAILURE")
        msg = failure.event_specific_data.error.to_string()
        assert project.registry.addr in msg and "RegistryUnavailableError" in msg
    finally:
        project.registry.start()
    again = run_chain(project, docker_engine, instance, selection=["soci_index", "release"])
    assert again.success
    digest = again.output_for_node("release").image_index_digest
    assert tag_digest(project, f"sha-{sha[:7]}") == digest
    # re-running the whole tail converges to the same SOCI-enabled image
    third = run_chain(project, docker_engine, instance, selection=["soci_index", "release"])
    assert third.success and third.output_for_node("release").image_index_digest == digest


@pytest.mark.parametrize("bad", ["span_size: 0", "repository: NOT VALID"])
def test_bad_targets_file_fails_definitions_load(project: Project, bad: str, monkeypatch: pytest.MonkeyPatch) -> None:
    text = project.targets_file.read_text()
    text = (
        text.replace("    verify:\n", f"    soci: {{{bad}}}\n    verify:\n")
        if bad.startswith("span")
        else text.replace(f"repository: {project.registry.addr}/team/svc", bad)
    )
    project.targets_file.write_text(text)
    monkeypatch.setenv("STREAMABLE_TARGETS", str(project.targets_file))
    from pipelines.definitions import defs
    from resources.release.targets import TargetsFileError

    with pytest.raises(TargetsFileError) as exc:
        dg.Definitions.validate_loadable(defs())
    assert str(project.targets_file) in str(exc.value) and "target 'svc'" in str(exc.value)


class WriteOnceTagsRegistry(RegistryResource):
    """A registry resource whose every release tag is write-once, as in an IMMUTABLE ECR repository."""

    def release_tag(self, repository: str, tag: str) -> tuple[str, str | None, bool]:
        return f"{tag}-soci", f"{repository}: immutable tags, releasing {tag} as {tag}-soci", True


def test_write_once_tags_are_never_moved(project: Project, docker_engine: DockerEngine, instance: dg.DagsterInstance,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    assets, checks, _ = build_supply_chain(load_targets(project.targets_file))
    resources = {**project.resources(docker_engine), "registry": WriteOnceTagsRegistry()}

    def run(sha: str) -> dg.ExecuteInProcessResult:
        return dg.materialize([*assets, *checks], partition_key="svc", instance=instance, resources=resources,
                              run_config={"ops": {"image": {"config": {"commit": sha, "ref": "refs/heads/main"}}}})

    first = project.commit({"svc/app/v.txt": "1\n"})
    one = run(first).output_for_node("release")
    assert one.release_tags == (f"sha-{first[:7]}-soci", "main-soci", "latest-soci")
    second = project.commit({"svc/app/v.txt": "2\n"})
    result = run(second)
    two = result.output_for_node("release")
    assert two.release_tags == (f"sha-{second[:7]}-soci",)  # main-soci / latest-soci already exist: not moved
    assert tag_digest(project, "latest-soci") == one.image_index_digest
    assert tag_digest(project, f"sha-{second[:7]}-soci") == two.image_index_digest
    notes = result.asset_materializations_for_node("release")[0].metadata["notes"].value
    assert "latest-soci is immutable and already points at" in notes
