"""Kubernetes API access: client construction (kubeconfig or in-cluster), readiness and selector helpers."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from resources.errors import StreamableError

IN_CLUSTER_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


class KubernetesError(StreamableError, RuntimeError):
    """A Kubernetes API call or client setup failed; names the object and what was tried, never a token."""


def api_client(kubeconfig: str | Path | None = None, context: str | None = None) -> k8s_client.ApiClient:
    """An ApiClient from `kubeconfig` (and `context`), else the pod's service account, else $KUBECONFIG/~/.kube/config.

    The process-wide default configuration is never touched, so several clusters can be used side by side.
    """
    if kubeconfig is not None:
        path = Path(kubeconfig).expanduser()
        if not path.is_file():
            raise KubernetesError(f"kubeconfig {path} does not exist or is not a file")
        return _from_kubeconfig(str(path), context)
    if os.environ.get("KUBERNETES_SERVICE_HOST") and IN_CLUSTER_TOKEN.exists():
        cfg = k8s_client.Configuration()
        try:
            k8s_config.load_incluster_config(client_configuration=cfg)
        except ConfigException as exc:
            raise KubernetesError(f"in-cluster Kubernetes config could not be loaded: {exc}") from None
        return k8s_client.ApiClient(configuration=cfg)
    return _from_kubeconfig(None, context)


def _from_kubeconfig(path: str | None, context: str | None) -> k8s_client.ApiClient:
    """ApiClient from a kubeconfig file (None = $KUBECONFIG or ~/.kube/config); never writes the file back."""
    try:
        return k8s_config.new_client_from_config(config_file=path, context=context, persist_config=False)
    except (ConfigException, OSError) as exc:
        where = path or os.environ.get("KUBECONFIG") or "~/.kube/config"
        ctx = f" (context {context!r})" if context else ""
        raise KubernetesError(f"cannot load kubeconfig {where}{ctx}: {exc}") from None


def api_error(exc: ApiException, what: str) -> KubernetesError:
    """A KubernetesError naming `what` (e.g. `statefulset ns/name`) with the API's status and message."""
    message = ""
    if exc.body:
        try:
            message = json.loads(exc.body).get("message", "")
        except (ValueError, AttributeError):
            message = ""
    reason = message or exc.reason or "no message"
    hint = ""
    if exc.status == 403:
        hint = " (RBAC: grant the Dagster service account this verb on this resource)"
    elif exc.status == 404:
        hint = " (not found)"
    return KubernetesError(f"Kubernetes API error on {what}: HTTP {exc.status}: {reason}{hint}")


def label_selector(selector: Any) -> str:
    """A `labelSelector` query string from a V1LabelSelector (matchLabels and matchExpressions)."""
    if selector is None:
        raise KubernetesError("label selector is missing")
    parts = [f"{k}={v}" for k, v in sorted((selector.match_labels or {}).items())]
    for expr in selector.match_expressions or []:
        values = ",".join(expr.values or [])
        op = expr.operator
        if op == "In":
            parts.append(f"{expr.key} in ({values})")
        elif op == "NotIn":
            parts.append(f"{expr.key} notin ({values})")
        elif op == "Exists":
            parts.append(expr.key)
        elif op == "DoesNotExist":
            parts.append(f"!{expr.key}")
        else:
            raise KubernetesError(f"unsupported label selector operator {op!r} for key {expr.key!r}")
    if not parts:
        raise KubernetesError("label selector is empty; refusing to select every pod in the namespace")
    return ",".join(parts)


def pod_readiness(pod: Any) -> tuple[bool, str]:
    """(ready, reason): ready means phase Running, not terminating and condition Ready=True."""
    if pod.metadata.deletion_timestamp is not None:
        return False, "pod is terminating"
    phase = pod.status.phase if pod.status else None
    if phase != "Running":
        return False, f"pod phase is {phase or 'unknown'}"
    for cond in (pod.status.conditions or []):
        if cond.type == "Ready":
            if cond.status == "True":
                return True, ""
            detail = f": {cond.message}" if cond.message else ""
            return False, f"Ready condition is {cond.status}{detail}"
    return False, "pod has no Ready condition yet"
