"""Registry push events: parse ECR "ECR Image Action" events from SQS, filter them like the AWS SOCI Index Builder."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from fnmatch import fnmatchcase
from typing import Any, Protocol

from resources.defaults import SOCI_TAG_SUFFIX
from resources.errors import StreamableError
from resources.oci.media_types import SOCI_ARTIFACT_TYPES
from resources.registry import is_referrers_tag
from resources.release.tags import is_candidate_tag

ECR_SOURCE = "aws.ecr"
ECR_IMAGE_ACTION = "ECR Image Action"
SQS_MAX_BATCH = 10
_ACCOUNT_RE = re.compile(r"^[0-9]{12}$")
_REGION_RE = re.compile(r"^[a-z]{2}(-[a-z]+)+-[0-9]+$")
_REPO_RE = re.compile(r"^(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*$")
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


class MalformedEventError(StreamableError, ValueError):
    """A queue message is not a well-formed ECR image push event; the message says which field is wrong."""


@dataclass(frozen=True)
class ImageFilter:
    """`repository:tag` glob patterns (fnmatch, case-sensitive), as in the AWS SOCI Index Builder; default `*:*`."""

    patterns: tuple[str, ...] = ("*:*",)

    def __post_init__(self) -> None:
        if not self.patterns:
            raise ValueError("image filter: give at least one 'repository:tag' pattern (e.g. '*:*')")
        for p in self.patterns:
            if ":" not in p or not p.rsplit(":", 1)[0] or not p.rsplit(":", 1)[1]:
                raise ValueError(f"image filter {p!r}: expected 'repository-glob:tag-glob', e.g. 'prod*:latest'")

    @classmethod
    def parse(cls, spec: str | Iterable[str]) -> ImageFilter:
        """From a comma-separated string (`prod*:latest,team/*:*`) or a list of patterns."""
        items = spec.split(",") if isinstance(spec, str) else list(spec)
        return cls(tuple(p.strip() for p in items if p.strip()))

    def matches(self, repository: str, tag: str) -> bool:
        """True when `repository:tag` matches a pattern."""
        return any(fnmatchcase(f"{repository}:{tag}", p) for p in self.patterns)

    def may_match_repository(self, repository: str) -> bool:
        """True when some tag of `repository` could match (lets a scan skip whole repositories)."""
        return any(fnmatchcase(repository, p.rsplit(":", 1)[0]) for p in self.patterns)


def is_soci_output(tag: str | None, artifact_media_type: str | None = None) -> bool:
    """True for what streamable itself pushes: `-soci` tags, SOCI index artifacts, `sha256-<hex>` referrers tags,
    and the build pipeline's candidate tags (indexed by the pipeline itself, never by the backfill)."""
    if artifact_media_type in SOCI_ARTIFACT_TYPES or is_candidate_tag(tag):
        return True
    return tag is not None and (tag.endswith(SOCI_TAG_SUFFIX) or is_referrers_tag(tag))


@dataclass(frozen=True)
class ImagePushEvent:
    """A successful image push to ECR."""

    event_id: str
    account: str
    region: str
    repository: str
    digest: str
    tag: str | None
    manifest_media_type: str | None = None
    artifact_media_type: str | None = None

    @property
    def registry(self) -> str:
        """The ECR registry host of the push."""
        suffix = "amazonaws.com.cn" if self.region.startswith("cn-") else "amazonaws.com"
        return f"{self.account}.dkr.ecr.{self.region}.{suffix}"

    @property
    def reference(self) -> str:
        """`registry/repository:tag@digest` (the tag left out when the push was untagged)."""
        tag = f":{self.tag}" if self.tag else ""
        return f"{self.registry}/{self.repository}{tag}@{self.digest}"


def _unwrap(body: str) -> dict[str, Any]:
    """The event dict from an SQS body: EventBridge delivers it as is; through SNS it is in `Message`."""
    try:
        doc = json.loads(body)
    except (json.JSONDecodeError, TypeError) as exc:
        raise MalformedEventError(f"message body is not JSON ({exc})") from None
    if isinstance(doc, dict) and doc.get("Type") == "Notification" and isinstance(doc.get("Message"), str):
        return _unwrap(doc["Message"])
    if not isinstance(doc, dict):
        raise MalformedEventError("message body is not a JSON object")
    return doc


def parse_push_event(body: str) -> ImagePushEvent | None:
    """An SQS message body -> the push it announces; None for a valid ECR event that is not a successful push.

    Raises MalformedEventError (naming the field) for anything that is not an ECR image action event.
    """
    event = _unwrap(body)
    if event.get("source") != ECR_SOURCE:
        raise MalformedEventError(f"field 'source' is {event.get('source')!r}, expected {ECR_SOURCE!r}")
    if event.get("detail-type") != ECR_IMAGE_ACTION:
        raise MalformedEventError(f"field 'detail-type' is {event.get('detail-type')!r}, expected {ECR_IMAGE_ACTION!r}")
    detail = event.get("detail")
    if not isinstance(detail, dict):
        raise MalformedEventError("field 'detail' must be a JSON object")
    if detail.get("action-type") != "PUSH" or detail.get("result") != "SUCCESS":
        return None
    account, region = event.get("account"), event.get("region")
    if not isinstance(account, str) or not _ACCOUNT_RE.match(account):
        raise MalformedEventError(f"field 'account' is {account!r}, expected a 12-digit AWS account id")
    if not isinstance(region, str) or not _REGION_RE.match(region):
        raise MalformedEventError(f"field 'region' is {region!r}, expected an AWS region")
    repo, digest, tag = detail.get("repository-name"), detail.get("image-digest"), detail.get("image-tag") or None
    if not isinstance(repo, str) or not _REPO_RE.match(repo):
        raise MalformedEventError(f"field 'detail.repository-name' is {repo!r}, expected a repository name")
    if not isinstance(digest, str) or not _DIGEST_RE.match(digest):
        raise MalformedEventError(f"field 'detail.image-digest' is {digest!r}, expected sha256:<64 hex>")
    if tag is not None and (not isinstance(tag, str) or not _TAG_RE.match(tag)):
        raise MalformedEventError(f"field 'detail.image-tag' is {tag!r}, expected an image tag")
    return ImagePushEvent(
        event_id=str(event.get("id") or ""),
        account=account,
        region=region,
        repository=repo,
        digest=digest,
        tag=tag,
        manifest_media_type=_opt_str(detail.get("manifest-media-type")),
        artifact_media_type=_opt_str(detail.get("artifact-media-type")),
    )


def _opt_str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


class Verdict(str, Enum):
    """What to do with one queue message."""

    INDEX = "index"
    SKIP = "skip"
    MALFORMED = "malformed"


@dataclass(frozen=True)
class Decision:
    """The verdict on one message, why, and the push (when it parsed)."""

    verdict: Verdict
    reason: str
    event: ImagePushEvent | None = None


def decide(body: str, image_filter: ImageFilter, *, registry: str | None = None) -> Decision:
    """Index, skip (with the reason) or drop as malformed; `registry` limits indexing to one ECR registry host."""
    try:
        event = parse_push_event(body)
    except MalformedEventError as exc:
        return Decision(Verdict.MALFORMED, str(exc))
    if event is None:
        return Decision(Verdict.SKIP, "not a successful PUSH")
    where = f"{event.repository}:{event.tag or '<untagged>'}@{event.digest[:19]}"
    if event.tag is None:
        return Decision(Verdict.SKIP, f"{where}: untagged push", event)
    if is_soci_output(event.tag, event.artifact_media_type):
        return Decision(Verdict.SKIP, f"{where}: a SOCI output (ours or the SOCI Index Builder's)", event)
    if registry is not None and event.registry != registry:
        return Decision(Verdict.SKIP, f"{where}: pushed to {event.registry}, this deployment indexes {registry}", event)
    if not image_filter.matches(event.repository, event.tag):
        return Decision(Verdict.SKIP, f"{where}: matches no filter in {','.join(image_filter.patterns)}", event)
    return Decision(Verdict.INDEX, f"{where}: matches the filters", event)


# --------------------------------------------------------------------------------------------- SQS


class SqsClient(Protocol):
    """The part of a boto3 SQS client used here."""

    def receive_message(self, **kwargs: Any) -> dict[str, Any]: ...

    def delete_message_batch(self, **kwargs: Any) -> dict[str, Any]: ...


@dataclass(frozen=True)
class QueueMessage:
    """One received SQS message."""

    message_id: str
    receipt_handle: str
    body: str


def receive(sqs: SqsClient, queue_url: str, *, max_messages: int = 100, wait_s: int = 1,
            visibility_timeout_s: int | None = None) -> list[QueueMessage]:
    """Receive up to `max_messages` (in batches of 10) until the queue looks empty."""
    out: list[QueueMessage] = []
    while len(out) < max_messages:
        kwargs: dict[str, Any] = {
            "QueueUrl": queue_url,
            "MaxNumberOfMessages": min(SQS_MAX_BATCH, max_messages - len(out)),
            "WaitTimeSeconds": wait_s if not out else 0,
        }
        if visibility_timeout_s is not None:
            kwargs["VisibilityTimeout"] = visibility_timeout_s
        batch = sqs.receive_message(**kwargs).get("Messages") or []
        out += [QueueMessage(m["MessageId"], m["ReceiptHandle"], m.get("Body") or "") for m in batch]
        if not batch:
            break
    return out


def delete(sqs: SqsClient, queue_url: str, receipt_handles: Sequence[str]) -> list[str]:
    """Delete messages by receipt handle (batches of 10); returns the error text of each handle that failed."""
    errors: list[str] = []
    for start in range(0, len(receipt_handles), SQS_MAX_BATCH):
        chunk = receipt_handles[start:start + SQS_MAX_BATCH]
        res = sqs.delete_message_batch(
            QueueUrl=queue_url, Entries=[{"Id": str(i), "ReceiptHandle": h} for i, h in enumerate(chunk)]
        )
        errors += [f"{f.get('Code')}: {f.get('Message')}" for f in res.get("Failed") or []]
    return errors
