"""deploy/k8s/optional/startup-recorder agrees with resources/startup/k8s_recorder.py: identity, policy, pod."""

from __future__ import annotations

import kubernetes_validate
import pytest

from resources import defaults
from resources.startup import k8s_recorder
from resources.startup.sandbox import Readiness
from tests.deploy.conftest import find


@pytest.fixture(scope="module")
def objects(rendered) -> list[dict]:
    return rendered["startup-recorder"]


def test_identity_has_no_api_access(objects, overlay) -> None:
    sa = find(objects, "ServiceAccount", k8s_recorder.SERVICE_ACCOUNT, defaults.BUILDER_NAMESPACE)
    assert sa["automountServiceAccountToken"] is False
    bound = [s["name"] for o in overlay if o["kind"] == "RoleBinding" for s in o["subjects"]]
    assert k8s_recorder.SERVICE_ACCOUNT not in bound, "the recorder itself needs no Kubernetes API access"
    assert [
        o for o in overlay if o["kind"] == "ServiceAccount" and o["metadata"]["name"] == k8s_recorder.SERVICE_ACCOUNT
    ]


def test_network_policy_selects_the_recorder_pods_and_allows_only_dns_and_https(objects) -> None:
    policy = find(objects, "NetworkPolicy", "startup-recorder-egress-only", defaults.BUILDER_NAMESPACE)
    selector = policy["spec"]["podSelector"]["matchLabels"]
    assert selector.items() <= k8s_recorder.POD_LABELS.items()
    assert "ingress" not in policy["spec"] and set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    ports = {(p["protocol"], p["port"]) for rule in policy["spec"]["egress"] for p in rule["ports"]}
    assert ports == {("UDP", 53), ("TCP", 53), ("TCP", 443)}


@pytest.mark.parametrize("version", ("1.33", "1.37"))
def test_the_recorder_pod_validates_and_is_isolated_as_documented(version) -> None:
    rec = k8s_recorder.KubernetesStartupRecorder(
        core_api=None, image="111122223333.dkr.ecr.us-east-1.amazonaws.com/streamable/recorder:1"
    )
    args = k8s_recorder.profile_args(
        "r.example/app@sha256:" + "a" * 64, Readiness(log="ready"), 90, ["/app/serve", "--x"]
    )
    pod = rec.pod_manifest("startup-abc", args, 90)
    kubernetes_validate.validate(pod, version, strict=True)
    spec = pod["spec"]
    assert spec["serviceAccountName"] == k8s_recorder.SERVICE_ACCOUNT and spec["automountServiceAccountToken"] is False
    assert spec["restartPolicy"] == "Never" and spec["activeDeadlineSeconds"] == 90 + k8s_recorder.START_GRACE_S
    (container,) = spec["containers"]
    assert container["securityContext"]["privileged"] is True
    assert container["command"] + container["args"] == [
        "streamable", "soci", "profile", "r.example/app@sha256:" + "a" * 64, "--work-dir", "/work", "--timeout", "90",
        "--ready-log", "ready", "--", "/app/serve", "--x"]
    (volume,) = spec["volumes"]
    assert "ephemeral" in volume and "emptyDir" not in volume  # a disk volume, never tmpfs
    assert pod["metadata"]["namespace"] == defaults.BUILDER_NAMESPACE
