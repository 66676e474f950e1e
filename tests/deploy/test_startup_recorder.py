"""deploy/k8s/optional/startup-recorder: valid objects, least RBAC, a privileged but isolated recorder pod."""

from __future__ import annotations

import kubernetes_validate
import pytest

from resources import defaults
from tests.deploy import kustomize_lite
from tests.deploy.conftest import K8S, find

RECORDER = K8S / "optional" / "startup-recorder"


@pytest.fixture(scope="module")
def objects() -> list[dict]:
    return kustomize_lite.render(RECORDER)


@pytest.mark.parametrize("version", ("1.33", "1.37"))
def test_objects_validate_strictly(objects, version) -> None:
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)
        assert obj["metadata"]["namespace"] == defaults.BUILDER_NAMESPACE


def test_rbac_is_the_least_the_runner_needs(objects) -> None:
    role = find(objects, "Role", "streamable-startup-recorder-runner", defaults.BUILDER_NAMESPACE)
    perms = {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    assert perms == {("batch", "jobs", "create"), ("batch", "jobs", "get"), ("batch", "jobs", "delete"),
                     ("", "pods", "list"), ("", "pods/log", "get")}
    binding = find(objects, "RoleBinding", "streamable-startup-recorder-runner", defaults.BUILDER_NAMESPACE)
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": defaults.DAGSTER_SERVICE_ACCOUNT,
                                    "namespace": defaults.DAGSTER_NAMESPACE}]
    sa = find(objects, "ServiceAccount", "streamable-startup-recorder", defaults.BUILDER_NAMESPACE)
    assert sa["automountServiceAccountToken"] is False
    assert not any(o["kind"] in ("RoleBinding", "ClusterRoleBinding") and any(s["name"] == sa["metadata"]["name"] for s in o["subjects"])
                   for o in objects), "the recorder itself needs no Kubernetes API access"


def test_job_template(objects) -> None:
    job = find(objects, "Job", "startup-recorder-template", defaults.BUILDER_NAMESPACE)
    assert job["spec"]["suspend"] is True and job["spec"]["backoffLimit"] == 0
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "streamable-startup-recorder" and pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    assert container["command"] == ["streamable", "soci", "profile"] and container["securityContext"]["privileged"] is True
    work = next(v for v in pod["volumes"] if v["name"] == "work")
    assert "ephemeral" in work and "emptyDir" not in work  # a disk volume: never a tmpfs (medium: Memory)
    policy = find(objects, "NetworkPolicy", "startup-recorder-egress-only", defaults.BUILDER_NAMESPACE)
    assert policy["spec"]["podSelector"]["matchLabels"] == job["spec"]["template"]["metadata"]["labels"]
    assert "ingress" not in policy["spec"] and set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
