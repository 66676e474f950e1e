"""The recorder pod through the real kubernetes client and a fake API server; the pod's log is what the
CLI really prints when run with the pod's own command line against a real image (so the contract holds)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client as k8s_client

from resources.defaults import BUILDER_NAMESPACE
from resources.k8s.client import api_client
from resources.startup import k8s_recorder
from resources.startup.errors import RecordingError
from resources.startup.k8s_recorder import KubernetesStartupRecorder
from resources.startup.sandbox import Readiness
from tests.fakes.fake_k8s import (
    FakeKubernetes,
    pull_failed,
    running,
    scheduled,
    terminated,
)
from tests.resources.startup.images import Entry, layer, push_image

STREAMABLE = Path(sys.executable).parent / "streamable"


@pytest.fixture
def fake() -> Iterator[FakeKubernetes]:
    with FakeKubernetes() as f:
        f.add_namespace(BUILDER_NAMESPACE)
        yield f


@pytest.fixture
def core_api(fake: FakeKubernetes, tmp_path: Path) -> k8s_client.CoreV1Api:
    return k8s_client.CoreV1Api(api_client(fake.write_kubeconfig(tmp_path / "kubeconfig")))


def run_like_the_pod(work: Path):  # type: ignore[no-untyped-def]
    """A lifecycle step: run the pod's command line here (work dir swapped) and terminate with its real output."""

    def step(fake: FakeKubernetes, pod: dict) -> None:
        container = pod["spec"]["containers"][0]
        argv = [*container["command"], *container["args"]]
        argv[argv.index("--work-dir") + 1] = str(work)
        env = {k: v for k, v in os.environ.items() if k != "STREAMABLE_REGISTRY_PASSWORD"}
        proc = subprocess.run(
            [str(STREAMABLE), *argv[1:]], capture_output=True, text=True, env=env, timeout=300, check=False
        )
        terminated(proc.returncode, proc.stdout + proc.stderr)(fake, pod)

    return step


def test_records_in_a_pod_and_deletes_it(fake, core_api, client, registry, busybox, tmp_path: Path) -> None:
    digest = push_image(
        client,
        "t/k8s",
        "v1",
        [busybox, layer([Entry("srv/conf", b"x=1\n")])],
        config={"Entrypoint": ["/bin/sh", "-c", "cat /srv/conf; echo listening; sleep 30"]},
    )
    fake.pod_script = [(0, scheduled("builder-node-1")), (0, running()), (0.1, run_like_the_pod(tmp_path))]
    rec = KubernetesStartupRecorder(core_api, image="recorder:test", poll_interval_s=0.05)
    ref = f"{registry.addr}/t/k8s@{digest}"
    profile = rec.record(ref, readiness=Readiness(log="listening"), timeout_s=30)
    assert profile.stopped_by == "ready_log" and profile.manifest_digest == digest
    assert {f.path for f in profile.files} == {"/bin/busybox", "/srv/conf"}
    created = fake.calls("POST")
    assert len(created) == 1 and created[0].body["spec"]["serviceAccountName"] == k8s_recorder.SERVICE_ACCOUNT
    assert created[0].body["spec"]["containers"][0]["args"][:2] == [ref, "--work-dir"]
    assert fake.pods == {}, "the recorder pod was not deleted"


def test_recorder_errors_reach_the_caller_and_the_pod_is_deleted(
    fake, core_api, client, registry, busybox, tmp_path
) -> None:
    digest = push_image(
        client, "t/k8s", "v1", [busybox], config={"Entrypoint": ["/bin/sh", "-c", "echo no model >&2; exit 5"]}
    )
    fake.pod_script = [(0, scheduled("builder-node-1")), (0.1, run_like_the_pod(tmp_path))]
    rec = KubernetesStartupRecorder(core_api, image="recorder:test", poll_interval_s=0.05)
    with pytest.raises(RecordingError, match="failed: .*exited with status 5.*no model"):
        rec.record(f"{registry.addr}/t/k8s@{digest}", timeout_s=30)
    assert fake.pods == {}


def test_image_pull_failure_and_timeout(fake, core_api) -> None:
    fake.pod_script = [(0, scheduled("builder-node-1")), (0, pull_failed("ImagePullBackOff", "denied"))]
    rec = KubernetesStartupRecorder(core_api, image="recorder:missing", poll_interval_s=0.05)
    with pytest.raises(RecordingError, match="cannot start: ImagePullBackOff"):
        rec.record("127.0.0.1:1/x@sha256:" + "b" * 64)
    assert fake.pods == {}
    fake.pod_script = [(0, scheduled("builder-node-1")), (0, running())]
    now = [0.0]
    rec = KubernetesStartupRecorder(
        core_api,
        image="recorder:test",
        poll_interval_s=0.01,
        clock=lambda: now[0],
        sleep=lambda s: now.__setitem__(0, now[0] + 100),
    )
    with pytest.raises(RecordingError, match="did not finish in 610s"):
        rec.record("127.0.0.1:1/x@sha256:" + "b" * 64, timeout_s=10)
    assert fake.pods == {}
