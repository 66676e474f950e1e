"""RBAC grants exactly what streamable's code calls: a fixed table, checked against the YAML and the code."""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

from resources import defaults
from tests.deploy.conftest import REPO

Perm = tuple[str, str, tuple[str, ...], str]  # (apiGroup, resource, resourceNames, verb)

# What the code needs, per namespace (resources/builders/pool.py, resources/k8s/canary.py, resources/builders/tls.py).
EXPECTED_ROLES: dict[tuple[str, str], set[Perm]] = {
    (defaults.BUILDER_NAMESPACE, "streamable-builder-discovery"): {
        ("apps", "statefulsets", (defaults.BUILDER_STATEFULSET,), "get"),
        ("", "pods", (), "list"),
    },
    (defaults.CANARY_NAMESPACE, "streamable-canary-runner"): {
        ("", "pods", (), "create"),
        ("", "pods", (), "get"),
        ("", "pods", (), "delete"),
        ("", "pods/log", (), "get"),
        ("", "events", (), "list"),
    },
}
# Only with TLS from the secret (deploy/k8s/optional/tls-secret-reader).
EXPECTED_OPTIONAL_ROLES: dict[tuple[str, str], set[Perm]] = {
    (defaults.BUILDER_NAMESPACE, "streamable-builder-tls-secret-reader"): {
        ("", "secrets", (defaults.BUILDER_CLIENT_TLS_SECRET,), "get"),
    },
}

# Only with the startup recorder on the cluster (deploy/k8s/optional/startup-recorder,
# resources/startup/k8s_recorder.py).
EXPECTED_STARTUP_ROLES: dict[tuple[str, str], set[Perm]] = {
    (defaults.BUILDER_NAMESPACE, "streamable-startup-recorder-runner"): {
        ("", "pods", (), "create"),
        ("", "pods", (), "get"),
        ("", "pods", (), "delete"),
        ("", "pods/log", (), "get"),
    },
}

# kubernetes-client method -> (apiGroup, resource, verb)
CLIENT_METHODS = {
    "read_namespaced_stateful_set": ("apps", "statefulsets", "get"),
    "list_namespaced_stateful_set": ("apps", "statefulsets", "list"),
    "read_namespaced_pod": ("", "pods", "get"),
    "list_namespaced_pod": ("", "pods", "list"),
    "create_namespaced_pod": ("", "pods", "create"),
    "delete_namespaced_pod": ("", "pods", "delete"),
    "patch_namespaced_pod": ("", "pods", "patch"),
    "read_namespaced_pod_log": ("", "pods/log", "get"),
    "list_namespaced_event": ("", "events", "list"),
    "read_namespaced_secret": ("", "secrets", "get"),
}
K8S_METHOD_RE = re.compile(
    r"^(read|list|create|delete|patch|replace|watch|connect_\w+)_(namespaced_\w+|\w+_for_all_namespaces)$"
)
# Which namespace each calling module works in.
MODULE_NAMESPACE = {
    "resources/builders/pool.py": defaults.BUILDER_NAMESPACE,
    "resources/builders/tls.py": defaults.BUILDER_NAMESPACE,
    "resources/k8s/canary.py": defaults.CANARY_NAMESPACE,
    "resources/startup/k8s_recorder.py": defaults.BUILDER_NAMESPACE,
}


def _role_perms(role: dict) -> set[Perm]:
    perms = set()
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    perms.add((group, resource, tuple(rule.get("resourceNames", ())), verb))
    return perms


def _roles(objects) -> dict[tuple[str, str], set[Perm]]:
    assert not [o for o in objects if o["kind"] in ("ClusterRole", "ClusterRoleBinding")], "no cluster-wide RBAC"
    return {(o["metadata"]["namespace"], o["metadata"]["name"]): _role_perms(o) for o in objects if o["kind"] == "Role"}


def _assert_bound_to_dagster(objects, roles):
    bindings = {(o["metadata"]["namespace"], o["roleRef"]["name"]): o for o in objects if o["kind"] == "RoleBinding"}
    assert set(bindings) == set(roles), "every Role has exactly one RoleBinding and vice versa"
    for key, binding in bindings.items():
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": defaults.DAGSTER_SERVICE_ACCOUNT,
                                        "namespace": defaults.DAGSTER_NAMESPACE}], key


def test_base_roles_are_exactly_the_table(base):
    roles = _roles(base)
    assert roles == EXPECTED_ROLES
    _assert_bound_to_dagster(base, roles)


def test_optional_tls_secret_reader_is_exactly_the_table(rendered):
    roles = _roles(rendered["tls-secret-reader"])
    assert roles == EXPECTED_OPTIONAL_ROLES
    _assert_bound_to_dagster(rendered["tls-secret-reader"], roles)


def test_optional_startup_recorder_is_exactly_the_table(rendered):
    roles = _roles(rendered["startup-recorder"])
    assert roles == EXPECTED_STARTUP_ROLES
    _assert_bound_to_dagster(rendered["startup-recorder"], roles)


def test_overlay_is_base_plus_the_optional_roles(overlay):
    assert _roles(overlay) == {**EXPECTED_ROLES, **EXPECTED_OPTIONAL_ROLES, **EXPECTED_STARTUP_ROLES}


def test_no_wildcards_anywhere(rendered):
    for objects in rendered.values():
        for role in (o for o in objects if o["kind"] == "Role"):
            for rule in role["rules"]:
                for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                    assert "*" not in rule.get(field, []), f"{role['metadata']['name']}: wildcard in {field}"


def code_kubernetes_calls() -> dict[str, set[tuple[str, str, str]]]:
    """{namespace: {(apiGroup, resource, verb)}} from every Kubernetes client method the code references."""
    found: dict[str, set[tuple[str, str, str]]] = defaultdict(set)
    problems = []
    for path in sorted((REPO / "resources").rglob("*.py")) + sorted((REPO / "pipelines").rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        for node in ast.walk(ast.parse(path.read_text(), filename=rel)):
            if not (
                isinstance(node, ast.Attribute) and (node.attr in CLIENT_METHODS or K8S_METHOD_RE.match(node.attr))
            ):
                continue
            if node.attr not in CLIENT_METHODS:
                problems.append(f"{rel}:{node.lineno}: {node.attr} is not in CLIENT_METHODS; add it and its RBAC")
            elif rel not in MODULE_NAMESPACE:
                problems.append(f"{rel}:{node.lineno}: {node.attr} in a module with no namespace in MODULE_NAMESPACE")
            else:
                found[MODULE_NAMESPACE[rel]].add(CLIENT_METHODS[node.attr])
    assert not problems, "\n".join(problems)
    return found


def test_rbac_tables_match_the_kubernetes_calls_in_the_code():
    granted: dict[str, set[tuple[str, str, str]]] = defaultdict(set)
    for (namespace, _), perms in {**EXPECTED_ROLES, **EXPECTED_OPTIONAL_ROLES, **EXPECTED_STARTUP_ROLES}.items():
        granted[namespace] |= {(g, r, v) for g, r, _, v in perms}
    assert dict(code_kubernetes_calls()) == dict(granted)


def test_code_scan_sees_every_calling_module():
    """The scan above is only as good as its module table: each listed module really calls the API."""
    for rel in MODULE_NAMESPACE:
        text = Path(REPO / rel).read_text()
        assert any(m in text for m in CLIENT_METHODS), (
            f"{rel} no longer calls the Kubernetes API; update MODULE_NAMESPACE"
        )
