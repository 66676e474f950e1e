"""The git push sensor end to end: real repositories, a persistent instance, the cursor across restarts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.storage.dagster_run import RunsFilter

from pipelines.git_push.sensors import git_push_sensor
from pipelines.resource_defs.base import TargetsResource
from pipelines.resource_defs.git import GitRemotesResource
from tests.support.git import git, write_targets
from tests.support.sensors import SensorHarness, Tick


def _requested(tick: Tick) -> set[tuple[str, str, str]]:
    """(target, commit, ref) of the runs the daemon would launch, checked against their run config and tags."""
    out = set()
    for r in tick.requested:
        cfg = r.run_config["ops"]["image"]["config"]
        assert r.tags["streamable/commit"] == cfg["commit"] and r.tags["streamable/ref"] == cfg["ref"]
        assert r.run_key.startswith(f"{r.partition_key}@{cfg['commit']}")
        out.add((r.partition_key, cfg["commit"], cfg["ref"]))
    return out


@pytest.fixture
def setup(tmp_path: Path, make_repo, hanging_git_server: str):
    mono = make_repo("mono", {"apps/a/Dockerfile": "FROM scratch\n", "apps/b/Dockerfile": "FROM scratch\n",
                              "README.md": "hi\n"})
    solo = make_repo("solo", {"Dockerfile": "FROM scratch\n"})
    missing = tmp_path / "remotes" / "late"
    targets = write_targets(tmp_path / "targets.yaml", [
        {"name": "a", "repo": mono.url, "context": "apps/a"},
        {"name": "b", "repo": mono.url, "context": "apps/b"},
        {"name": "solo", "repo": str(solo.path)},  # a plain path, not a URL
        {"name": "late", "repo": f"file://{missing}"},  # does not exist yet
        {"name": "stuck", "repo": hanging_git_server},
    ])

    def harness() -> SensorHarness:
        """A fresh sensor process: new resources, new instance object over the same storage."""
        resources = {"targets": TargetsResource(path=str(targets)),
                     "git": GitRemotesResource(cache_dir=str(tmp_path / "git-cache"), timeout_s=1.5, tick_budget_s=20)}
        return SensorHarness(tmp_path / "dagster-home", git_push_sensor, resources)

    return mono, solo, missing, harness, tmp_path


def test_git_push_sensor_requests_exactly_the_affected_targets_once_per_sha(setup, make_repo) -> None:
    mono, solo, missing, harness, tmp_path = setup
    main = "refs/heads/main"

    # First poll: the default branch of every reachable remote is built; failing remotes don't block.
    t = harness().tick()
    assert _requested(t) == {("a", mono.head(), main), ("b", mono.head(), main), ("solo", solo.head(), main)}
    assert sorted(t.keys) == sorted([f"a@{mono.head()}", f"b@{mono.head()}", f"solo@{solo.head()}"])

    # Nothing changed: nothing requested (by the sensor itself, not only by run_key de-duplication).
    t = harness().tick()
    assert t.raw_keys == [] and "2 failed" in t.result.skip_reason.skip_message
    assert "does not appear to be a git repository" in t.result.skip_reason.skip_message

    # A commit that only touches apps/a rebuilds only a.
    sha_a = mono.commit({"apps/a/main.py": "print('a')\n"})
    t = harness().tick()
    assert _requested(t) == {("a", sha_a, main)}

    # A commit outside every context rebuilds nothing, but the cursor moves on.
    mono.commit({"README.md": "docs\n"})
    t = harness().tick()
    assert t.raw_keys == []

    # Restart with the clone cache wiped: the cursor in the instance is all the state there is.
    shutil.rmtree(tmp_path / "git-cache")
    t = harness().tick()
    assert t.raw_keys == []
    cursor = json.loads(harness().stored_cursor() or "{}")
    assert cursor["remotes"][mono.url]["refs/heads/main"] == mono.head()

    # A new branch builds the branch's targets; later commits on it only the affected ones.
    mono.checkout("feature", create=True)
    sha_f1 = mono.commit({"apps/b/x.txt": "1\n"})
    t = harness().tick()
    assert _requested(t) == {("a", sha_f1, "refs/heads/feature"), ("b", sha_f1, "refs/heads/feature")}
    assert f"a@{sha_f1}@refs/heads/feature" in t.keys
    sha_f2 = mono.commit({"apps/b/x.txt": "2\n"})
    t = harness().tick()
    assert _requested(t) == {("b", sha_f2, "refs/heads/feature")}

    # Force-push: the rewritten commit changes only apps/b relative to the old head -> only b, new sha.
    sha_f2b = mono.commit({"apps/b/x.txt": "2-amended\n"}, amend=True)
    assert sha_f2b != sha_f2
    t = harness().tick()
    assert _requested(t) == {("b", sha_f2b, "refs/heads/feature")}

    # A semver tag (annotated) releases every target of the repository; a non-semver tag is ignored.
    mono.checkout("main")
    mono.tag("v1.2.0")
    mono.tag("nightly", annotated=False)
    t = harness().tick()
    assert _requested(t) == {("a", mono.head(), "refs/tags/v1.2.0"), ("b", mono.head(), "refs/tags/v1.2.0")}

    # Deleting a branch requests nothing and drops it from the cursor.
    mono.delete_branch("feature")
    t = harness().tick()
    assert t.raw_keys == []
    assert "refs/heads/feature" not in json.loads(harness().stored_cursor() or "{}")["remotes"][mono.url]

    # Re-creating the branch at a commit already built for it: the sensor asks again, run_key de-dup launches nothing.
    git(mono.path, "branch", "feature", sha_f1)
    t = harness().tick()
    assert sorted(t.raw_keys) == sorted([f"a@{sha_f1}@refs/heads/feature", f"b@{sha_f1}@refs/heads/feature"])
    assert t.requested == []
    assert harness().tick().raw_keys == []

    # The single-target repository given as a plain path.
    sha_s = solo.commit({"app.py": "x\n"})
    t = harness().tick()
    assert _requested(t) == {("solo", sha_s, main)}

    # The unreachable remote comes up: it is polled for the first time and built.
    late = make_repo("late", {"Dockerfile": "FROM scratch\n"})
    assert late.path == missing
    t = harness().tick()
    assert _requested(t) == {("late", late.head(), main)}

    # Over the whole history, every (target, sha, ref) was launched exactly once.
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster-home")) as instance:
        runs = instance.get_runs(RunsFilter(job_name="build_and_release"))
    keys = [r.tags["dagster/run_key"] for r in runs]
    assert len(keys) == len(set(keys)) == 12
