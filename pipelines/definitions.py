"""The code location: resources chosen by STREAMABLE_ENV (local | eks), assets per target, jobs, automation."""

from __future__ import annotations

import os

import dagster as dg

from pipelines.supply_chain.assets import GROUP, build_supply_chain
from pipelines.automation import automation_defs
from pipelines.resource_defs.base import TargetsResource, local_resources, workspace_resource
from pipelines.resource_defs.startup import startup_resources  # wire16
from resources.release.targets import load_targets

BUILD_JOB = "build_and_release"


def resources_for(env: str) -> dict:
    """Resources for one environment; a clear error names a missing setting."""
    if env == "local":
        return local_resources()
    if env == "eks":
        from pipelines.resource_defs.eks import eks_resources  # noqa: PLC0415

        return {
            "targets": TargetsResource(),
            "workspace": workspace_resource("/tmp/streamable"),
            **eks_resources(),
        }
    raise ValueError(f"STREAMABLE_ENV={env!r} is not one of: local, eks")


@dg.definitions
def defs() -> dg.Definitions:
    """Load the targets file and build the definitions for the selected environment."""
    env = os.environ.get("STREAMABLE_ENV", "local")
    targets = load_targets()
    assets, checks, partitions = build_supply_chain(targets)
    job = dg.define_asset_job(
        BUILD_JOB,
        selection=dg.AssetSelection.groups(GROUP),
        partitions_def=partitions,
        description="build -> push -> SOCI index -> verify pull -> promote, for one target",
    )
    resources = {**resources_for(env), **startup_resources(env)}  # wire16: startup_recorder
    core = dg.Definitions(assets=assets, asset_checks=checks, jobs=[job], resources=resources)
    return dg.Definitions.merge(core, automation_defs(ecr=resources.get("ecr")))
