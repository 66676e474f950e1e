"""The Dagster UI in a real browser after two runs: the asset pages show the facts a person looks for.

Starts what it needs: a registry (fixture), a git repository with one target that records its start
(`startup.enabled`, tests/ui/startup_facts.py), `dg dev` on a free port with its own DAGSTER_HOME
(tests/ui/dg_dev.py). The first run is submitted through GraphQL, the second from the launchpad by clicks and
typing, the way the README describes. Expected values come from the registry, not from Dagster (the cost of a
start: from the profile stored next to the image, cross-checked against the run's metadata read through GraphQL).
Assertions read the page text (plus the dialogs behind `[Show ...]` links), so they hold whether a value is
rendered as markdown, JSON or a typed table. Screenshots (and the text read from each page) go to
`.streamable/ui-screenshots/` (kept by CI).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import yaml
from dagster_graphql import DagsterGraphQLClient

from resources.oci import media_types as mt
from resources.registry import RegistryClient
from resources.release.tags import candidate_tag
from tests.conftest import DockerEngine
from tests.pipelines.conftest import Project
from tests.ui.browser import (
    chromium_page,
    dismiss_first_visit_dialog,
    launch_from_launchpad,
    open_page,
    screenshot,
    toggle_is_on,
    visible_text,
    wait_for_texts,
)
from tests.ui.dg_dev import ROOT, local_dagster_home, running_dg_dev
from tests.ui.page_text import hex12, missing, shown_alone
from tests.ui.startup_facts import STARTUP_FILES, enable_startup, startup_cost_pages

SHOTS = ROOT / ".streamable" / "ui-screenshots"
REPO = "team/svc"
RELEASE_TAGS = ("main", "latest")  # plus sha-<7>; they move from the first run's image to the second's

# What the README says about Automation: the automation-condition sensor (needed for `release` to follow a UI
# re-materialization of soci_index) and the sensors start off, the schedules run.
AUTOMATION_DEFAULTS = {
    "default_automation_condition_sensor": False,
    "git_push_sensor": False,
    "registry_image_scan_sensor": False,
    "builder_cache_gc_schedule": True,
    "soci_backfill_retry_schedule": True,
}


README = ROOT / "README.md"
README_UI = "http://127.0.0.1:3000"


def readme_launchpad_config() -> dict:
    """The run config the README tells a person to add in the launchpad (the yaml block after "Open launchpad")."""
    text = README.read_text()
    block = re.search(r"Open launchpad.*?```yaml\n(.*?)```", text, re.DOTALL)
    assert block, "README: no yaml run config after 'Open launchpad'"
    config = yaml.safe_load(block.group(1))
    assert set(config) == {"ops"} and "config" in config["ops"]["image"], config
    return config


def readme_ui_paths() -> set[str]:
    """Every UI page the README links to, as a path."""
    return set(re.findall(re.escape(README_UI) + r"(/[^>\s)`]*)", README.read_text()))


def submit(client: DagsterGraphQLClient, commit: str) -> str:
    """Submit `build_and_release` for partition `svc` at `commit` through GraphQL (steps in one process, which
    is quicker); returns the run id."""
    return client.submit_job_execution(
        "build_and_release",
        run_config={"ops": {"image": {"config": {"commit": commit, "ref": "refs/heads/main"}}},
                    "execution": {"config": {"in_process": {}}}},
        tags={"dagster/partition": "svc"},
    )


def wait_for_success(client: DagsterGraphQLClient, run_id: str, commit: str, timeout_s: float = 120) -> str:
    """Wait until the run ends and require SUCCESS; returns the run id."""
    deadline = time.monotonic() + timeout_s
    status = None
    while time.monotonic() < deadline:
        status = client.get_run_status(run_id).value
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            break
        time.sleep(1)
    assert status == "SUCCESS", f"run {run_id} at {commit[:12]} ended {status}"
    return run_id


def registry_facts(project: Project, commit: str, run_id: str) -> dict:
    """What the registry holds after a run: the built image and its layers, the released image and its SOCI index."""
    with RegistryClient(project.registry.addr) as client:
        built = client.get_manifest(REPO, candidate_tag(commit, run_id))
        released = client.get_manifest(REPO, f"sha-{commit[:7]}")
        soci = [m["annotations"][mt.ANNOTATION_INDEX_DIGEST]
                for entry in released.json()["manifests"] if entry.get("platform")
                for m in [client.get_manifest(REPO, entry["digest"]).json()]
                if mt.ANNOTATION_INDEX_DIGEST in (m.get("annotations") or {})]
        tags = {t: client.head_manifest(REPO, t) for t in (*RELEASE_TAGS, f"sha-{commit[:7]}")}
    return {
        "image_digest": built.digest,
        "layers": [layer["digest"] for layer in built.json()["layers"]],
        "index_digest": released.digest,
        "soci_index_digests": soci,
        "tags": {t: d.digest if d else None for t, d in tags.items()},
    }


@pytest.mark.timeout(240)  # ~1 min on an idle 2-core machine; the bound is for a loaded one
def test_asset_pages_show_key_facts(project: Project, docker_engine: DockerEngine, tmp_path: Path) -> None:
    env = {
        "DAGSTER_HOME": str(local_dagster_home(tmp_path / "ui_home")),
        "STREAMABLE_TARGETS": str(project.targets_file),
        "STREAMABLE_STATE_DIR": str(project.state_dir),
        "STREAMABLE_DOCKER_HOST": docker_engine.host,
        "STREAMABLE_DOCKER_BIN": docker_engine.docker_bin,
        "STREAMABLE_ENV": "local",
    }
    enable_startup(project)
    project.commit(STARTUP_FILES, "start: the image's entrypoint reads the model's first page and says it started")
    for old in [*SHOTS.glob("*.png"), *SHOTS.glob("*.txt")]:
        old.unlink()
    with running_dg_dev(env, tmp_path / "dg-dev.log") as port:
        client = DagsterGraphQLClient("127.0.0.1", port_number=port)
        first_sha = project.commit({"svc/app/v.txt": "1\n"}, "first")
        first = registry_facts(project, first_sha, wait_for_success(client, submit(client, first_sha), first_sha))
        second_sha = project.commit({"svc/app/v.txt": "2\n"}, "second")

        base = f"http://127.0.0.1:{port}"
        problems: dict[str, list[str]] = {}
        with chromium_page() as page:
            open_page(page, base + "/", ready_text="Catalog")
            dismiss_first_visit_dialog(page)
            # The README's run config (commit: null = the head of the target's branch, here second_sha), typed as
            # one line of flow YAML so the editor's auto-indent cannot change it.
            run_id = launch_from_launchpad(
                page, base + "/locations/streamable/jobs/build_and_release", partition="svc",
                run_config_yaml="ops: " + json.dumps(readme_launchpad_config()["ops"]),
                shot=SHOTS / "00-launchpad.png")
            second = registry_facts(project, second_sha, wait_for_success(client, run_id, second_sha))
            open_page(page, f"{base}/runs/{run_id}", ready_text="Success")
            screenshot(page, SHOTS / "00-run.png")
            assert first["index_digest"] != second["index_digest"]
            assert all(second["tags"][t] == second["index_digest"] for t in second["tags"]), second["tags"]
            assert len(second["soci_index_digests"]) == 1, second

            visited = {"/locations/streamable/jobs/build_and_release", f"/runs/{run_id}", "/automation"}

            def check(name: str, path: str, ready: str, expected: dict[str, str | re.Pattern[str]]) -> str:
                visited.add(path)
                open_page(page, base + path, ready_text=ready)
                wait_for_texts(page, [v for v in expected.values() if isinstance(v, str)])
                text = visible_text(page)
                shot = screenshot(page, SHOTS / f"{len(problems) + 1:02d}-{name}.png")
                shot.with_suffix(".txt").write_text(text)  # what the assertions read, next to what a person sees
                problems[name] = missing(text, expected)
                return text

            check("catalog", "/assets", "Catalog", {"image": "image", "startup_profile": "startup_profile",
                                                   "soci_index": "soci_index",
                                                   "release": "release", "group": "supply_chain"})
            check("group", "/locations/streamable/asset-groups/supply_chain", "supply_chain",
                  {"image": "image", "startup_profile": "startup_profile", "soci_index": "soci_index",
                   "release": "release", "check verdict": "1 / 1 Passed"})
            check("image", "/assets/image", "image", {
                "commit": second_sha,
                "image digest": hex12(second["image_digest"]),
                # layers table: one row per layer of the pushed manifest
                **{f"layer {i}": hex12(d) for i, d in enumerate(second["layers"])},
            })
            check("soci_index", "/assets/soci_index", "soci_index", {
                "image index digest": hex12(second["index_digest"]),
                "SOCI index digest": hex12(second["soci_index_digests"][0]),
            })
            check("check", "/assets/soci_index?view=checks", "lazy_pull_verifies", {
                "check name": "lazy_pull_verifies",
                "verdict": "Passed",
                "verified digest": hex12(second["index_digest"]),
            })
            check("release", "/assets/release", "release", {
                **{f"tag {t}": shown_alone(t) for t in second["tags"]},
                "to (this run's image)": hex12(second["index_digest"]),
                "from (the previous image of main/latest)": hex12(first["index_digest"]),
            })
            for name, path, ready, expected in startup_cost_pages(project, port, run_id, second["image_digest"],
                                                                  second["index_digest"]):
                check(name, path, ready, expected)

            open_page(page, base + "/automation", ready_text="default_automation_condition_sensor")
            screenshot(page, SHOTS / f"{len(problems) + 1:02d}-automation.png")
            problems["automation"] = [f"{name} is {'on' if not on else 'off'}, README says {'on' if on else 'off'}"
                                      for name, on in AUTOMATION_DEFAULTS.items() if toggle_is_on(page, name) != on]

    # Every UI link in the README is a page this test opened and checked.
    problems["README links"] = sorted(readme_ui_paths() - visited - {"/"})
    failed = {page: facts for page, facts in problems.items() if facts}
    assert not failed, f"facts not shown in the UI (screenshots in {SHOTS}): {failed}"
