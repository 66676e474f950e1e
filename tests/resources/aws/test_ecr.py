"""EcrRegistry against moto in server mode, plus botocore's real error path against a tiny AWS-JSON HTTP server."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from pipelines.resource_defs.eks import EcrResource
from resources.aws.ecr import EcrError, EcrRegistry, RepositorySettings, check_lifecycle_policy
from tests.support.cloud import MOTO_ACCOUNT, MOTO_REGION

REGISTRY_HOST = f"{MOTO_ACCOUNT}.dkr.ecr.{MOTO_REGION}.amazonaws.com"
MOTO_TOKEN_EXPIRY = datetime(2015, 1, 1, tzinfo=UTC)  # what moto answers for every token
KEEP_RELEASES = {
    "rules": [{
        "rulePriority": 1,
        "description": "expire candidate tags after 30 days",
        "selection": {"tagStatus": "tagged", "tagPatternList": ["build-*"], "countType": "sinceImagePushed",
                      "countUnit": "days", "countNumber": 30},
        "action": {"type": "expire"},
    }]
}


class Clock:
    """A settable UTC clock for token-expiry tests."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def count_calls(client: Any, operation: str) -> list[int]:
    """Count real API calls of `operation` through botocore's event system."""
    counter = [0]

    def hook(**_kw: Any) -> None:
        counter[0] += 1

    client.meta.events.register(f"before-call.ecr.{operation}", hook)
    return counter


def manifest(layer_seed: str, size: int = 1000) -> str:
    return json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": 10,
                   "digest": "sha256:" + hashlib.sha256(f"cfg{layer_seed}".encode()).hexdigest()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "size": size,
                    "digest": "sha256:" + hashlib.sha256(layer_seed.encode()).hexdigest()}],
    })


def test_repository_is_created_with_the_target_settings(ecr_client):
    logs: list[str] = []
    reg = EcrRegistry(ecr_client, log=logs.append)
    kms = f"arn:aws:kms:{MOTO_REGION}:{MOTO_ACCOUNT}:key/0f0e0d0c-1111-2222-3333-444455556666"
    settings = RepositorySettings(scan_on_push=True, tag_mutability="IMMUTABLE", encryption="KMS", kms_key=kms,
                                  lifecycle_policy=KEEP_RELEASES, resource_tags={"team": "ml"})
    state = reg.ensure_repository("team/app", settings)
    assert state.created and state.uri == f"{REGISTRY_HOST}/team/app" and state.changed == ("lifecycle policy",)
    repo = ecr_client.describe_repositories(repositoryNames=["team/app"])["repositories"][0]
    assert repo["imageTagMutability"] == "IMMUTABLE"
    assert repo["imageScanningConfiguration"] == {"scanOnPush": True}
    assert repo["encryptionConfiguration"] == {"encryptionType": "KMS", "kmsKey": kms}
    policy = ecr_client.get_lifecycle_policy(repositoryName="team/app")["lifecyclePolicyText"]
    assert json.loads(policy) == KEEP_RELEASES
    tags = ecr_client.list_tags_for_resource(resourceArn=repo["repositoryArn"])["tags"]
    assert tags == [{"Key": "team", "Value": "ml"}]
    assert any("team/app created" in line for line in logs)
    # Running again converges without changes.
    again = reg.ensure_repository("team/app", settings)
    assert not again.created and again.changed == ()


def test_existing_repository_is_brought_in_line(ecr_client):
    ecr_client.create_repository(repositoryName="team/api")  # MUTABLE, no scan, AES256
    reg = EcrRegistry(ecr_client)
    state = reg.ensure_repository("team/api", RepositorySettings(
        scan_on_push=True, tag_mutability="IMMUTABLE_WITH_EXCLUSION", mutability_exclusions=("latest", "dev-*")))
    assert not state.created
    assert state.changed == ("tag mutability MUTABLE -> IMMUTABLE_WITH_EXCLUSION", "scan on push False -> True")
    repo = ecr_client.describe_repositories(repositoryNames=["team/api"])["repositories"][0]
    assert repo["imageTagMutability"] == "IMMUTABLE_WITH_EXCLUSION"
    assert sorted(f["filter"] for f in repo["imageTagMutabilityExclusionFilters"]) == ["dev-*", "latest"]
    assert repo["imageScanningConfiguration"]["scanOnPush"] is True
    with pytest.raises(
        EcrError, match=r"repository 'team/api' exists with encryption AES256 but the target asks for KMS"
    ):
        reg.ensure_repository("team/api", RepositorySettings(encryption="KMS"))


def test_lifecycle_policies_that_could_delete_soci_indexes_are_refused(ecr_client):
    untagged = {"rules": [{"rulePriority": 1, "selection": {"tagStatus": "untagged", "countType": "imageCountMoreThan",
                                                             "countNumber": 10}, "action": {"type": "expire"}}]}
    with pytest.raises(EcrError, match=r"priority 1 expires untagged images.*containers-roadmap#2613"):
        RepositorySettings(lifecycle_policy=untagged)
    with pytest.raises(EcrError, match="tagged rules need tagPatternList or tagPrefixList"):
        check_lifecycle_policy({"rules": [{"rulePriority": 1, "selection": {"tagStatus": "tagged"}}]})
    state = EcrRegistry(ecr_client).ensure_repository(
        "team/lax", RepositorySettings(lifecycle_policy=untagged, allow_untagged_expiry=True))
    assert state.changed == ("lifecycle policy",)
    assert json.loads(ecr_client.get_lifecycle_policy(repositoryName="team/lax")["lifecyclePolicyText"]) == untagged


def test_invalid_settings_name_the_setting():
    with pytest.raises(EcrError, match="IMMUTABLE_WITH_EXCLUSION needs mutability_exclusions"):
        RepositorySettings(tag_mutability="IMMUTABLE_WITH_EXCLUSION")
    with pytest.raises(EcrError, match="kms_key is only used with encryption='KMS'"):
        RepositorySettings(kms_key="arn:aws:kms:x")
    with pytest.raises(EcrError, match="filter 'bad tag'"):
        RepositorySettings(tag_mutability="MUTABLE_WITH_EXCLUSION", mutability_exclusions=("bad tag",))


def test_token_is_cached_and_refreshed_before_expiry(ecr_client, aws_creds):
    calls = count_calls(ecr_client, "GetAuthorizationToken")
    clock = Clock(MOTO_TOKEN_EXPIRY - timedelta(hours=12))
    reg = EcrRegistry(ecr_client, refresh_margin=timedelta(hours=1), clock=clock)
    auth = reg.authorization()
    assert (auth.registry, auth.username, auth.password) == (REGISTRY_HOST, "AWS", f"{MOTO_ACCOUNT}-auth-token")
    assert auth.expires_at == MOTO_TOKEN_EXPIRY
    assert auth.password not in repr(auth) and aws_creds.secret_key not in repr(reg)
    clock.now += timedelta(hours=10, minutes=59)
    reg.authorization()
    reg.docker_credentials()
    assert reg.registry_host == REGISTRY_HOST
    assert calls[0] == 1  # still cached 1 h 1 min before expiry
    clock.now += timedelta(minutes=2)  # now inside the 1 h refresh margin
    reg.authorization()
    assert calls[0] == 2
    reg.authorization()
    assert calls[0] == 2
    (cred,) = reg.docker_credentials()
    assert base64.b64decode(cred.auth_field()).decode() == f"AWS:{MOTO_ACCOUNT}-auth-token"


def test_refresh_margin_is_configurable(ecr_client):
    calls = count_calls(ecr_client, "GetAuthorizationToken")
    clock = Clock(MOTO_TOKEN_EXPIRY - timedelta(hours=12))
    reg = EcrRegistry(ecr_client, refresh_margin=timedelta(hours=6), clock=clock)
    reg.authorization()
    clock.now += timedelta(hours=6, seconds=1)
    reg.authorization()
    assert calls[0] == 2
    with pytest.raises(EcrError, match="must be shorter than the 12 h token lifetime"):
        EcrRegistry(ecr_client, refresh_margin=timedelta(hours=12))


def test_image_listing_for_the_backfill(ecr_client):
    ecr_client.create_repository(repositoryName="team/app")
    for i, tag in enumerate(["v1.0.0", "v1.1.0", "latest"]):
        ecr_client.put_image(
            repositoryName="team/app", imageManifest=manifest(f"layer-{i}", 1000 * (i + 1)), imageTag=tag
        )
    reg = EcrRegistry(ecr_client)
    ids = list(reg.list_images("team/app", tag_status="TAGGED"))
    assert sorted(i["imageTag"] for i in ids) == ["latest", "v1.0.0", "v1.1.0"]
    assert all(i["imageDigest"].startswith("sha256:") for i in ids)
    details = {d["imageTags"][0]: d for d in reg.describe_images("team/app")}
    assert set(details) == {"v1.0.0", "v1.1.0", "latest"}
    assert {d["imagePushedAt"].tzinfo is not None for d in details.values()} == {True}
    with pytest.raises(
        EcrError, match=r"ECR ListImages for repository 'team/missing' failed: RepositoryNotFoundException"
    ):
        list(reg.list_images("team/missing"))


def test_immutable_tags_send_soci_output_to_a_suffixed_tag(ecr_client):
    reg = EcrRegistry(ecr_client)
    reg.ensure_repository("team/frozen", RepositorySettings(tag_mutability="IMMUTABLE"))
    reg.ensure_repository("team/open", RepositorySettings(tag_mutability="MUTABLE"))
    reg.ensure_repository("team/mixed", RepositorySettings(tag_mutability="IMMUTABLE_WITH_EXCLUSION",
                                                          mutability_exclusions=("latest", "dev-*")))
    frozen = reg.soci_tag_for("team/frozen", "v1.2.3")
    assert (frozen.tag, frozen.suffixed) == ("v1.2.3-soci", True)
    assert "immutable tags (IMMUTABLE)" in frozen.message and "'v1.2.3-soci'" in frozen.message
    assert reg.soci_tag_for("team/open", "v1.2.3").tag == "v1.2.3"
    assert [reg.soci_tag_for("team/mixed", t).tag for t in ("latest", "dev-42", "v2")] == [
        "latest",
        "dev-42",
        "v2-soci",
    ]
    with pytest.raises(EcrError, match="already carries the -soci suffix"):
        reg.soci_tag_for("team/frozen", "v1.2.3-soci")
    with pytest.raises(EcrError, match="'team/none' does not exist"):
        reg.soci_tag_for("team/none", "v1")
    # Why: ECR refuses to move an immutable tag, but the suffixed tag is new.
    ecr_client.put_image(repositoryName="team/frozen", imageManifest=manifest("plain"), imageTag="v1.2.3")
    with pytest.raises(ClientError) as refused:
        ecr_client.put_image(repositoryName="team/frozen", imageManifest=manifest("soci"), imageTag="v1.2.3")
    # AWS answers ImageTagAlreadyExistsException; moto 5.2 names it ImageAlreadyExistsException.
    assert refused.value.response["Error"]["Code"] in ("ImageTagAlreadyExistsException", "ImageAlreadyExistsException")
    ecr_client.put_image(repositoryName="team/frozen", imageManifest=manifest("soci"), imageTag=frozen.tag)


def test_ecr_resource_builds_a_working_registry(moto_endpoint, ecr_client, aws_creds):
    resource = EcrResource(region_name=MOTO_REGION, endpoint_url=moto_endpoint, aws_access_key_id=aws_creds.access_key,
                           aws_secret_access_key=aws_creds.secret_key, tag_mutability="IMMUTABLE")
    assert aws_creds.secret_key not in repr(resource)
    reg = resource.get_registry()
    assert resource.get_registry() is reg  # one token cache per resource instance
    state = reg.ensure_repository("team/svc", resource.repository_settings())
    assert state.created and reg.registry_host == REGISTRY_HOST


# -- botocore's real error and pagination paths against a tiny AWS JSON 1.1 server ---------------------------

@contextmanager
def aws_json_server(answer: Callable[[str, dict], tuple[int, dict]]) -> Iterator[tuple[str, list[tuple[str, dict]]]]:
    """An HTTP server speaking ECR's JSON protocol: answer(operation, body) -> (status, json)."""
    seen: list[tuple[str, dict]] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            op = self.headers.get("X-Amz-Target", "").rsplit(".", 1)[-1]
            seen.append((op, body))
            status, doc = answer(op, body)
            data = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/x-amz-json-1.1")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def test_throttling_ends_in_a_clear_message_naming_the_repository(aws_creds):
    def answer(op: str, body: dict) -> tuple[int, dict]:
        return 400, {"__type": "ThrottlingException", "message": "Rate exceeded"}

    with aws_json_server(answer) as (url, seen):
        resource = EcrResource(region_name=MOTO_REGION, endpoint_url=url, max_attempts=3,
                               aws_access_key_id=aws_creds.access_key, aws_secret_access_key=aws_creds.secret_key)
        with pytest.raises(EcrError) as exc:
            resource.get_registry().ensure_repository("team/app")
    text = str(exc.value)
    assert "ECR DescribeRepositories for repository 'team/app' failed: ThrottlingException: Rate exceeded" in text
    # botocore's standard retries really ran; its `max_attempts` counts retries, so 3 means 4 requests.
    assert [op for op, _ in seen] == ["DescribeRepositories"] * 4
    assert "throttled by AWS after 4 attempt(s)" in text
    assert exc.value.repository == "team/app" and exc.value.code == "ThrottlingException"
    assert aws_creds.secret_key not in text


def test_access_denied_names_the_repository_and_action(aws_creds):
    denied = ("User: arn:aws:sts::123456789012:assumed-role/dagster/i-0abc is not authorized to perform: "
              "ecr:CreateRepository on resource: arn:aws:ecr:us-east-1:123456789012:repository/team/app")

    def answer(op: str, body: dict) -> tuple[int, dict]:
        if op == "DescribeRepositories":
            return 400, {"__type": "RepositoryNotFoundException", "message": "repository does not exist"}
        return 400, {"__type": "AccessDeniedException", "message": denied}

    with aws_json_server(answer) as (url, seen):
        client = boto3.client("ecr", region_name=MOTO_REGION, endpoint_url=url, aws_access_key_id=aws_creds.access_key,
                              aws_secret_access_key=aws_creds.secret_key)
        with pytest.raises(EcrError) as exc:
            EcrRegistry(client).ensure_repository("team/app", RepositorySettings(tag_mutability="IMMUTABLE"))
    text = str(exc.value)
    assert text.startswith(
        "ECR CreateRepository for repository 'team/app' failed: AccessDeniedException: User: arn:aws:sts"
    )
    assert "the IAM role needs ecr:CreateRepository on this repository" in text
    assert seen[1][1]["imageTagMutability"] == "IMMUTABLE"
    assert aws_creds.secret_key not in text


def test_listing_follows_pagination(aws_creds):
    pages = {None: ([{"imageDigest": "sha256:" + "1" * 64, "imageTag": "a"}], "page-2"),
             "page-2": ([{"imageDigest": "sha256:" + "2" * 64, "imageTag": "b"}], "page-3"),
             "page-3": ([{"imageDigest": "sha256:" + "3" * 64, "imageTag": "c"}], None)}

    def answer(op: str, body: dict) -> tuple[int, dict]:
        items, nxt = pages[body.get("nextToken")]
        return 200, {"imageIds": items, **({"nextToken": nxt} if nxt else {})}

    with aws_json_server(answer) as (url, seen):
        client = boto3.client("ecr", region_name=MOTO_REGION, endpoint_url=url, aws_access_key_id=aws_creds.access_key,
                              aws_secret_access_key=aws_creds.secret_key)
        tags = [i["imageTag"] for i in EcrRegistry(client).list_images("team/app", tag_status="TAGGED", page_size=1)]
    assert tags == ["a", "b", "c"]
    assert [b.get("nextToken") for _, b in seen] == [None, "page-2", "page-3"]
    assert seen[0][1]["filter"] == {"tagStatus": "TAGGED"} and seen[0][1]["maxResults"] == 1


def test_ecr_registry_resource_links_the_repository_console_page(moto_endpoint, ecr_client, aws_creds):
    from pipelines.resource_defs.base import RegistryResource
    from pipelines.resource_defs.eks import EcrRegistryResource

    ecr = EcrResource(region_name=MOTO_REGION, endpoint_url=moto_endpoint, aws_access_key_id=aws_creds.access_key,
                      aws_secret_access_key=aws_creds.secret_key)
    assert EcrRegistryResource(ecr=ecr).ui_url("team/app") == (
        f"https://{MOTO_REGION}.console.aws.amazon.com/ecr/repositories/private/{MOTO_ACCOUNT}/team/app"
        f"?region={MOTO_REGION}")
    assert RegistryResource().ui_url("team/app") is None  # a plain OCI registry has no known UI: text, not a link
