"""Reading blobs (containerd's fetcher): HEAD, streamed reads capped at the declared size and digest-checked,
resumed with Range after a broken connection, and exact byte-range reads."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Generator, Iterator
from typing import Any

import httpx

from resources.oci.refs import digest_algorithm
from resources.registry import retry
from resources.registry.errors import DigestMismatchError
from resources.registry.transport import Transport


class BlobReader(io.RawIOBase):
    """A read-only raw stream over an iterator of byte chunks."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        super().__init__()
        self._chunks = chunks
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        while not self._pending:
            try:
                self._pending = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(view), len(self._pending))
        view[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


def blob_size(t: Transport, repo: str, digest: str, deadline: retry.Deadline | None = None) -> int | None:
    """Size of a blob from HEAD, or None when the repository does not have it."""
    response = t.request(
        "HEAD", f"/v2/{repo}/blobs/{digest}", action="check blob", repository=repo, reference=digest,
        expect=(200, 404), follow_redirects=True, headers={"Accept-Encoding": "identity"}, deadline=deadline,
    )
    if response.status_code == 404:
        return None
    size = response.headers.get("content-length")
    return int(size) if size is not None and size.isdigit() else None


def _declared_length(response: httpx.Response) -> int | None:
    value = response.headers.get("content-length", "")
    return int(value) if value.isdigit() else None


def blob_chunks(
    t: Transport, repo: str, digest: str, *, chunk_size: int, size: int | None, deadline: retry.Deadline,
    start: int = 0, action: str = "pull blob",
) -> Generator[bytes, None, None]:
    """Blob bytes from `start` in chunks; resumes with Range after a broken connection; never reads past the
    declared size (`size`, else the first answer's Content-Length, else HEAD); verifies the digest when read from 0."""
    on_deadline = t.deadline_error(action, repo, digest)
    budget = retry.Budget(t.policy, deadline, f"registry {t.label}: {action}", on_deadline)
    hasher = hashlib.new(digest_algorithm(digest)) if start == 0 else None
    received = start
    extended = False
    while True:
        headers = {"Accept-Encoding": "identity"}
        if received:
            headers["Range"] = f"bytes={received}-"
        response = t.request(
            "GET", f"/v2/{repo}/blobs/{digest}", action=action, repository=repo, reference=digest,
            headers=headers, expect=(200, 206), stream=True, follow_redirects=True, deadline=deadline,
        )
        failure: retry.Retry | None = None
        try:
            skip = _resume_skip(t, response, repo, digest, received)
            if size is None:
                length = _declared_length(response)
                size = (length + received if response.status_code == 206 else length) if length is not None else None
                if size is None:
                    size = blob_size(t, repo, digest, deadline)
            if size is not None and not extended:
                deadline.extend((size - start) / retry.MIN_TRANSFER_RATE)
                extended = True
            for chunk in _rechunk(response.iter_raw(), chunk_size, lambda: deadline.check(on_deadline)):
                if skip:
                    drop = min(skip, len(chunk))
                    chunk, skip = chunk[drop:], skip - drop
                    if not chunk:
                        continue
                if size is not None and received + len(chunk) > size:
                    raise DigestMismatchError(
                        f"registry {t.label}: blob {repo}@{digest} sent more than its declared size of {size} bytes; "
                        "stopped reading", registry=t.registry, repository=repo, reference=digest,
                    )
                if hasher is not None:
                    hasher.update(chunk)
                received += len(chunk)
                yield chunk
            complete = hasher is not None and f"{digest_algorithm(digest)}:{hasher.hexdigest()}" == digest
            if size is not None and received < size and not complete:  # the digest, not a header, says when it is whole
                raise httpx.RemoteProtocolError(f"body ended at byte {received} of {size}")
            break
        except httpx.TransportError as exc:
            if hasher is not None and received and f"{digest_algorithm(digest)}:{hasher.hexdigest()}" == digest:
                break  # all there: the connection broke after the last byte (or a Content-Length overstated it)
            failure = retry.Retry(
                t.transport_error(exc, f"{action} (broke at byte {received})", repo, digest, budget.attempts)
            )
        finally:
            response.close()
        budget.spend(failure)
    if hasher is not None:
        actual = f"{digest_algorithm(digest)}:{hasher.hexdigest()}"
        if actual != digest:
            raise DigestMismatchError(
                f"registry {t.label}: blob {repo}@{digest} hashes to {actual} ({received} bytes)",
                registry=t.registry, repository=repo, reference=digest,
            )


def _rechunk(reads: Iterator[bytes], chunk_size: int, check: Callable[[], None]) -> Iterator[bytes]:
    """Network reads regrouped into chunks of `chunk_size` bytes (the last may be shorter); `check()` after each
    read, so a deadline holds even when a registry drips bytes slower than a chunk fills."""
    pending = bytearray()
    for data in reads:
        check()
        pending += data
        while len(pending) >= chunk_size:
            yield bytes(pending[:chunk_size])
            del pending[:chunk_size]
    if pending:
        yield bytes(pending)


def _resume_skip(t: Transport, response: httpx.Response, repo: str, digest: str, received: int) -> int:
    """Bytes to drop from a resumed answer: all we have when the server ignored Range (200), else 0."""
    if not received:
        return 0
    if response.status_code == 200:
        return received
    start = response.headers.get("content-range", "").removeprefix("bytes ").split("-", 1)[0]
    if start != str(received):
        raise t.error(f"resuming blob {repo}@{digest} at byte {received} got Content-Range "
                      f"{response.headers.get('content-range')!r}", repo, digest)
    return 0


def blob_range(t: Transport, repo: str, digest: str, start: int, end: int, deadline: retry.Deadline) -> bytes:
    """Bytes [start, end) of a blob via an HTTP Range request; RegistryError when the registry ignores Range."""
    wanted = f"{start}-{end - 1}"
    action = f"read bytes {wanted} of blob"

    def attempt(number: int) -> bytes:
        response = t.request(
            "GET", f"/v2/{repo}/blobs/{digest}", action=action, repository=repo, reference=digest,
            headers={"Range": f"bytes={wanted}", "Accept-Encoding": "identity"}, expect=(200, 206, 416),
            stream=True, follow_redirects=True, deadline=deadline,
        )
        failure: retry.Retry | None = None
        try:
            _check_range_response(t, response, repo, digest, start, end)
            data = bytearray()
            for chunk in response.iter_raw():
                deadline.check(t.deadline_error(action, repo, digest))
                data += chunk
                if len(data) > end - start:
                    break
        except httpx.TransportError as exc:  # body broke off: ask again
            failure = retry.Retry(t.transport_error(exc, action, repo, digest, number + 1))
        finally:
            response.close()
        if failure is not None:
            raise failure
        if len(data) != end - start:
            raise t.error(f"asked {end - start} bytes ({wanted}) of blob {repo}@{digest}, got {len(data)}"
                          + (" or more" if len(data) > end - start else ""), repo, digest)
        return bytes(data)

    return retry.run(attempt, policy=t.policy, deadline=deadline, what=f"registry {t.label}: {action}",
                     on_deadline=t.deadline_error(action, repo, digest))


def _check_range_response(t: Transport, response: httpx.Response, repo: str, ref: str, start: int, end: int) -> None:
    """Raise unless the response carries exactly bytes [start, end) (a 200 is fine only for the whole blob)."""
    wanted = f"{start}-{end - 1}"
    if response.status_code == 416:  # body not read: distribution announces a wrong Content-Length here
        raise t.error(f"bytes {wanted} are outside blob {repo}@{ref} (Content-Range "
                      f"{response.headers.get('content-range')!r})", repo, ref, status=416)
    if response.status_code == 200:
        total = _declared_length(response)
        if not (start == 0 and total == end):
            raise t.error(
                f"ignored the Range request for bytes {wanted} of blob {repo}@{ref} and answered with the whole "
                "blob (HTTP 200); range reads need a registry that supports Range", repo, ref, status=200,
            )
        return
    got = response.headers.get("content-range", "").removeprefix("bytes ").split("/", 1)[0]
    if got != wanted:
        raise t.error(f"asked bytes {wanted} of blob {repo}@{ref}, got Content-Range {got!r}", repo, ref, status=206)

