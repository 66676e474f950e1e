"""Dagster on Kubernetes: Helm values fit the chart and the cluster objects, constraints pin the code's deps,
the IAM policy is exactly the ECR/SQS calls the code makes."""

from __future__ import annotations

import ast
import json
import re
import tomllib
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from resources import defaults
from tests.deploy.conftest import DAGSTER, REPO, find

ANY = "*"  # free-form (a Kubernetes object or a map the chart passes through)
_IMAGE = {"repository": {}, "tag": {}, "pullPolicy": {}}
# Keys of the official chart's values (helm/dagster/schema/schema/charts/**, Dagster 1.13), for the
# parts deploy/dagster/values.yaml sets. Dicts list allowed child keys; ANY leaves a subtree open.
CHART_KEYS: dict[str, Any] = {
    "global": {k: {} for k in ("postgresqlSecretName", "dagsterHome", "serviceAccountName", "celeryConfigSecretName",
                               "dagsterInstanceConfigMap")},
    "serviceAccount": {"create": {}, "name": {}, "annotations": ANY},
    "rbacEnabled": {},
    "dagsterWebserver": {"image": _IMAGE, "replicaCount": {}, "resources": ANY, "env": ANY, "labels": ANY,
                         "nodeSelector": ANY, "tolerations": ANY, "affinity": ANY},
    "dagsterDaemon": {
        "image": _IMAGE, "resources": ANY, "env": ANY, "labels": ANY,
        "runCoordinator": {"enabled": {}, "type": {}, "config": {"queuedRunCoordinator": {
            k: {} for k in ("maxConcurrentRuns", "tagConcurrencyLimits", "dequeueIntervalSeconds", "dequeueNumWorkers",
                            "dequeueUseThreads", "blockOpConcurrencyLimitedRuns")}}},
        "runRetries": {"enabled": {}, "maxRetries": {}, "retryOnAssetOrOpFailure": {}},
        # a free dict in the chart; these are the keys its instance template reads
        "runMonitoring": {k: {} for k in ("enabled", "startTimeoutSeconds", "cancelTimeoutSeconds",
                                          "maxResumeRunAttempts", "pollIntervalSeconds",
                                          "freeSlotsAfterRunEndSeconds")},
    },
    "concurrency": {"enabled": {}, "pools": {"defaultLimit": {}, "granularity": {}, "opGranularityRunBuffer": {}},
                    "runs": {"maxConcurrentRuns": {}, "tagConcurrencyLimits": ANY}},
    "postgresql": {k: {} for k in ("enabled", "postgresqlHost", "postgresqlUsername", "postgresqlDatabase",
                                   "postgresqlScheme")}
    | {"service": {"port": {}}, "postgresqlParams": ANY, "image": ANY},
    "generatePostgresqlPasswordSecret": {},
    "runLauncher": {"type": {}, "config": {"k8sRunLauncher": {
        k: {} for k in ("imagePullPolicy", "jobNamespace", "loadInclusterConfig", "kubeconfigFile",
                        "failPodOnRunFailure", "schedulerName")}
        | {k: ANY for k in ("image", "envConfigMaps", "envSecrets", "envVars", "volumeMounts", "volumes", "labels",
                            "resources", "securityContext")} | {
        "runK8sConfig": {k: ANY for k in ("containerConfig", "podSpecConfig", "podTemplateSpecMetadata",
                                          "jobSpecConfig", "jobMetadata")}}}},
    "dagster-user-deployments": {"enabled": {}, "enableSubchart": {}, "imagePullSecrets": ANY, "deployments": [{
        "name": {}, "image": _IMAGE, "dagsterApiGrpcArgs": ANY, "codeServerArgs": ANY,
        "includeConfigInLaunchedRuns": {"enabled": {}}, "deploymentNamespace": {}, "port": {}, "replicaCount": {},
        **{k: ANY for k in ("env", "envConfigMaps", "envSecrets", "annotations", "nodeSelector", "affinity",
                            "tolerations", "podSecurityContext", "securityContext", "resources", "livenessProbe",
                            "readinessProbe", "startupProbe", "labels", "volumeMounts", "volumes")},
        "schedulerName": {}}]},
}


def unknown_keys(value: Any, allowed: Any, path: str = "") -> list[str]:
    """Dotted paths in `value` that the chart does not define according to `allowed`."""
    if allowed is ANY or not isinstance(value, (dict, list)):
        return []
    if isinstance(value, list):
        if not isinstance(allowed, list):
            return [f"{path} (a list where the chart expects {type(allowed).__name__})"]
        return [p for n, item in enumerate(value) for p in unknown_keys(item, allowed[0], f"{path}[{n}]")]
    if not isinstance(allowed, dict) or not allowed:
        return [f"{path} (the chart expects a scalar here)"]
    out = []
    for key, child in value.items():
        where = f"{path}.{key}" if path else key
        out += unknown_keys(child, allowed[key], where) if key in allowed else [where]
    return out


def _deployment(values) -> dict[str, Any]:
    [deployment] = values["dagster-user-deployments"]["deployments"]
    return deployment


def _env(values) -> dict[str, str]:
    return {e["name"]: e["value"] for e in _deployment(values)["env"]}


def test_values_only_use_keys_the_chart_defines(helm_values):
    assert unknown_keys(helm_values, CHART_KEYS) == []


def test_key_checker_catches_typos():
    typo = {"dagsterDaemon": {"runRetries": {"maxRetry": 2}}}
    assert unknown_keys(typo, CHART_KEYS) == ["dagsterDaemon.runRetries.maxRetry"]
    assert unknown_keys({"runLauncher": {"config": {"k8sRunLauncher": {"label": {}}}}}, CHART_KEYS) == [
        "runLauncher.config.k8sRunLauncher.label"]


def test_dagster_runs_as_the_irsa_service_account_from_deploy_k8s(helm_values, base, overlay):
    assert helm_values["global"]["serviceAccountName"] == defaults.DAGSTER_SERVICE_ACCOUNT
    assert helm_values["serviceAccount"] == {"create": False, "name": defaults.DAGSTER_SERVICE_ACCOUNT}
    for objects in (base, overlay):
        sa = find(objects, "ServiceAccount", defaults.DAGSTER_SERVICE_ACCOUNT, defaults.DAGSTER_NAMESPACE)
        arn = sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
        assert re.fullmatch(r"arn:aws:iam::\d{12}:role/[\w+=,.@-]+", arn), arn
    assert helm_values["rbacEnabled"] is True, "the chart's own Role lets the run launcher create Jobs"


def test_build_running_pods_carry_the_label_the_builder_network_policy_admits(helm_values, base):
    policy = next(o for o in base
                  if o["kind"] == "NetworkPolicy" and o["metadata"]["namespace"] == defaults.BUILDER_NAMESPACE)
    [peer] = policy["spec"]["ingress"][0]["from"]
    wanted = peer["podSelector"]["matchLabels"]
    assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": defaults.DAGSTER_NAMESPACE}
    assert helm_values["runLauncher"]["type"] == "K8sRunLauncher"
    assert wanted.items() <= helm_values["runLauncher"]["config"]["k8sRunLauncher"]["labels"].items()
    assert wanted.items() <= _deployment(helm_values)["labels"].items()
    assert _deployment(helm_values)["includeConfigInLaunchedRuns"] == {"enabled": True}


def test_pool_limit_commands_name_the_pools_the_code_uses():
    for text in ((DAGSTER / "values.yaml").read_text(), (REPO / "deploy" / "README.md").read_text()):
        assert f"concurrency set {defaults.BUILD_POOL} " in text
    assert f"concurrency set {defaults.SOCI_POOL} " in (REPO / "deploy" / "README.md").read_text()


def test_concurrency_pools_and_run_retries(helm_values):
    concurrency = helm_values["concurrency"]
    assert concurrency["enabled"] is True and concurrency["pools"]["defaultLimit"] >= 1
    assert concurrency["pools"]["granularity"] == "op", "pools `buildkit` / `soci` are set on assets and checks"
    retries = helm_values["dagsterDaemon"]["runRetries"]
    assert retries["enabled"] is True and retries["maxRetries"] >= 1
    assert retries["retryOnAssetOrOpFailure"] is False, "a failed build is a real failure, never silently retried"
    assert helm_values["dagsterDaemon"]["runMonitoring"]["enabled"] is True
    qrc = helm_values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    assert "maxConcurrentRuns" not in qrc, "set run limits in one place only (the chart refuses both)"


def test_environment_matches_defaults_and_every_variable_is_read_by_the_code(helm_values):
    env = _env(helm_values)
    assert env["STREAMABLE_ENV"] == "eks"
    assert env["STREAMABLE_BUILDER_NAMESPACE"] == defaults.BUILDER_NAMESPACE
    assert env["STREAMABLE_BUILDER_STATEFULSET"] == defaults.BUILDER_STATEFULSET
    assert env["STREAMABLE_CANARY_NAMESPACE"] == defaults.CANARY_NAMESPACE
    assert env["STREAMABLE_BUILDER_TLS"] == "secret", "the overlay installs the optional secret-reader Role for this"
    mounts = {m["mountPath"] for m in _deployment(helm_values)["volumeMounts"]}
    assert any(env["STREAMABLE_TARGETS"].startswith(m + "/") for m in mounts), \
        "targets file must be on a mounted volume"
    from pipelines.settings import Settings, variable_name

    settings = {variable_name(field) for field in Settings.model_fields}
    code = "\n".join(p.read_text() for d in ("resources", "pipelines") for p in (REPO / d).rglob("*.py"))
    unread = [name for name in env if name not in settings and f'"{name}"' not in code]
    assert unread == [], f"variables no code reads (typo or stale name?): {unread}"


def test_no_secrets_and_pinned_images_in_values(helm_values):
    text = (DAGSTER / "values.yaml").read_text()
    assert "postgresqlPassword" not in text and helm_values["generatePostgresqlPasswordSecret"] is False
    assert not re.search(r"(?i)(password|secret_access_key|token)\s*:\s*\S", text)
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    dagster_pin = next(Requirement(r) for r in pyproject["project"]["dependencies"] if r.startswith("dagster=="))
    version = str(dagster_pin.specifier).removeprefix("==")
    for part in ("dagsterWebserver", "dagsterDaemon"):
        assert helm_values[part]["image"]["tag"] == version, f"{part} must run the Dagster release the code uses"
    assert _deployment(helm_values)["image"]["tag"] not in ("", "latest")


def test_constraints_pin_every_runtime_dependency_as_tested():
    pins = {}
    for line in (DAGSTER / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            req = Requirement(line)
            assert str(req.specifier).startswith("=="), f"constraint {line!r} is not an exact pin"
            pins[canonicalize_name(req.name)] = str(req.specifier)[2:]
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    stale = []
    for dep in project["dependencies"]:
        req = Requirement(dep)
        pinned = pins.get(canonicalize_name(req.name))
        if pinned is None or not req.specifier.contains(pinned, prereleases=True):
            stale.append(f"{dep} (pinned: {pinned})")
    assert stale == [], f"regenerate deploy/dagster/constraints.txt (update-constraints.py): {stale}"
    assert "dagster-postgres" in pins, "run workers load the instance's Postgres storage"
    assert pins["dagster-postgres"] == pins["dagster-k8s"], "Dagster libraries (0.x) move in lockstep"


# ---------------------------------------------------------------------------------------------- IAM

# The registry HTTP API (through an ECR token) maps to these IAM actions:
REGISTRY_API_ACTIONS = {
    "ecr:BatchGetImage",              # GET/HEAD manifests, GET referrers
    "ecr:GetDownloadUrlForLayer",     # GET blobs (pulls, SOCI layer reads, verify)
    "ecr:BatchCheckLayerAvailability",  # HEAD blobs
    "ecr:InitiateLayerUpload", "ecr:UploadLayerPart", "ecr:CompleteLayerUpload",  # blob uploads and mounts
    "ecr:PutImage",                   # PUT manifests (push, SOCI index, promotion tags)
    "ecr:ListImages",                 # GET tags/list
}
# boto3 calls whose IAM action is not simply the CamelCased operation name, or that need a second one.
BOTO_EXTRA = {"delete_message_batch": {"sqs:DeleteMessage"}, "create_repository": {"ecr:CreateRepository",
                                                                                   "ecr:TagResource"}}
ECR_MODULES = ("resources/aws/ecr.py", "resources/release/backfill.py")
# dagster-aws's S3PickleIOManager (configured by eks_resources) reads, writes and lists step outputs.
S3_IO_MANAGER_ACTIONS = {"s3:GetObject", "s3:PutObject", "s3:ListBucket"} if "S3PickleIOManager(" in (
    REPO / "pipelines/resource_defs/eks.py").read_text() else set()
SQS_MODULES = ("resources/aws/push_events.py",)


def _boto_operations(rel: str, call_names: set[str]) -> set[str]:
    """String operation names passed to helper calls (`_call("x")`), or method names called on an SQS client."""
    ops = set()
    for node in ast.walk(ast.parse((REPO / rel).read_text())):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        if node.func.attr in call_names and node.args and isinstance(node.args[0], ast.Constant):
            ops.add(node.args[0].value)
        elif "sqs" in call_names and isinstance(node.func.value, ast.Name) and node.func.value.id == "sqs":
            ops.add(node.func.attr)
    return ops


def code_aws_actions() -> set[str]:
    def camel(op: str) -> str:
        return "".join(p.capitalize() for p in op.split("_"))

    actions = set(REGISTRY_API_ACTIONS) | S3_IO_MANAGER_ACTIONS
    for rel in ECR_MODULES:
        for op in _boto_operations(rel, {"_call", "_paginate", "get_paginator"}):
            actions |= BOTO_EXTRA.get(op, {f"ecr:{camel(op)}"})
    for rel in SQS_MODULES:
        for op in _boto_operations(rel, {"sqs"}):
            actions |= BOTO_EXTRA.get(op, {f"sqs:{camel(op)}"})
    return actions


def _policy() -> dict[str, Any]:
    return json.loads((DAGSTER / "iam-policy.json").read_text())


def test_iam_policy_is_exactly_what_the_code_calls():
    statements = _policy()["Statement"]
    granted = {a for s in statements for a in s["Action"]}
    assert granted == code_aws_actions()


def test_code_scan_finds_the_known_calls():
    assert {"get_authorization_token", "create_repository", "describe_images"} <= _boto_operations(
        "resources/aws/ecr.py", {"_call", "_paginate", "get_paginator"})
    assert {"receive_message", "delete_message_batch"} <= _boto_operations("resources/aws/push_events.py", {"sqs"})


def test_iam_policy_is_scoped():
    policy = _policy()
    assert policy["Version"] == "2012-10-17"
    for s in policy["Statement"]:
        assert s["Effect"] == "Allow" and not any("*" in a for a in s["Action"]), s["Sid"]
        if s["Resource"] == "*":
            assert s["Action"] == ["ecr:GetAuthorizationToken"], "only the token call cannot be scoped"
    placeholders = set(re.findall(r"\$\{(\w+)\}", json.dumps(policy)))
    assert placeholders == {"AWS_REGION", "AWS_ACCOUNT_ID", "REPOSITORY_PREFIX", "PUSH_EVENTS_QUEUE", "IO_BUCKET"}
    filled = json.loads(re.sub(r"\$\{(\w+)\}", lambda m: {"AWS_REGION": "us-east-1", "AWS_ACCOUNT_ID": "111122223333",
                                                          "REPOSITORY_PREFIX": "streamable", "IO_BUCKET": "io-bucket",
                                                          "PUSH_EVENTS_QUEUE": "q"}[m[1]], json.dumps(policy)))
    for s in filled["Statement"]:
        if s["Resource"].startswith("arn:aws:s3:"):
            assert re.fullmatch(r"arn:aws:s3:::io-bucket(/streamable/\*)?", s["Resource"]), s["Resource"]
        elif s["Resource"] != "*":
            assert re.fullmatch(r"arn:aws:(ecr|sqs):us-east-1:111122223333:[\w/*.-]+", s["Resource"]), s["Resource"]


@pytest.mark.parametrize("doc", ["values.yaml", "iam-policy.json", "Dockerfile"])
def test_dagster_files_exist(doc):
    assert (DAGSTER / doc).is_file()
