"""RegistryClient: the public face of the registry package; each method is one operation with its own deadline.

The work is done by the parts: `transport` (HTTP, auth, the one retry policy in `retry`), `manifests`,
`blobs` (reads), `uploads` (writes), `referrers`; `errors` has the exceptions and `redact`.
"""

from __future__ import annotations

import io
import ssl
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import httpx

from resources.oci import media_types as mt
from resources.oci.manifest import Descriptor, RawManifest
from resources.oci.refs import (
    compute_digest,
    digest_algorithm,
    validate_digest,
    validate_reference,
    validate_repository,
)
from resources.registry import blobs, manifests, referrers, retry, uploads
from resources.registry.errors import DigestMismatchError, RegistryNotFoundError
from resources.registry.transport import Transport, credentials_for, parse_registry

MAX_PAGES = 100_000
DEFAULT_DEADLINE_FACTOR = 3  # an operation's deadline, in per-read timeouts, unless `deadline` is given
_EMPTY_SHA256 = compute_digest(b"")


class RegistryClient:
    """Synchronous client for one registry (pooled connections, auth, retries, deadlines, digest checks)."""

    def __init__(
        self,
        registry: str,
        *,
        username: str | None = None,
        password: str | None = None,
        docker_config: Path | None = None,
        plain_http: bool | None = None,
        timeout: float = 60.0,
        retries: int = 5,
        backoff: float = 0.5,
        deadline: float | None = None,
        transport: httpx.BaseTransport | None = None,
        user_agent: str = "streamable/0.1",
        verify: bool | ssl.SSLContext = True,
        credentials_provider: Callable[[], tuple[str, str]] | None = None,
        referrers_settle: float = referrers.SETTLE_SECONDS,
    ) -> None:
        """Connect lazily to `registry` (`host[:port]`, optionally with an http:// or https:// prefix).

        `timeout` bounds each connect/read; `deadline` (default 3 x timeout) bounds a whole operation (a manifest,
        a HEAD, a listing page), retries included; blob reads and uploads get the deadline plus 1 s per MiB.
        `credentials_provider` returns (username, password), is asked once up front and again when the registry
        rejects the current ones - e.g. a function returning fresh ECR tokens, which expire after 12 hours.
        """
        self.registry, scheme = parse_registry(registry, plain_http)
        self.timeout = timeout
        self.retries = max(0, retries)
        self.backoff = backoff
        self.deadline = deadline if deadline is not None else DEFAULT_DEADLINE_FACTOR * timeout
        self.referrers_settle = referrers_settle
        credentials, self.credential_source, refresh = credentials_for(
            self.registry, username, password, docker_config, credentials_provider
        )
        self._t = Transport(
            self.registry, scheme, credentials=credentials, credential_source=self.credential_source, refresh=refresh,
            plain_http_anywhere=bool(plain_http), timeout=timeout, policy=retry.RetryPolicy(self.retries, backoff),
            transport=transport, user_agent=user_agent, verify=verify,
        )
        self.base_url = self._t.base_url
        self.plain_http = scheme == "http"
        self._auth = self._t.auth
        self._referrers_support: dict[str, bool] = {}

    def __repr__(self) -> str:
        return f"RegistryClient(registry={self.registry!r}, url={self.base_url!r}, auth={self._auth.describe()!r})"

    def close(self) -> None:
        """Close pooled connections."""
        self._t.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _deadline(self, what: str, size: int = 0) -> retry.Deadline:
        return retry.Deadline(self.deadline + size / retry.MIN_TRANSFER_RATE, what)

    @staticmethod
    def _repo(repository: str) -> str:
        return validate_repository(repository)

    # ---- basics and manifests ------------------------------------------------------------------

    def ping(self) -> None:
        """Check that the registry answers `GET /v2/` and that the credentials are accepted."""
        self._t.request("GET", "/v2/", action="ping", repository=None, scopes=[], deadline=self._deadline("ping"))

    def get_manifest(
        self, repository: str, reference: str, accept: Sequence[str] = mt.MANIFEST_MEDIA_TYPES
    ) -> RawManifest:
        """Fetch a manifest or index by tag or digest, its digest verified (against the reference or the header)."""
        repo, ref = self._repo(repository), validate_reference(reference)
        return manifests.get_manifest(self._t, repo, ref, accept, self._deadline("pull manifest"))

    def head_manifest(self, repository: str, reference: str) -> Descriptor | None:
        """Descriptor of a manifest by tag or digest, or None when it does not exist."""
        repo, ref = self._repo(repository), validate_reference(reference)
        found = manifests.head_manifest(self._t, repo, ref, self._deadline("check manifest"))
        if isinstance(found, Descriptor) or found is None:
            return found
        return self.get_manifest(repo, ref).descriptor()

    def _put_manifest(
        self, repository: str, reference: str, data: bytes, media_type: str
    ) -> tuple[str, httpx.Response]:
        repo, ref = self._repo(repository), validate_reference(reference)
        return manifests.put_manifest(
            self._t, repo, ref, data, media_type, self._deadline("push manifest"),
            blob_exists=lambda d: self.blob_size(repo, d) is not None,
            manifest_exists=lambda d: self.head_manifest(repo, d) is not None,
        )

    def put_manifest(self, repository: str, reference: str, data: bytes, media_type: str) -> str:
        """Push manifest bytes under a tag or digest; returns the digest (checked against Docker-Content-Digest)."""
        digest, _ = self._put_manifest(repository, reference, data, media_type)
        return digest

    def delete_manifest(self, repository: str, digest: str) -> None:
        """Delete a manifest by digest (RegistryNotFoundError when absent)."""
        repo, ref = self._repo(repository), validate_digest(digest)
        manifests.delete_manifest(self._t, repo, ref, self._deadline("delete manifest"))

    # ---- blobs: read ---------------------------------------------------------------------------

    def blob_size(self, repository: str, digest: str) -> int | None:
        """Size of a blob from HEAD, or None when the repository does not have it."""
        repo, ref = self._repo(repository), validate_digest(digest)
        return blobs.blob_size(self._t, repo, ref, self._deadline("check blob"))

    @contextmanager
    def stream_blob(self, repository: str, digest: str, chunk_size: int = 1 << 20, *,
                    size: int | None = None) -> Iterator[Iterator[bytes]]:
        """Stream a blob without buffering it (following redirects), never past `size` (else its Content-Length
        or HEAD size); DigestMismatchError when fully read and wrong."""
        repo, ref = self._repo(repository), validate_digest(digest)
        chunks = blobs.blob_chunks(self._t, repo, ref, chunk_size=chunk_size, size=size,
                                   deadline=self._deadline("pull blob"))
        try:
            yield chunks
        finally:
            chunks.close()

    @contextmanager
    def open_blob(self, repository: str, digest: str, chunk_size: int = 1 << 20, *,
                  size: int | None = None) -> Iterator[BinaryIO]:
        """A file-like reader (`read(n)`) over a streamed blob; reading to EOF verifies the digest."""
        with self.stream_blob(repository, digest, chunk_size, size=size) as chunks:
            reader = io.BufferedReader(blobs.BlobReader(chunks), buffer_size=chunk_size)
            try:
                yield reader
            finally:
                reader.close()

    def get_blob(self, repository: str, digest: str, *, size: int | None = None) -> bytes:
        """A whole blob in memory, digest verified (use stream_blob/open_blob for large blobs)."""
        with self.stream_blob(repository, digest, size=size) as chunks:
            return b"".join(chunks)

    def get_blob_range(self, repository: str, digest: str, start: int, end: int) -> bytes:
        """Bytes [start, end) of a blob via an HTTP Range request; RegistryError when the registry ignores Range."""
        repo, ref = self._repo(repository), validate_digest(digest)
        if start < 0 or end < start:
            raise ValueError(f"invalid byte range [{start}, {end}) for blob {repo}@{ref}")
        if start == end:
            return b""
        return blobs.blob_range(self._t, repo, ref, start, end, self._deadline("read blob range", end - start))

    # ---- blobs: write --------------------------------------------------------------------------

    def push_blob(self, repository: str, data: bytes, *, digest: str | None = None,
                  media_type: str = mt.OCTET_STREAM) -> Descriptor:
        """Upload a blob in one POST+PUT (skipped when the repository has it); restarts from the POST on failure."""
        repo = self._repo(repository)
        actual = compute_digest(data, digest_algorithm(digest) if digest else "sha256")
        if digest is not None and actual != validate_digest(digest):
            raise DigestMismatchError(f"blob for {repo} hashes to {actual}, not the given {digest}",
                                      registry=self.registry, repository=repo, reference=digest)
        uploads.upload(self._t, repo, uploads.BlobSource("the blob's bytes", lambda off: iter((data[off:],)),
                                                         reopenable=True),
                       actual, len(data), chunk_size=len(data) + 1, deadline=self._deadline("push blob", len(data)),
                       exists=lambda: self.blob_size(repo, actual) is not None, monolithic=True)
        return Descriptor(media_type=media_type, digest=actual, size=len(data))

    def push_blob_stream(self, repository: str, chunks: Iterable[bytes], digest: str, size: int,
                         chunk_size: int = 8 << 20) -> Descriptor:
        """Upload a blob from an iterable of bytes in PATCH chunks, then PUT ?digest=; digest and size are checked.

        Pieces are gathered until at least `chunk_size` bytes (or the registry's OCI-Chunk-Min-Length) are pending,
        then sent as one chunk (peak memory is about 3 x chunk_size); pieces are not split. After a failure the
        upload resumes from the registry's offset, else restarts when `chunks` can be iterated again; a lost answer
        to a committed upload is recognised by HEAD. When the repository already has the blob, `chunks` is not read.
        """
        repo, digest = self._repo(repository), validate_digest(digest)
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        uploads.upload(
            self._t,
            repo,
            uploads.BlobSource.of_chunks(chunks),
            digest,
            size,
            chunk_size=chunk_size,
            deadline=self._deadline("push blob", size),
            exists=lambda: self.blob_size(repo, digest) is not None,
        )
        return Descriptor(media_type=mt.OCTET_STREAM, digest=digest, size=size)

    def copy_blob(self, from_repository: str, repository: str, digest: str, size: int,
                  chunk_size: int = 8 << 20) -> Descriptor:
        """Make `repository` hold a blob of `from_repository`: nothing when present, else a mount, else a streamed
        upload that re-reads the source (with Range) to resume or restart; a source read failure names the source."""
        repo, src, ref = self._repo(repository), self._repo(from_repository), validate_digest(digest)
        descriptor = Descriptor(media_type=mt.OCTET_STREAM, digest=ref, size=size)
        if self.blob_size(repo, ref) is not None or self.mount_blob(repo, ref, src):
            return descriptor
        deadline = self._deadline("copy blob", 2 * size)

        def read(offset: int) -> Iterator[bytes]:
            return blobs.blob_chunks(self._t, src, ref, chunk_size=1 << 20, size=size, deadline=deadline, start=offset,
                                     action="read source blob")

        source = uploads.BlobSource(f"source blob {src}@{ref}", read, reopenable=True)
        uploads.upload(self._t, repo, source, ref, size, chunk_size=chunk_size, deadline=deadline,
                       exists=lambda: self.blob_size(repo, ref) is not None)
        return descriptor

    def mount_blob(self, repository: str, digest: str, from_repository: str) -> bool:
        """Cross-repository mount: True when mounted (201), False when the registry opened an upload (cancelled)."""
        repo, src, ref = self._repo(repository), self._repo(from_repository), validate_digest(digest)
        response = self._t.request(
            "POST", f"/v2/{repo}/blobs/uploads/", action=f"mount blob from {src} into", repository=repo, reference=ref,
            scopes=[f"repository:{repo}:pull,push", f"repository:{src}:pull"], params={"mount": ref, "from": src},
            expect=(201, 202), deadline=self._deadline("mount blob"),
        )
        if response.status_code == 201:
            return True
        if "location" in response.headers:
            uploads.cancel(self._t, repo, uploads.upload_location(self._t, response, repo, ref))
        return False

    # ---- listings ------------------------------------------------------------------------------

    def _paginate(self, path: str, key: str, *, action: str, repository: str | None, scopes: list[str],
                  page_size: int) -> list[str]:
        items: list[str] = []
        url: str | httpx.URL = path
        params: Any = {"n": page_size}
        seen: set[str] = set()
        for _ in range(MAX_PAGES):
            response = self._t.request("GET", url, action=action, repository=repository, scopes=scopes, params=params,
                                       deadline=self._deadline(action))
            try:
                items.extend(response.json().get(key) or [])
            except (ValueError, AttributeError):
                raise self._t.error(f"{action} {repository or ''} returned invalid JSON", repository) from None
            nxt = response.links.get("next", {}).get("url")
            if not nxt:
                return items
            url, params = response.request.url.join(nxt), None
            if str(url) in seen:
                return items
            seen.add(str(url))
        return items

    def list_tags(self, repository: str, page_size: int = 1000) -> list[str]:
        """All tags of a repository, following `Link: <...>; rel="next"` pagination."""
        repo = self._repo(repository)
        return self._paginate(f"/v2/{repo}/tags/list", "tags", action="list tags of", repository=repo,
                              scopes=[f"repository:{repo}:pull"], page_size=page_size)

    def catalog(self, page_size: int = 1000) -> list[str]:
        """All repositories of the registry (`/v2/_catalog`, paginated); many registries restrict it."""
        return self._paginate("/v2/_catalog", "repositories", action="list repositories of", repository=None,
                              scopes=["registry:catalog:*"], page_size=page_size)

    # ---- referrers -----------------------------------------------------------------------------

    def supports_referrers(self, repository: str) -> bool:
        """True when the registry implements the OCI referrers API (cached per repository)."""
        repo = self._repo(repository)
        if repo not in self._referrers_support:
            found = referrers.referrers_api(self._t, repo, _EMPTY_SHA256, None, self._deadline("list referrers"))
            self._referrers_support[repo] = found is not None
        return self._referrers_support[repo]

    def _manifest_or_none(self, repo: str, reference: str) -> RawManifest | None:
        try:
            return self.get_manifest(repo, reference, accept=(mt.OCI_INDEX,))
        except RegistryNotFoundError:
            return None

    def referrers(self, repository: str, digest: str, artifact_type: str | None = None) -> list[dict[str, Any]]:
        """Descriptors of manifests whose `subject` is `digest` (referrers API, else the `sha256-<hex>` tag index)."""
        repo, ref = self._repo(repository), validate_digest(digest)
        if self._referrers_support.get(repo, True):
            found = referrers.referrers_api(self._t, repo, ref, artifact_type, self._deadline("list referrers"))
            self._referrers_support[repo] = found is not None
            if found is not None:
                return found
        entries = referrers.read_tag_index(self._t, lambda tag: self._manifest_or_none(repo, tag), repo, ref) or []
        return [m for m in entries if not artifact_type or m.get("artifactType") == artifact_type]

    def put_referrers_tag(
        self, repository: str, subject_digest: str, descriptor: Mapping[str, Any] | Descriptor
    ) -> str:
        """Add a referrer to the `sha256-<hex>` tag index of `subject_digest`, safe against concurrent writers
        (read-merge-write until a re-read shows it stable); returns the index digest."""
        repo, subject = self._repo(repository), validate_digest(subject_digest)
        return referrers.add_to_tag_index(
            self._t, repo, subject, descriptor, get=lambda tag: self._manifest_or_none(repo, tag),
            put=lambda tag, data: self.put_manifest(repo, tag, data, mt.OCI_INDEX), settle=self.referrers_settle,
        )

    def push_referrer(self, repository: str, data: bytes, media_type: str) -> str:
        """Push a manifest with a `subject` by digest; without referrers support, also update the tag index."""
        manifest = RawManifest.from_data(data, media_type)
        subject = (manifest.json().get("subject") or {}).get("digest")
        if not subject:
            raise ValueError(f"manifest {manifest.digest} for {repository} has no subject; it is not a referrer")
        digest, response = self._put_manifest(repository, manifest.digest, data, media_type)
        if response.headers.get("oci-subject") != subject and not self.supports_referrers(repository):
            self.put_referrers_tag(repository, subject, referrers.referrer_descriptor(manifest))
        return digest

