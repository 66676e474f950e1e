"""The GC job: prune every builder's cache, with disk usage before/after and freed bytes as metadata."""

from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from pipelines.metadata import sized, table
from pipelines.resource_defs.base import BuilderResource
from resources.builders.gc import check_gc_files, prune_builders

REPO_POLICY_FILE = Path(__file__).resolve().parents[2] / "deploy/builder/etc/buildkit/buildkitd.toml"


def repository_policy_files() -> list[str]:
    """The repository's own buildkitd.toml, the GC policy that is deployed by default."""
    return [str(REPO_POLICY_FILE)] if REPO_POLICY_FILE.exists() else []


class BuilderGcConfig(dg.Config):
    """Prune limits (BuildKit `prune` semantics) and the GC policy files to check."""

    keep_storage_bytes: int | None = Field(default=None, description="keep this much cache (most recently used)")
    keep_duration_s: int | None = Field(default=7 * 24 * 3600, description="keep cache used within this many seconds")
    free_storage_bytes: int | None = Field(default=None, description="prune until this much disk is free (buildctl)")
    policy_files: list[str] = Field(default_factory=repository_policy_files,
                                    description="buildkitd.toml / daemon.json files whose GC policy is checked "
                                                "(default: STREAMABLE_GC_POLICY_FILES, else the repository's)")


@dg.op(description="Prune every builder's cache; disk usage before/after and freed bytes as metadata.")
def builder_cache_gc(context: dg.OpExecutionContext, config: BuilderGcConfig,
                     builder: BuilderResource) -> dg.Output[dict]:
    """One builder's failure is reported after the others were pruned."""
    warnings = check_gc_files(config.policy_files)
    for warning in warnings:
        context.log.warning(warning)
    report = prune_builders(builder.get_builder(), keep_storage_bytes=config.keep_storage_bytes,
                            keep_duration_s=config.keep_duration_s, free_storage_bytes=config.free_storage_bytes,
                            log=context.log.info)
    rows = [{**vars(row), "before": sized(row.bytes_before) if row.bytes_before is not None else None,
             "freed": sized(row.bytes_freed) if row.bytes_freed is not None else None,
             "after": sized(row.bytes_after) if row.bytes_after is not None else None} for row in report.rows()]
    totals: dict[str, int] = {
        "freed_bytes": report.freed_bytes,
        "bytes_before": sum(r.bytes_before for r in report.results),
        "bytes_after": sum(r.bytes_after for r in report.results),
        "builders_pruned": len(report.results),
        "builders_failed": len(report.failures),
        "policy_warnings": len(warnings),
    }
    builders = table(rows, [("builder", str, ""), ("status", str, "pruned or failed"),
                            ("before", str, "cache size before"), ("freed", str, "freed by the prune"),
                            ("after", str, "cache size after"), ("bytes_before", int, "exact"),
                            ("bytes_freed", int, "exact"), ("bytes_after", int, "exact"),
                            ("error", str, "why the prune failed")])
    md: dict = {**totals, "freed": sized(report.freed_bytes), "builders": builders}
    if warnings:
        md["policy_warning_text"] = dg.MetadataValue.md("\n\n".join(f"- {w}" for w in warnings))
    value = {"results": [r.__dict__ for r in report.results], "failures": report.failures}
    if report.failures:
        raise dg.Failure(description="prune failed on " + "; ".join(f"{k}: {v}" for k, v in report.failures.items()),
                         metadata={**totals, "builders": builders})
    return dg.Output(value, metadata=md)


def make_gc_job(policy_files: list[str] | None = None) -> dg.JobDefinition:
    """The GC job; `policy_files` (STREAMABLE_GC_POLICY_FILES) become its default config when given."""
    defaults: dict[str, Any] = {}
    if policy_files is not None:
        defaults["config"] = {"ops": {"builder_cache_gc": {"config": {"policy_files": policy_files}}}}

    @dg.job(name="builder_cache_gc_job", description="Prune the build cache of every builder.", **defaults)
    def builder_cache_gc_job() -> None:
        """One op: prune every builder."""
        builder_cache_gc()

    return builder_cache_gc_job


builder_cache_gc_job = make_gc_job()
