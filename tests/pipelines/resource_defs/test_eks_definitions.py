"""STREAMABLE_ENV=eks: every resource builds, and nested resources stay resources (not config dicts)."""

from __future__ import annotations

import dagster as dg
import pytest

from pipelines.resource_defs.eks import EcrRegistryResource, EcrResource


@pytest.fixture
def eks_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMABLE_ENV", "eks")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("STREAMABLE_BUILDER_DISCOVERY", "static")
    monkeypatch.setenv("STREAMABLE_BUILDER_ADDRS", "tcp://127.0.0.3:1234")
    monkeypatch.setenv("STREAMABLE_BUILDER_TLS", "none")
    monkeypatch.setenv("STREAMABLE_IO_BUCKET", "streamable-io-test")


def test_eks_definitions_build_every_resource(eks_env: None) -> None:
    from pipelines.definitions import defs

    d = defs()
    dg.Definitions.validate_loadable(d)
    with dg.build_resources(d.resources) as res:
        assert isinstance(res.registry, EcrRegistryResource)
        assert isinstance(res.soci_backfill.ecr, EcrResource), "the backfill's ECR resource must stay a resource"
        assert res.soci_backfill.catalog == "ecr"
        assert res.builder.get_pool().suggested_pool_limit() >= 1
        assert type(res.io_manager).__name__ == "S3PickleIOManager", "step outputs go to S3 in eks"
