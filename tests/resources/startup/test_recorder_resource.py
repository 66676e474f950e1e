"""The pipeline's startup_recorder resources: locally (sandbox) and on EKS (a pod, through the fake API server),
with the target's `startup:` settings; the pod's log is the CLI's real output for the pod's own command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.resource_defs.startup import (
    KubernetesStartupRecorderResource,
    StartupRecorderResource,
    startup_resources,
)
from pipelines.settings import load_settings
from resources.oci.refs import ImageRef
from resources.startup.errors import RecordingError
from resources.startup.settings import StartupSettings
from tests.fakes.fake_k8s import running, scheduled
from tests.resources.startup.images import Entry, layer, push_image
from tests.resources.startup.test_k8s_recorder import core_api, fake, run_like_the_pod  # noqa: F401 - fixtures

SETTINGS = StartupSettings(enabled=True, ready={"log": "^listening$"}, timeout_s=30)  # type: ignore[arg-type]
SCRIPT = {"Entrypoint": ["/bin/sh", "-c", "cat /srv/conf; echo listening; sleep 30"]}


def _image(client, registry, busybox) -> ImageRef:  # type: ignore[no-untyped-def]
    digest = push_image(client, "t/res", "v1", [busybox, layer([Entry("srv/conf", b"x=1\n")])], config=SCRIPT)
    return ImageRef(registry.addr, "t/res", digest=digest)


def test_local_resource_records_with_the_target_settings(client, registry, busybox, tmp_path: Path) -> None:
    ref = _image(client, registry, busybox)
    profile = StartupRecorderResource(work_dir=str(tmp_path)).record(client, ref, SETTINGS, lambda _m: None)
    assert profile.stopped_by == "ready_log" and profile.manifest_digest == ref.digest
    assert {f.path for f in profile.files} == {"/bin/busybox", "/srv/conf"}


def test_kubernetes_resource_records_in_a_pod(fake, client, registry, busybox, tmp_path: Path) -> None:  # noqa: F811
    ref = _image(client, registry, busybox)
    fake.pod_script = [(0, scheduled("builder-node-1")), (0, running()), (0.1, run_like_the_pod(tmp_path))]
    resource = KubernetesStartupRecorderResource(
        image="recorder:test", kubeconfig=str(fake.write_kubeconfig(tmp_path / "kc")), poll_interval_s=0.05
    )
    profile = resource.record(client, ref, SETTINGS, lambda _m: None)
    assert profile.stopped_by == "ready_log" and {f.path for f in profile.files} == {"/bin/busybox", "/srv/conf"}
    (created,) = fake.calls("POST")
    assert created.body["spec"]["containers"][0]["args"][:2] == [str(ref), "--work-dir"]
    assert "--ready-log" in created.body["spec"]["containers"][0]["args"] and fake.pods == {}


def test_kubernetes_resource_without_image_names_the_setting(client, registry, busybox) -> None:
    ref = _image(client, registry, busybox)
    with pytest.raises(RecordingError, match="STREAMABLE_RECORDER_IMAGE"):
        KubernetesStartupRecorderResource().record(client, ref, SETTINGS, lambda _m: None)


def test_startup_resources_per_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMABLE_RECORDER_IMAGE", "127.0.0.1:5055/streamable/recorder:1")
    assert type(startup_resources(load_settings())["startup_recorder"]) is StartupRecorderResource
    monkeypatch.setenv("STREAMABLE_ENV", "eks")
    eks = startup_resources(load_settings())["startup_recorder"]
    assert isinstance(eks, KubernetesStartupRecorderResource) and eks.image == "127.0.0.1:5055/streamable/recorder:1"
