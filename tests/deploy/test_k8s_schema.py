"""Every rendered object validates offline against the Kubernetes schemas (strict: unknown fields fail)."""

from __future__ import annotations

import jsonschema
import kubernetes_validate
import pytest

from resources import defaults
from tests.deploy.conftest import KUSTOMIZATIONS
from tests.deploy.crd_schemas import SCHEMAS

# EKS standard support spans these; the oldest and newest schemas kubernetes-validate ships for them.
K8S_VERSIONS = ("1.33", "1.37")
CLUSTER_SCOPED = {"Namespace", "StorageClass", "ClusterRole", "ClusterRoleBinding"}
OUR_NAMESPACES = {defaults.BUILDER_NAMESPACE, defaults.DAGSTER_NAMESPACE, defaults.CANARY_NAMESPACE}


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_every_object_validates_strictly(rendered, name, version):
    objects = rendered[name]
    assert objects, f"{name} rendered nothing"
    for obj in objects:
        where = f"{name}: {obj['kind']} {obj['metadata'].get('namespace', '')}/{obj['metadata']['name']}"
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{where} is invalid for Kubernetes {version} at {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            pytest.fail(f"{where}: no schema ({exc.message}); is the apiVersion right?")


def test_namespaced_objects_live_in_our_namespaces(rendered):
    created = {o["metadata"]["name"] for o in rendered["base"] if o["kind"] == "Namespace"}
    assert created == OUR_NAMESPACES
    for name, objects in rendered.items():
        for obj in objects:
            ns = obj["metadata"].get("namespace")
            if obj["kind"] in CLUSTER_SCOPED:
                assert ns is None, f"{name}: cluster-scoped {obj['kind']} {obj['metadata']['name']} has a namespace"
            else:
                assert ns in OUR_NAMESPACES, f"{name}: {obj['kind']} {obj['metadata']['name']} is in namespace {ns!r}"


def test_karpenter_objects_validate_against_their_crd_schemas(karpenter_docs):
    assert [(d["apiVersion"], d["kind"]) for d in karpenter_docs] == [
        ("karpenter.k8s.aws/v1", "EC2NodeClass"), ("karpenter.sh/v1", "NodePool")]
    for doc in karpenter_docs:
        jsonschema.Draft202012Validator(SCHEMAS[(doc["apiVersion"], doc["kind"])]).validate(doc)


def test_crd_schema_subsets_reject_misplaced_fields(karpenter_docs):
    """The transcribed schemas are closed: a field in the wrong place fails (so the test above can fail)."""
    node_class, node_pool = karpenter_docs
    bad_class = {**node_class, "spec": {**node_class["spec"], "kubeletConfiguration": {}}}
    bad_pool = {**node_pool, "spec": {**node_pool["spec"], "taints": node_pool["spec"]["template"]["spec"]["taints"]}}
    for doc in (bad_class, bad_pool):
        with pytest.raises(jsonschema.ValidationError, match="Additional properties"):
            jsonschema.Draft202012Validator(SCHEMAS[(doc["apiVersion"], doc["kind"])]).validate(doc)
