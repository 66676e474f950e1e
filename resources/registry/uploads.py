"""Uploading blobs (containerd's pusher): an upload session that follows the server's offset (the Range of each
202), resumes or restarts after a lost answer, and asks HEAD whether the blob already exists before failing."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import httpx

from resources.errors import StreamableError
from resources.oci import media_types as mt
from resources.oci.refs import digest_algorithm
from resources.registry import retry
from resources.registry.errors import (
    DigestMismatchError,
    RegistryError,
    RegistryNotFoundError,
    RegistryUnavailableError,
    SourceReadError,
)
from resources.registry.transport import Transport

log = logging.getLogger(__name__)
MAX_STALLED_PATCHES = 3  # PATCHes in a row the server answers 202 without taking a byte


class BlobSource:
    """Where upload bytes come from; `open(offset)` reads from a byte offset (again, when `reopenable`)."""

    def __init__(self, name: str, opener: Callable[[int], Iterator[bytes]], *, reopenable: bool) -> None:
        self.name = name
        self._opener = opener
        self.reopenable = reopenable
        self.opened = False

    def can_open(self) -> bool:
        """True when `open` may be called (always for a reopenable source, once otherwise)."""
        return self.reopenable or not self.opened

    def open(self, offset: int) -> Iterator[bytes]:
        """Bytes from `offset` on."""
        self.opened = True
        return self._opener(offset)

    @classmethod
    def of_chunks(cls, chunks: Iterable[bytes]) -> BlobSource:
        """A source over given pieces: reopenable when they can be iterated again (a list), not for an iterator."""
        def opener(offset: int) -> Iterator[bytes]:
            skip = offset
            for piece in chunks:
                if skip >= len(piece):
                    skip -= len(piece)
                    continue
                yield bytes(piece[skip:]) if skip else bytes(piece)
                skip = 0
        return cls("the given chunks", opener, reopenable=not isinstance(chunks, Iterator))


class _Failed(StreamableError):
    """Internal: a request of the session failed; `location` is the last Location the server gave."""

    def __init__(self, error: RegistryError, location: httpx.URL) -> None:
        super().__init__(str(error))
        self.error = error
        self.location = location


def scopes(repo: str) -> list[str]:
    """Token scopes for pushing to a repository."""
    return [f"repository:{repo}:pull,push"]


def upload_location(t: Transport, response: httpx.Response, repo: str, digest: str | None) -> httpx.URL:
    """The checked Location of an upload answer."""
    location = response.headers.get("location")
    if not location:
        raise t.error(
            f"upload of {digest or 'a blob'} to {repo} answered HTTP {response.status_code} without a Location",
            repo,
            digest,
        )
    url = response.request.url.join(location)
    t.check_url(url, "upload blob", repo, digest)
    return url


def held_bytes(response: httpx.Response) -> int | None:
    """How many bytes an upload session holds, from a `Range: 0-<last>` header (distribution says 0-0 when empty)."""
    value = response.headers.get("range", "")
    last = value.rsplit("-", 1)[-1] if "-" in value else ""
    if not last.isdigit():
        return None
    return 0 if int(last) <= 0 else int(last) + 1


def start_session(t: Transport, repo: str, digest: str | None, deadline: retry.Deadline) -> tuple[httpx.URL, int]:
    """POST a new upload session; its Location and the registry's minimum chunk size (0 if none)."""
    response = t.request("POST", f"/v2/{repo}/blobs/uploads/", action="start blob upload", repository=repo,
                         reference=digest, scopes=scopes(repo), expect=(202,), deadline=deadline)
    value = response.headers.get("oci-chunk-min-length", "0")
    return upload_location(t, response, repo, digest), int(value) if value.isdigit() else 0


def cancel(t: Transport, repo: str, location: httpx.URL) -> None:
    """Best-effort DELETE of an upload session."""
    try:
        t.request("DELETE", location, action="cancel blob upload", repository=repo, scopes=scopes(repo),
                  expect=(200, 202, 204, 404), retry_transient=False)
    except RegistryError as exc:
        log.warning("registry %s: could not cancel upload to %s: %s", t.label, repo, exc)


def session_state(
    t: Transport, repo: str, location: httpx.URL, deadline: retry.Deadline
) -> tuple[int, httpx.URL] | None:
    """(bytes held, current Location) of a session from `GET <location>`, or None when it is gone or unreadable."""
    try:
        response = t.request("GET", location, action="check blob upload", repository=repo, scopes=scopes(repo),
                             expect=(204, 404), deadline=deadline)
    except RegistryError:
        return None
    held = held_bytes(response)
    if response.status_code == 404 or held is None:
        return None
    new = upload_location(t, response, repo, None) if "location" in response.headers else location
    return held, new


class _Stream:
    """The source read once from an offset, with the chunk in flight kept so a resume can start inside it."""

    def __init__(self, t: Transport, source: BlobSource, offset: int, repo: str, digest: str) -> None:
        self.pieces = _read_source(t, source, offset, repo, digest)
        self.hasher: Any = hashlib.new(digest_algorithm(digest)) if offset == 0 else None
        self.chunk_start = offset
        self.chunk = b""

    def resume_at(self, held: int) -> bool:
        """Point at byte `held` inside the chunk in flight; False when it lies outside."""
        if not self.chunk_start <= held <= self.chunk_start + len(self.chunk):
            return False
        self.chunk = self.chunk[held - self.chunk_start :]
        self.chunk_start = held
        return True

    def next_chunk(self, chunk_size: int, size: int, repo: str, digest: str, t: Transport) -> bytes:
        """The chunk in flight, else the next one of at least `chunk_size` bytes (b"" at the end)."""
        if self.chunk:
            return self.chunk
        parts, pending = [], 0
        for piece in self.pieces:
            parts.append(piece)
            pending += len(piece)
            if self.chunk_start + pending > size:
                raise DigestMismatchError(
                    f"blob streamed to {repo} is more than the {size} bytes declared for {digest}; upload cancelled",
                    registry=t.registry, repository=repo, reference=digest,
                )
            if pending >= chunk_size:
                break
        self.chunk = b"".join(parts)
        if self.hasher is not None:
            self.hasher.update(self.chunk)
        return self.chunk

    def sent(self) -> None:
        """The chunk in flight was accepted."""
        self.chunk_start += len(self.chunk)
        self.chunk = b""


def upload(
    t: Transport, repo: str, source: BlobSource, digest: str, size: int, *, chunk_size: int,
    deadline: retry.Deadline, exists: Callable[[], bool], monolithic: bool = False,
) -> None:
    """Upload `size` bytes with `digest` from `source`: one session, resumed from the server's offset or restarted
    (bounded by the retry policy and the deadline); done early when HEAD shows the blob exists."""
    on_deadline = t.deadline_error("push blob", repo, digest)
    budget = retry.Budget(t.policy, deadline, f"registry {t.label}: push blob {repo}@{digest}", on_deadline)
    location: httpx.URL | None = None
    stream: _Stream | None = None
    while True:
        failed: _Failed | None = None
        try:
            if location is None:
                if exists():
                    return
                location, min_chunk = start_session(t, repo, digest, deadline)
                chunk_size = max(chunk_size, min_chunk)
                stream = _Stream(t, source, 0, repo, digest)
            assert stream is not None
            location = _send(t, repo, stream, digest, size, location, chunk_size, deadline, monolithic)
            return
        except _Failed as exc:
            failed = exc
        except RegistryError:  # the source failed, the bytes were wrong, or the deadline passed
            if location is not None:
                cancel(t, repo, location)
            raise
        error, location = failed.error, failed.location
        if not isinstance(error, (RegistryUnavailableError, RegistryNotFoundError)) and error.status != 416:
            cancel(t, repo, location)
            raise error
        if exists():  # the answer to a committed upload was lost
            return
        state = session_state(t, repo, location, deadline) if not monolithic else None
        if state is not None and stream is not None and stream.resume_at(state[0]):
            location = state[1]
        elif state is not None and state[0] <= size and source.can_open():
            location, stream = state[1], _Stream(t, source, state[0], repo, digest)
        elif source.can_open():
            cancel(t, repo, location)
            location = None
        else:
            cancel(t, repo, location)
            raise t.error(
                f"upload of {digest} to {repo} failed ({error}); the registry lost the upload session and "
                f"{source.name} can be read only once, so the blob cannot be sent again", repo, digest,
                cls=type(error), status=error.status,
            )
        budget.spend(retry.Retry(error))


def _send(t: Transport, repo: str, stream: _Stream, digest: str, size: int, location: httpx.URL,
          chunk_size: int, deadline: retry.Deadline, monolithic: bool) -> httpx.URL:
    """PATCH the stream in chunks (or one PUT with the body when monolithic), then `PUT ?digest=`."""
    stalls = 0
    while True:
        deadline.check(t.deadline_error("push blob", repo, digest))
        chunk = stream.next_chunk(size + 1 if monolithic else chunk_size, size, repo, digest, t)
        if monolithic or not chunk:
            break
        location, held = _patch(t, repo, digest, location, stream.chunk_start, chunk, deadline)
        stalls = stalls + 1 if held <= stream.chunk_start else 0
        if held == stream.chunk_start + len(chunk):
            stream.sent()
        elif stalls > MAX_STALLED_PATCHES or not stream.resume_at(held):  # else go on from the server's offset
            raise _Failed(t.error(f"upload of {digest} to {repo} holds {held} bytes after a chunk of bytes "
                                  f"{stream.chunk_start}-{stream.chunk_start + len(chunk) - 1}", repo, digest,
                                  cls=RegistryUnavailableError), location)
    end = stream.chunk_start + len(chunk)
    _finish(t, repo, digest, location, chunk if monolithic else None, end, size, stream.hasher, deadline)
    return location


def _read_source(t: Transport, source: BlobSource, offset: int, repo: str, digest: str) -> Iterator[bytes]:
    """The source's pieces; a failure to read them is a SourceReadError naming the source, not an upload error."""
    iterator = source.open(offset)
    while True:
        try:
            piece = next(iterator)
        except StopIteration:
            return
        except SourceReadError:
            raise
        except RegistryError as exc:
            raise SourceReadError(
                f"reading {source.name} to upload it to {repo} failed: {exc}", registry=exc.registry,
                repository=exc.repository, reference=exc.reference or digest, status=exc.status,
            ) from None
        if piece:
            yield bytes(piece)


def _patch(t: Transport, repo: str, digest: str, location: httpx.URL, offset: int, chunk: bytes,
           deadline: retry.Deadline) -> tuple[httpx.URL, int]:
    """PATCH one chunk at `offset` (sent once: its answer may be lost); the new Location and the bytes the server
    holds (the Range of its 202; without one, all that was sent)."""
    try:
        response = t.request(
            "PATCH", location, action=f"upload bytes {offset}-{offset + len(chunk) - 1} of", repository=repo,
            reference=digest, scopes=scopes(repo),
            headers={"Content-Type": mt.OCTET_STREAM, "Content-Range": f"{offset}-{offset + len(chunk) - 1}"},
            content=chunk, expect=(202,), retry_transient=False, deadline=deadline,
        )
    except RegistryError as exc:
        raise _Failed(exc, location) from None
    held = held_bytes(response)
    return upload_location(t, response, repo, None), (offset + len(chunk) if held is None else held)


def _finish(t: Transport, repo: str, digest: str, location: httpx.URL, body: bytes | None, sent: int, size: int,
            hasher: Any, deadline: retry.Deadline) -> None:
    """Check size and digest (when hashed from byte 0), then `PUT ?digest=` (sent once: its answer may be lost)."""
    actual = f"{digest_algorithm(digest)}:{hasher.hexdigest()}" if hasher is not None else None
    if sent != size or (actual is not None and actual != digest):
        raise DigestMismatchError(
            f"blob streamed to {repo} is {sent} bytes with digest {actual or '(not hashed: resumed)'}, expected {size} "
            f"bytes with {digest}; upload cancelled", registry=t.registry, repository=repo, reference=digest,
        )
    headers = {"Content-Type": mt.OCTET_STREAM} if body is not None else None
    try:
        t.request("PUT", location, action="finish blob upload", repository=repo, reference=digest, scopes=scopes(repo),
                  params={"digest": digest}, headers=headers, content=body, expect=(201,), retry_transient=False,
                  deadline=deadline)
    except RegistryError as exc:
        raise _Failed(exc, location) from None
