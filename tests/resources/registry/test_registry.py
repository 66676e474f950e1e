"""RegistryClient against real distribution registries (plain, htpasswd Basic, JWT token auth) and fault proxies."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import random
import socket
import tarfile
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from resources.oci.refs import compute_digest
from resources.registry import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    MANIFEST_MEDIA_TYPES,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    DigestMismatchError,
    Manifest,
    RegistryAuthError,
    RegistryClient,
    RegistryError,
    RegistryNotFoundError,
    RegistryUnavailableError,
    referrers_tag,
)
from tests.conftest import DockerEngine, RunningRegistry, free_port
from tests.support.registry_helpers.fault_proxy import Fault, FaultProxy, fault_proxy
from tests.support.registry_helpers.token_server import TokenServer, start_token_registry

REPO = "team/app"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"


def make_client(addr: str, **kwargs: object) -> RegistryClient:
    kwargs.setdefault("retries", 2)
    kwargs.setdefault("backoff", 0.01)
    kwargs.setdefault("timeout", 10.0)
    return RegistryClient(addr, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def client(registry: RunningRegistry) -> Iterator[RegistryClient]:
    with make_client(registry.addr) as c:
        yield c


@pytest.fixture
def proxy(registry: RunningRegistry) -> Iterator[FaultProxy]:
    with fault_proxy(registry.addr, with_store=True) as p:
        yield p


def blob_path(reg: RunningRegistry, digest: str) -> Path:
    """Where distribution's filesystem driver keeps a blob's bytes."""
    hexpart = digest.split(":", 1)[1]
    return reg.root / "data" / "docker/registry/v2/blobs/sha256" / hexpart[:2] / hexpart / "data"


def push_image(c: RegistryClient, repo: str, *, layer: bytes, oci: bool = True, tag: str | None = "v1",
               extra: dict | None = None) -> Manifest:
    """Push a config + one layer + manifest; returns the manifest as pushed."""
    cfg = c.push_blob(repo, json.dumps({"architecture": "amd64", "os": "linux"}).encode(),
                      media_type=OCI_CONFIG if oci else DOCKER_CONFIG)
    lay = c.push_blob(repo, layer, media_type=OCI_LAYER if oci else DOCKER_LAYER)
    media_type = OCI_MANIFEST if oci else DOCKER_MANIFEST
    doc = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": cfg.to_dict(),
        "layers": [lay.to_dict()],
        **(extra or {}),
    }
    manifest = Manifest.from_data(json.dumps(doc).encode(), media_type)
    assert c.put_manifest(repo, tag or manifest.digest, manifest.data, media_type) == manifest.digest
    return manifest


# ---- blobs -----------------------------------------------------------------------------------


def test_push_blob_monolithic_skips_existing(registry: RunningRegistry, proxy: FaultProxy) -> None:
    data = os.urandom(4096)
    with make_client(proxy.addr) as c:
        desc = c.push_blob(REPO, data, media_type=OCI_LAYER)
        assert desc == Descriptor(OCI_LAYER, compute_digest(data), 4096)
        assert c.blob_size(REPO, desc.digest) == 4096
        assert c.get_blob(REPO, desc.digest) == data
        assert c.push_blob(REPO, data, digest=desc.digest) == Descriptor("application/octet-stream", desc.digest, 4096)
    assert proxy.count("POST", r"/blobs/uploads/$") == 1  # the second push only HEADed
    assert proxy.count("PUT", r"/blobs/uploads/") == 1
    assert blob_path(registry, desc.digest).read_bytes() == data


def test_push_blob_rejects_wrong_given_digest(client: RegistryClient) -> None:
    wrong = compute_digest(b"other")
    with pytest.raises(DigestMismatchError, match=wrong):
        client.push_blob(REPO, b"data", digest=wrong)
    assert client.blob_size(REPO, wrong) is None


def test_blob_size_of_missing_blob_is_none(client: RegistryClient) -> None:
    assert client.blob_size(REPO, compute_digest(b"nothing here")) is None
    with pytest.raises(RegistryNotFoundError, match=REPO):
        client.get_blob(REPO, compute_digest(b"nothing here"))


def test_chunked_upload_from_generator(proxy: FaultProxy) -> None:
    data = os.urandom(300_000)
    digest = compute_digest(data)

    def pieces() -> Iterator[bytes]:
        for i in range(0, len(data), 7_000):
            yield data[i : i + 7_000]

    with make_client(proxy.addr) as c:
        desc = c.push_blob_stream(REPO, pieces(), digest, len(data), chunk_size=64 * 1024)
        assert desc.digest == digest and desc.size == len(data)
        assert c.get_blob(REPO, digest) == data
    assert proxy.count("PATCH", r"/blobs/uploads/") == 5  # 4 chunks of 10 pieces (70000 >= 65536) + the tail
    assert proxy.count("PUT", r"/blobs/uploads/") == 1


def test_chunked_upload_with_wrong_digest_is_cancelled(client: RegistryClient) -> None:
    data = os.urandom(10_000)
    claimed = compute_digest(b"something else")
    with pytest.raises(DigestMismatchError) as exc:
        client.push_blob_stream(REPO, [data], claimed, len(data), chunk_size=4096)
    assert claimed in str(exc.value) and compute_digest(data) in str(exc.value) and "cancelled" in str(exc.value)
    assert client.blob_size(REPO, claimed) is None
    assert client.blob_size(REPO, compute_digest(data)) is None
    with pytest.raises(DigestMismatchError, match="9999 bytes"):
        client.push_blob_stream(REPO, [data[:9999]], compute_digest(data), len(data))


def test_stream_and_open_blob(client: RegistryClient) -> None:
    data = os.urandom(1_000_000)
    digest = client.push_blob(REPO, data).digest
    with client.stream_blob(REPO, digest, chunk_size=64 * 1024) as chunks:
        parts = list(chunks)
    assert b"".join(parts) == data
    assert len(parts) >= 15 and max(len(p) for p in parts) <= 64 * 1024
    with client.open_blob(REPO, digest, chunk_size=32 * 1024) as f:
        assert f.read(10) == data[:10]
        assert f.read(100_000) == data[10:100_010]
        assert f.read() == data[100_010:]
        assert f.read(1) == b""


def test_stream_blob_stops_early_without_reading_everything(client: RegistryClient) -> None:
    data = os.urandom(2_000_000)
    digest = client.push_blob(REPO, data).digest
    with client.stream_blob(REPO, digest, chunk_size=16 * 1024) as chunks:
        first = next(chunks)
    assert first == data[: len(first)]
    # the connection was released: the client keeps working
    assert client.get_blob_range(REPO, digest, 5, 9) == data[5:9]


def test_large_blobs_stream_without_buffering(client: RegistryClient) -> None:
    """16 MiB up (chunked) and down (streamed) while Python never holds more than a few chunks."""
    size, piece = 16 << 20, 256 << 10

    def pieces() -> Iterator[bytes]:
        rng = random.Random(7)
        for _ in range(size // piece):
            yield rng.randbytes(piece)

    hasher = hashlib.sha256()
    for p in pieces():
        hasher.update(p)
    digest = f"sha256:{hasher.hexdigest()}"
    tracemalloc.start()
    try:
        client.push_blob_stream(REPO, pieces(), digest, size, chunk_size=1 << 20)
        _, upload_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        total = 0
        with client.stream_blob(REPO, digest, chunk_size=1 << 20) as chunks:
            for chunk in chunks:
                total += len(chunk)
        _, download_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == size
    assert upload_peak < 6 << 20, upload_peak
    assert download_peak < 6 << 20, download_peak


def test_get_blob_range(client: RegistryClient) -> None:
    data = os.urandom(100_000)
    digest = client.push_blob(REPO, data).digest
    for start, end in [(0, 1), (0, 100_000), (1234, 5678), (99_999, 100_000), (50_000, 50_000)]:
        assert client.get_blob_range(REPO, digest, start, end) == data[start:end]
    with pytest.raises(ValueError, match=r"\[10, 5\)"):
        client.get_blob_range(REPO, digest, 10, 5)
    with pytest.raises(RegistryError, match="outside blob"):
        client.get_blob_range(REPO, digest, 200_000, 200_010)


def test_get_blob_range_refuses_a_registry_that_ignores_range(proxy: FaultProxy, client: RegistryClient) -> None:
    data = os.urandom(50_000)
    digest = client.push_blob(REPO, data).digest
    proxy.add(Fault(path=r"/blobs/sha256:", method="GET", kind="ignore_range", times=5))
    with make_client(proxy.addr) as c:
        with pytest.raises(RegistryError, match="ignored the Range request for bytes 100-199"):
            c.get_blob_range(REPO, digest, 100, 200)
        assert c.get_blob_range(REPO, digest, 0, 50_000) == data  # whole blob asked: 200 is fine


def test_download_digest_mismatch_is_detected(registry: RunningRegistry, client: RegistryClient) -> None:
    data = os.urandom(70_000)
    digest = client.push_blob(REPO, data).digest
    path = blob_path(registry, digest)
    corrupted = bytearray(data)
    corrupted[12_345] ^= 0xFF
    path.write_bytes(bytes(corrupted))
    with pytest.raises(DigestMismatchError) as exc:
        client.get_blob(REPO, digest)
    assert digest in str(exc.value) and REPO in str(exc.value) and registry.addr in str(exc.value)
    with pytest.raises(DigestMismatchError):
        with client.stream_blob(REPO, digest, chunk_size=8192) as chunks:
            for _ in chunks:
                pass
    with client.open_blob(REPO, digest) as f:
        with pytest.raises(DigestMismatchError):
            f.read()


def test_broken_download_resumes_with_range(proxy: FaultProxy, client: RegistryClient) -> None:
    data = os.urandom(400_000)
    digest = client.push_blob(REPO, data).digest
    proxy.add(Fault(path=r"/blobs/sha256:", method="GET", kind="truncate"))
    with make_client(proxy.addr) as c, c.stream_blob(REPO, digest, chunk_size=16 * 1024) as chunks:
        assert b"".join(chunks) == data
    ranged = [s for s in proxy.seen if s.method == "GET" and "range" in s.headers]
    assert (
        len(ranged) == 1
        and ranged[0].headers["range"].startswith("bytes=")
        and ranged[0].headers["range"] != "bytes=0-"
    )


def test_blob_redirect_drops_authorization_cross_origin(auth_registry: RunningRegistry) -> None:
    data = os.urandom(30_000)
    assert auth_registry.username and auth_registry.password
    creds = {"username": auth_registry.username, "password": auth_registry.password}
    with fault_proxy(auth_registry.addr, with_store=True) as p, make_client(p.addr, **creds) as c:
        digest = c.push_blob(REPO, data).digest
        p.add(Fault(path=r"/blobs/sha256:", method="GET", kind="redirect_to_store", times=3))
        assert c.get_blob(REPO, digest) == data
        assert c.get_blob_range(REPO, digest, 10, 20) == data[10:20]
        assert p.store is not None
        assert len(p.store.seen) == 2
        assert all("authorization" not in s.headers for s in p.store.seen)
        assert all(
            s.headers.get("authorization", "").startswith("Basic ") for s in p.seen if "/blobs/sha256:" in s.path
        )


def test_redirect_to_plain_http_off_loopback_is_refused(proxy: FaultProxy, client: RegistryClient) -> None:
    digest = client.push_blob(REPO, b"payload").digest
    proxy.add(Fault(path=r"/blobs/sha256:", method="GET", kind="redirect", location="http://blobs.example.com/x"))
    with make_client(proxy.addr) as c:
        with pytest.raises(RegistryError, match="refusing to pull blob via plain-HTTP location on blobs.example.com"):
            c.get_blob(REPO, digest)


# ---- manifests -------------------------------------------------------------------------------


@pytest.mark.parametrize("oci", [True, False], ids=["oci", "docker"])
def test_manifest_put_get_head(client: RegistryClient, oci: bool) -> None:
    manifest = push_image(client, REPO, layer=os.urandom(1000), oci=oci)
    media_type = OCI_MANIFEST if oci else DOCKER_MANIFEST
    for ref in ("v1", manifest.digest):
        got = client.get_manifest(REPO, ref)
        assert got == manifest
        assert got.json()["mediaType"] == media_type
        assert client.head_manifest(REPO, ref) == Descriptor(media_type, manifest.digest, len(manifest.data))
    assert client.head_manifest(REPO, "nope") is None
    assert client.head_manifest(REPO, compute_digest(b"absent")) is None
    with pytest.raises(RegistryNotFoundError, match=f"{REPO}:nope"):
        client.get_manifest(REPO, "nope")


@pytest.mark.parametrize(("index_type", "oci"), [(OCI_INDEX, True), (DOCKER_MANIFEST_LIST, False)])
def test_index_of_two_platforms(client: RegistryClient, index_type: str, oci: bool) -> None:
    amd = push_image(client, REPO, layer=b"amd64 layer", oci=oci, tag=None)
    arm = push_image(client, REPO, layer=b"arm64 layer", oci=oci, tag=None)
    index = {"schemaVersion": 2, "mediaType": index_type, "manifests": [
        {**amd.descriptor().to_dict(), "platform": {"architecture": "amd64", "os": "linux"}},
        {**arm.descriptor().to_dict(), "platform": {"architecture": "arm64", "os": "linux"}},
    ]}
    data = json.dumps(index).encode()
    digest = client.put_manifest(REPO, "multi", data, index_type)
    got = client.get_manifest(REPO, "multi")
    assert got.is_index and got.media_type == index_type and got.digest == digest and got.data == data
    assert [m["digest"] for m in got.json()["manifests"]] == [amd.digest, arm.digest]
    if oci:  # a client that cannot take an OCI index gets a clear error naming the tag
        with pytest.raises(RegistryError) as exc:
            client.get_manifest(REPO, "multi", accept=(OCI_MANIFEST,))
        assert f"{REPO}:multi" in str(exc.value) and exc.value.status is not None
    else:  # distribution serves the linux/amd64 entry of a Docker list to clients that cannot take lists
        assert client.get_manifest(REPO, "multi", accept=(DOCKER_MANIFEST,)) == amd


def test_put_manifest_rejects_inconsistent_input(client: RegistryClient) -> None:
    manifest = push_image(client, REPO, layer=b"layer")
    with pytest.raises(ValueError, match="declares mediaType"):
        client.put_manifest(REPO, "v2", manifest.data, DOCKER_MANIFEST)
    with pytest.raises(ValueError, match="hashes to"):
        client.put_manifest(REPO, compute_digest(b"other"), manifest.data, OCI_MANIFEST)
    with pytest.raises(ValueError, match="invalid tag"):
        client.put_manifest(REPO, "bad tag", manifest.data, OCI_MANIFEST)
    with pytest.raises(ValueError, match="invalid repository"):
        client.put_manifest("Team/App", "v1", manifest.data, OCI_MANIFEST)


def test_manifest_referencing_missing_blob_is_refused_by_registry(client: RegistryClient) -> None:
    doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
           "config": {"mediaType": OCI_CONFIG, "digest": compute_digest(b"missing"), "size": 7}, "layers": []}
    with pytest.raises(RegistryError) as exc:
        client.put_manifest(REPO, "broken", json.dumps(doc).encode(), OCI_MANIFEST)
    assert exc.value.status == 400 and "MANIFEST_BLOB_UNKNOWN" in str(exc.value)


def test_manifest_digest_mismatch_is_detected(registry: RunningRegistry, client: RegistryClient) -> None:
    manifest = push_image(client, REPO, layer=b"layer")
    path = blob_path(registry, manifest.digest)
    path.write_bytes(manifest.data.replace(b'"schemaVersion": 2', b'"schemaVersion":  2'))
    with pytest.raises(DigestMismatchError, match=f"not the requested {manifest.digest}"):
        client.get_manifest(REPO, manifest.digest)
    with pytest.raises(DigestMismatchError, match="Docker-Content-Digest"):
        client.get_manifest(REPO, "v1")


def test_delete_manifest(client: RegistryClient) -> None:
    manifest = push_image(client, REPO, layer=b"layer")
    client.delete_manifest(REPO, manifest.digest)
    assert client.head_manifest(REPO, manifest.digest) is None
    assert client.head_manifest(REPO, "v1") is None
    with pytest.raises(RegistryNotFoundError, match=manifest.digest):
        client.delete_manifest(REPO, manifest.digest)


# ---- listings, mounts, referrers -------------------------------------------------------------


def test_tags_pagination(proxy: FaultProxy) -> None:
    """Link-header pagination over 5 tags with n=2 (the proxy pages the real list: distribution 2.8 ignores n)."""
    proxy.add(Fault(path=r"/tags/list", method="GET", kind="paginate_tags", times=100))
    with make_client(proxy.addr) as c:
        manifest = push_image(c, REPO, layer=b"layer", tag=None)
        tags = ["a1", "b2", "c3", "d4", "e5"]
        for tag in tags:
            c.put_manifest(REPO, tag, manifest.data, OCI_MANIFEST)
        assert sorted(c.list_tags(REPO, page_size=2)) == tags
        with pytest.raises(RegistryNotFoundError, match="team/none"):
            c.list_tags("team/none")
    assert proxy.count("GET", r"/tags/list") == 4  # 3 pages + the missing repository
    assert proxy.count("GET", r"/tags/list\?.*last=") == 2


def test_catalog_pagination(proxy: FaultProxy) -> None:
    repos = ["alpha/one", "beta/two", "gamma/three"]
    with make_client(proxy.addr) as c:
        for repo in repos:
            push_image(c, repo, layer=repo.encode())
        assert c.catalog(page_size=2) == repos
    assert proxy.count("GET", r"/_catalog") == 2  # distribution pages the catalog itself


def test_cross_repository_mount(client: RegistryClient) -> None:
    data = os.urandom(5000)
    digest = client.push_blob("team/source", data).digest
    assert client.mount_blob("team/target", digest, "team/source") is True
    assert client.blob_size("team/target", digest) == 5000
    assert client.get_blob("team/target", digest) == data
    missing = compute_digest(b"not anywhere")
    assert client.mount_blob("team/target", missing, "team/source") is False
    assert client.blob_size("team/target", missing) is None


def test_referrers_fall_back_to_the_tag_schema(client: RegistryClient) -> None:
    subject = push_image(client, REPO, layer=b"image layer")
    assert client.supports_referrers(REPO) is False
    assert client.referrers(REPO, subject.digest) == []

    def referrer(artifact_type: str, payload: bytes) -> Manifest:
        cfg = client.push_blob(REPO, b"{}", media_type="application/vnd.oci.empty.v1+json")
        lay = client.push_blob(REPO, payload)
        doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": artifact_type,
               "config": {**cfg.to_dict(), "mediaType": "application/vnd.oci.empty.v1+json"},
               "layers": [lay.to_dict()], "subject": subject.descriptor().to_dict(),
               "annotations": {"org.example.kind": artifact_type}}
        return Manifest.from_data(json.dumps(doc).encode(), OCI_MANIFEST)

    sig = referrer("application/vnd.example.signature", b"sig")
    soci = referrer("application/vnd.amazon.soci.index.v1+json", b"ztoc")
    assert client.push_referrer(REPO, sig.data, OCI_MANIFEST) == sig.digest
    assert client.push_referrer(REPO, soci.data, OCI_MANIFEST) == soci.digest
    assert client.push_referrer(REPO, soci.data, OCI_MANIFEST) == soci.digest  # idempotent

    found = client.referrers(REPO, subject.digest)
    assert [r["digest"] for r in found] == [sig.digest, soci.digest]
    assert found[1] == {"mediaType": OCI_MANIFEST, "digest": soci.digest, "size": len(soci.data),
                        "artifactType": "application/vnd.amazon.soci.index.v1+json",
                        "annotations": {"org.example.kind": "application/vnd.amazon.soci.index.v1+json"}}
    only = client.referrers(REPO, subject.digest, artifact_type="application/vnd.amazon.soci.index.v1+json")
    assert [r["digest"] for r in only] == [soci.digest]
    tag_index = client.get_manifest(REPO, referrers_tag(subject.digest))
    assert tag_index.media_type == OCI_INDEX and len(tag_index.json()["manifests"]) == 2
    assert referrers_tag(subject.digest) in client.list_tags(REPO)
    with pytest.raises(ValueError, match="has no subject"):
        client.push_referrer(REPO, subject.data, OCI_MANIFEST)


# ---- auth ------------------------------------------------------------------------------------


def test_basic_auth(auth_registry: RunningRegistry) -> None:
    assert auth_registry.username and auth_registry.password
    with make_client(auth_registry.addr, username=auth_registry.username, password=auth_registry.password) as c:
        c.ping()
        manifest = push_image(c, REPO, layer=b"secret layer")
        assert c.get_manifest(REPO, "v1") == manifest
        assert auth_registry.password not in repr(c)


def test_basic_auth_failure_is_clear_and_leaks_nothing(auth_registry: RunningRegistry) -> None:
    wrong = "wrong-" + os.urandom(8).hex()
    with make_client(auth_registry.addr, username="streamable", password=wrong) as c:
        with pytest.raises(RegistryAuthError) as exc:
            c.get_manifest(REPO, "v1")
        text = f"{exc.value} {exc.value!r} {exc.value.__cause__!r} {exc.value.__context__!r} {c!r}"
        assert auth_registry.addr in str(exc.value) and REPO in str(exc.value) and "401" in str(exc.value)
        assert "pull manifest" in str(exc.value) and "'streamable'" in str(exc.value)
        assert wrong not in text
        assert base64.b64encode(f"streamable:{wrong}".encode()).decode() not in text
    with make_client(auth_registry.addr) as anonymous:
        with pytest.raises(RegistryAuthError, match="anonymously"):
            anonymous.ping()


def exception_chain(exc: BaseException) -> list[BaseException]:
    """The exception and everything reachable through __cause__ / __context__."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is not None and e not in seen:
            seen.append(e)
            todo += [e.__cause__, e.__context__]
    return seen


def test_errors_carry_no_request_with_credentials(auth_registry: RunningRegistry) -> None:
    assert auth_registry.username and auth_registry.password
    with make_client(auth_registry.addr, username=auth_registry.username, password=auth_registry.password,
                     retries=1) as c:
        c.ping()  # Basic scheme learned: the next requests carry the Authorization header
        auth_registry.stop()
        with pytest.raises(RegistryUnavailableError) as exc:
            c.get_manifest(REPO, "v1")
    assert auth_registry.addr in str(exc.value)
    assert exception_chain(exc.value) == [exc.value]  # no httpx exception (holding the request) attached
    assert auth_registry.password not in repr(exc.value)


def test_unreachable_token_server(token_registry: tuple[RunningRegistry, TokenServer]) -> None:
    reg, tokens = token_registry
    tokens.close()
    with make_client(reg.addr, username="alice", password=tokens.users["alice"], retries=1) as c:
        with pytest.raises(RegistryUnavailableError) as exc:
            c.ping()
    assert "token server 127.0.0.1 unreachable" in str(exc.value) and reg.addr in str(exc.value)
    assert exception_chain(exc.value) == [exc.value]
    assert tokens.users["alice"] not in str(exc.value)


def test_docker_config_credentials(auth_registry: RunningRegistry, tmp_path: Path) -> None:
    assert auth_registry.username and auth_registry.password
    user, password = auth_registry.username, auth_registry.password
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    for entry in ({"auth": auth}, {"username": user, "password": password}):
        path = tmp_path / "config.json"
        path.write_text(json.dumps({"auths": {f"http://{auth_registry.addr}/v2/": entry}}))
        with make_client(auth_registry.addr, docker_config=path) as c:
            c.ping()
            assert c.push_blob(REPO, b"via docker config").size == 17
            assert password not in repr(c)
    path.write_text(json.dumps({"auths": {auth_registry.addr: {"username": user, "password": "nope"}}}))
    with make_client(auth_registry.addr, docker_config=path) as c:
        with pytest.raises(RegistryAuthError, match="credentials: docker config"):
            c.ping()
    # explicit credentials win over the config file
    with make_client(auth_registry.addr, docker_config=path, username=user, password=password) as c:
        c.ping()


def test_credentials_provider_is_asked_again_after_a_rejection(auth_registry: RunningRegistry) -> None:
    assert auth_registry.username and auth_registry.password
    answers = [(auth_registry.username, "expired-token"), (auth_registry.username, auth_registry.password)]
    calls: list[int] = []

    def provider() -> tuple[str, str]:
        calls.append(1)
        return answers[min(len(calls), len(answers)) - 1]

    with make_client(auth_registry.addr, credentials_provider=provider) as c:
        assert len(calls) == 1
        assert c.push_blob(REPO, b"rotated").size == 7
        assert len(calls) == 2
        assert c.get_blob(REPO, compute_digest(b"rotated")) == b"rotated"
        assert len(calls) == 2

    calls.clear()
    with make_client(
        auth_registry.addr, credentials_provider=lambda: (calls.append(1), ("streamable", "never-valid"))[1]
    ) as c:
        with pytest.raises(RegistryAuthError, match="credentials provider"):
            c.ping()
    assert len(calls) == 2  # asked once more, then a clear error instead of a loop


@pytest.fixture
def token_registry(tmp_path: Path) -> Iterator[tuple[RunningRegistry, TokenServer]]:
    tokens = TokenServer(users={"alice": "alice-" + os.urandom(6).hex()}, refresh_tokens={"refresh-xyz": "alice"})
    reg = start_token_registry(tmp_path / "token-registry", tokens)
    yield reg, tokens
    reg.stop()
    tokens.close()


def test_bearer_token_flow_with_real_token_auth(token_registry: tuple[RunningRegistry, TokenServer]) -> None:
    reg, tokens = token_registry
    password = tokens.users["alice"]
    with make_client(reg.addr, username="alice", password=password) as c:
        manifest = push_image(c, REPO, layer=b"token layer")
        fetched = len(tokens.requests)
        assert c.get_manifest(REPO, "v1") == manifest
        assert c.head_manifest(REPO, manifest.digest) is not None
        assert len(tokens.requests) == fetched  # cached per scope
        assert {"repository:team/app:pull,push"} <= {s for r in tokens.requests for s in r.scopes}
        assert all(r.user == "alice" for r in tokens.requests)
        assert c.mount_blob("team/other", json.loads(manifest.data)["layers"][0]["digest"], REPO) is True
        assert {"repository:team/other:pull,push", "repository:team/app:pull"} <= set(tokens.requests[-1].scopes)
        c.delete_manifest(REPO, manifest.digest)  # distribution wants the "*" action the challenge names
        assert password not in repr(c)
    with make_client(reg.addr) as anonymous:
        assert anonymous.get_blob(REPO, json.loads(manifest.data)["layers"][0]["digest"]) == b"token layer"
        with pytest.raises(RegistryAuthError) as exc:
            anonymous.push_blob(REPO, b"not allowed")
        assert "anonymously" in str(exc.value) and REPO in str(exc.value)
    answers = iter([("alice", "stale"), ("alice", password)])
    with make_client(reg.addr, credentials_provider=lambda: next(answers)) as rotated:
        assert rotated.get_blob(REPO, json.loads(manifest.data)["config"]["digest"])  # token fetch 401 -> refresh
    with make_client(reg.addr, username="alice", password="wrong-password-123") as bad:
        with pytest.raises(RegistryAuthError) as exc:
            bad.ping()
        assert (
            "token server" in str(exc.value) and "401" in str(exc.value) and "wrong-password-123" not in str(exc.value)
        )


def test_bearer_token_expiry_and_identity_token(
    token_registry: tuple[RunningRegistry, TokenServer], tmp_path: Path
) -> None:
    reg, tokens = token_registry
    tokens.expires_in = 2  # cached for 1 s (half the lifetime is kept as margin)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"auths": {reg.addr: {"auth": base64.b64encode(b"alice:ignored").decode(),
                                                       "identitytoken": "refresh-xyz"}}}))
    with make_client(reg.addr, docker_config=config) as c:
        digest = c.push_blob(REPO, b"refreshed").digest
        assert {r.grant for r in tokens.requests} == {"refresh_token"}
        before = len(tokens.requests)
        assert c.get_blob(REPO, digest) == b"refreshed"
        assert len(tokens.requests) == before
        time.sleep(1.3)
        assert c.get_blob(REPO, digest) == b"refreshed"
        assert len(tokens.requests) == before + 1


# ---- retries and failures --------------------------------------------------------------------


def test_retries_on_503_then_succeeds(proxy: FaultProxy, client: RegistryClient) -> None:
    manifest = push_image(client, REPO, layer=b"layer")
    proxy.add(Fault(path=r"/manifests/v1", method="GET", status=503, times=2))
    with make_client(proxy.addr, retries=3) as c:
        assert c.get_manifest(REPO, "v1") == manifest
    assert proxy.count("GET", r"/manifests/v1") == 3


def test_429_honors_retry_after(proxy: FaultProxy, client: RegistryClient) -> None:
    digest = client.push_blob(REPO, b"rate limited").digest
    proxy.add(Fault(path=r"/blobs/sha256:", method="HEAD", status=429, headers={"Retry-After": "1"}))
    with make_client(proxy.addr, retries=2, backoff=0.001) as c:
        start = time.monotonic()
        assert c.blob_size(REPO, digest) == len(b"rate limited")
        assert time.monotonic() - start >= 1.0
    assert proxy.count("HEAD", r"/blobs/sha256:") == 2


def test_gives_up_after_retries(proxy: FaultProxy) -> None:
    proxy.add(Fault(path=r"/manifests/", status=503, times=100))
    with make_client(proxy.addr, retries=2) as c:
        with pytest.raises(RegistryUnavailableError) as exc:
            c.get_manifest(REPO, "v1")
    message = str(exc.value)
    assert proxy.addr in message and f"{REPO}:v1" in message and "HTTP 503" in message and "3 attempts" in message
    assert exc.value.status == 503
    assert proxy.count("GET", r"/manifests/v1") == 3


def test_unreachable_registry() -> None:
    addr = f"127.0.0.1:{free_port()}"
    with make_client(addr, retries=1) as c:
        with pytest.raises(RegistryUnavailableError) as exc:
            c.get_manifest(REPO, "v1")
    assert addr in str(exc.value) and "unreachable" in str(exc.value) and "ConnectError" in str(exc.value)


def test_read_timeout_is_retried_then_reported() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)  # accepts connections, never answers
        addr = f"127.0.0.1:{server.getsockname()[1]}"
        with make_client(addr, retries=1, timeout=0.3) as c:
            start = time.monotonic()
            with pytest.raises(RegistryUnavailableError, match="ReadTimeout"):
                c.ping()
            assert time.monotonic() - start >= 0.6


def test_chunk_failure_resumes_and_lost_session_restarts(proxy: FaultProxy) -> None:
    data = os.urandom(200_000)
    digest = compute_digest(data)
    pieces = [data[i : i + 50_000] for i in range(0, len(data), 50_000)]
    with make_client(proxy.addr, retries=3) as c:
        # The chunk never reached the registry: asks the session, resends only that chunk.
        proxy.add(Fault(path=r"/blobs/uploads/", method="PATCH", status=503))
        c.push_blob_stream(REPO, iter(pieces), digest, len(data), chunk_size=64 * 1024)
        assert c.get_blob(REPO, digest) == data
        assert proxy.count("POST", r"/blobs/uploads/") == 1
        assert proxy.count("GET", r"/blobs/uploads/") == 1

        # The chunk arrived but the answer was lost: distribution's session state is then stale,
        # so the upload restarts from the POST (possible because a list can be iterated again).
        other = os.urandom(200_000)
        other_digest = compute_digest(other)
        proxy.add(Fault(path=r"/blobs/uploads/", method="PATCH", kind="forward_then_status", status=502))
        c.push_blob_stream(REPO, [other[:100_000], other[100_000:]], other_digest, len(other), chunk_size=64 * 1024)
        assert c.get_blob(REPO, other_digest) == other
        assert proxy.count("POST", r"/blobs/uploads/") == 3

        # Same with a one-shot generator: a clear error instead of a corrupt blob.
        third = os.urandom(200_000)
        proxy.add(Fault(path=r"/blobs/uploads/", method="PATCH", kind="forward_then_status", status=502))
        with pytest.raises(RegistryUnavailableError, match="can be read only once"):
            c.push_blob_stream(REPO, (p for p in [third]), compute_digest(third), len(third), chunk_size=64 * 1024)
        assert c.blob_size(REPO, compute_digest(third)) is None


def test_monolithic_upload_restarts_from_post(proxy: FaultProxy) -> None:
    data = os.urandom(20_000)
    proxy.add(Fault(path=r"/blobs/uploads/", method="PUT", status=500, times=2))
    with make_client(proxy.addr, retries=3) as c:
        digest = c.push_blob(REPO, data).digest
        assert c.get_blob(REPO, digest) == data
    assert proxy.count("POST", r"/blobs/uploads/") == 3


def test_plain_http_only_for_loopback_unless_allowed(registry: RunningRegistry) -> None:
    assert RegistryClient("registry.example.com").base_url == "https://registry.example.com"
    assert RegistryClient("123.dkr.ecr.us-east-1.amazonaws.com").base_url.startswith("https://")
    assert RegistryClient("docker.io").base_url == "https://registry-1.docker.io"
    assert RegistryClient("127.0.0.1:5055").base_url == "http://127.0.0.1:5055"
    assert RegistryClient("localhost:5000").base_url == "http://localhost:5000"
    assert RegistryClient("registry.example.com:5000", plain_http=True).base_url == "http://registry.example.com:5000"
    with pytest.raises(ValueError, match="registry registry.example.com: plain HTTP is only used for loopback hosts"):
        RegistryClient("http://registry.example.com")
    with pytest.raises(ValueError, match="invalid registry"):
        RegistryClient("registry.example.com/path")
    with pytest.raises(ValueError, match="both username and password"):
        RegistryClient("registry.example.com", username="u")
    # https forced against a plain-HTTP registry: a clear connection error, not a silent downgrade
    with make_client(registry.addr, plain_http=False, retries=0) as c:
        assert c.base_url == f"https://{registry.addr}"
        with pytest.raises(RegistryUnavailableError, match=registry.addr):
            c.ping()


# ---- an image built by the real BuildKit -----------------------------------------------------


@pytest.mark.stack
def test_buildkit_image_reads_back(docker_engine: DockerEngine, registry: RunningRegistry, tmp_path: Path) -> None:
    context = tmp_path / "ctx"
    context.mkdir()
    payload = os.urandom(64).hex().encode()
    (context / "hello.txt").write_bytes(payload)
    (context / "Dockerfile").write_text("FROM scratch\nCOPY hello.txt /hello.txt\n")
    image = f"{registry.addr}/{REPO}:built"
    docker_engine.run("build", "--network=none", "-t", image, str(context))
    try:
        docker_engine.run("push", image)
    finally:
        docker_engine.run("rmi", "-f", image, check=False)

    with make_client(registry.addr) as c:
        manifest = c.get_manifest(REPO, "built")
        assert manifest.media_type in MANIFEST_MEDIA_TYPES and not manifest.is_index
        doc = manifest.json()
        config = json.loads(c.get_blob(REPO, doc["config"]["digest"]))
        assert len(doc["layers"]) == 1 == len(config["rootfs"]["diff_ids"])
        layer = doc["layers"][0]
        assert c.blob_size(REPO, layer["digest"]) == layer["size"]
        with c.open_blob(REPO, layer["digest"], chunk_size=4096) as f:
            raw = f.read()
        assert compute_digest(raw) == layer["digest"]
        tar_bytes = gzip.decompress(raw)
        assert compute_digest(tar_bytes) == config["rootfs"]["diff_ids"][0]
        with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
            member = tar.extractfile("hello.txt")
            assert member is not None and member.read() == payload
        assert c.get_blob_range(REPO, layer["digest"], 0, 2) == b"\x1f\x8b"  # gzip magic
        assert c.head_manifest(REPO, "built") == manifest.descriptor()
