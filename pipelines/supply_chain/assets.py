"""The image supply chain as assets: image -> soci_index -> (blocking check) -> release, one partition per target."""

# No `from __future__ import annotations` here: Dagster reads these annotations (dg.Config, resources) at runtime.
import shutil
import tempfile
import time
from pathlib import Path

import dagster as dg

from pipelines.logstream import BatchedLog
from pipelines.metadata import short_digest, sized, table, text_lines
from pipelines.resource_defs.base import BuilderResource, RegistryResource, TargetsResource, WorkspaceResource
from pipelines.supply_chain import startup
from pipelines.supply_chain.checks import SOCI_INDEX, VERIFY_CHECK, build_checks
from pipelines.supply_chain.config import ImageBuildConfig
from pipelines.supply_chain.values import BuiltImage, PlatformIndex, ReleasedImage, SociImage
from resources import defaults
from resources.builders.base import BuildError, BuildRequest
from resources.builders.candidates import discard_pushed
from resources.builders.secrets import write_build_secrets
from resources.git.checkout import checkout_source
from resources.oci.refs import ImageRef
from resources.release.plan import overridden_build_args, plan_release, wanted_tags
from resources.release.promote import describe, layer_rows, promote
from resources.release.tags import candidate_tag, soci_tag
from resources.release.targets import TargetsConfig
from resources.soci.convert import SociConverter

GROUP = "supply_chain"
__all__ = ["GROUP", "VERIFY_CHECK", "build_supply_chain"]


def raise_build_failure(exc: BuildError, client_for, log) -> None:
    """Discard what the failed build already pushed, then fail the step with the outcome as metadata."""
    if not exc.pushed:
        raise exc
    outcomes = discard_pushed(exc.pushed, client_for, log)
    md = {
        "failed_step": exc.step or "",
        "buildkit_warnings": "\n".join(exc.warnings),
        "pushed_candidates_deleted": ", ".join(o.image for o in outcomes if o.deleted),
        "pushed_candidates_kept_failed": ", ".join(f"{o.image} ({o.detail})" for o in outcomes if not o.deleted),
    }
    raise dg.Failure(description=str(exc), metadata=md) from None


def _image_metadata(
    image: BuiltImage, summary: dict, duration_s: float, cache_hits: int | None, steps: int | None, ui_url: str | None
) -> dict:
    rows = layer_rows(summary)
    multi = "manifests" in summary
    md: dict = {
        "commit": image.commit,
        "image": f"{image.registry}/{image.repository}@{image.digest}",
        "candidate_tag": image.candidate_tag,
        "digest": image.digest,
        "size_bytes": summary["size"],
        "size": sized(summary["size"]),
        "layers": table(
            [
                {
                    "digest": short_digest(r["digest"]),
                    "media_type": r["media_type"],
                    "size": sized(r["size"]),
                    "bytes": r["size"],
                    "platform": r.get("platform") or None,
                }
                for r in rows
            ],
            [
                ("digest", str, "layer digest (short)"),
                ("media_type", str, ""),
                ("size", str, ""),
                ("bytes", int, "exact size"),
                *([("platform", str, "")] if multi else []),
            ],
        ),
        "layer_count": len(rows),
        "build_seconds": duration_s,
        "builder": image.builder,
    }
    if image.ref:
        md["ref"] = image.ref
    if image.dirty:
        md["uncommitted_changes_ignored"] = True
    if cache_hits is not None:
        md["cache_hits"] = cache_hits
    if steps is not None:
        md["steps"] = steps
    if image.overridden_build_args:
        md["build_args_overridden"] = ", ".join(image.overridden_build_args)
    if ui_url:
        md["repository_ui"] = dg.MetadataValue.url(ui_url)
    return md


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
    ) -> dg.Output[BuiltImage]:
        target = targets.load().get(context.partition_key)
        work = Path(tempfile.mkdtemp(prefix=f"build-{target.name}-", dir=workspace.scratch))
        try:
            co = checkout_source(
                target.source,
                commit=config.commit,
                ref=config.ref,
                workdir=work,
                cache_root=workspace.git_cache,
                credentials=workspace.git_credentials(),
            )
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
                context.log.warning(
                    f"{target.source.local}: uncommitted changes are not built; building commit {co.commit[:12]}"
                )
            elif co.dirty:
                context.log.warning(
                    f"{target.source.local} is not in a git repository: building the directory as it is"
                )
            with BatchedLog(context.log.info) as log:
                try:
                    result = builder.get_builder().build(request, log)
                except BuildError as exc:
                    raise_build_failure(exc, registry.client, log)
            for warning in result.warnings:
                context.log.warning(f"BuildKit warning for {target.name}: {warning}")
        finally:
            shutil.rmtree(work, ignore_errors=True)
        overridden = overridden_build_args(target, config.build_args)
        if overridden:
            context.log.warning(
                f"build args {', '.join(overridden)} differ from targets.yaml: this build will not "
                "move the target's release tags (only the run's extra_tags)"
            )
        with registry.client(ref.registry) as client:
            summary = describe(client, ref.repository, result.digest)
        value = BuiltImage(
            target=target.name,
            registry=ref.registry,
            repository=ref.repository,
            candidate_tag=cand,
            digest=result.digest,
            commit=co.commit,
            ref=co.ref,
            dirty=co.dirty,
            builder=result.builder,
            overridden_build_args=tuple(overridden),
            extra_tags=tuple(config.extra_tags),
        )
        md = _image_metadata(
            value, summary, result.duration_s, result.cache_hits, result.steps_total, registry.ui_url(ref.repository)
        )
        if result.warnings:
            md["buildkit_warnings"] = "\n".join(result.warnings)
        if config.no_cache:
            md["no_cache"] = True
        return dg.Output(value, metadata=md)

    startup_profile = startup.build_startup_profile_asset(partitions, GROUP)

    @dg.asset(
        group_name=GROUP,
        partitions_def=partitions,
        deps=[startup_profile],
        pool=defaults.SOCI_POOL,
        kinds={"soci"},
        description="The SOCI-enabled image: zTOCs, SOCI index manifest and the image index that points nodes at it.",
    )
    def soci_index(
        context: dg.AssetExecutionContext, image: BuiltImage, targets: TargetsResource, registry: RegistryResource
    ) -> dg.Output[SociImage]:
        target = targets.load().get(context.partition_key)
        src = ImageRef(registry=image.registry, repository=image.repository, digest=image.digest)
        dst = ImageRef(registry=image.registry, repository=image.repository, tag=soci_tag(image.candidate_tag))
        started = time.monotonic()
        with registry.client(src.registry) as client:
            plan = startup.plan_for_target(client, target, src, context.log.info)
            converter = SociConverter(
                client,
                **plan.converter_kwargs(),
                min_layer_size=target.soci.min_layer_size,
                format=target.soci.format,
                all_platforms=True,
                max_parallel_layers=target.soci.max_parallel_layers,
            )
            result = converter.convert(src, dst)
            startup_meta, startup_out = startup.soci_index_metadata(
                client,
                target,
                plan,
                result,
                ImageRef(dst.registry, dst.repository, digest=result.image_digest),
                context.log.warning,
            )
        value = SociImage(
            image=image,
            soci_tag=str(dst.tag),
            image_index_digest=result.image_digest,
            platforms=tuple(
                PlatformIndex(p.platform, p.manifest_digest, p.soci_index_digest) for p in result.platforms
            ),
            startup=startup_out.get("startup"),
        )
        ztocs = [
            {
                "platform": p.platform,
                "layer": short_digest(z.layer_digest),
                "layer_size": sized(z.layer_size),
                "ztoc": short_digest(z.ztoc_digest),
                "ztoc_size": sized(z.ztoc_size),
                "spans": z.spans,
                "files": z.files,
                "reused": z.reused,
            }
            for p in result.platforms
            for z in p.ztocs
        ]
        skipped = [
            {
                "platform": p.platform,
                "layer": short_digest(k.layer_digest),
                "layer_size": sized(k.layer_size),
                "reason": k.reason,
            }
            for p in result.platforms
            for k in p.skipped_layers
        ]
        md: dict = {
            **startup_meta,  # the cost of a start leads: to_start, cost tables, prefetch gate, span advice
            "image_index_digest": value.image_index_digest,
            "soci_indexes": table(
                [
                    {
                        "platform": p.platform,
                        "manifest": short_digest(p.manifest_digest),
                        "soci_index": short_digest(p.soci_index_digest) or None,
                    }
                    for p in value.platforms
                ],
                [
                    ("platform", str, ""),
                    ("manifest", str, "image manifest"),
                    ("soci_index", str, "SOCI index manifest"),
                ],
            ),
            "ztocs": table(
                ztocs,
                [
                    ("platform", str, ""),
                    ("layer", str, "layer digest"),
                    ("layer_size", str, ""),
                    ("ztoc", str, "zTOC digest"),
                    ("ztoc_size", str, ""),
                    ("spans", int, ""),
                    ("files", int, ""),
                    ("reused", bool, "zTOC reused, not rebuilt"),
                ],
            ),
            "layers_built": result.layers_built,
            "layers_reused": result.layers_reused,
            "format": result.to_dict()["format"],
            "seconds": round(time.monotonic() - started, 3),
            "soci_ref": str(dst),
        }
        if skipped:
            md["skipped_layers"] = table(
                skipped,
                [
                    ("platform", str, ""),
                    ("layer", str, "layer digest"),
                    ("layer_size", str, ""),
                    ("reason", str, "why no zTOC"),
                ],
            )
        return dg.Output(value, metadata=md)

    @dg.asset(
        group_name=GROUP,
        partitions_def=partitions,
        kinds={"oci"},
        description="Release tags (sha-<7>, branch, latest, semver) moved to the verified SOCI-enabled image.",
        # When soci_index is re-materialized outside the job (e.g. from the UI), release follows only once the
        # blocking verification passed; the step itself re-checks that the pass was for this very digest.
        automation_condition=dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed(),
    )
    def release(
        context: dg.AssetExecutionContext, soci_index: SociImage, targets: TargetsResource, registry: RegistryResource
    ) -> dg.Output[ReleasedImage]:
        target = targets.load().get(context.partition_key)
        digest = soci_index.image_index_digest
        _require_passed_check(context, digest)
        built = soci_index.image
        tags, held_back, notes = wanted_tags(
            target,
            commit=built.commit,
            ref=built.ref,
            overridden=built.overridden_build_args,
            extra_tags=built.extra_tags,
        )
        repo = soci_index.repository
        with registry.client(soci_index.registry) as client:
            plan = plan_release(client, repo, digest, tags, registry.release_tag, held_back=held_back, notes=notes)
            for note in plan.notes:
                context.log.warning(note)
            moves = promote(client, repo, digest, plan.tags)
        image = f"{soci_index.registry}/{repo}"
        md: dict = {
            "image": f"{image}@{digest}",
            "tag_moves": table(
                [
                    {"tag": m.tag, "from": short_digest(m.previous) or None, "to": short_digest(m.current)}
                    for m in moves
                ],
                [("tag", str, ""), ("from", str, "digest before (none: new tag)"), ("to", str, "digest now")],
            ),
            "released_refs": ", ".join(f"{image}:{t}" for t in plan.tags) or "none",
            **text_lines(plan.notes),
        }
        ui_url = registry.ui_url(repo)
        if ui_url:
            md["repository_ui"] = dg.MetadataValue.url(ui_url)
        if plan.held_back:
            md["tags_not_moved"] = ", ".join(plan.held_back)
            md["release_rule"] = (
                "build args overridden in the run config: only the candidate tag "
                f"{built.candidate_tag} and the run's extra_tags name this image"
            )
        return dg.Output(
            ReleasedImage(soci=soci_index, release_tags=tuple(plan.tags), held_back_tags=tuple(plan.held_back)),
            metadata=md,
        )

    return [image, startup_profile, soci_index, release], build_checks(partitions), partitions


def _require_passed_check(context: dg.AssetExecutionContext, digest: str) -> None:
    """Refuse to release unless the blocking check passed for this very digest and partition."""
    check_key = dg.AssetCheckKey(SOCI_INDEX, VERIFY_CHECK)
    records = context.instance.event_log_storage.get_asset_check_execution_history(check_key, limit=50)
    for rec in records:
        evaluation = rec.event.asset_check_evaluation if rec.event is not None else None
        if evaluation is None or rec.partition not in (None, context.partition_key):
            continue
        verified = evaluation.metadata.get("verified_digest")
        if verified is not None and verified.value == digest:
            if evaluation.passed:
                return
            break
    raise dg.Failure(
        f"refusing to release {digest}: no passing '{VERIFY_CHECK}' check for it (partition {context.partition_key})"
    )
