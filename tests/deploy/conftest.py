"""Fixtures for the deploy/ tests: paths, rendered kustomizations and parsed config files."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy import kustomize_lite

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
BASE = K8S / "base"
OVERLAY = K8S / "overlays" / "eks-example"
TLS_READER = K8S / "optional" / "tls-secret-reader"
SOCI_OPT_IN = K8S / "optional" / "soci-snapshotter"
BUILDER = DEPLOY / "builder"
DAGSTER = DEPLOY / "dagster"
EKS = DEPLOY / "eks"
STARTUP_RECORDER = K8S / "optional" / "startup-recorder"
KUSTOMIZATIONS = {
    "base": BASE,
    "eks-example": OVERLAY,
    "tls-secret-reader": TLS_READER,
    "soci-snapshotter": SOCI_OPT_IN,
    "startup-recorder": STARTUP_RECORDER,
}


def kubectl_kustomize(directory: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize DIR` parsed; only called when kubectl is installed."""
    out = subprocess.run(
        ["kubectl", "kustomize", str(directory)], capture_output=True, text=True, check=True, timeout=60
    )
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def find(objects: list[dict[str, Any]], kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
    """The one object of `kind` named `name` (in `namespace` when given); fails the test naming it otherwise."""
    hits = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name
            and (namespace is None or o["metadata"].get("namespace") == namespace)]
    assert len(hits) == 1, f"expected exactly one {kind} {namespace or '*'}/{name}, found {len(hits)}"
    return hits[0]


@pytest.fixture(scope="session")
def kubectl() -> str | None:
    return shutil.which("kubectl")


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict[str, Any]]]:
    """Every kustomization under deploy/k8s, rendered with the Python subset renderer."""
    return {name: kustomize_lite.render(path) for name, path in KUSTOMIZATIONS.items()}


@pytest.fixture(scope="session")
def base(rendered) -> list[dict[str, Any]]:
    return rendered["base"]


@pytest.fixture(scope="session")
def overlay(rendered) -> list[dict[str, Any]]:
    return rendered["eks-example"]


@pytest.fixture(scope="session")
def soci_opt_in(rendered) -> list[dict[str, Any]]:
    return rendered["soci-snapshotter"]


@pytest.fixture(scope="session")
def containerd_soci_toml() -> dict[str, Any]:
    return tomllib.loads((BUILDER / "etc" / "containerd" / "config-soci.toml").read_text())


@pytest.fixture(scope="session")
def buildkitd_toml() -> dict[str, Any]:
    return tomllib.loads((BUILDER / "etc" / "buildkit" / "buildkitd.toml").read_text())


@pytest.fixture(scope="session")
def containerd_toml() -> dict[str, Any]:
    return tomllib.loads((BUILDER / "etc" / "containerd" / "config.toml").read_text())


@pytest.fixture(scope="session")
def builder_soci_toml() -> dict[str, Any]:
    return tomllib.loads((BUILDER / "etc" / "soci-snapshotter-grpc" / "config.toml").read_text())


@pytest.fixture(scope="session")
def karpenter_docs() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((EKS / "karpenter-soci.yaml").read_text()) if d]


@pytest.fixture(scope="session")
def helm_values() -> dict[str, Any]:
    return yaml.safe_load((DAGSTER / "values.yaml").read_text())
