"""JSON Schemas for the custom resources in deploy/eks, transcribed from their upstream definitions.

Subsets: the fields and constraints of the `spec` the manifests here use or could plausibly use, with
`additionalProperties: false` wherever upstream has a closed object, so a misspelled or misplaced key
fails. CEL rules (x-kubernetes-validations) are not expressible here; the ones that matter are checked
directly in test_eks.py.
- EC2NodeClass karpenter.k8s.aws/v1: aws/karpenter-provider-aws pkg/apis/crds/karpenter.k8s.aws_ec2nodeclasses.yaml
- NodePool karpenter.sh/v1: aws/karpenter-provider-aws pkg/apis/crds/karpenter.sh_nodepools.yaml
- NodeConfig node.eks.aws/v1alpha1: awslabs/amazon-eks-ami nodeadm/api/v1alpha1/nodeconfig_types.go
"""

from __future__ import annotations

from typing import Any

QUANTITY = (r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
            r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$")
DURATION = r"^(([0-9]+(s|m|h))+)|(Never)$"
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
QUALIFIED_KEY = (r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*(\/))?"
                 r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
VOLUME_SIZE = (r"^((?:[1-9][0-9]{0,3}|[1-4][0-9]{4}|[5][0-8][0-9]{3}|59000)Gi"
               r"|(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|[6][0-3][0-9]{3}|64000)G"
               r"|([1-9]||[1-5][0-7]|58)Ti|([1-9]||[1-5][0-9]|6[0-3]|64)T)$")


def _closed(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = required
    return schema


_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_SELECTOR_TERMS = {
    "type": "array", "minItems": 1, "maxItems": 30,
    "items": _closed({"id": {"type": "string"}, "name": {"type": "string"}, "tags": _STRING_MAP}),
}

EC2_NODE_CLASS_V1: dict[str, Any] = _closed(
    {
        "apiVersion": {"const": "karpenter.k8s.aws/v1"},
        "kind": {"const": "EC2NodeClass"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": _closed(
            {
                "amiFamily": {"enum": ["AL2", "AL2023", "Bottlerocket", "Custom", "Windows2019", "Windows2022"]},
                "amiSelectorTerms": {
                    "type": "array", "minItems": 1, "maxItems": 30,
                    "items": _closed({"alias": {"type": "string", "maxLength": 30, "pattern": r"^[a-zA-Z0-9]*@.*$"},
                                      "id": {"type": "string", "pattern": r"ami-[0-9a-z]+"},
                                      "name": {"type": "string"}, "owner": {"type": "string"},
                                      "tags": _STRING_MAP}),
                },
                "associatePublicIPAddress": {"type": "boolean"},
                "blockDeviceMappings": {
                    "type": "array", "maxItems": 50,
                    "items": _closed({
                        "deviceName": {"type": "string"},
                        "rootVolume": {"type": "boolean"},
                        "ebs": _closed({
                            "deleteOnTermination": {"type": "boolean"},
                            "encrypted": {"type": "boolean"},
                            "iops": {"type": "integer"},
                            "kmsKeyID": {"type": "string"},
                            "snapshotID": {"type": "string"},
                            "throughput": {"type": "integer"},
                            "volumeInitializationRate": {"type": "integer"},
                            "volumeSize": {"type": "string", "pattern": VOLUME_SIZE},
                            "volumeType": {"enum": ["standard", "io1", "io2", "gp2", "sc1", "st1", "gp3"]},
                        }),
                    }),
                },
                "capacityReservationSelectorTerms": {"type": "array"},
                "context": {"type": "string"},
                "detailedMonitoring": {"type": "boolean"},
                "instanceProfile": {"type": "string", "minLength": 1},
                "instanceStorePolicy": {"enum": ["RAID0"]},
                "kubelet": {"type": "object"},
                "metadataOptions": _closed({
                    "httpEndpoint": {"enum": ["enabled", "disabled"]},
                    "httpProtocolIPv6": {"enum": ["enabled", "disabled"]},
                    "httpPutResponseHopLimit": {"type": "integer", "minimum": 1, "maximum": 64},
                    "httpTokens": {"enum": ["required", "optional"]},
                }),
                "role": {"type": "string", "minLength": 1},
                "securityGroupSelectorTerms": _SELECTOR_TERMS,
                "subnetSelectorTerms": _SELECTOR_TERMS,
                "tags": _STRING_MAP,
                "userData": {"type": "string"},
            },
            required=["amiSelectorTerms", "securityGroupSelectorTerms", "subnetSelectorTerms"],
        ),
    },
    required=["apiVersion", "kind", "metadata", "spec"],
)

_TAINT = _closed({"key": {"type": "string", "minLength": 1, "pattern": QUALIFIED_KEY},
                  "value": {"type": "string", "pattern": QUALIFIED_KEY},
                  "effect": {"enum": ["NoSchedule", "PreferNoSchedule", "NoExecute"]},
                  "timeAdded": {"type": "string"}}, required=["key", "effect"])

NODE_POOL_V1: dict[str, Any] = _closed(
    {
        "apiVersion": {"const": "karpenter.sh/v1"},
        "kind": {"const": "NodePool"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": _closed(
            {
                "disruption": _closed({
                    "budgets": {"type": "array"},
                    "consolidateAfter": {"type": "string", "pattern": DURATION},
                    "consolidationPolicy": {"enum": ["WhenEmpty", "WhenEmptyOrUnderutilized"]},
                }, required=["consolidateAfter"]),
                "limits": {"type": "object", "additionalProperties": {
                    "anyOf": [{"type": "integer"}, {"type": "string", "pattern": QUANTITY}]}},
                "template": _closed({
                    "metadata": _closed({
                        "annotations": _STRING_MAP,
                        "labels": {"type": "object", "maxProperties": 100, "additionalProperties": {
                            "type": "string", "maxLength": 63, "pattern": LABEL_VALUE}},
                    }),
                    "spec": _closed({
                        "expireAfter": {"type": "string", "pattern": DURATION},
                        "nodeClassRef": _closed({"group": {"type": "string", "minLength": 1},
                                                 "kind": {"type": "string", "minLength": 1},
                                                 "name": {"type": "string", "minLength": 1}},
                                                required=["group", "kind", "name"]),
                        "requirements": {"type": "array", "maxItems": 100, "items": _closed({
                            "key": {"type": "string", "maxLength": 316, "pattern": QUALIFIED_KEY},
                            "minValues": {"type": "integer", "minimum": 1, "maximum": 50},
                            "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"]},
                            "values": {"type": "array", "items": {"type": "string"}},
                        }, required=["key", "operator"])},
                        "startupTaints": {"type": "array", "items": _TAINT},
                        "taints": {"type": "array", "items": _TAINT},
                        "terminationGracePeriod": {"type": "string", "pattern": r"^([0-9]+(s|m|h))+$"},
                    }, required=["nodeClassRef", "requirements"]),
                }, required=["spec"]),
                "weight": {"type": "integer", "minimum": 1, "maximum": 100},
            },
            required=["template"],
        ),
    },
    required=["apiVersion", "kind", "metadata", "spec"],
)

NODE_CONFIG_V1ALPHA1: dict[str, Any] = _closed(
    {
        "apiVersion": {"const": "node.eks.aws/v1alpha1"},
        "kind": {"const": "NodeConfig"},
        "metadata": {"type": "object"},
        "spec": _closed({
            "cluster": _closed({"name": {"type": "string"}, "apiServerEndpoint": {"type": "string"},
                                "certificateAuthority": {"type": "string"}, "cidr": {"type": "string"},
                                "enableOutpost": {"type": "boolean"}, "id": {"type": "string"}}),
            "containerd": _closed({"config": {"type": "string"}, "baseRuntimeSpec": {"type": "object"}}),
            "instance": _closed({"localStorage": _closed({
                "strategy": {"enum": ["RAID0", "RAID10", "Mount"]},
                "mountPath": {"type": "string"},
                "disabledMounts": {"type": "array", "items": {"enum": ["Containerd", "PodLogs"]}}})}),
            "kubelet": _closed({"config": {"type": "object"}, "flags": {"type": "array", "items": {"type": "string"}}}),
            "featureGates": {"type": "object", "additionalProperties": {"type": "boolean"}},
        }),
    },
    required=["apiVersion", "kind", "spec"],
)

SCHEMAS = {
    ("karpenter.k8s.aws/v1", "EC2NodeClass"): EC2_NODE_CLASS_V1,
    ("karpenter.sh/v1", "NodePool"): NODE_POOL_V1,
    ("node.eks.aws/v1alpha1", "NodeConfig"): NODE_CONFIG_V1ALPHA1,
}
