"""EKS SOCI nodes: the MIME userData, the NodeConfig and configs inside it, Karpenter and Terraform agree."""

from __future__ import annotations

import email
import email.policy
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import hcl2
import jsonschema
import pytest
import yaml

from resources import defaults
from resources.k8s.canary import DEFAULT_NODE_SELECTOR, DEFAULT_TOLERATIONS
from tests.deploy.conftest import EKS
from tests.deploy.crd_schemas import NODE_CONFIG_V1ALPHA1

USERDATA = EKS / "soci-userdata.mime"
TERRAFORM = EKS / "terraform" / "soci-nodes.tf"
SOCI_SOCKET = "/run/soci-snapshotter-grpc/soci-snapshotter-grpc.sock"
USERDATA_MAX_BYTES = 16 * 1024  # EC2: raw user data, before base64
TF_EFFECTS = {"NoSchedule": "NO_SCHEDULE", "PreferNoSchedule": "PREFER_NO_SCHEDULE", "NoExecute": "NO_EXECUTE"}


def _parts() -> list[email.message.Message]:
    msg = email.message_from_bytes(USERDATA.read_bytes(), policy=email.policy.default)
    assert msg.get_content_type() == "multipart/mixed"
    assert msg["MIME-Version"] == "1.0"
    return list(msg.iter_parts())


def _node_config() -> dict[str, Any]:
    part = _parts()[0]
    docs = [d for d in yaml.safe_load_all(part.get_content()) if d]
    assert len(docs) == 1, "one NodeConfig document"
    return docs[0]


def _script() -> str:
    return _parts()[1].get_content()


def _heredoc(script: str, marker: str) -> str:
    m = re.search(rf"<<'{marker}'\n(.*?)\n{marker}\n", script, re.DOTALL)
    assert m, f"no quoted heredoc {marker} in the user-data script"
    return m[1]


def _terraform() -> dict[str, Any]:
    return hcl2.loads(TERRAFORM.read_text())


def _tf_resource(tf: dict[str, Any], rtype: str, name: str) -> dict[str, Any]:
    for block in tf["resource"]:
        for t, by_name in block.items():
            if t.strip('"') == rtype:
                for n, body in by_name.items():
                    if n.strip('"') == name:
                        return body
    raise AssertionError(f"terraform resource {rtype}.{name} not found")


def _unquote(value: Any) -> Any:
    """python-hcl2 keeps string literals quoted ('"x"') and map keys quoted; strip that for comparisons."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    if isinstance(value, dict):
        return {_unquote(k): _unquote(v) for k, v in value.items() if k != "__is_block__"}
    if isinstance(value, list):
        return [_unquote(v) for v in value]
    return value


def test_userdata_is_a_two_part_mime_document_within_the_ec2_limit():
    assert len(USERDATA.read_bytes()) <= USERDATA_MAX_BYTES
    parts = _parts()
    assert [p.get_content_type() for p in parts] == ["application/node.eks.aws", "text/x-shellscript"]


def test_node_config_is_valid_and_points_kubelet_at_the_soci_image_service():
    config = _node_config()
    jsonschema.Draft202012Validator(NODE_CONFIG_V1ALPHA1).validate(config)
    assert config["spec"]["kubelet"]["config"]["imageServiceEndpoint"] == f"unix://{SOCI_SOCKET}"
    assert "cluster" not in config["spec"], "cluster details come from Karpenter/EKS, not from this template"
    gates = config["spec"].get("featureGates", {})
    assert not any(gates.get(g) for g in ("FastImagePull", "FastContainerImagePull")), \
        "the AMI's fast-pull gate switches soci to parallel pull: no lazy loading"


def test_containerd_config_routes_cri_pulls_through_soci_lazily():
    cfg = tomllib.loads(_node_config()["spec"]["containerd"]["config"])
    plugin = cfg["proxy_plugins"]["soci"]
    assert plugin["type"] == "snapshot" and plugin["address"] == SOCI_SOCKET
    assert plugin["exports"]["enable_remote_snapshot_annotations"] == "true", "containerd 2.1+ transfer-service pulls"
    images = cfg["plugins"]["io.containerd.cri.v1.images"]
    assert images == {"snapshotter": "soci", "disable_snapshot_annotations": False}
    assert {"platform": "linux", "snapshotter": "soci"} in cfg["plugins"]["io.containerd.transfer.v1.local"][
        "unpack_config"
    ]
    # nodeadm picks the v3 template when it sees a cri.v1 section; a v2 section next to it would be migrated away.
    assert "io.containerd.grpc.v1.cri" not in cfg["plugins"]


def test_script_configures_soci_for_v2_lazy_loading_and_downloads_nothing():
    script = _script()
    assert script.startswith("#!/bin/bash\n")
    subprocess.run(["bash", "-n"], input=script, text=True, check=True, timeout=30)
    soci = tomllib.loads(_heredoc(script, "SOCI_CONFIG"))
    modes = soci["pull_modes"]
    assert (modes["soci_v1"]["enable"], modes["soci_v2"]["enable"], modes["parallel_pull_unpack"]["enable"]) == (
        False, True, False)
    assert soci["cri_keychain"] == {"enable_keychain": True, "image_service_path": "/run/containerd/containerd.sock"}
    assert soci["snapshotter"]["min_layer_size"] == defaults.SOCI_MIN_LAYER_SIZE
    assert "cat >/etc/soci-snapshotter-grpc/config.toml <<'SOCI_CONFIG'" in script
    assert "systemctl enable --now soci-snapshotter.socket" in script
    assert not re.search(r"\b(curl|wget|dnf|yum|pip)\b", script), "node boot must not download anything"


def test_karpenter_node_class_carries_the_same_userdata_and_a_pinned_ami(karpenter_docs):
    node_class, node_pool = karpenter_docs
    spec = node_class["spec"]
    assert spec["userData"] == USERDATA.read_text()
    [term] = spec["amiSelectorTerms"]
    assert re.fullmatch(r"al2023@v\d{8}", term["alias"]), f"AMI must be pinned, got {term['alias']}"
    assert spec["metadataOptions"]["httpTokens"] == "required"
    assert spec["metadataOptions"]["httpPutResponseHopLimit"] == 1
    ref = node_pool["spec"]["template"]["spec"]["nodeClassRef"]
    assert ref == {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": node_class["metadata"]["name"]}


def test_node_pool_label_and_taint_are_what_the_canary_selects(karpenter_docs):
    template = karpenter_docs[1]["spec"]["template"]
    assert template["metadata"]["labels"] == {defaults.SOCI_NODE_LABEL_KEY: defaults.SOCI_NODE_LABEL_VALUE}
    assert template["spec"]["taints"] == [{"key": defaults.SOCI_NODE_TAINT_KEY, "value": defaults.SOCI_NODE_TAINT_VALUE,
                                           "effect": defaults.SOCI_NODE_TAINT_EFFECT}]
    # the canary pod's scheduling constraints match these nodes exactly
    assert DEFAULT_NODE_SELECTOR.items() <= template["metadata"]["labels"].items()
    for tol in DEFAULT_TOLERATIONS:
        assert any(t["key"] == tol["key"] and t["value"] == tol["value"] and t["effect"] == tol["effect"]
                   for t in template["spec"]["taints"])


def test_terraform_launch_template_uses_the_same_userdata_file_and_node_settings():
    tf = _terraform()
    lt = _unquote(_tf_resource(tf, "aws_launch_template", "streamable_soci"))
    m = re.fullmatch(r"\$\{base64encode\(file\(\"\$\{path\.module\}/([^\"]+)\"\)\)\}", lt["user_data"])
    assert m, f"user_data must be base64encode(file(...)) of the shared MIME file, got {lt['user_data']}"
    assert (TERRAFORM.parent / m[1]).resolve() == USERDATA.resolve()
    [metadata] = lt["metadata_options"]
    assert metadata["http_tokens"] == "required" and metadata["http_put_response_hop_limit"] == 1
    group = _unquote(_tf_resource(tf, "aws_eks_node_group", "streamable_soci"))
    assert group["labels"] == {defaults.SOCI_NODE_LABEL_KEY: defaults.SOCI_NODE_LABEL_VALUE}
    assert group["taint"] == [{"key": defaults.SOCI_NODE_TAINT_KEY, "value": defaults.SOCI_NODE_TAINT_VALUE,
                               "effect": TF_EFFECTS[defaults.SOCI_NODE_TAINT_EFFECT]}]
    assert group["ami_type"].startswith("AL2023_")
    assert group["release_version"] == "${var.ami_release_version}"
    variables = _unquote({k: v for block in tf["variable"] for k, v in block.items()})
    release = variables["ami_release_version"]
    assert "default" not in release, "the AMI release must be chosen, not defaulted"
    assert "var.ami_release_version" in release["validation"][0]["condition"]


@pytest.mark.parametrize("path", [USERDATA, EKS / "karpenter-soci.yaml"])
def test_no_unpinned_latest_anywhere(path: Path):
    assert not re.search(r"@latest\b|:latest\b", path.read_text())
