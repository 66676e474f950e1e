"""The build job: build -> push -> SOCI index -> verify pull -> release, for one target."""

from typing import TYPE_CHECKING

import dagster as dg

from pipelines.supply_chain.assets import GROUP

if TYPE_CHECKING:  # define_asset_job's return type is not exported by dagster
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

BUILD_JOB = "build_and_release"
"""Name of the build job; sensors that start builds (git push) refer to it."""
BUILD_OP = "image"
"""The step whose config (ImageBuildConfig) a run request fills in."""


def build_job(partitions: dg.PartitionsDefinition) -> "UnresolvedAssetJobDefinition":
    """The job that materializes the supply chain of one target (partition = target name)."""
    return dg.define_asset_job(
        BUILD_JOB,
        selection=dg.AssetSelection.groups(GROUP),
        partitions_def=partitions,
        description="build -> push -> SOCI index -> verify pull -> promote, for one target",
    )
