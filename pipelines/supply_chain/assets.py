"""The image supply chain as assets: image -> soci_index -> (blocking check) -> release, one partition per target."""

# No `from __future__ import annotations` here: Dagster reads these annotations (dg.Config, resources) at runtime.
import shutil
import tempfile
import time
from pathlib import Path

import dagster as dg
from pydantic import Field

from pipelines.logstream import BatchedLog
from resources import defaults
from resources.builders.base import BuildError, BuildRequest
from resources.builders.candidates import discard_pushed
from pipelines.resource_defs.base import BuilderResource, CanaryBase, RegistryResource, TargetsResource, WorkspaceResource
from resources.builders.secrets import write_build_secrets
from resources.git.checkout import checkout_source
from resources.release.promote import describe, layer_rows, promote
from resources.oci.refs import ImageRef
from resources.soci.convert import SociConverter
from resources.soci.verify import verify_image
from resources.release.tags import candidate_tag, release_tags, soci_tag
from resources.release.targets import TargetsConfig
from pipelines.supply_chain import startup  # wire16: issue 16 (startup_profile, cost of a start)

GROUP = "supply_chain"
VERIFY_CHECK = "lazy_pull_verifies"


class ImageBuildConfig(dg.Config):
    """Run config for a build, e.g. from the UI launchpad or a sensor."""

    commit: str | None = Field(default=None, description="commit SHA to build; default: head of the target's branch")
    ref: str | None = Field(default=None, description="git ref the commit belongs to (refs/heads/x, refs/tags/v1.2.3)")
    build_args: dict[str, str] = Field(default_factory=dict, description="build args merged over the target's")
    no_cache: bool = Field(default=False, description="rebuild every step (--no-cache), e.g. after a build secret "
                           "rotated: BuildKit keeps secret contents out of its cache key")


def _md_table(rows: list[dict], cols: list[str]) -> dg.MetadataValue:
    """A markdown table for the UI."""
    head = "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n"
    body = "".join("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |\n" for r in rows)
    return dg.MetadataValue.md(head + body)


def raise_build_failure(exc: BuildError, client_for, log) -> None:
    """Discard what the failed build already pushed, then fail the step with the outcome as metadata."""
    if not exc.pushed:
        raise exc
    outcomes = discard_pushed(exc.pushed, client_for, log)
    raise dg.Failure(description=str(exc), metadata={
        "failed_step": exc.step or "",
        "buildkit_warnings": "\n".join(exc.warnings),
        "pushed_candidates_deleted": ", ".join(o.image for o in outcomes if o.deleted),
        "pushed_candidates_kept_failed": ", ".join(f"{o.image} ({o.detail})" for o in outcomes if not o.deleted),
    }) from None


def build_supply_chain(targets: TargetsConfig) -> tuple[list, list, dg.PartitionsDefinition]:
    """Assets and checks for every target in the targets file (partition key = target name)."""
    partitions = dg.StaticPartitionsDefinition(targets.names)

    @dg.asset(
        group_name=GROUP,
        partitions_def=partitions,
        pool=defaults.BUILD_POOL,
        kinds={"docker", "buildkit"},
        description="BuildKit build of the target at a commit, pushed under an immutable candidate tag.",
    )
    def image(
        context: dg.AssetExecutionContext,
        config: ImageBuildConfig,
        targets: TargetsResource,
        builder: BuilderResource,
        registry: RegistryResource,
        workspace: WorkspaceResource,
    ) -> dg.Output[dict]:
        target = targets.load().get(context.partition_key)
        work = Path(tempfile.mkdtemp(prefix=f"build-{target.name}-", dir=workspace.scratch))
        try:
            co = checkout_source(target.source, commit=config.commit, ref=config.ref, workdir=work,
                                 cache_root=workspace.git_cache, credentials=workspace.git_credentials())
            cand = candidate_tag(co.commit, context.run.run_id)
            ref = ImageRef.parse(f"{target.repository}:{cand}")
            for note in registry.prepare_repository(ref.repository):
                context.log.info(note)
            request = BuildRequest(
                target=target.name,
                image_ref=str(ref),
                dockerfile=target.dockerfile,
                context_dir=co.context_dir,
                build_args={**target.build_args, **config.build_args},
                secrets=write_build_secrets(target.name, target.secrets, work / "secrets"),
                cache_ref=target.cache_ref,
                target_stage=target.target_stage,
                platforms=target.platforms,
                routing_key=target.routing_key,
                labels={"org.opencontainers.image.revision": co.commit},
                no_cache=config.no_cache,
                allow_platform_mismatch=target.allow_platform_mismatch,
            )
            context.log.info(f"building {target.name} at {co.commit[:12]} -> {ref}")
            if co.dirty and co.commit.strip("0"):
                context.log.warning(f"{target.source.local}: uncommitted changes are not built; building commit {co.commit[:12]}")
            elif co.dirty:
                context.log.warning(f"{target.source.local} is not in a git repository: building the directory as it is")
            with BatchedLog(context.log.info) as log:
                try:
                    result = builder.get_builder().build(request, log)
                except BuildError as exc:
                    raise_build_failure(exc, registry.client, log)
            for warning in result.warnings:
                context.log.warning(f"BuildKit warning for {target.name}: {warning}")
        finally:
            shutil.rmtree(work, ignore_errors=True)
        with registry.client(ref.registry) as client:
            summary = describe(client, ref.repository, result.digest)
        value = {
            "target": target.name, "registry": ref.registry, "repository": ref.repository,
            "candidate_tag": cand, "digest": result.digest, "commit": co.commit, "ref": co.ref,
            "dirty": co.dirty, "builder": result.builder,
        }
        rows = layer_rows(summary)
        return dg.Output(value, metadata={
            "commit": co.commit,
            "ref": co.ref or "",
            "uncommitted_changes_ignored": co.dirty,
            "image": f"{ref.registry}/{ref.repository}@{result.digest}",
            "candidate_tag": cand,
            "digest": result.digest,
            "size_bytes": summary["size"],
            "layers": _md_table(rows, ["digest", "media_type", "size", *(["platform"] if "manifests" in summary else [])]),
            "layer_count": len(rows),
            "build_seconds": result.duration_s,
            "builder": result.builder,
            "cache_hits": result.cache_hits if result.cache_hits is not None else -1,
            "steps": result.steps_total if result.steps_total is not None else -1,
            "buildkit_warnings": "\n".join(result.warnings),
            "no_cache": config.no_cache,
        })

    startup_profile = startup.build_startup_profile_asset(partitions, GROUP)  # wire16

    @dg.asset(
        group_name=GROUP,
        partitions_def=partitions,
        deps=[startup_profile],  # wire16: image -> startup_profile -> soci_index (profile read from the registry)
        pool=defaults.SOCI_POOL,
        kinds={"soci"},
        description="The SOCI-enabled image: zTOCs, SOCI index manifest and the image index that points nodes at it.",
    )
    def soci_index(context: dg.AssetExecutionContext, image: dict, targets: TargetsResource, registry: RegistryResource) -> dg.Output[dict]:
        target = targets.load().get(context.partition_key)
        src = ImageRef(registry=image["registry"], repository=image["repository"], digest=image["digest"])
        dst = ImageRef(registry=image["registry"], repository=image["repository"], tag=soci_tag(image["candidate_tag"]))
        started = time.monotonic()
        with registry.client(src.registry) as client:
            plan = startup.plan_for_target(client, target, src, context.log.info)  # wire16
            converter = SociConverter(
                client,
                **plan.converter_kwargs(),  # wire16: span_size (auto), node_compat, prefetch profile
                min_layer_size=target.soci.min_layer_size,
                format=target.soci.format,
                all_platforms=True,
            )
            result = converter.convert(src, dst)
            startup_meta, startup_out = startup.soci_index_metadata(  # wire16
                client, target, plan, result, ImageRef(dst.registry, dst.repository, digest=result.image_digest), context.log.warning)
        summary = result.to_dict()
        digest = result.image_digest
        value = {**image, "soci_tag": dst.tag, "image_index_digest": digest,
                 "platforms": [{"platform": p.platform, "manifest_digest": p.manifest_digest,
                                "soci_index_digest": p.soci_index_digest} for p in result.platforms], **startup_out}  # wire16
        ztocs = [dict(vars(z), platform=p.platform) for p in result.platforms for z in p.ztocs]
        skipped = [dict(vars(k), platform=p.platform) for p in result.platforms for k in p.skipped_layers]
        return dg.Output(value, metadata={
            **startup_meta,  # wire16: "to_start" lead line first, cost tables, plots, prefetch gate, span advice
            "image_index_digest": digest,
            "soci_index_digests": dg.MetadataValue.json(value["platforms"]),
            "ztocs": _md_table(ztocs, ["platform", "layer_digest", "layer_size", "ztoc_digest", "ztoc_size", "spans", "files", "reused"]),
            "skipped_layers": _md_table(skipped, ["platform", "layer_digest", "layer_size", "reason"]),
            "layers_built": result.layers_built,
            "layers_reused": result.layers_reused,
            "format": summary["format"],
            "seconds": round(time.monotonic() - started, 3),
            "soci_ref": str(dst),
        })

    @dg.asset_check(asset=soci_index, name=VERIFY_CHECK, blocking=True, partitions_def=partitions,
                    description="Finds the SOCI index the way a node does and lazy-reads real files through zTOC checkpoints.")
    def lazy_pull_verifies(context: dg.AssetCheckExecutionContext, soci_index: dict, targets: TargetsResource,
                           registry: RegistryResource, canary: CanaryBase) -> dg.AssetCheckResult:
        target = targets.load().get(context.op_execution_context.partition_key)
        digest = soci_index["image_index_digest"]
        ref = ImageRef(registry=soci_index["registry"], repository=soci_index["repository"], digest=digest)
        with registry.client(ref.registry) as client:
            report = verify_image(client, ref, sample=target.verify.sample, required_files=list(target.verify.required_files))
        passed, reason = bool(report.passed), report.failure or ""
        canary_meta: dict = {}
        if passed and target.verify.canary.enabled:
            try:
                canary_meta = canary.run_canary(str(ref), command=list(target.verify.canary.command),
                                                args=list(target.verify.canary.args),
                                                timeout_s=target.verify.canary.timeout_s)
            except Exception as exc:  # noqa: BLE001 - any canary failure fails the check with its message
                passed, reason = False, f"canary: {exc}"
        return dg.AssetCheckResult(
            passed=passed,
            severity=dg.AssetCheckSeverity.ERROR,
            description=None if passed else f"verification failed: {reason}",
            metadata={**canary_meta,  # already named canary_* (CanaryResult.metadata)
                "verified_digest": digest,
                "files_checked": report.files_checked,
                "bytes_fetched": report.lazy_bytes_fetched,
                "layer_bytes": report.lazy_layer_bytes,
                "image_layer_bytes": report.image_layer_bytes,
                "reason": reason,
                **startup.check_metadata(soci_index),  # wire16: cost of a start
                "files": _md_table([dict(vars(f), platform=p.platform) for p in report.platforms for f in p.files],
                                   ["platform", "name", "size", "why", "spans_fetched", "bytes_fetched", "lazy"]),
            },
        )

    @dg.asset(
        group_name=GROUP,
        partitions_def=partitions,
        kinds={"oci"},
        description="Release tags (sha-<7>, branch, latest, semver) moved to the verified SOCI-enabled image.",
        # When soci_index is re-materialized outside the job (e.g. from the UI), release follows only once the
        # blocking verification passed; the step itself re-checks that the pass was for this very digest.
        automation_condition=dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed(),
    )
    def release(context: dg.AssetExecutionContext, soci_index: dict, targets: TargetsResource, registry: RegistryResource) -> dg.Output[dict]:
        target = targets.load().get(context.partition_key)
        digest = soci_index["image_index_digest"]
        _require_passed_check(context, digest)
        default_branch = target.source.git.ref if target.source.git else "main"
        tags = release_tags(target.tags, commit=soci_index["commit"], ref=soci_index.get("ref"), default_branch=default_branch)
        notes: list[str] = []
        repo = soci_index["repository"]
        with registry.client(soci_index["registry"]) as client:
            # Plan every tag before moving any: a write-once tag that already points elsewhere is left alone.
            chosen: list[str] = []
            for tag in tags:
                final, note, write_once = registry.release_tag(repo, tag)
                if note:
                    notes.append(note)
                existing = client.head_manifest(repo, final) if write_once else None
                if existing is not None and existing.digest != digest:
                    notes.append(f"{repo}:{final} is immutable and already points at {existing.digest}; left as it is")
                    continue
                chosen.append(final)
            for note in notes:
                context.log.warning(note)
            tags = list(dict.fromkeys(chosen))
            moves = promote(client, repo, digest, tags)
        image = f"{soci_index['registry']}/{soci_index['repository']}"
        return dg.Output(
            {**soci_index, "release_tags": tags},
            metadata={
                "notes": "\n".join(notes),
                "image": f"{image}@{digest}",
                "tags": dg.MetadataValue.json([{"tag": m.tag, "previous": m.previous, "current": m.current} for m in moves]),
                "released_refs": ", ".join(f"{image}:{t}" for t in tags),
            },
        )

    return [image, startup_profile, soci_index, release], [lazy_pull_verifies], partitions  # wire16: startup_profile


def _require_passed_check(context: dg.AssetExecutionContext, digest: str) -> None:
    """Refuse to release unless the blocking check passed for this very digest and partition."""
    check_key = dg.AssetCheckKey(dg.AssetKey("soci_index"), VERIFY_CHECK)
    records = context.instance.event_log_storage.get_asset_check_execution_history(check_key, limit=50)
    for rec in records:
        if rec.partition not in (None, context.partition_key) or rec.event is None:
            continue
        evaluation = rec.event.dagster_event.event_specific_data if rec.event.dagster_event else None
        meta = getattr(evaluation, "metadata", {}) or {}
        verified = meta.get("verified_digest")
        if verified is not None and getattr(verified, "value", verified) == digest:
            if getattr(evaluation, "passed", False):
                return
            break
    raise dg.Failure(f"refusing to release {digest}: no passing '{VERIFY_CHECK}' check for it (partition {context.partition_key})")
