"""What real registries do to a client (issue 11): odd Retry-After, lost upload answers, drips, endless bodies,
concurrent referrers-tag writers, settling manifest PUTs, echoed Authorization headers, refused connections."""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from resources.oci import media_types as mt
from resources.oci.refs import ImageRef, compute_digest
from resources.registry import (
    DigestMismatchError,
    Manifest,
    RegistryClient,
    RegistryError,
    RegistryUnavailableError,
    referrers_tag,
)
from resources.soci.convert import SociConverter
from tests.conftest import RunningRegistry, free_port
from tests.support.registry_helpers.fault_proxy import Fault, FaultProxy, fault_proxy

REPO = "team/app"


def make_client(addr: str, **kwargs: Any) -> RegistryClient:
    kwargs.setdefault("retries", 2)
    kwargs.setdefault("backoff", 0.01)
    kwargs.setdefault("timeout", 10.0)
    return RegistryClient(addr, **kwargs)


@pytest.fixture
def proxy(registry: RunningRegistry) -> Iterator[FaultProxy]:
    with fault_proxy(registry.addr) as p:
        yield p


def push_image(c: RegistryClient, repo: str, layer: bytes, tag: str = "v1") -> Manifest:
    cfg = c.push_blob(repo, b'{"architecture":"amd64","os":"linux"}', media_type=mt.OCI_CONFIG)
    lay = c.push_blob(repo, layer, media_type=mt.OCI_LAYER_GZIP)
    doc = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": cfg.to_dict(), "layers": [lay.to_dict()]}
    manifest = Manifest.from_data(json.dumps(doc).encode(), mt.OCI_MANIFEST)
    c.put_manifest(repo, tag, manifest.data, mt.OCI_MANIFEST)
    return manifest


def finishes_within(seconds: float, fn: Callable[[], Any]) -> tuple[float, BaseException | None, Any]:
    """Run fn in a thread; (elapsed, exception, result); fails the test when fn is still running after `seconds`."""
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["result"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            out["error"] = exc

    start = time.monotonic()
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s"
    return time.monotonic() - start, out.get("error"), out.get("result")


# ---- item 2: Retry-After as registries send it ------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "least"),
    [([("Retry-After", "soon-ish")], 0.0), ([("Retry-After", "1.5s")], 1.5),
     ([("Retry-After", "1"), ("Retry-After", "1")], 1.0), ([("Retry-After", "Wed, 21 Oct 2015 07:28:00 GMT")], 0.0)],
    ids=["junk", "fraction-with-unit", "repeated", "past-date"],
)
def test_odd_retry_after_values_are_retried(proxy: FaultProxy, headers: list[tuple[str, str]], least: float) -> None:
    with make_client(proxy.addr) as c:
        manifest = push_image(c, REPO, b"layer")
        proxy.add(Fault(path=r"/manifests/v1", method="GET", status=503, header_list=headers))
        start = time.monotonic()
        assert c.get_manifest(REPO, "v1") == manifest
        assert time.monotonic() - start >= least
    assert proxy.count("GET", r"/manifests/v1") == 2


# ---- item 3: lost answers to uploads, and the source of a copy --------------------------------


def test_lost_answer_to_the_final_put_is_recognised_by_head(proxy: FaultProxy) -> None:
    data = os.urandom(150_000)
    digest = compute_digest(data)
    with make_client(proxy.addr) as c:
        proxy.add(Fault(path=r"/blobs/uploads/.*digest=", method="PUT", kind="forward_then_status", status=500))
        c.push_blob_stream(REPO, (data[i : i + 50_000] for i in range(0, len(data), 50_000)), digest, len(data),
                           chunk_size=64 * 1024)
        assert c.get_blob(REPO, digest) == data
        proxy.add(Fault(path=r"/blobs/uploads/.*digest=", method="PUT", kind="forward_then_reset"))
        other = os.urandom(70_000)
        c.push_blob_stream(REPO, iter([other]), compute_digest(other), len(other), chunk_size=64 * 1024)
        assert c.get_blob(REPO, compute_digest(other)) == other
    assert proxy.count("POST", r"/blobs/uploads/$") == 2  # no restart: HEAD showed each blob exists


def test_upload_follows_the_offset_in_the_registrys_202_range(proxy: FaultProxy) -> None:
    data = os.urandom(200_000)
    digest = compute_digest(data)
    proxy.add(Fault(path=r"/blobs/uploads/", method="PATCH", kind="partial_patch"))  # keeps half the first chunk
    with make_client(proxy.addr) as c:
        c.push_blob_stream(REPO, (data[i : i + 50_000] for i in range(0, len(data), 50_000)), digest, len(data),
                           chunk_size=100_000)
        assert c.get_blob(REPO, digest) == data
    assert proxy.count("POST", r"/blobs/uploads/$") == 1 and proxy.count("GET", r"/blobs/uploads/") == 0
    assert proxy.count("PATCH", r"/blobs/uploads/") == 3  # half of chunk 1, its other half, chunk 2


def test_copy_resumes_after_lost_patch_answer_and_names_a_missing_source(
    proxy: FaultProxy, registry: RunningRegistry
) -> None:
    data = os.urandom(300_000)
    with make_client(registry.addr) as direct:
        digest = direct.push_blob("team/src", data).digest
    with make_client(proxy.addr) as c:
        proxy.add(Fault(path=r"/blobs/uploads/\?.*mount=", method="POST", status=202, body=b""))  # mount refused
        proxy.add(Fault(path=r"/blobs/uploads/", method="PATCH", kind="forward_then_reset"))
        c.copy_blob("team/src", "team/dst", digest, len(data), chunk_size=64 * 1024)
        assert c.get_blob("team/dst", digest) == data
        missing = compute_digest(b"gone")
        proxy.add(Fault(path=r"/blobs/uploads/\?.*mount=", method="POST", status=202, body=b""))
        with pytest.raises(RegistryError) as exc:
            c.copy_blob("team/src", "team/dst", missing, 4)
    message = str(exc.value)
    assert exc.value.status == 404 and type(exc.value).__name__ == "SourceReadError"
    assert f"reading source blob team/src@{missing}" in message and "not found" in message
    assert "re-iterable" not in message and "pass a list" not in message


def test_v1_convert_into_another_repository_survives_lost_upload_answers(registry: RunningRegistry) -> None:
    """convert copies blobs between repositories; lost PATCH/PUT answers and a refused mount must not fail it."""
    from tests.resources.soci.conftest import ImageFactory, gzip_layer, random_bytes

    images = ImageFactory(registry)
    layer = gzip_layer({"app/data.bin": random_bytes(400_000, 5)})
    src = images.push_image("team/src", "v1", [layer])
    with fault_proxy(registry.addr) as p, make_client(p.addr) as c:
        p.add(Fault(path=r"/blobs/uploads/\?.*mount=", method="POST", status=202, body=b"", times=10))
        p.add(Fault(path=r"/blobs/uploads/", method="PATCH", kind="forward_then_reset"))
        p.add(Fault(path=r"/blobs/uploads/.*digest=", method="PUT", kind="forward_then_status", status=500))
        source = ImageRef(p.addr, "team/src", "v1")
        result = SociConverter(c, min_layer_size=1024, span_size=65536, format="v1").convert(
            source, ImageRef(p.addr, "team/dst", "v1"))
        assert result.platforms and all(pl.soci_index_digest for pl in result.platforms)
        assert c.get_blob("team/dst", layer.digest) == layer.blob
    images.client.close()
    assert src.digest


# ---- item 4: an overall deadline --------------------------------------------------------------


def test_dripping_registry_ends_a_manifest_fetch_within_the_deadline(proxy: FaultProxy) -> None:
    with make_client(proxy.addr) as c:
        manifest = push_image(c, REPO, b"layer")
    assert 300 < len(manifest.data) < 2000
    proxy.add(Fault(path=r"/manifests/v1", method="GET", kind="drip", delay=1.0))
    with make_client(proxy.addr, timeout=2, retries=0) as c:
        elapsed, error, _ = finishes_within(20, lambda: c.get_manifest(REPO, "v1"))
    assert isinstance(error, RegistryUnavailableError), error
    assert "6 s deadline" in str(error) and proxy.addr in str(error) and f"{REPO}:v1" in str(error)
    assert elapsed < 8


def test_stalled_blob_read_ends_within_the_deadline(proxy: FaultProxy) -> None:
    data = os.urandom(20_000)
    with make_client(proxy.addr) as c:
        digest = c.push_blob(REPO, data).digest
    proxy.add(Fault(path=r"/blobs/sha256:", method="GET", kind="drip", delay=0.5, times=10))
    with make_client(proxy.addr, timeout=1, retries=3, deadline=3) as c:
        elapsed, error, _ = finishes_within(20, lambda: c.get_blob(REPO, digest))
    assert isinstance(error, RegistryUnavailableError) and "deadline" in str(error), error
    assert digest in str(error) and elapsed < 6


# ---- item 5: reads capped at the declared size ------------------------------------------------


def test_endless_blob_body_is_cut_at_the_declared_size(proxy: FaultProxy) -> None:
    data = os.urandom(100_000)
    with make_client(proxy.addr) as c:
        digest = c.push_blob(REPO, data).digest
        proxy.add(Fault(path=r"/blobs/sha256:", method="GET", kind="endless", times=2))
        _, error, _ = finishes_within(20, lambda: c.get_blob(REPO, digest))
        assert isinstance(error, DigestMismatchError), error
        assert "more than its declared size of 100000 bytes" in str(error) and digest in str(error)
        _, error, _ = finishes_within(20, lambda: c.get_blob(REPO, digest, size=len(data)))
        assert isinstance(error, DigestMismatchError)


def test_wrong_content_length_and_reset_mid_body(proxy: FaultProxy) -> None:
    data = os.urandom(200_000)
    with make_client(proxy.addr) as c:
        digest = c.push_blob(REPO, data).digest
        proxy.add(Fault(path=r"/blobs/sha256:", method="GET", kind="reset_mid_body"))
        assert c.get_blob(REPO, digest) == data  # resumed with Range
        proxy.add(Fault(path=r"/blobs/sha256:", method="GET", kind="wrong_length", extra=1000))
        assert c.get_blob(REPO, digest) == data  # short body: resumed
        proxy.add(Fault(path=r"/blobs/sha256:", method="GET", kind="wrong_length", extra=-1000))
        with pytest.raises(DigestMismatchError, match=digest):
            c.get_blob(REPO, digest)


# ---- item 6: concurrent writers of a referrers tag --------------------------------------------


def test_concurrent_referrers_tag_writers_lose_no_entry(proxy: FaultProxy) -> None:
    with make_client(proxy.addr) as c:
        subject = push_image(c, REPO, b"image")
        referrers = []
        for kind in ("a", "b"):
            cfg = c.push_blob(REPO, b"{}", media_type="application/vnd.oci.empty.v1+json")
            doc = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "artifactType": mt.SOCI_INDEX_V1,
                   "config": {**cfg.to_dict(), "mediaType": "application/vnd.oci.empty.v1+json"},
                   "layers": [c.push_blob(REPO, kind.encode()).to_dict()], "subject": subject.descriptor().to_dict()}
            referrers.append(Manifest.from_data(json.dumps(doc).encode(), mt.OCI_MANIFEST))
    tag_path = rf"/manifests/{referrers_tag(subject.digest)}$"
    # Both writers read the (absent) tag before either writes; the second writes 0.5 s after the first.
    proxy.add(Fault(path=tag_path, method="GET", kind="delay", delay=0.2))
    proxy.add(Fault(path=tag_path, method="GET", kind="delay", delay=0.7))
    errors: list[BaseException] = []

    def push(m: Manifest) -> None:
        try:
            with make_client(proxy.addr) as writer:
                writer.push_referrer(REPO, m.data, mt.OCI_MANIFEST)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=push, args=(m,)) for m in referrers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    with make_client(proxy.addr) as c:
        found = {r["digest"] for r in c.referrers(REPO, subject.digest)}
    assert found == {m.digest for m in referrers}


# ---- item 7: manifest PUTs while the registry settles -----------------------------------------


SETTLING = b'{"errors":[{"code":"MANIFEST_BLOB_UNKNOWN","message":"blob unknown to registry"}]}'


def test_manifest_put_retried_while_registry_settles(proxy: FaultProxy) -> None:
    with make_client(proxy.addr) as c:
        push_image(c, REPO, b"amd", tag="amd")
        amd = c.get_manifest(REPO, "amd")
        index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [amd.descriptor().to_dict()]}
        data = json.dumps(index).encode()
        proxy.add(
            Fault(
                path=r"/manifests/multi",
                method="PUT",
                status=400,
                body=SETTLING.replace(b"MANIFEST_BLOB_UNKNOWN", b"DIGEST_INVALID"),
            )
        )
        proxy.add(Fault(path=r"/manifests/multi", method="PUT", status=400, body=SETTLING))
        assert c.put_manifest(REPO, "multi", data, mt.OCI_INDEX) == compute_digest(data)
        assert proxy.count("PUT", r"/manifests/multi") == 3
        proxy.add(Fault(path=r"/manifests/forever", method="PUT", status=400, body=SETTLING, times=100))
        start = time.monotonic()
        with pytest.raises(RegistryError) as exc:
            c.put_manifest(REPO, "forever", data, mt.OCI_INDEX)
        assert time.monotonic() - start < 20
    assert proxy.count("PUT", r"/manifests/forever") == 5  # 1 + 4 bounded retries
    assert "although every blob and manifest it names exists" in str(exc.value) and f"{REPO}:forever" in str(exc.value)


def test_manifest_naming_a_missing_blob_is_not_retried(proxy: FaultProxy) -> None:
    doc = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
           "config": {"mediaType": mt.OCI_CONFIG, "digest": compute_digest(b"missing"), "size": 7}, "layers": []}
    with make_client(proxy.addr) as c, pytest.raises(RegistryError) as exc:
        c.put_manifest(REPO, "broken", json.dumps(doc).encode(), mt.OCI_MANIFEST)
    assert exc.value.status == 400 and compute_digest(b"missing") in str(exc.value)
    assert proxy.count("PUT", r"/manifests/broken") == 1


# ---- item 8: registry text that echoes credentials --------------------------------------------


def test_error_echoing_the_authorization_header_is_redacted(auth_registry: RunningRegistry) -> None:
    assert auth_registry.username and auth_registry.password
    basic = base64.b64encode(f"{auth_registry.username}:{auth_registry.password}".encode()).decode()
    with fault_proxy(auth_registry.addr) as p, make_client(
        p.addr, username=auth_registry.username, password=auth_registry.password
    ) as c:
        c.ping()
        p.add(Fault(path=r"/manifests/v1", method="GET", kind="echo_auth", status=400))
        with pytest.raises(RegistryError) as exc:
            c.get_manifest(REPO, "v1")
    message = str(exc.value)
    assert basic not in message and auth_registry.password not in message and "Basic [redacted]" in message
    assert "DENIED" in message and f"{REPO}:v1" in message and p.addr in message


# ---- connections (issue 13) -------------------------------------------------------------------


def test_refused_connection_fails_fast() -> None:
    addr = f"127.0.0.1:{free_port()}"
    with RegistryClient(addr, retries=5) as c:  # default backoff: 0.5 s doubling
        start = time.monotonic()
        with pytest.raises(RegistryUnavailableError) as exc:
            c.ping()
        elapsed = time.monotonic() - start
    assert elapsed < 2, elapsed
    assert addr in str(exc.value) and "3 attempts" in str(exc.value)


def test_docker_hub_is_named_as_such() -> None:
    closed = free_port()  # every request goes to a closed loopback proxy port: nothing leaves the machine
    ref = ImageRef.parse("library/alpine:3")
    assert ref.registry == "docker.io"
    with RegistryClient(
        ref.registry, retries=0, transport=httpx.HTTPTransport(proxy=f"http://127.0.0.1:{closed}")
    ) as c:
        with pytest.raises(RegistryUnavailableError) as exc:
            c.get_manifest(ref.repository, "3")
    assert "registry docker.io (Docker Hub)" in str(exc.value)


def test_convert_stops_reading_an_endless_layer_body(registry: RunningRegistry) -> None:
    from tests.resources.soci.conftest import ImageFactory, gzip_layer, random_bytes

    images = ImageFactory(registry)
    layer = gzip_layer({"app/data.bin": random_bytes(300_000, 9)})
    images.push_image("team/app", "v1", [layer])
    images.client.close()
    with fault_proxy(registry.addr) as p, make_client(p.addr, retries=0) as c:
        p.add(Fault(path=rf"/blobs/{layer.digest}", method="GET", kind="endless", times=5))
        converter = SociConverter(c, min_layer_size=1024, span_size=65536)
        _, error, _ = finishes_within(30, lambda: converter.convert(ImageRef(p.addr, "team/app", "v1"),
                                                                     ImageRef(p.addr, "team/app", "soci")))
    assert error is not None and f"declared size of {layer.size} bytes" in str(error), error
