"""The Python kustomize subset renders deploy/k8s exactly like `kubectl kustomize`, and refuses what it cannot do."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.deploy import kustomize_lite
from tests.deploy.conftest import KUSTOMIZATIONS, kubectl_kustomize


def _canonical(objects: list[dict]) -> list[str]:
    return sorted(json.dumps(o, sort_keys=True) for o in objects)


@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_python_renderer_equals_kubectl_kustomize(name, rendered, kubectl):
    if kubectl is None:
        pytest.skip("kubectl is not installed: the Python renderer is the only renderer on this machine")
    expected = _canonical(kubectl_kustomize(KUSTOMIZATIONS[name]))
    assert _canonical(rendered[name]) == expected


def test_overlay_patch_replaces_claim_templates_and_merges_containers(base, overlay):
    sts = {o["metadata"]["name"]: o for o in overlay if o["kind"] == "StatefulSet"}["buildkitd"]
    base_sts = {o["metadata"]["name"]: o for o in base if o["kind"] == "StatefulSet"}["buildkitd"]
    pod = sts["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["buildkitd"]
    container = pod["containers"][0]
    assert container["resources"]["requests"]["cpu"] == "4"
    # fields the patch does not mention survive the merge
    assert container["readinessProbe"] == base_sts["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"] == "streamable-builder-gp3"


@pytest.mark.parametrize(
    ("kustomization", "needle"),
    [
        ("resources: [a.yaml]\nnamespace: other\n", "namespace"),
        ("resources: [a.yaml]\ncommonLabels: {x: y}\n", "commonLabels"),
        ("resources: [a.yaml]\nlabels:\n- pairs: {x: y}\n  includeSelectors: true\n", "includeSelectors"),
        ("resources: [a.yaml]\npatches:\n- target: {kind: ConfigMap}\n  patch: '[]'\n", "patches"),
        ("resources: [missing.yaml]\n", "missing.yaml"),
    ],
)
def test_renderer_refuses_what_it_does_not_implement(tmp_path: Path, kustomization, needle):
    (tmp_path / "a.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n")
    (tmp_path / "kustomization.yaml").write_text(kustomization)
    with pytest.raises(kustomize_lite.KustomizeError, match=needle):
        kustomize_lite.render(tmp_path)


def test_strategic_merge_subset():
    base = {"spec": {"containers": [{"name": "a", "image": "x", "env": [{"name": "K", "value": "1"}]},
                                    {"name": "b", "image": "y"}],
                     "tolerations": [{"key": "t1"}], "keep": 1, "drop": 2}}
    patch = {"spec": {"containers": [{"name": "a", "env": [{"name": "K", "value": "2"}, {"name": "L", "value": "3"}]}],
                      "tolerations": [{"key": "t2"}], "drop": None}}
    merged = kustomize_lite.strategic_merge(base, patch)
    assert merged == {"spec": {"containers": [{"name": "a", "image": "x", "env": [{"name": "K", "value": "2"},
                                                                                {"name": "L", "value": "3"}]},
                                              {"name": "b", "image": "y"}],
                               "tolerations": [{"key": "t2"}], "keep": 1}}
    assert base["spec"]["drop"] == 2, "the base must not be modified"
