"""Builder discovery, client construction and TLS-from-secret, with the real kubernetes client on the fake API."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from kubernetes import client as k8s_client

from resources.builders.pool import StatefulSetEndpoints
from resources.builders.tls import TlsError, TlsFromFiles, TlsFromSecret
from resources.defaults import BUILDER_APP_LABEL, BUILDER_NAMESPACE, BUILDER_STATEFULSET
from resources.k8s.client import KubernetesError, api_client
from tests.fakes.fake_k8s import FakeKubernetes

NS = BUILDER_NAMESPACE
LABELS = {"app": BUILDER_APP_LABEL}


def _builders(fake: FakeKubernetes, replicas: int, ready: dict[int, bool] | None = None) -> None:
    fake.add_statefulset(NS, BUILDER_STATEFULSET, replicas=replicas, service="buildkitd", labels=LABELS)
    for i in range(replicas):
        fake.add_pod(NS, f"{BUILDER_STATEFULSET}-{i}", labels=LABELS, ready=(ready or {}).get(i, True))


def test_discovery_lists_members_with_addresses_and_readiness(fake_k8s, apps_api, core_api):
    _builders(fake_k8s, 3, ready={1: False})
    fake_k8s.add_pod(NS, "unrelated", labels={"app": "other"})
    endpoints = StatefulSetEndpoints(apps_api, core_api).endpoints()
    assert [(e.name, e.addr, e.ready) for e in endpoints] == [
        ("buildkitd-0", "tcp://buildkitd-0.buildkitd.streamable-builders.svc:1234", True),
        ("buildkitd-1", "tcp://buildkitd-1.buildkitd.streamable-builders.svc:1234", False),
        ("buildkitd-2", "tcp://buildkitd-2.buildkitd.streamable-builders.svc:1234", True),
    ]
    assert "Ready condition is False" in endpoints[1].reason
    lists = fake_k8s.calls("GET", "/pods")
    assert lists and lists[-1].query["labelSelector"] == ["app=buildkitd"]
    assert fake_k8s.calls("GET", f"/apis/apps/v1/namespaces/{NS}/statefulsets/{BUILDER_STATEFULSET}")


def test_discovery_marks_missing_pending_and_terminating_pods(fake_k8s, apps_api, core_api):
    fake_k8s.add_statefulset(NS, BUILDER_STATEFULSET, replicas=4, service="buildkitd", labels=LABELS)
    fake_k8s.add_pod(NS, "buildkitd-0", labels=LABELS)
    fake_k8s.add_pod(NS, "buildkitd-1", labels=LABELS, phase="Pending", ready=False)
    fake_k8s.add_pod(NS, "buildkitd-2", labels=LABELS)
    fake_k8s.mark_terminating(NS, "buildkitd-2")
    fake_k8s.add_pod(NS, "buildkitd-7", labels=LABELS)  # left over from a scale-down: not a member
    eps = {e.name: e for e in StatefulSetEndpoints(apps_api, core_api).endpoints()}
    assert sorted(eps) == ["buildkitd-0", "buildkitd-1", "buildkitd-2", "buildkitd-3"]
    assert eps["buildkitd-0"].ready
    assert not eps["buildkitd-1"].ready and "Pending" in eps["buildkitd-1"].reason
    assert not eps["buildkitd-2"].ready and "terminating" in eps["buildkitd-2"].reason
    assert not eps["buildkitd-3"].ready and "does not exist" in eps["buildkitd-3"].reason


def test_discovery_follows_scaling(fake_k8s, apps_api, core_api):
    _builders(fake_k8s, 2)
    source = StatefulSetEndpoints(apps_api, core_api)
    assert len(source.endpoints()) == 2
    fake_k8s.set_replicas(NS, BUILDER_STATEFULSET, 3)
    fake_k8s.add_pod(NS, "buildkitd-2", labels=LABELS)
    assert [e.name for e in source.endpoints()] == ["buildkitd-0", "buildkitd-1", "buildkitd-2"]


def test_discovery_uses_explicit_service_and_port(fake_k8s, apps_api, core_api):
    fake_k8s.add_statefulset(NS, "bk", replicas=1, service=None, labels=LABELS)
    fake_k8s.add_pod(NS, "bk-0", labels=LABELS)
    with pytest.raises(KubernetesError, match="no spec.serviceName"):
        StatefulSetEndpoints(apps_api, core_api, statefulset="bk").endpoints()
    eps = StatefulSetEndpoints(apps_api, core_api, statefulset="bk", service="bk-headless", port=4321).endpoints()
    assert eps[0].addr == "tcp://bk-0.bk-headless.streamable-builders.svc:4321"


def test_missing_statefulset_and_forbidden_list_are_clear_errors(fake_k8s, apps_api, core_api):
    fake_k8s.add_namespace(NS)
    with pytest.raises(KubernetesError, match=r"statefulset streamable-builders/buildkitd: HTTP 404.*not found"):
        StatefulSetEndpoints(apps_api, core_api).endpoints()
    _builders(fake_k8s, 1)
    fake_k8s.fail[("GET", f"/api/v1/namespaces/{NS}/pods")] = (403, 'pods is forbidden: User "x" cannot list')
    with pytest.raises(KubernetesError, match=r"pods of statefulset .*HTTP 403.*forbidden.*RBAC"):
        StatefulSetEndpoints(apps_api, core_api).endpoints()


def test_client_sends_kubeconfig_token_and_rejects_bad_paths(fake_k8s, kubeconfig, tmp_path):
    _builders(fake_k8s, 1)
    core = k8s_client.CoreV1Api(api_client(kubeconfig))
    core.list_namespaced_pod(NS)
    assert fake_k8s.calls("GET", "/pods")  # the fake answers only with the right bearer token
    wrong = tmp_path / "wrong-kubeconfig"
    wrong.write_text(kubeconfig.read_text().replace(fake_k8s.token, "not-the-token"))
    with pytest.raises(k8s_client.ApiException) as exc:
        k8s_client.CoreV1Api(api_client(wrong)).list_namespaced_pod(NS)
    assert exc.value.status == 401
    with pytest.raises(KubernetesError, match="does-not-exist.*does not exist"):
        api_client(tmp_path / "does-not-exist")
    with pytest.raises(KubernetesError, match="context 'nope'"):
        api_client(kubeconfig, context="nope")


def test_tls_from_secret_is_private_and_removed(fake_k8s, core_api):
    key = b"-----BEGIN PRIVATE KEY-----\nsecret-key-material\n-----END PRIVATE KEY-----\n"
    fake_k8s.add_secret(NS, "buildkit-client-certs", {"ca.pem": b"CA", "cert.pem": b"CERT", "key.pem": key})
    source = TlsFromSecret(core_api=core_api)
    assert "secret-key-material" not in repr(source)
    with source.materialize() as files:
        tmp = files.key.parent
        assert stat.S_IMODE(os.stat(tmp).st_mode) == 0o700
        for path in (files.ca_cert, files.cert, files.key):
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert files.key.read_bytes() == key and files.ca_cert.read_bytes() == b"CA"
        assert files.argv() == ["--tlscacert", str(files.ca_cert), "--tlscert", str(files.cert),
                                "--tlskey", str(files.key), "--tlsservername", "buildkitd"]
        assert all("secret-key-material" not in a for a in files.argv())
    assert not tmp.exists()


def test_tls_from_kubernetes_io_tls_secret_and_errors(fake_k8s, core_api, tmp_path):
    fake_k8s.add_secret(NS, "tls-style", {"ca.crt": b"CA", "tls.crt": b"CERT", "tls.key": b"KEY"})
    with TlsFromSecret(core_api=core_api, secret_name="tls-style").materialize() as files:
        assert files.cert.read_bytes() == b"CERT"
    fake_k8s.add_secret(NS, "incomplete", {"ca.pem": b"CA"})
    with pytest.raises(TlsError, match=r"secret streamable-builders/incomplete must hold keys .*it has: ca.pem"):
        with TlsFromSecret(core_api=core_api, secret_name="incomplete").materialize():
            pass
    with pytest.raises(TlsError, match=r"secret streamable-builders/absent.*404"):
        with TlsFromSecret(core_api=core_api, secret_name="absent").materialize():
            pass
    with pytest.raises(TlsError, match="client key .*missing.pem does not exist"):
        ca = tmp_path / "ca.pem"
        ca.write_text("x")
        with TlsFromFiles(ca, ca, tmp_path / "missing.pem").materialize():
            pass


def test_tls_temp_dir_removed_when_body_fails(fake_k8s, core_api):
    fake_k8s.add_secret(NS, "buildkit-client-certs", {"ca.pem": b"A", "cert.pem": b"B", "key.pem": b"C"})
    seen: list[Path] = []
    with pytest.raises(RuntimeError, match="boom"):
        with TlsFromSecret(core_api=core_api).materialize() as files:
            seen.append(files.key.parent)
            raise RuntimeError("boom")
    assert seen and not seen[0].exists()
