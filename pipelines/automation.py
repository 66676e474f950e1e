"""Automation (issue 5): git push sensor, ECR push-event sensor, SOCI index backfill, builder cache GC.

Thin Dagster glue over resources/git_remote.py, push_events.py, backfill.py and gc.py. Everything starts
STOPPED except the nightly GC and backfill-retry schedules; turn sensors on in the UI (or `dg` CLI).
"""


import json
import os
import time
from pathlib import Path
from typing import Any, Literal

import boto3
import dagster as dg
from dagster_aws.utils import ResourceWithBoto3Configuration, construct_boto_client_retry_config
from pydantic import Field

from resources import defaults
from resources.release.backfill import (
    BackfillSettings,
    EcrCatalog,
    ImageCatalog,
    ImageStatus,
    OciCatalog,
    StatusRecord,
    VerifyFn,
    image_key,
    index_image,
    iter_backfill,
    scan_registry,
)
from pipelines.resource_defs.eks import EcrResource
from pipelines.resource_defs.base import RegistryResource, TargetsResource
from resources.builders.gc import GC_COLUMNS, check_gc_files, prune_builders
from resources.git.remote import (
    SEMVER_TAG_PATTERN,
    GitCredentials,
    GitPushPoller,
    GitRunner,
    RemoteClones,
    WatchRules,
)
from resources.aws.push_events import ImageFilter, Verdict, decide, delete, receive
from resources.oci.refs import ImageRef
from resources.registry import RegistryClient
from resources.soci.verify import verify_image

BUILD_JOB = "build_and_release"
"""Name of the lead's build job (pipelines/definitions.py); referenced by name to avoid an import cycle."""
BUILD_OP = "image"
GIT_SENSOR = "git_push_sensor"


class GitRemotesResource(dg.ConfigurableResource):
    """How the git push sensor reaches the targets' remotes; the password comes from a dg.EnvVar."""

    cache_dir: str = Field(
        default_factory=lambda: str(Path(os.environ.get("STREAMABLE_STATE_DIR", ".streamable")) / "git-watch"),
        description="where cached partial clones (one per remote) live",
    )
    username: str | None = Field(default=None, description="HTTPS user for private remotes")
    password: str | None = Field(default=None, repr=False, description="HTTPS password or token; pass as dg.EnvVar")
    max_parallel: int = Field(default=8, ge=1, description="remotes polled at the same time")
    timeout_s: float = Field(default=15.0, gt=0, description="timeout of one `git ls-remote`")
    fetch_timeout_s: float = Field(default=40.0, gt=0, description="timeout of one fetch into the cache")
    tick_budget_s: float = Field(default=40.0, gt=0, le=55, description="time a tick may spend (Dagster's limit is 60 s)")
    branches: list[str] = Field(default_factory=lambda: ["*"], description="branch name globs that trigger builds")
    tag_pattern: str = Field(default=SEMVER_TAG_PATTERN, description="regex of tag names that trigger release builds")

    def poller(self) -> GitPushPoller:
        """A poller with this configuration (credentials passed through GIT_ASKPASS and the environment)."""
        creds = GitCredentials(self.username, self.password) if self.username and self.password else None
        root = Path(self.cache_dir)
        runner = GitRunner(credentials=creds, askpass_dir=root, timeout_s=self.timeout_s)
        rules = WatchRules(branches=tuple(self.branches), tag_pattern=self.tag_pattern)
        return GitPushPoller(RemoteClones(root, runner), rules=rules, max_parallel=self.max_parallel,
                             fetch_timeout_s=self.fetch_timeout_s)


@dg.sensor(
    name=GIT_SENSOR,
    job_name=BUILD_JOB,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Polls the targets' git remotes and builds exactly the targets whose context changed.",
)
def git_push_sensor(context: dg.SensorEvaluationContext, targets: TargetsResource, git: GitRemotesResource) -> dg.SensorResult:
    """One poll of every remote; run_key `<target>@<sha>` (other refs than the default branch add `@<ref>`)."""
    result = git.poller().poll(targets.load().targets, context.cursor, budget_s=git.tick_budget_s)
    for failure in result.failures:
        context.log.warning(f"git remote not polled: {failure.error}")
    runs = []
    for t in result.triggers:
        context.log.info(f"{t.target}: {t.ref} at {t.commit[:12]} ({t.reason})")
        runs.append(dg.RunRequest(
            partition_key=t.target,
            run_key=t.run_key,
            run_config={"ops": {BUILD_OP: {"config": {"commit": t.commit, "ref": t.ref}}}},
            tags={"streamable/commit": t.commit, "streamable/ref": t.ref, "streamable/trigger": "git-push"},
        ))
    return dg.SensorResult(run_requests=runs, cursor=result.cursor, skip_reason=None if runs else result.summary())


# ============================================================================================= SOCI backfill

REGISTRY_IMAGES = dg.DynamicPartitionsDefinition(name="registry_images")
BACKFILL_ASSET = dg.AssetKey("soci_index_backfill")
BACKFILL_GROUP = "soci_backfill"
# Runs that still hold a partition (Dagster's in-progress statuses, plus queued runs waiting to start).
IN_PROGRESS = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED,
               dg.DagsterRunStatus.CANCELING, dg.DagsterRunStatus.SUSPENDED]
IMAGE_TAG = "streamable/image"
IMAGE_DIGEST_TAG = "streamable/image-digest"


class SociBackfillResource(dg.ConfigurableResource):
    """Which registry images the backfill indexes, and how (the same filters serve the push-event sensor)."""

    registry: str | None = Field(default=None, description="registry host; default $STREAMABLE_REGISTRY or the ECR registry")
    filters: list[str] = Field(default_factory=lambda: ["*:*"], description="'repository-glob:tag-glob' patterns")
    format: Literal["v2", "v1"] = "v2"
    span_size: int = Field(default=defaults.SOCI_SPAN_SIZE, gt=0)
    min_layer_size: int = Field(default=defaults.SOCI_MIN_LAYER_SIZE, ge=0)
    catalog: Literal["registry", "ecr"] = Field(default="registry", description="list images via the registry API or ECR")
    ecr: EcrResource | None = Field(default=None, description="the ECR resource when catalog='ecr'")
    scan_budget_s: float = Field(default=40.0, gt=0, le=55, description="time one scan sensor tick may spend")
    max_runs_per_tick: int = Field(default=200, ge=1, description="cap on runs one sensor tick or schedule requests")
    verify_sample: int = Field(default=4, ge=0, description="files read lazily to verify each result (0 = no check)")
    node_compat: str = Field(default="v0.12", description="v0.13+: prefetch artifacts from stored startup profiles")  # wire16
    prefetch: Literal["files", "ranges"] = "files"  # wire16

    def registry_host(self) -> str:
        """The registry the backfill scans and writes to."""
        if self.registry:
            return self.registry
        if self.catalog == "ecr" and self.ecr is not None:
            return self.ecr.get_registry().registry_host
        return os.environ.get("STREAMABLE_REGISTRY", "127.0.0.1:5055")

    def settings(self) -> BackfillSettings:
        return BackfillSettings(registry=self.registry_host(), filters=ImageFilter.parse(self.filters), format=self.format,
                                span_size=self.span_size, min_layer_size=self.min_layer_size,
                                node_compat=self.node_compat, prefetch=self.prefetch)  # wire16

    def client(self, registry: RegistryResource) -> RegistryClient:
        """A registry client (ECR: with a fresh token from the ecr resource)."""
        if self.catalog == "ecr" and self.ecr is not None:
            return self.ecr.get_registry().registry_client()
        return registry.client(self.registry_host())

    def image_catalog(self, client: RegistryClient) -> ImageCatalog:
        if self.catalog == "ecr":
            if self.ecr is None:
                raise ValueError("SociBackfillResource: catalog='ecr' needs the ecr resource (set SociBackfillResource.ecr)")
            return EcrCatalog(self.ecr.get_registry())
        return OciCatalog(client)

    def verifier(self, client: RegistryClient) -> VerifyFn | None:
        if self.verify_sample <= 0:
            return None

        def verify(ref: ImageRef) -> tuple[bool, str]:
            report = verify_image(client, ref, sample=self.verify_sample)
            return report.passed, report.failure or f"{report.files_checked} file(s) read lazily and matched"

        return verify


def _record_result(rec: StatusRecord) -> dg.MaterializeResult:
    """A finished image (indexed, already indexed, not indexable, superseded) as the partition's materialization."""
    md: dict[str, Any] = dict(rec.to_metadata())
    md["image"] = dg.MetadataValue.text(rec.image)
    return dg.MaterializeResult(metadata=md)


@dg.asset(
    key=BACKFILL_ASSET,
    partitions_def=REGISTRY_IMAGES,
    pool=defaults.SOCI_POOL,
    group_name=BACKFILL_GROUP,
    kinds={"soci", "oci"},
    description="SOCI index for one image already in the registry (partition = image; full reference in metadata).",
)
def soci_index_backfill(context: dg.AssetExecutionContext, registry: RegistryResource,
                        soci_backfill: SociBackfillResource) -> dg.MaterializeResult:
    """Index one image; outcomes other than FAILED are recorded (and not retried), FAILED fails the run."""
    settings = soci_backfill.settings()
    with soci_backfill.client(registry) as client:
        rec = index_image(client, settings.converter(client, context.log.info), context.partition_key, settings,
                          catalog=soci_backfill.image_catalog(client), verify=soci_backfill.verifier(client),
                          expected_digest=context.run.tags.get(IMAGE_DIGEST_TAG), log=context.log.info)
    if rec.status is ImageStatus.FAILED:
        raise dg.Failure(description=f"{rec.image}: {rec.reason}", metadata=rec.to_metadata())
    context.log.info(f"{rec.image}: {rec.status.value} {rec.reason}".rstrip())
    return _record_result(rec)


soci_index_image_job = dg.define_asset_job(
    "soci_index_image_job", selection=[soci_index_backfill],
    description="Index one registry image (one partition of soci_index_backfill).",
)


def _image_run(key: str, ref: str, digest: str, trigger: str, run_key: str | None) -> dg.RunRequest:
    return dg.RunRequest(partition_key=key, run_key=run_key,
                         tags={IMAGE_TAG: ref, IMAGE_DIGEST_TAG: digest, "streamable/trigger": trigger})


@dg.sensor(
    name="registry_image_scan_sensor",
    job=soci_index_image_job,
    minimum_interval_seconds=3600,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Scans the registry (resuming where the last tick stopped) and indexes images without a SOCI index.",
)
def registry_image_scan_sensor(context: dg.SensorEvaluationContext, registry: RegistryResource,
                               soci_backfill: SociBackfillResource) -> dg.SensorResult:
    """Adds a partition per new un-indexed image and requests its run; the cursor is where to resume."""
    state = json.loads(context.cursor) if context.cursor else {}
    settings = soci_backfill.settings()
    with soci_backfill.client(registry) as client:
        scan = scan_registry(client, soci_backfill.image_catalog(client), settings,
                             deadline=time.monotonic() + soci_backfill.scan_budget_s, resume_after=state.get("resume_after"))
    for err in scan.errors:
        context.log.warning(err)
    known = set(context.instance.get_dynamic_partitions(REGISTRY_IMAGES.name))
    new = [i for i in scan.pending if i.key not in known][: soci_backfill.max_runs_per_tick]
    runs = [_image_run(i.key, i.ref, i.digest, "registry-scan", f"scan:{i.key}") for i in new]
    summary = (f"scanned {scan.repositories} repositories ({'pass complete' if scan.complete else f'resuming after {scan.resume_after}'}), "
               f"{len(scan.images)} image(s), {len(scan.pending)} without a SOCI index, {len(new)} new")
    context.log.info(summary)
    return dg.SensorResult(
        run_requests=runs,
        dynamic_partitions_requests=[REGISTRY_IMAGES.build_add_request([i.key for i in new])] if new else [],
        cursor=json.dumps({"resume_after": scan.resume_after}),
        skip_reason=None if runs else summary,
    )


def retryable_keys(instance: dg.DagsterInstance, limit: int) -> list[str]:
    """Partitions never materialized (their runs failed or never ran) and with no run in flight."""
    keys = instance.get_dynamic_partitions(REGISTRY_IMAGES.name)
    done = instance.get_materialized_partitions(BACKFILL_ASSET)
    in_flight = {r.tags.get("dagster/partition") for r in instance.get_runs(
        dg.RunsFilter(job_name=soci_index_image_job.name, statuses=IN_PROGRESS))}
    return [k for k in keys if k not in done and k not in in_flight][:limit]


@dg.schedule(
    name="soci_backfill_retry_schedule",
    cron_schedule="0 3 * * *",
    job=soci_index_image_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Nightly: retry images whose indexing failed (not-indexable ones are recorded and left alone).",
)
def soci_backfill_retry_schedule(context: dg.ScheduleEvaluationContext, soci_backfill: SociBackfillResource):
    """One run per retryable partition, run_key per night so a retry is not swallowed by yesterday's key."""
    night = context.scheduled_execution_time.strftime("%Y-%m-%d")
    keys = retryable_keys(context.instance, soci_backfill.max_runs_per_tick)
    if not keys:
        return dg.SkipReason("no failed image to retry")
    return [dg.RunRequest(partition_key=k, run_key=f"retry:{night}:{k}", tags={"streamable/trigger": "nightly-retry"})
            for k in keys]


class BackfillNowConfig(dg.Config):
    """On-demand backfill of the whole registry in one run."""

    max_images: int | None = Field(default=None, description="stop after this many images (None = all)")


@dg.op(pool=defaults.SOCI_POOL, description="Scan the registry and index every image without a SOCI index, with one "
                                            "converter so shared layers are decompressed once.")
def soci_backfill_all(context: dg.OpExecutionContext, config: BackfillNowConfig, registry: RegistryResource,
                      soci_backfill: SociBackfillResource) -> dg.Output[dict]:
    """Adds a partition per image it indexes and records each outcome as that partition's materialization."""
    settings = soci_backfill.settings()
    instance = context.instance
    with soci_backfill.client(registry) as client:
        catalog = soci_backfill.image_catalog(client)
        scan = scan_registry(client, catalog, settings)
        for err in scan.errors:
            context.log.warning(err)
        done = instance.get_materialized_partitions(BACKFILL_ASSET)
        todo = [i for i in scan.pending if i.key not in done][: config.max_images]
        instance.add_dynamic_partitions(REGISTRY_IMAGES.name, [i.key for i in todo])
        context.log.info(f"{len(scan.images)} image(s) match, {len(scan.pending)} lack a SOCI index, {len(todo)} to do")
        records: list[StatusRecord] = []
        for rec in iter_backfill(client, catalog, settings, todo, verify=soci_backfill.verifier(client),
                                 log=context.log.info, indexed_repositories=scan.indexed_repositories):
            records.append(rec)
            if rec.status is ImageStatus.FAILED:
                context.log.error(f"{rec.image}: {rec.reason}")
                continue
            context.log_event(dg.AssetMaterialization(asset_key=BACKFILL_ASSET, partition=rec.key,
                                                      metadata=rec.to_metadata()))
    counts: dict[str, int] = {}
    for r in records:
        counts[r.status.value] = counts.get(r.status.value, 0) + 1
    failed = [r for r in records if r.status is ImageStatus.FAILED]
    summary = {"images": len(records), "layers_built": sum(r.layers_built for r in records), **counts}
    if failed:
        raise dg.Failure(description=f"{len(failed)} image(s) failed (retried by the nightly schedule): "
                                     + "; ".join(f"{r.image}: {r.reason}" for r in failed[:5]), metadata=summary)
    return dg.Output(summary, metadata=summary)


@dg.job(name="soci_backfill_job", description="On demand: scan the registry and index every image lacking a SOCI index.")
def soci_backfill_job() -> None:
    soci_backfill_all()


# ============================================================================================= push events


class SqsQueueResource(ResourceWithBoto3Configuration):
    """The SQS queue an EventBridge rule fills with ECR "ECR Image Action" events."""

    queue_url: str = Field(description="https://sqs.<region>.amazonaws.com/<account>/<queue>")
    aws_secret_access_key: str | None = Field(default=None, repr=False, description="pass as dg.EnvVar")
    aws_session_token: str | None = Field(default=None, repr=False, description="pass as dg.EnvVar")
    wait_time_s: int = Field(default=1, ge=0, le=20, description="long-poll wait of the first receive")
    max_messages_per_tick: int = Field(default=100, ge=1)
    visibility_timeout_s: int | None = Field(default=300, ge=1, description="how long received messages stay hidden")

    def client(self) -> Any:
        session = boto3.session.Session(profile_name=self.profile_name)
        return session.client(
            "sqs", region_name=self.region_name, use_ssl=self.use_ssl, verify=self.verify, endpoint_url=self.endpoint_url,
            aws_access_key_id=self.aws_access_key_id, aws_secret_access_key=self.aws_secret_access_key,
            aws_session_token=self.aws_session_token, config=construct_boto_client_retry_config(self.max_attempts),
        )


@dg.sensor(
    name="ecr_push_event_sensor",
    job=soci_index_image_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Indexes images pushed to ECR (EventBridge -> SQS), filtered by repository:tag globs.",
)
def ecr_push_event_sensor(context: dg.SensorEvaluationContext, sqs: SqsQueueResource,
                          soci_backfill: SociBackfillResource) -> dg.SensorResult:
    """Messages for images to index are deleted on the next tick, i.e. only after this tick's run requests (and
    cursor) were recorded; skipped and malformed ones are deleted right away."""
    state = json.loads(context.cursor) if context.cursor else {}
    client = sqs.client()
    recorded = list(state.get("delete") or [])
    for err in delete(client, sqs.queue_url, recorded):
        context.log.warning(f"could not delete a processed message (it will come back and be deduplicated): {err}")
    settings = soci_backfill.settings()
    messages = receive(client, sqs.queue_url, max_messages=sqs.max_messages_per_tick, wait_s=sqs.wait_time_s,
                       visibility_timeout_s=sqs.visibility_timeout_s)
    runs: list[dg.RunRequest] = []
    keys: list[str] = []
    keep: list[str] = []
    drop: list[str] = []
    for m in messages:
        d = decide(m.body, settings.filters, registry=settings.registry)
        if d.verdict is Verdict.INDEX and d.event is not None and d.event.tag:
            key = image_key(d.event.repository, d.event.tag, d.event.digest)
            if key not in keys:
                keys.append(key)
                runs.append(_image_run(key, d.event.reference, d.event.digest, "ecr-push", f"push:{key}"))
            keep.append(m.receipt_handle)
            context.log.info(f"message {m.message_id}: index {d.reason}")
        else:
            log = context.log.warning if d.verdict is Verdict.MALFORMED else context.log.info
            log(f"message {m.message_id}: {'dropped, malformed' if d.verdict is Verdict.MALFORMED else 'skipped'}: {d.reason}")
            drop.append(m.receipt_handle)
    for err in delete(client, sqs.queue_url, drop):
        context.log.warning(f"could not delete a skipped message: {err}")
    return dg.SensorResult(
        run_requests=runs,
        dynamic_partitions_requests=[REGISTRY_IMAGES.build_add_request(keys)] if keys else [],
        cursor=json.dumps({"delete": keep}),
        skip_reason=None if runs else f"{len(messages)} message(s), nothing to index",
    )


# ============================================================================================= builder cache GC


def _default_policy_files() -> list[str]:
    env = os.environ.get("STREAMABLE_GC_POLICY_FILES")
    if env is not None:
        return [p for p in env.split(",") if p.strip()]
    repo_file = Path(__file__).resolve().parent.parent / "deploy/builder/etc/buildkit/buildkitd.toml"
    return [str(repo_file)] if repo_file.exists() else []


class BuilderGcConfig(dg.Config):
    """Prune limits (BuildKit `prune` semantics) and the GC policy files to check."""

    keep_storage_bytes: int | None = Field(default=None, description="keep this much cache (most recently used)")
    keep_duration_s: int | None = Field(default=7 * 24 * 3600, description="keep cache used within this many seconds")
    free_storage_bytes: int | None = Field(default=None, description="prune until this much disk is free (buildctl)")
    policy_files: list[str] = Field(default_factory=_default_policy_files,
                                    description="buildkitd.toml / daemon.json files whose GC policy is checked")


@dg.op(description="Prune every builder's cache; disk usage before/after and freed bytes as metadata.")
def builder_cache_gc(context: dg.OpExecutionContext, config: BuilderGcConfig, builder: dg.ConfigurableResource) -> dg.Output[dict]:
    """One builder's failure is reported after the others were pruned."""
    warnings = check_gc_files(config.policy_files)
    for warning in warnings:
        context.log.warning(warning)
    report = prune_builders(builder.get_builder(), keep_storage_bytes=config.keep_storage_bytes,  # type: ignore[attr-defined]
                            keep_duration_s=config.keep_duration_s, free_storage_bytes=config.free_storage_bytes,
                            log=context.log.info)
    table = dg.MetadataValue.table(
        records=[dg.TableRecord(vars(row)) for row in report.rows()],
        schema=dg.TableSchema(columns=[dg.TableColumn(name, kind) for name, kind in GC_COLUMNS]),
    )
    md: dict[str, Any] = {
        "freed_bytes": report.freed_bytes,
        "bytes_before": sum(r.bytes_before for r in report.results),
        "bytes_after": sum(r.bytes_after for r in report.results),
        "builders_pruned": len(report.results),
        "builders_failed": len(report.failures),
        "policy_warnings": len(warnings),
        "builders": table,
    }
    if warnings:
        md["policy_warning_text"] = dg.MetadataValue.md("\n\n".join(f"- {w}" for w in warnings))
    value = {"results": [r.__dict__ for r in report.results], "failures": report.failures}
    if report.failures:
        raise dg.Failure(description="prune failed on " + "; ".join(f"{k}: {v}" for k, v in report.failures.items()),
                         metadata={k: v for k, v in md.items() if k != "policy_warning_text"})
    return dg.Output(value, metadata=md)


@dg.job(name="builder_cache_gc_job", description="Prune the build cache of every builder.")
def builder_cache_gc_job() -> None:
    builder_cache_gc()


builder_cache_gc_schedule = dg.ScheduleDefinition(
    name="builder_cache_gc_schedule", cron_schedule="30 2 * * *", job=builder_cache_gc_job,
    default_status=dg.DefaultScheduleStatus.RUNNING, description="Nightly builder cache GC.",
)


# ============================================================================================= definitions


def automation_defs(*, ecr: Any = None) -> dg.Definitions:
    """Sensors, schedules, jobs and assets of issue 5, merged into the code location by pipelines/definitions.py.

    `ecr`: the EcrResource of the code location (EKS); when given, the backfill lists images through ECR.
    Settings from the environment: STREAMABLE_PUSH_QUEUE_URL (+ AWS_REGION) for the push-event sensor,
    STREAMABLE_SOCI_FILTERS (comma-separated repo:tag globs), STREAMABLE_BACKFILL_REGISTRY.
    """
    if ecr is None and os.environ.get("STREAMABLE_ENV") == "eks":
        from pipelines.resource_defs.eks import eks_resources  # noqa: PLC0415

        ecr = eks_resources().get("ecr")
    filters = [f for f in os.environ.get("STREAMABLE_SOCI_FILTERS", "*:*").split(",") if f.strip()]
    backfill = SociBackfillResource(registry=os.environ.get("STREAMABLE_BACKFILL_REGISTRY") or None, filters=filters,
                                    catalog="ecr" if ecr is not None else "registry", ecr=ecr)
    git_password = os.environ.get("STREAMABLE_GIT_PASSWORD")
    resources: dict[str, Any] = {
        "git": GitRemotesResource(username=os.environ.get("STREAMABLE_GIT_USERNAME") or None,
                                  password=dg.EnvVar("STREAMABLE_GIT_PASSWORD") if git_password else None),
        "soci_backfill": backfill,
    }
    queue = os.environ.get("STREAMABLE_PUSH_QUEUE_URL")
    sensors = [git_push_sensor, registry_image_scan_sensor]
    if queue:
        resources["sqs"] = SqsQueueResource(queue_url=queue, region_name=os.environ.get("AWS_REGION"))
        sensors.append(ecr_push_event_sensor)
    return dg.Definitions(
        assets=[soci_index_backfill],
        jobs=[soci_index_image_job, soci_backfill_job, builder_cache_gc_job],
        sensors=sensors,
        schedules=[soci_backfill_retry_schedule, builder_cache_gc_schedule],
        resources=resources,
    )
