"""Fixtures for the production-resource tests: the fake Kubernetes API, the buildctl stand-in and moto's server."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from kubernetes import client as k8s_client

from resources.k8s.client import api_client
from tests.fakes.fake_k8s import FakeKubernetes
from tests.support.net import free_port

FAKES = Path(__file__).resolve().parents[1] / "fakes"
MOTO_ACCOUNT = "123456789012"
MOTO_REGION = "us-east-1"


@pytest.fixture
def fake_k8s() -> Iterator[FakeKubernetes]:
    """A fresh fake Kubernetes API server on 127.0.0.1."""
    with FakeKubernetes() as fake:
        yield fake


@pytest.fixture
def kubeconfig(fake_k8s: FakeKubernetes, tmp_path: Path) -> Path:
    return fake_k8s.write_kubeconfig(tmp_path / "kubeconfig")


@pytest.fixture
def kube(kubeconfig: Path) -> k8s_client.ApiClient:
    """The real kubernetes ApiClient, configured from the fake's kubeconfig."""
    return api_client(kubeconfig)


@pytest.fixture
def core_api(kube: k8s_client.ApiClient) -> k8s_client.CoreV1Api:
    return k8s_client.CoreV1Api(kube)


@pytest.fixture
def apps_api(kube: k8s_client.ApiClient) -> k8s_client.AppsV1Api:
    return k8s_client.AppsV1Api(kube)


@dataclass
class FakeBuildctl:
    """The `tests/fakes/buildctl` stand-in, first on PATH, with its record and config files."""

    bin_dir: Path
    record_file: Path
    config_file: Path
    state_dir: Path

    def configure(self, **config: Any) -> None:
        config.setdefault("state_dir", str(self.state_dir))
        self.config_file.write_text(json.dumps(config))

    def calls(self) -> list[dict[str, Any]]:
        if not self.record_file.exists():
            return []
        return [json.loads(line) for line in self.record_file.read_text().splitlines() if line.strip()]


@pytest.fixture
def fake_buildctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeBuildctl:
    """Put the buildctl stand-in on PATH (as `buildctl`) and point it at per-test record/config files."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "buildctl").symlink_to(FAKES / "buildctl")
    state = tmp_path / "buildctl-state"
    state.mkdir()
    fake = FakeBuildctl(bin_dir, tmp_path / "buildctl-calls.jsonl", tmp_path / "buildctl-config.json", state)
    fake.configure()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("FAKE_BUILDCTL_RECORD", str(fake.record_file))
    monkeypatch.setenv("FAKE_BUILDCTL_CONFIG", str(fake.config_file))
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)
    return fake


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto in server mode on a free loopback port (one process-wide server; state is reset per test)."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@dataclass(frozen=True)
class AwsTestCredentials:
    access_key: str
    secret_key: str


@pytest.fixture
def aws_creds(monkeypatch: pytest.MonkeyPatch) -> AwsTestCredentials:
    """Dummy AWS credentials with a random secret (so tests can scan output for it)."""
    creds = AwsTestCredentials("AKIATESTSTREAMABLE01", "secret-" + secrets.token_hex(16))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", creds.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", creds.secret_key)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", MOTO_REGION)
    return creds


@pytest.fixture
def ecr_client(moto_endpoint: str, aws_creds: AwsTestCredentials) -> Any:
    """A boto3 ECR client talking to a freshly reset moto server."""
    httpx.post(f"{moto_endpoint}/moto-api/reset", timeout=10).raise_for_status()
    return boto3.client("ecr", region_name=MOTO_REGION, endpoint_url=moto_endpoint,
                        aws_access_key_id=aws_creds.access_key, aws_secret_access_key=aws_creds.secret_key)
