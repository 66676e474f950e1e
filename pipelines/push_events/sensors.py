"""The ECR push-event sensor: one backfill run per pushed image that matches the filters."""

import json

import dagster as dg

from pipelines.backfill.assets import REGISTRY_IMAGES, image_run
from pipelines.backfill.jobs import soci_index_image_job
from pipelines.resource_defs.backfill import SociBackfillResource
from pipelines.resource_defs.sqs import SqsQueueResource
from resources.aws.push_events import Verdict, decide, delete, receive
from resources.release.catalog import image_key


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
                runs.append(image_run(key, d.event.reference, d.event.digest, "ecr-push", f"push:{key}"))
            keep.append(m.receipt_handle)
            context.log.info(f"message {m.message_id}: index {d.reason}")
        else:
            malformed = d.verdict is Verdict.MALFORMED
            log = context.log.warning if malformed else context.log.info
            log(f"message {m.message_id}: {'dropped, malformed' if malformed else 'skipped'}: {d.reason}")
            drop.append(m.receipt_handle)
    for err in delete(client, sqs.queue_url, drop):
        context.log.warning(f"could not delete a skipped message: {err}")
    return dg.SensorResult(
        run_requests=runs,
        dynamic_partitions_requests=[REGISTRY_IMAGES.build_add_request(keys)] if keys else [],
        cursor=json.dumps({"delete": keep}),
        skip_reason=None if runs else f"{len(messages)} message(s), nothing to index",
    )
