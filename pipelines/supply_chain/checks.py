"""The blocking check between soci_index and release: the image lazy-loads by the node's rules."""

import dagster as dg

from pipelines.metadata import short_digest, sized, table
from pipelines.resource_defs.base import CanaryBase, RegistryResource, TargetsResource
from pipelines.supply_chain import startup
from pipelines.supply_chain.values import SociImage
from resources.oci.refs import ImageRef
from resources.soci.verify import verify_image

VERIFY_CHECK = "lazy_pull_verifies"
SOCI_INDEX = dg.AssetKey("soci_index")


def build_checks(partitions: dg.PartitionsDefinition) -> list[dg.AssetChecksDefinition]:
    """The verification check of the soci_index asset, for the targets' partitions."""

    @dg.asset_check(
        asset=SOCI_INDEX,
        name=VERIFY_CHECK,
        blocking=True,
        partitions_def=partitions,
        description="Finds the SOCI index the way a node does and lazy-reads real files through zTOC checkpoints.",
    )
    def lazy_pull_verifies(
        context: dg.AssetCheckExecutionContext,
        soci_index: SociImage,
        targets: TargetsResource,
        registry: RegistryResource,
        canary: CanaryBase,
    ) -> dg.AssetCheckResult:
        target = targets.load().get(context.op_execution_context.partition_key)
        digest = soci_index.image_index_digest
        ref = ImageRef(registry=soci_index.registry, repository=soci_index.repository, digest=digest)
        with registry.client(ref.registry) as client:
            report = verify_image(
                client,
                ref,
                sample=target.verify.sample,
                required_files=list(target.verify.required_files),
                quick=False,
                startup_files=startup.profiled_paths(client, soci_index),
            )
        passed, reason = bool(report.passed), report.failure or ""
        canary_meta: dict = {}
        if passed and target.verify.canary.enabled:
            try:
                canary_meta = canary.run_canary(
                    str(ref),
                    command=list(target.verify.canary.command),
                    args=list(target.verify.canary.args),
                    timeout_s=target.verify.canary.timeout_s,
                )
            except Exception as exc:  # noqa: BLE001 - any canary failure fails the check with its message
                passed, reason = False, f"canary: {exc}"
        files = [dict(vars(f), platform=p.platform) for p in report.platforms for f in p.files]
        metadata: dict = {
            **canary_meta,  # already named canary_* (CanaryResult.metadata)
            **startup.check_metadata(soci_index),  # to_start: what a cold start fetches against a full pull
            "verified_digest": digest,
            "proof": dg.MetadataValue.md("```\n" + report.summary() + "\n```"),
            "files_checked": dg.MetadataValue.text(str(report.files_checked)),
            "bytes": table(
                [
                    {
                        "what": "fetched by the lazy reads",
                        "bytes": report.lazy_bytes_fetched,
                        "size": sized(report.lazy_bytes_fetched),
                    },
                    {
                        "what": "layers those reads touched",
                        "bytes": report.lazy_layer_bytes,
                        "size": sized(report.lazy_layer_bytes),
                    },
                    {
                        "what": "all image layers",
                        "bytes": report.image_layer_bytes,
                        "size": sized(report.image_layer_bytes),
                    },
                ],
                [("what", str, ""), ("bytes", int, "exact"), ("size", str, "")],
            ),
            "files": table(
                [{**f, "size_h": sized(int(f["size"])) if f.get("size") is not None else None} for f in files],
                [
                    ("platform", str, ""),
                    ("name", str, "file read"),
                    ("size_h", str, "file size"),
                    ("why", str, "why it was picked"),
                    ("spans_fetched", int, ""),
                    ("bytes_fetched", int, ""),
                    ("lazy", bool, "read through zTOC checkpoints"),
                ],
            ),
            "image": dg.MetadataValue.text(f"{ref.registry}/{ref.repository}@{short_digest(digest)}"),
        }
        if reason:
            metadata["reason"] = reason
        return dg.AssetCheckResult(
            passed=passed,
            severity=dg.AssetCheckSeverity.ERROR,
            description=None if passed else f"verification failed: {reason}",
            metadata=metadata,
        )

    return [lazy_pull_verifies]
