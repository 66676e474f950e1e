"""Canary pods on SOCI nodes with the real kubernetes client against the fake API: success, pull failure, timeout."""

from __future__ import annotations

import pytest

from resources.defaults import CANARY_NAMESPACE, SOCI_NODE_LABEL_KEY, SOCI_NODE_TAINT_KEY
from resources.k8s.canary import CanaryError, CanaryVerifier, parse_go_duration, pull_info_from_events
from tests.fakes.fake_k8s import pull_failed, pulled, pulling, running, scheduled, terminated, unschedulable

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/team/app@sha256:" + "ab" * 32


def verifier(core_api, **kw) -> CanaryVerifier:
    return CanaryVerifier(core_api=core_api, poll_interval_s=0.02, **kw)


def created_pod(fake) -> dict:
    (post,) = fake.calls("POST", f"/api/v1/namespaces/{CANARY_NAMESPACE}/pods")
    return post.body


def assert_deleted(fake, name: str) -> None:
    assert fake.calls("DELETE", f"/api/v1/namespaces/{CANARY_NAMESPACE}/pods/{name}")
    assert (CANARY_NAMESPACE, name) not in fake.pods


def test_canary_success_measures_pull_and_start_and_deletes_the_pod(fake_k8s, core_api):
    fake_k8s.add_namespace(CANARY_NAMESPACE)
    fake_k8s.pod_script = [
        (0.00, scheduled("ip-10-0-1-7.ec2.internal")),
        (0.02, pulling()),
        (0.10, pulled("313ms", "313ms", 52_428_800)),
        (0.12, running()),
        (0.20, terminated(0, logs="app 1.2.3\n")),
    ]
    logs: list[str] = []
    result = verifier(core_api).run(IMAGE, command=["app", "--version"], timeout_s=10, log=logs.append)
    assert result.ok and result.exit_code == 0 and result.termination_reason == "Completed"
    assert result.node == "ip-10-0-1-7.ec2.internal"
    assert result.pull.pull_s == pytest.approx(0.313) and result.pull.pull_including_waiting_s == pytest.approx(0.313)
    assert result.pull.image_size_bytes == 52_428_800 and not result.pull.already_present
    assert 0.1 <= result.time_to_running_s < 5 and result.total_s >= result.time_to_running_s
    assert result.log_tail == "app 1.2.3\n"
    assert any(e.startswith("Pulled: Successfully pulled image") for e in result.events)
    md = result.metadata()
    assert md["canary_pull_s"] == pytest.approx(0.313) and md["canary_image_size_bytes"] == 52_428_800
    assert md["canary_node"] == "ip-10-0-1-7.ec2.internal" and md["canary_exit_code"] == 0

    pod = created_pod(fake_k8s)
    spec, container = pod["spec"], pod["spec"]["containers"][0]
    assert pod["metadata"]["namespace"] == CANARY_NAMESPACE
    assert container["image"] == IMAGE and container["command"] == ["app", "--version"]
    assert container["imagePullPolicy"] == "Always" and spec["restartPolicy"] == "Never"
    assert spec["nodeSelector"] == {SOCI_NODE_LABEL_KEY: "true"}
    assert spec["tolerations"] == [
        {"key": SOCI_NODE_TAINT_KEY, "operator": "Equal", "value": "true", "effect": "NoSchedule"}
    ]
    assert spec["automountServiceAccountToken"] is False
    assert_deleted(fake_k8s, pod["metadata"]["name"])
    events_query = fake_k8s.calls("GET", "/events")[0].query["fieldSelector"][0]
    assert events_query == f"involvedObject.name={pod['metadata']['name']},involvedObject.kind=Pod"


def test_canary_uses_configured_selector_tolerations_and_args(fake_k8s, core_api):
    fake_k8s.add_namespace("canaries")
    fake_k8s.pod_script = [(0, scheduled("n1")), (0, running()), (0.03, terminated(0))]
    v = verifier(
        core_api,
        namespace="canaries",
        node_selector={"pool": "soci"},
        tolerations=[{"key": "soci", "operator": "Exists", "effect": "NoSchedule"}],
        image_pull_secrets=["ecr"],
    )
    result = v.run(IMAGE, args=["--version"], timeout_s=10)
    assert result.namespace == "canaries"
    pod = fake_k8s.calls("POST", "/api/v1/namespaces/canaries/pods")[0].body
    assert pod["spec"]["nodeSelector"] == {"pool": "soci"}
    assert pod["spec"]["tolerations"] == [{"key": "soci", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["spec"]["imagePullSecrets"] == [{"name": "ecr"}]
    assert pod["spec"]["containers"][0]["args"] == ["--version"] and "command" not in pod["spec"]["containers"][0]


def test_canary_nonzero_exit_is_reported_not_raised(fake_k8s, core_api):
    fake_k8s.add_namespace(CANARY_NAMESPACE)
    fake_k8s.pod_script = [(0, scheduled("n1")), (0.01, pulled("2.5s")), (0.02, running()),
                           (0.05, terminated(3, logs="error: missing module\n"))]
    result = verifier(core_api).run(IMAGE, command=["app", "--version"], timeout_s=10)
    assert not result.ok and result.exit_code == 3 and result.termination_reason == "Error"
    assert result.pull.pull_s == 2.5 and result.pull.pull_including_waiting_s is None
    assert "missing module" in result.log_tail
    assert_deleted(fake_k8s, result.pod)


def test_canary_image_pull_failure_is_a_clear_error_and_the_pod_is_deleted(fake_k8s, core_api):
    fake_k8s.add_namespace(CANARY_NAMESPACE)
    fake_k8s.pod_script = [(0, scheduled("ip-10-0-2-9")), (0.02, pulling()),
                           (0.05, pull_failed("ErrImagePull", f"{IMAGE}: not found"))]
    with pytest.raises(CanaryError) as exc:
        verifier(core_api).run(IMAGE, command=["app", "--version"], timeout_s=10)
    text = str(exc.value)
    assert f"image {IMAGE} could not be pulled on node ip-10-0-2-9: ErrImagePull" in text
    assert "not found" in text and "kubelet: Failed: Failed to pull image" in text
    assert_deleted(fake_k8s, created_pod(fake_k8s)["metadata"]["name"])


def test_canary_image_pull_backoff_is_also_a_pull_failure(fake_k8s, core_api):
    fake_k8s.add_namespace(CANARY_NAMESPACE)
    fake_k8s.pod_script = [(0, scheduled("n1")), (0.03, pull_failed("ImagePullBackOff", "back-off pulling image"))]
    with pytest.raises(CanaryError, match="could not be pulled on node n1: ImagePullBackOff"):
        verifier(core_api).run(IMAGE, timeout_s=10)
    assert not fake_k8s.pods


def test_canary_timeout_names_the_last_event_and_deletes_the_pod(fake_k8s, core_api):
    fake_k8s.add_namespace(CANARY_NAMESPACE)
    fake_k8s.pod_script = [
        (0.01, unschedulable("0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector."))
    ]
    with pytest.raises(CanaryError) as exc:
        verifier(core_api).run(IMAGE, command=["app", "--version"], timeout_s=0.4)
    text = str(exc.value)
    assert "did not finish within 0.4s" in text and "node not scheduled" in text
    assert "FailedScheduling: 0/3 nodes are available" in text
    assert_deleted(fake_k8s, created_pod(fake_k8s)["metadata"]["name"])


def test_canary_timeout_while_running(fake_k8s, core_api):
    fake_k8s.add_namespace(CANARY_NAMESPACE)
    fake_k8s.pod_script = [(0, scheduled("n1")), (0.01, pulled("10ms")), (0.02, running())]
    with pytest.raises(CanaryError, match=r"did not finish within 0.3s \(phase Running, container running, node n1\)"):
        verifier(core_api).run(IMAGE, command=["sleep", "3600"], timeout_s=0.3)
    assert not fake_k8s.pods


def test_missing_namespace_is_a_clear_error(fake_k8s, core_api):
    with pytest.raises(
        CanaryError, match=r"namespaces \"streamable-canary\" not found.*does namespace streamable-canary exist"
    ):
        verifier(core_api).run(IMAGE, timeout_s=1)


def test_delete_failure_after_success_is_reported(fake_k8s, core_api):
    fake_k8s.add_namespace(CANARY_NAMESPACE)
    fake_k8s.pod_script = [(0, scheduled("n1")), (0, running()), (0.02, terminated(0))]
    original = fake_k8s._route

    def route(method, seg, query, body):
        if method == "DELETE":
            return 403, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 403,
                         "reason": "Forbidden", "message": "pods is forbidden: cannot delete"}, "application/json"
        return original(method, seg, query, body)

    fake_k8s._route = route
    with pytest.raises(CanaryError, match=r"could not be deleted; delete it by hand.*HTTP 403"):
        verifier(core_api).run(IMAGE, timeout_s=10)


def test_pull_event_parsing():
    info = pull_info_from_events([
        'Successfully pulled image "x" in 1m2.5s (1m3s including waiting). Image size: 1234 bytes.'])
    assert (info.pull_s, info.pull_including_waiting_s, info.image_size_bytes) == (62.5, 63.0, 1234)
    assert pull_info_from_events(['Container image "x" already present on machine']).already_present
    assert [parse_go_duration(d) for d in ("313ms", "1.5s", "1h0m0s", "250µs")] == [0.313, 1.5, 3600.0, 0.00025]
    with pytest.raises(ValueError, match="not a Go duration"):
        parse_go_duration("5 seconds")
