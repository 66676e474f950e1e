"""Issue 16 in the asset graph: `startup_profile` (between `image` and `soci_index`), and what `soci_index` and
its check take from it (span size, prefetch artifacts gated by node_compat, the cost of a start).

One partitioned asset serves every target, so `startup_profile` is in the graph for all of them; for a target
with `startup.enabled: false` it materializes "not recorded" (and why) instead of a profile: the partition's
history then says so in the UI, and the job stays one graph for every target (a per-target graph would mean
one asset per target, not partitions). `soci_index` depends on it but reads the profile from the registry
(`find_image_profile`, next to the image), so a re-run of `soci_index` alone, or the backfill, finds it too.
"""

# No `from __future__ import annotations` here: Dagster reads these annotations (resources) at runtime.
from typing import Any

import dagster as dg

from pipelines.metadata import human_size, short_digest
from pipelines.metadata import table as typed_table
from pipelines.resource_defs.base import RegistryResource, TargetsResource
from pipelines.resource_defs.startup import StartupRecorderResource
from pipelines.supply_chain.values import BuiltImage, ReleasedImage, SociImage, StartupRecord
from resources.oci.refs import ImageRef
from resources.registry import RegistryClient
from resources.release.targets import Target
from resources.startup.cost import MB, StartCostError
from resources.startup.index_plan import (
    IndexPlan,
    StartCostReport,
    plan_index,
    start_cost,
)
from resources.startup.profile import StartupProfile
from resources.startup.store import push_profile

STARTUP_ASSET = "startup_profile"
MAX_FILE_ROWS = 200


# ---- the asset ----------------------------------------------------------------------------------------


def build_startup_profile_asset(partitions: dg.PartitionsDefinition, group: str) -> dg.AssetsDefinition:
    """The `startup_profile` asset over the targets' partitions."""

    @dg.asset(
        name=STARTUP_ASSET,
        group_name=group,
        partitions_def=partitions,
        kinds={"soci"},
        description="What the candidate image reads to start (recorded in a sandbox without network), stored next to "
        "the image as an OCI artifact; per target (startup.enabled).",
    )
    def startup_profile(
        context: dg.AssetExecutionContext,
        image: BuiltImage,
        targets: TargetsResource,
        registry: RegistryResource,
        startup_recorder: StartupRecorderResource,
    ) -> dg.Output[StartupRecord]:
        target = targets.load().get(context.partition_key)
        ref = ImageRef(registry=image.registry, repository=image.repository, digest=image.digest)
        if not target.startup.enabled:
            why = f"not recorded: startup.enabled is false for target {target.name}"
            context.log.info(why)
            return dg.Output(
                StartupRecord(recorded=False, image_digest=image.digest), metadata={"recorded": False, "status": why}
            )
        with registry.client(ref.registry) as client:
            profile = startup_recorder.record(client, ref, target.startup, context.log.info)
            stored = push_profile(client, ref.repository, profile)
        value = StartupRecord(
            recorded=True,
            image_digest=image.digest,
            manifest_digest=profile.manifest_digest,
            artifact_digest=stored.manifest_digest,
            blob_digest=stored.blob_digest,
        )
        return dg.Output(
            value,
            metadata={
                "recorded": True,
                **profile_metadata(profile),
                "artifact": f"{ref.registry}/{ref.repository}@{stored.manifest_digest}",
            },
        )

    return startup_profile


def profile_metadata(profile: StartupProfile) -> dict[str, Any]:
    """What a profile shows in the UI: how the run stopped, how long it took, and the files in first-access order."""
    rows = [
        {
            "path": f.path,
            "layer": short_digest(f.layer_digest),
            "size": human_size(f.size),
            "ranges_bytes": f.bytes_read,
            "first_access_ms": f.first_access_ms,
            "kind": f.kind,
        }
        for f in profile.files[:MAX_FILE_ROWS]
    ]
    shown = "" if len(profile.files) <= MAX_FILE_ROWS else f" (first {MAX_FILE_ROWS} of {len(profile.files)} shown)"
    return {
        "stopped_by": profile.stopped_by,
        "duration_ms": dg.MetadataValue.float(profile.duration_ms),
        "command": " ".join(profile.command),
        "platform": profile.platform,
        "manifest_digest": profile.manifest_digest,
        "files_read": len(profile.files),
        "bytes_read": f"{human_size(profile.bytes_read)} in the ranges read of "
        f"{human_size(sum(f.size for f in profile.files))} in the files opened",
        "files": typed_table(
            rows,
            [
                ("path", str, ""),
                ("layer", str, ""),
                ("size", str, ""),
                ("ranges_bytes", int, ""),
                ("first_access_ms", float, ""),
                ("kind", str, ""),
            ],
        ),
        "files_note": f"first access order{shown}; ranges_bytes: page-level bytes read",
    }


# ---- soci_index -----------------------------------------------------------------------------------------


def plan_for_target(client: RegistryClient, target: Target, src: ImageRef, log: Any) -> IndexPlan:
    """Span size, node_compat and prefetch profile for converting the candidate `src` (by digest)."""
    assert src.digest is not None
    return plan_index(
        client,
        src.repository,
        src.digest,
        span_size=target.soci.span_size,
        node_compat=target.soci.compat,
        startup=target.startup,
        min_layer_size=target.soci.min_layer_size,
        ztoc_budget_percent=target.soci.ztoc_budget_percent,
        advise=target.startup.enabled,
        log=log,
    )


def soci_index_metadata(
    client: RegistryClient, target: Target, plan: IndexPlan, result: Any, soci_image: ImageRef, log: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metadata, value additions) of `soci_index`: the gate, prefetch artifacts, cost of a start, span advice."""
    written = [row for p in result.platforms if p.prefetch for row in p.prefetch.artifacts]
    meta: dict[str, Any] = {
        "node_compat": str(plan.node_compat),
        "prefetch_gate": plan.prefetch_gate,
        "prefetch_artifacts": len(written),
        # text, not a number: a span size is a setting, not a series worth plotting
        "span_size": f"{plan.span_size} bytes ({human_size(plan.span_size)})",
    }
    if written:
        meta["prefetch"] = typed_table(
            [
                {
                    "layer": short_digest(r.layer_digest),
                    "artifact": short_digest(r.artifact_digest),
                    "spans": r.span_count,
                    "ranges": ", ".join(f"{a}-{b}" for a, b in r.spans),
                }
                for r in written
            ],
            [("layer", str, ""), ("artifact", str, ""), ("spans", int, ""), ("ranges", str, "")],
        )
    if plan.notes:
        meta["startup_notes"] = "\n".join(plan.notes)
    if plan.advice is not None:
        meta["span_size_advice"] = typed_table(
            [{**row, "span_size": human_size(int(row["span_size"]))} for row in plan.advice.table()],  # type: ignore[call-overload]
            [
                ("span_size", str, ""),
                ("spans", int, ""),
                ("span_bytes", int, ""),
                ("ztoc_bytes", int, ""),
                ("bytes_to_start", int, ""),
                ("within_budget", bool, ""),
                ("chosen", bool, ""),
            ],
        )
    try:
        report = start_cost(client, soci_image, plan, target.startup, bool(written))
    except StartCostError as exc:
        log(f"cost of a start not computed: {exc}")
        meta["to_start"] = f"not computed: {exc}"
        return meta, {}
    if report is None:
        meta["to_start"] = "no startup profile: the cost of a start needs one (set startup.enabled: true)"
        return meta, {}
    return {"to_start": report.lead, **cost_metadata(report, target), **meta}, {"startup": startup_value(report)}


def cost_metadata(report: StartCostReport, target: Target) -> dict[str, Any]:
    """The cost table (four ways to start), per-layer table, and the numeric series Dagster plots over runs."""
    c = report.comparison
    modes = [
        {
            "mode": m.mode,
            "bytes": m.bytes_to_start,
            "size": f"{m.bytes_to_start / MB:.1f} MB",
            "percent_of_image": round(100 * m.fraction, 2),
            "requests": m.requests,
            "round_trips": m.round_trips,
            "est_seconds": round(m.seconds, 3),
        }
        for m in c.modes
    ]
    layers = [{**row, "layer": short_digest(str(row["layer"]))} for row in c.layer_table()]
    return {
        "cost_of_a_start": typed_table(
            modes,
            [
                ("mode", str, ""),
                ("bytes", int, ""),
                ("size", str, ""),
                ("percent_of_image", float, ""),
                ("requests", int, ""),
                ("round_trips", int, ""),
                ("est_seconds", float, ""),
            ],
        ),
        "cost_estimates": f"est_seconds are {target.startup.describe_network()}; unpacking is left out",
        "cost_per_layer": typed_table(
            layers,
            [
                ("layer", str, ""),
                ("indexed", bool, ""),
                ("layer_bytes", int, ""),
                ("files", int, ""),
                ("spans", int, ""),
                ("lazy_bytes", int, ""),
                ("prefetch_files_bytes", int, ""),
                ("prefetch_ranges_bytes", int, ""),
            ],
        ),
        # Plotted across materializations (numeric metadata): what a start fetches against the image, over commits.
        "bytes_to_start": dg.MetadataValue.int(report.served.bytes_to_start),
        "image_bytes": dg.MetadataValue.int(c.full_pull.bytes_to_start),
        "est_seconds_to_start": dg.MetadataValue.float(round(report.served.seconds, 3)),
        "est_seconds_full_pull": dg.MetadataValue.float(round(c.full_pull.seconds, 3)),
    }


def startup_value(report: StartCostReport) -> dict[str, Any]:
    """What soci_index passes on (the check and the demo read it): the lead line and the numbers behind it."""
    c = report.comparison
    return {
        "to_start": report.served.summary,
        "lead": report.lead,
        "mode": report.served.mode,
        "bytes_to_start": report.served.bytes_to_start,
        "image_bytes": c.full_pull.bytes_to_start,
        "est_seconds": round(report.served.seconds, 3),
        "est_seconds_full_pull": round(c.full_pull.seconds, 3),
        "modes": c.table(),
    }


# ---- the check ---------------------------------------------------------------------------------------------


def _startup_of(value: SociImage | ReleasedImage) -> dict[str, Any] | None:
    """The cost of a start carried by a soci_index value, or by the release value's SOCI image."""
    return value.soci.startup if isinstance(value, ReleasedImage) else value.startup


def check_metadata(soci_index: SociImage) -> dict[str, Any]:
    """The cost line for `lazy_pull_verifies` (from soci_index's value)."""
    startup = _startup_of(soci_index)
    if not startup:
        return {"to_start": "no startup profile for this image (startup.enabled: false, or not recorded)"}
    return {"to_start": startup["lead"]}


def startup_summary(value: SociImage | ReleasedImage) -> str | None:
    """'to start: X MB of Y MB (Z%)' from a soci_index (or release) value, for summaries such as the demo's."""
    startup = _startup_of(value)
    return startup["to_start"] if startup else None


def profiled_paths(client: RegistryClient, soci_index: SociImage) -> list[str]:
    """The candidate's profiled files in first-access order (for verify's `startup_files`), [] without a profile."""
    from resources.startup.store import find_image_profile  # noqa: PLC0415

    stored = find_image_profile(client, soci_index.repository, soci_index.image.digest)
    return [f.path for f in stored.profile.files] if stored is not None else []
