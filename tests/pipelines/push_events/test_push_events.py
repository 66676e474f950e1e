"""ECR push events: parsing and filtering, and the SQS sensor against a moto server (real boto3 over HTTP)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pytest
from moto.server import ThreadedMotoServer

from pipelines.push_events.sensors import ecr_push_event_sensor
from pipelines.resource_defs.backfill import SociBackfillResource
from pipelines.resource_defs.sqs import SqsQueueResource
from resources.aws.push_events import ImageFilter, MalformedEventError, Verdict, decide, parse_push_event
from resources.release.catalog import image_key, parse_image_key
from tests.support.net import free_port
from tests.support.sensors import SensorHarness

ACCOUNT, REGION = "123456789012", "us-east-1"
REGISTRY = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"


def event(repo: str = "team/app", tag: str | None = "v1", digest: str | None = None, *, action: str = "PUSH",
          result: str = "SUCCESS", artifact: str | None = None, account: str = ACCOUNT) -> str:
    detail = {"result": result, "repository-name": repo, "image-digest": digest or "sha256:" + "ab" * 32,
              "action-type": action, "manifest-media-type": "application/vnd.oci.image.manifest.v1+json"}
    if tag is not None:
        detail["image-tag"] = tag
    if artifact:
        detail["artifact-media-type"] = artifact
    return json.dumps({"version": "0", "id": "e-1", "detail-type": "ECR Image Action", "source": "aws.ecr",
                       "account": account, "time": "2026-01-01T00:00:00Z", "region": REGION, "resources": [],
                       "detail": detail})


def test_parse_push_event_direct_and_through_sns() -> None:
    ev = parse_push_event(event())
    assert ev is not None and ev.repository == "team/app" and ev.tag == "v1" and ev.registry == REGISTRY
    assert ev.reference == f"{REGISTRY}/team/app:v1@sha256:{'ab' * 32}"
    wrapped = json.dumps({"Type": "Notification", "MessageId": "m", "Message": event(tag="v2")})
    assert parse_push_event(wrapped).tag == "v2"
    assert parse_push_event(event(action="DELETE")) is None
    assert parse_push_event(event(result="FAILURE")) is None


@pytest.mark.parametrize(("body", "field"), [
    ("not json", "not JSON"),
    ("[1, 2]", "not a JSON object"),
    (json.dumps({"source": "aws.s3"}), "'source'"),
    (event(digest="sha256:123"), "detail.image-digest"),
    (event(repo="Team/App"), "detail.repository-name"),
    (event(tag="-bad"), "detail.image-tag"),
    (event(account="12"), "'account'"),
])
def test_malformed_events_name_the_field(body: str, field: str) -> None:
    with pytest.raises(MalformedEventError, match=field.replace(".", r"\.").replace("'", "'")):
        parse_push_event(body)


def test_filters_and_soci_outputs_like_the_soci_index_builder() -> None:
    f = ImageFilter.parse("prod*:latest,team/*:v*")
    assert f.matches("prod-api", "latest") and not f.matches("prod-api", "dev")
    assert f.matches("team/app", "v1") and not f.matches("Team/app", "v1")
    with pytest.raises(ValueError, match="repository-glob:tag-glob"):
        ImageFilter.parse("no-colon")
    everything = ImageFilter()
    assert decide(event(), everything).verdict is Verdict.INDEX
    assert decide(event(tag=None), everything).verdict is Verdict.SKIP
    assert decide(event(tag="v1-soci"), everything).verdict is Verdict.SKIP
    assert decide(event(tag="sha256-" + "a" * 64), everything).verdict is Verdict.SKIP
    assert decide(event(artifact="application/vnd.amazon.soci.index.v2+json"), everything).verdict is Verdict.SKIP
    assert decide(event(), everything, registry="999999999999.dkr.ecr.us-east-1.amazonaws.com").verdict is Verdict.SKIP
    assert decide(event(repo="other"), f).verdict is Verdict.SKIP
    assert decide("garbage", everything).verdict is Verdict.MALFORMED


@pytest.fixture
def moto_sqs(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[object, str, str]]:
    """A moto server on a free loopback port and a queue in it: (boto3 client, endpoint, queue url)."""
    for k, v in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(k, v)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    # moto's backends are process-wide: start from an empty account whatever other tests created
    httpx.post(f"{endpoint}/moto-api/reset", timeout=10).raise_for_status()
    try:
        sqs = boto3.client("sqs", region_name=REGION, endpoint_url=endpoint)
        url = sqs.create_queue(QueueName="ecr-push-events")["QueueUrl"]
        yield sqs, endpoint, url
    finally:
        server.stop()


def _counts(sqs, url: str) -> tuple[int, int]:
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages",
                                                                   "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]), int(attrs["ApproximateNumberOfMessagesNotVisible"])


def _harness(tmp_path: Path, endpoint: str, url: str, *, visibility: int = 300) -> SensorHarness:
    resources = {
        "sqs": SqsQueueResource(queue_url=url, endpoint_url=endpoint, region_name=REGION, wait_time_s=0,
                                visibility_timeout_s=visibility),
        "soci_backfill": SociBackfillResource(registry=REGISTRY, filters=["team/*:*"]),
    }
    return SensorHarness(tmp_path / "dagster-home", ecr_push_event_sensor, resources, job_name="soci_index_image_job")


def test_sqs_sensor_requests_indexing_and_deletes_only_after_recording(tmp_path: Path, moto_sqs) -> None:
    sqs, endpoint, url = moto_sqs
    d1, d2 = "sha256:" + "11" * 32, "sha256:" + "22" * 32
    bodies = [event("team/app", "v1", d1), event("team/app", "v1", d1),  # a duplicate delivery
              event("team/api", "2.0", d2), event("team/app", "v1-soci"), event("other/x", "1"),
              event(tag=None), "{not json", event(action="DELETE")]
    for b in bodies:
        sqs.send_message(QueueUrl=url, MessageBody=b)
    h = _harness(tmp_path, endpoint, url)

    t1 = h.tick()
    keys = {image_key("team/app", "v1", d1), image_key("team/api", "2.0", d2)}
    assert {r.partition_key for r in t1.requested} == keys
    assert {r.run_key for r in t1.requested} == {f"push:{k}" for k in keys}
    adds = [k for req in t1.result.dynamic_partitions_requests for k in req.partition_keys]
    assert set(adds) == keys and all(parse_image_key(k).repository.startswith("team/") for k in adds)
    assert {r.tags["streamable/image-digest"] for r in t1.requested} == {d1, d2}
    # Skipped and malformed messages are gone; the 3 accepted ones stay in flight until the requests are recorded.
    assert _counts(sqs, url) == (0, 3)

    t2 = h.tick()
    assert t2.raw_keys == []
    assert _counts(sqs, url) == (0, 0)


def test_sqs_sensor_converges_after_a_crash_between_launching_and_saving_the_cursor(tmp_path: Path, moto_sqs) -> None:
    sqs, endpoint, url = moto_sqs
    digest = "sha256:" + "33" * 32
    key = image_key("team/app", "v9", digest)
    sqs.send_message(QueueUrl=url, MessageBody=event("team/app", "v9", digest))
    h = _harness(tmp_path, endpoint, url, visibility=1)
    crashed = h.tick(store_cursor=False)  # runs launched, cursor (the receipt handle to delete) lost
    assert crashed.keys == [f"push:{key}"]
    assert _counts(sqs, url) == (0, 1)  # not deleted: nothing recorded that it was handled
    time.sleep(1.5)  # its visibility timeout passes; the message comes back
    again = h.tick()
    assert again.raw_keys == [f"push:{key}"] and again.requested == []  # same run_key: no second run
    h.tick()
    assert _counts(sqs, url) == (0, 0)


def test_ecr_catalog_pages_through_moto(moto_sqs) -> None:
    """The backfill's ECR listing (boto3 paging via resources.aws.ecr.EcrRegistry) against the same moto server."""
    from resources.aws.ecr import EcrRegistry
    from resources.release.catalog import EcrCatalog

    _, endpoint, _ = moto_sqs
    ecr = boto3.client("ecr", region_name=REGION, endpoint_url=endpoint)
    ecr.create_repository(repositoryName="team/app")
    ecr.create_repository(repositoryName="team/locked", imageTagMutability="IMMUTABLE")
    for i in range(130):  # more than one describe_images page (EcrRegistry pages by 100)
        manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                               "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                          "digest": "sha256:" + f"{i:064x}", "size": 2}, "layers": []})
        ecr.put_image(repositoryName="team/app", imageManifest=manifest, imageTag=f"v{i}")
    catalog = EcrCatalog(EcrRegistry(ecr))
    assert catalog.repositories() == ["team/app", "team/locked"]
    images = catalog.images("team/app")
    assert len(images) == 130 and {i.tag for i in images} == {f"v{i}" for i in range(130)}
    assert all(i.digest and i.digest.startswith("sha256:") for i in images)
    assert catalog.tag_immutable("team/locked", "v1-soci") and not catalog.tag_immutable("team/app", "v1-soci")
