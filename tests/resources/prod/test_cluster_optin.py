"""Opt-in: the same contract against a real cluster and a real buildkitd (never runs in CI here).

Run with:
  STREAMABLE_TEST_KUBECONFIG=~/.kube/config \
  STREAMABLE_TEST_BUILDER_ADDR=tcp://127.0.0.1:1234 \
  STREAMABLE_TEST_PUSH_REF=<registry>/<repo>:streamable-cluster-test \
  .venv/bin/pytest -m cluster tests/resources/prod/test_cluster_optin.py
Optional: STREAMABLE_TEST_BUILDER_NAMESPACE / _STATEFULSET (defaults from resources/defaults.py),
STREAMABLE_TEST_BUILDER_TLS_DIR (ca.pem, cert.pem, key.pem), STREAMABLE_TEST_BUILDER_TLS_SERVER_NAME,
STREAMABLE_TEST_BUILDCTL (buildctl binary). Push credentials come from your own $DOCKER_CONFIG.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.cluster

_REQUIRED = ("STREAMABLE_TEST_KUBECONFIG", "STREAMABLE_TEST_BUILDER_ADDR", "STREAMABLE_TEST_PUSH_REF")
_missing = [name for name in _REQUIRED if not os.environ.get(name)]
if _missing:
    pytest.skip(f"opt-in cluster tests: set {', '.join(_missing)} to run them against a real cluster and buildkitd",
                allow_module_level=True)

from kubernetes import client as k8s_client  # noqa: E402

from resources.builders.base import BuildRequest  # noqa: E402
from resources.builders.buildctl import BuildctlBuilder  # noqa: E402
from resources.builders.pool import StatefulSetEndpoints  # noqa: E402
from resources.builders.tls import TlsFromFiles  # noqa: E402
from resources.defaults import BUILDER_NAMESPACE, BUILDER_STATEFULSET, BUILDER_TLS_SERVER_NAME  # noqa: E402
from resources.k8s.client import api_client  # noqa: E402


def _builder() -> BuildctlBuilder:
    tls_dir = os.environ.get("STREAMABLE_TEST_BUILDER_TLS_DIR")
    tls = None
    if tls_dir:
        d = Path(tls_dir)
        tls = TlsFromFiles(d / "ca.pem", d / "cert.pem", d / "key.pem",
                           os.environ.get("STREAMABLE_TEST_BUILDER_TLS_SERVER_NAME", BUILDER_TLS_SERVER_NAME))
    return BuildctlBuilder(os.environ["STREAMABLE_TEST_BUILDER_ADDR"], tls=tls,
                           buildctl_bin=os.environ.get("STREAMABLE_TEST_BUILDCTL", "buildctl"))


def test_discovery_against_the_cluster():
    api = api_client(os.path.expanduser(os.environ["STREAMABLE_TEST_KUBECONFIG"]))
    source = StatefulSetEndpoints(
        k8s_client.AppsV1Api(api), k8s_client.CoreV1Api(api),
        namespace=os.environ.get("STREAMABLE_TEST_BUILDER_NAMESPACE", BUILDER_NAMESPACE),
        statefulset=os.environ.get("STREAMABLE_TEST_BUILDER_STATEFULSET", BUILDER_STATEFULSET),
    )
    endpoints = source.endpoints()
    assert endpoints, "the StatefulSet has no replicas"
    assert any(e.ready for e in endpoints), f"no ready builder: {[(e.name, e.reason) for e in endpoints]}"
    assert all(e.addr.startswith("tcp://") and e.addr.endswith(":1234") for e in endpoints)


def test_tiny_build_push_and_cache_usage(tmp_path):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "hello.txt").write_text("hello from streamable\n")
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY hello.txt /hello.txt\n")
    lines: list[str] = []
    builder = _builder()
    result = builder.build(BuildRequest(target="cluster-test", image_ref=os.environ["STREAMABLE_TEST_PUSH_REF"],
                                        context_dir=ctx), lines.append)
    assert result.digest.startswith("sha256:") and len(result.digest) == 71
    assert any(line.startswith("#") for line in lines), "no plain progress seen"
    (usage,) = builder.prune(keep_storage_bytes=10**15, log=lines.append)  # keeps everything: only checks the flags
    assert usage.bytes_before >= 0 and usage.bytes_after >= 0
