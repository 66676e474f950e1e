"""OCI distribution (Docker Registry v2) client: manifests, blobs, tags, mounts and referrers over httpx."""

from __future__ import annotations

import email.utils
import hashlib
import io
import itertools
import json
import logging
import random
import re
import ssl
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import httpx

from resources.errors import StreamableError
from resources.oci.refs import (
    compute_digest,
    digest_algorithm,
    is_digest,
    is_loopback_host,
    validate_digest,
    validate_reference,
    validate_registry,
    validate_repository,
)
from resources.registry.auth import Authenticator, TokenRequestError
from resources.registry.docker_config import Credentials, load_credentials

log = logging.getLogger(__name__)

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_MEDIA_TYPES: tuple[str, ...] = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST)
INDEX_MEDIA_TYPES: tuple[str, ...] = (OCI_INDEX, DOCKER_MANIFEST_LIST)

MAX_MANIFEST_BYTES = 32 << 20
MAX_BACKOFF_SECONDS = 30.0
MAX_RETRY_AFTER_SECONDS = 60.0
MAX_REDIRECTS = 10
MAX_PAGES = 100_000
_EMPTY_SHA256 = compute_digest(b"")
_REFERRERS_UNSUPPORTED = (400, 404, 405, 406)
_REDIRECTS = (301, 302, 303, 307, 308)


class RegistryError(StreamableError):
    """A registry request failed; the message names registry, repository and reference, never credentials."""

    def __init__(
        self,
        message: str,
        *,
        registry: str = "",
        repository: str | None = None,
        reference: str | None = None,
        status: int | None = None,
        codes: Sequence[str] = (),
    ) -> None:
        super().__init__(message)
        self.registry = registry
        self.repository = repository
        self.reference = reference
        self.status = status
        self.codes = tuple(codes)


class RegistryAuthError(RegistryError):
    """The registry (or its token server) refused the credentials or the action (401/403)."""


class RegistryNotFoundError(RegistryError):
    """The repository, manifest, blob or upload does not exist (404)."""


class RegistryUnavailableError(RegistryError):
    """The registry could not be reached or kept failing (connection errors, timeouts, 429/5xx) after retries."""


class DigestMismatchError(RegistryError):
    """Content did not hash to the digest it was requested or announced by."""


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor: media type, digest and size."""

    media_type: str
    digest: str
    size: int

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (`mediaType`, `digest`, `size`)."""
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Descriptor:
        """Read `mediaType`/`digest`/`size` from a JSON descriptor."""
        try:
            return cls(str(data["mediaType"]), validate_digest(str(data["digest"])), int(data["size"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"invalid descriptor {dict(data)!r}: {exc}") from None


@dataclass(frozen=True)
class Manifest:
    """A manifest (or index) exactly as stored: media type, digest and raw bytes."""

    media_type: str
    digest: str
    data: bytes

    @classmethod
    def from_data(cls, data: bytes, media_type: str) -> Manifest:
        """A manifest for bytes to push, with its sha256 digest computed."""
        return cls(media_type=media_type, digest=compute_digest(data), data=data)

    def json(self) -> dict[str, Any]:
        """The parsed JSON document."""
        value = json.loads(self.data)
        if not isinstance(value, dict):
            raise ValueError(f"manifest {self.digest} is not a JSON object")
        return value

    def descriptor(self) -> Descriptor:
        """Descriptor of this manifest."""
        return Descriptor(self.media_type, self.digest, len(self.data))

    @property
    def is_index(self) -> bool:
        """True for an OCI index or a Docker manifest list."""
        return self.media_type in INDEX_MEDIA_TYPES


def referrer_descriptor(manifest: Manifest) -> dict[str, Any]:
    """The referrers-index entry for a manifest: descriptor + artifactType (or config mediaType) + annotations."""
    doc = manifest.json()
    entry: dict[str, Any] = manifest.descriptor().to_dict()
    artifact_type = doc.get("artifactType") or (doc.get("config") or {}).get("mediaType")
    if artifact_type:
        entry["artifactType"] = artifact_type
    if doc.get("annotations"):
        entry["annotations"] = doc["annotations"]
    return entry


_REFERRERS_TAG_RE = re.compile(r"^sha256-[0-9a-f]{64}$")


def is_referrers_tag(tag: str | None) -> bool:
    """True for an OCI referrers fallback tag (`sha256-<hex>`)."""
    return bool(tag) and _REFERRERS_TAG_RE.match(tag) is not None


def referrers_tag(digest: str) -> str:
    """The fallback tag that holds the referrers of `digest` (`sha256-<hex>`), per the OCI distribution spec."""
    algorithm, encoded = validate_digest(digest).split(":", 1)
    return f"{algorithm}-{encoded}"[:128]


def _split_host(registry: str) -> str:
    """Host part of `host[:port]` / `[v6]:port`."""
    if registry.startswith("["):
        return registry[: registry.index("]") + 1]
    return registry.rsplit(":", 1)[0] if registry.count(":") == 1 else registry


def _content_type(response: httpx.Response) -> str:
    return response.headers.get("content-type", "").split(";", 1)[0].strip()


def _error_codes(response: httpx.Response) -> tuple[list[str], str]:
    """Error codes and a short message from a registry error body (`{"errors": [{"code", "message"}]}`)."""
    try:
        errors = response.json().get("errors") or []
        codes = [str(e.get("code")) for e in errors if isinstance(e, dict) and e.get("code")]
        messages = [str(e.get("message")) for e in errors if isinstance(e, dict) and e.get("message")]
        return codes, "; ".join(messages)[:300]
    except (ValueError, AttributeError, httpx.ResponseNotRead):
        return [], ""


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date), capped."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        if parsed is None:
            return None
        seconds = parsed.timestamp() - time.time()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


def _credentials_refresher(provider: Callable[[], tuple[str, str]]) -> Callable[[], Credentials]:
    """Wrap a (username, password) provider into one returning Credentials."""

    def refresh() -> Credentials:
        username, password = provider()
        return Credentials(username=username, password=password)

    return refresh


class _RetryableStatus(StreamableError):
    """Internal: a 429/5xx answer that may be retried."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(response.status_code)
        self.response = response


class _BlobReader(io.RawIOBase):
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


class RegistryClient:
    """Synchronous client for one registry (pooled connections, auth, retries, digest checks)."""

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
        transport: httpx.BaseTransport | None = None,
        user_agent: str = "streamable/0.1",
        verify: bool | ssl.SSLContext = True,
        credentials_provider: Callable[[], tuple[str, str]] | None = None,
    ) -> None:
        """Connect lazily to `registry` (`host[:port]`, optionally with an http:// or https:// prefix).

        `credentials_provider` returns (username, password), is asked once up front and again when the registry
        rejects the current ones - e.g. a function returning fresh ECR tokens, which expire after 12 hours.
        """
        self.registry, scheme = self._parse_registry(registry, plain_http)
        api_host = "registry-1.docker.io" if self.registry == "docker.io" else self.registry
        self.base_url = f"{scheme}://{api_host}"
        self.plain_http = scheme == "http"
        self._plain_http_anywhere = bool(plain_http)  # explicit opt-in: redirects/uploads may use http off loopback
        self.timeout = timeout
        self.retries = max(0, retries)
        self.backoff = backoff
        self.user_agent = user_agent
        if (username is None) != (password is None):
            raise ValueError(f"registry {self.registry}: give both username and password, or neither")
        if username is not None and credentials_provider is not None:
            raise ValueError(f"registry {self.registry}: give username/password or credentials_provider, not both")
        refresh = _credentials_refresher(credentials_provider) if credentials_provider is not None else None
        credentials: Credentials | None
        if refresh is not None:
            credentials = refresh()
            self.credential_source = "credentials provider"
        elif username is not None:
            credentials = Credentials(username=username, password=password)
            self.credential_source = "explicit"
        else:
            credentials = load_credentials(self.registry, docker_config)
            self.credential_source = "docker config" if credentials else "anonymous"
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
            headers={"User-Agent": user_agent},
            transport=transport,
            verify=verify,
            follow_redirects=False,
            trust_env=True,
        )
        self._auth = Authenticator(
            self._http, credentials, user_agent=user_agent, allow_plain_http=self._plain_http_anywhere, refresh=refresh
        )
        self._referrers_support: dict[str, bool] = {}

    @staticmethod
    def _parse_registry(registry: str, plain_http: bool | None) -> tuple[str, str]:
        """(`host[:port]`, scheme), refusing plain HTTP to a non-loopback host unless explicitly allowed."""
        value = registry.strip().rstrip("/")
        scheme: str | None = None
        for prefix in ("http://", "https://"):
            if value.lower().startswith(prefix):
                scheme, value = prefix[:-3], value[len(prefix) :]
        if not value or "/" in value or "@" in value:
            raise ValueError(f"invalid registry {registry!r}: expected 'host[:port]'")
        validate_registry(value)
        host = _split_host(value)
        loopback = is_loopback_host(host)
        if scheme == "https" and plain_http:
            raise ValueError(f"registry {value}: https:// conflicts with plain_http=True")
        if scheme == "http" and plain_http is False:
            raise ValueError(f"registry {value}: http:// conflicts with plain_http=False")
        if scheme is None:
            scheme = "http" if (plain_http or (plain_http is None and loopback)) else "https"
        if scheme == "http" and not loopback and not plain_http:
            raise ValueError(
                f"registry {value}: plain HTTP is only used for loopback hosts; pass plain_http=True to allow it"
            )
        return value, scheme

    def __repr__(self) -> str:
        return f"RegistryClient(registry={self.registry!r}, url={self.base_url!r}, auth={self._auth.describe()!r})"

    def close(self) -> None:
        """Close pooled connections."""
        self._http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- request machinery -------------------------------------------------------------------

    def _sleep_before_retry(self, attempt: int, what: str, response: httpx.Response | None = None) -> None:
        delay = min(MAX_BACKOFF_SECONDS, self.backoff * (2**attempt))
        delay = random.uniform(delay / 2, delay)
        after = _retry_after(response) if response is not None else None
        if after is not None:
            delay = max(delay, after)
        log.warning("registry %s: %s; retry %d/%d in %.2fs", self.registry, what, attempt + 1, self.retries, delay)
        time.sleep(delay)

    def _describe_target(self, repository: str | None, reference: str | None) -> str:
        target = repository or "(registry)"
        if reference:
            target += f"@{reference}" if is_digest(reference) else f":{reference}"
        return target

    def _transport_error(
        self, exc: Exception, action: str, repository: str | None, reference: str | None, attempts: int
    ) -> RegistryUnavailableError:
        """Exception for a connection error or timeout; carries the message only, never the request."""
        return RegistryUnavailableError(
            f"registry {self.registry} ({self.base_url}) unreachable while trying to {action} "
            f"{self._describe_target(repository, reference)} after {attempts} attempt{'s' if attempts > 1 else ''}: "
            f"{type(exc).__name__}: {exc}",
            registry=self.registry, repository=repository, reference=reference,
        )

    def _status_error(
        self, response: httpx.Response, action: str, repository: str | None, reference: str | None, attempts: int = 1
    ) -> RegistryError:
        """Exception for a non-expected status (the body must have been read)."""
        status = response.status_code
        codes, message = _error_codes(response)
        detail = f"HTTP {status}" + (f" {', '.join(codes)}" if codes else "") + (f": {message}" if message else "")
        target = self._describe_target(repository, reference)
        kwargs: dict[str, Any] = dict(
            registry=self.registry, repository=repository, reference=reference, status=status, codes=codes
        )
        if status == 401:
            return RegistryAuthError(
                f"registry {self.registry}: not authorized to {action} {target} ({detail}); "
                f"authenticated {self._auth.describe()} (credentials: {self.credential_source})",
                **kwargs,
            )
        if status == 403:
            return RegistryAuthError(
                f"registry {self.registry}: access denied to {action} {target} ({detail}); "
                f"authenticated {self._auth.describe()} (credentials: {self.credential_source})",
                **kwargs,
            )
        if status == 404:
            return RegistryNotFoundError(
                f"registry {self.registry}: {target} not found while trying to {action} ({detail})", **kwargs
            )
        if status == 429 or status >= 500:
            return RegistryUnavailableError(
                f"registry {self.registry}: failed to {action} {target} after {attempts} "
                f"attempt{'s' if attempts > 1 else ''} ({detail})",
                **kwargs,
            )
        return RegistryError(f"registry {self.registry}: failed to {action} {target} ({detail})", **kwargs)

    def _same_origin(self, url: httpx.URL) -> bool:
        base = httpx.URL(self.base_url)
        return (url.scheme, url.host, url.port) == (base.scheme, base.host, base.port)

    def _check_url(self, url: httpx.URL, action: str) -> None:
        """Refuse a URL (redirect or upload Location) on plain HTTP off loopback unless plain_http=True was given."""
        if url.scheme == "http" and not self._plain_http_anywhere and not is_loopback_host(url.host):
            raise RegistryError(
                f"registry {self.registry}: refusing to {action} via plain-HTTP location on {url.host}",
                registry=self.registry,
            )
        if url.scheme not in ("http", "https"):
            raise RegistryError(
                f"registry {self.registry}: unsupported location scheme {url.scheme!r}", registry=self.registry
            )

    def _ensure_auth_known(self) -> None:
        """Learn the registry's auth scheme once, from `GET /v2/` (as docker and containerd do)."""
        if self._auth.known:
            return
        response = self._http.get("/v2/", headers={"Accept-Encoding": "identity"})
        if response.status_code == 429 or response.status_code >= 500:
            raise _RetryableStatus(response)
        self._auth.learn(response)

    def _send(
        self,
        method: str,
        url: str | httpx.URL,
        *,
        scopes: list[str],
        headers: Mapping[str, str] | None,
        params: Any,
        content: bytes | None,
        follow_redirects: bool,
        action: str,
    ) -> httpx.Response:
        """One attempt: auth header, one re-try after a 401 challenge, redirects; returns an unread response."""
        self._ensure_auth_known()
        target = self._http.build_request(method, url).url
        if params:
            target = target.copy_merge_params(params)  # keep Location's own query (e.g. upload `_state`)
        self._check_url(target, action)
        tried_challenge = False
        hops = 0
        while True:
            request_headers = dict(headers or {})
            if self._same_origin(target):
                auth = self._auth.header(scopes, timeout=self.timeout)
                if auth:
                    request_headers["Authorization"] = auth
            body: Iterator[bytes] | None = None
            if content is not None:
                # A one-shot iterator instead of the bytes: httpx responses sit in reference cycles until the
                # cyclic GC runs, and a finished request must not keep a multi-MiB upload chunk alive with them.
                request_headers["Content-Length"] = str(len(content))
                body = iter((content,))
            request = self._http.build_request(method, target, headers=request_headers, content=body)
            response = self._http.send(request, stream=True)
            if response.status_code == 401 and not tried_challenge and self._same_origin(target):
                tried_challenge = True
                response.read()
                response.close()
                if self._auth.on_unauthorized(response, scopes, timeout=self.timeout):
                    continue
                return response
            if follow_redirects and response.status_code in _REDIRECTS and "location" in response.headers:
                hops += 1
                location = response.headers["location"]
                response.close()
                if hops > MAX_REDIRECTS:
                    raise RegistryError(
                        f"registry {self.registry}: too many redirects while trying to {action}", registry=self.registry
                    )
                target = target.join(location)
                self._check_url(target, action)
                if response.status_code == 303 and method != "HEAD":
                    method, content = "GET", None
                continue
            return response

    def _request(
        self,
        method: str,
        url: str | httpx.URL,
        *,
        action: str,
        repository: str | None,
        reference: str | None = None,
        scopes: list[str] | None = None,
        headers: Mapping[str, str] | None = None,
        params: Any = None,
        content: bytes | None = None,
        expect: Collection[int] = (200,),
        stream: bool = False,
        follow_redirects: bool = False,
        retry: bool = True,
    ) -> httpx.Response:
        """Send with retries (connection errors, timeouts, 429, 5xx); return a response whose status is in `expect`.

        With stream=True the body is not read and the caller must close the response.
        """
        if scopes is None:
            scopes = [f"repository:{repository}:pull"] if repository else []
        attempt = 0
        while True:
            response: httpx.Response | None = None
            failure: RegistryError | None = None
            try:
                response = self._send(
                    method, url, scopes=scopes, headers=headers, params=params, content=content,
                    follow_redirects=follow_redirects, action=action,
                )
                if response.status_code in expect:
                    if not stream:
                        response.read()
                    return response
                response.read()
                if response.status_code == 429 or response.status_code >= 500:
                    raise _RetryableStatus(response)
                raise self._status_error(response, action, repository, reference)
            except _RetryableStatus as exc:
                if not retry or attempt >= self.retries:
                    failure = self._status_error(exc.response, action, repository, reference, attempt + 1)
                else:
                    self._sleep_before_retry(attempt, f"{action} answered HTTP {exc.response.status_code}", exc.response)
            except httpx.TransportError as exc:
                if response is not None:
                    response.close()
                if not retry or attempt >= self.retries:
                    failure = self._transport_error(exc, action, repository, reference, attempt + 1)
                else:
                    self._sleep_before_retry(attempt, f"{action} failed: {type(exc).__name__}")
            except TokenRequestError as exc:
                if exc.retryable and retry and attempt < self.retries:
                    self._sleep_before_retry(attempt, f"token request failed: {exc}")
                else:
                    cls = RegistryUnavailableError if exc.retryable else RegistryAuthError
                    failure = cls(
                        f"registry {self.registry}: cannot get a token to {action} "
                        f"{self._describe_target(repository, reference)} ({exc}); "
                        f"authenticating {self._auth.describe()} (credentials: {self.credential_source})",
                        registry=self.registry, repository=repository, reference=reference, status=exc.status,
                    )
            if failure is not None:
                raise failure  # outside the except blocks: no __context__ pointing at requests with credentials
            attempt += 1

    # ---- basics ------------------------------------------------------------------------------

    def ping(self) -> None:
        """Check that the registry answers `GET /v2/` and that the credentials are accepted."""
        self._request("GET", "/v2/", action="ping", repository=None, scopes=[])

    @staticmethod
    def _repo(repository: str) -> str:
        return validate_repository(repository)

    # ---- manifests ---------------------------------------------------------------------------

    def get_manifest(self, repository: str, reference: str, accept: Sequence[str] = MANIFEST_MEDIA_TYPES) -> Manifest:
        """Fetch a manifest or index by tag or digest; the digest is verified (against the reference or the registry's header)."""
        repo, ref = self._repo(repository), validate_reference(reference)
        response = self._request(
            "GET", f"/v2/{repo}/manifests/{ref}", action="pull manifest", repository=repo, reference=ref,
            headers={"Accept": ", ".join(accept)}, stream=True,
        )
        failure: RegistryError | None = None
        body = bytearray()
        try:
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_MANIFEST_BYTES:
                    raise RegistryError(
                        f"registry {self.registry}: manifest {repo}{'@' if is_digest(ref) else ':'}{ref} is larger than "
                        f"{MAX_MANIFEST_BYTES} bytes", registry=self.registry, repository=repo, reference=ref,
                    )
        except httpx.TransportError as exc:
            failure = self._transport_error(exc, "pull manifest", repo, ref, 1)
        finally:
            response.close()
        if failure is not None:
            raise failure
        data = bytes(body)
        header_digest = response.headers.get("docker-content-digest")
        expected = ref if is_digest(ref) else header_digest
        algorithm = digest_algorithm(expected) if expected and ":" in expected else "sha256"
        digest = compute_digest(data, algorithm)
        if expected and digest != expected:
            source = "requested" if is_digest(ref) else "announced by Docker-Content-Digest"
            raise DigestMismatchError(
                f"registry {self.registry}: manifest {self._describe_target(repo, ref)} hashes to {digest}, "
                f"not the {source} {expected}",
                registry=self.registry, repository=repo, reference=ref,
            )
        media_type = _content_type(response)
        if media_type not in MANIFEST_MEDIA_TYPES:
            try:
                media_type = json.loads(data).get("mediaType") or media_type
            except (ValueError, AttributeError):
                pass
        return Manifest(media_type=media_type, digest=digest, data=data)

    def head_manifest(self, repository: str, reference: str) -> Descriptor | None:
        """Descriptor of a manifest by tag or digest, or None when it does not exist."""
        repo, ref = self._repo(repository), validate_reference(reference)
        response = self._request(
            "HEAD", f"/v2/{repo}/manifests/{ref}", action="check manifest", repository=repo, reference=ref,
            headers={"Accept": ", ".join(MANIFEST_MEDIA_TYPES)}, expect=(200, 404),
        )
        if response.status_code == 404:
            return None
        digest = response.headers.get("docker-content-digest")
        size = response.headers.get("content-length")
        media_type = _content_type(response)
        if not digest or size is None or media_type not in MANIFEST_MEDIA_TYPES:
            return self.get_manifest(repo, ref).descriptor()
        if is_digest(ref) and digest != ref:
            raise DigestMismatchError(
                f"registry {self.registry}: HEAD {repo}@{ref} announced digest {digest}",
                registry=self.registry, repository=repo, reference=ref,
            )
        return Descriptor(media_type=media_type, digest=validate_digest(digest), size=int(size))

    def _put_manifest(self, repository: str, reference: str, data: bytes, media_type: str) -> tuple[str, httpx.Response]:
        repo, ref = self._repo(repository), validate_reference(reference)
        digest = compute_digest(data, digest_algorithm(ref) if is_digest(ref) else "sha256")
        if is_digest(ref) and ref != digest:
            raise ValueError(f"manifest for {repo}@{ref} hashes to {digest}; refusing to push it under another digest")
        try:
            declared = json.loads(data).get("mediaType")
        except (ValueError, AttributeError):
            raise ValueError(f"manifest for {self._describe_target(repo, ref)} is not a JSON object") from None
        if declared and declared != media_type:
            raise ValueError(
                f"manifest for {self._describe_target(repo, ref)} declares mediaType {declared!r} but is pushed as {media_type!r}"
            )
        response = self._request(
            "PUT", f"/v2/{repo}/manifests/{ref}", action="push manifest", repository=repo, reference=ref,
            scopes=[f"repository:{repo}:pull,push"], headers={"Content-Type": media_type}, content=data,
            expect=(200, 201, 202),
        )
        announced = response.headers.get("docker-content-digest")
        if announced and ":" in announced and digest_algorithm(announced) == digest_algorithm(digest) and announced != digest:
            raise DigestMismatchError(
                f"registry {self.registry}: stored manifest {self._describe_target(repo, ref)} as {announced}, "
                f"but its bytes hash to {digest}",
                registry=self.registry, repository=repo, reference=ref,
            )
        return digest, response

    def put_manifest(self, repository: str, reference: str, data: bytes, media_type: str) -> str:
        """Push manifest bytes under a tag or digest; returns the digest (checked against Docker-Content-Digest)."""
        digest, _ = self._put_manifest(repository, reference, data, media_type)
        return digest

    def delete_manifest(self, repository: str, digest: str) -> None:
        """Delete a manifest by digest (RegistryNotFoundError when absent)."""
        repo, ref = self._repo(repository), validate_digest(digest)
        self._request(
            "DELETE", f"/v2/{repo}/manifests/{ref}", action="delete manifest", repository=repo, reference=ref,
            scopes=[f"repository:{repo}:delete"], expect=(200, 202),
        )

    # ---- blobs: read -------------------------------------------------------------------------

    def blob_size(self, repository: str, digest: str) -> int | None:
        """Size of a blob from HEAD, or None when the repository does not have it."""
        repo, ref = self._repo(repository), validate_digest(digest)
        response = self._request(
            "HEAD", f"/v2/{repo}/blobs/{ref}", action="check blob", repository=repo, reference=ref,
            expect=(200, 404), follow_redirects=True, headers={"Accept-Encoding": "identity"},
        )
        if response.status_code == 404:
            return None
        size = response.headers.get("content-length")
        return int(size) if size is not None else None

    def _blob_chunks(self, repo: str, digest: str, chunk_size: int) -> Iterator[bytes]:
        """Blob bytes in chunks, resuming with Range after a broken connection; verifies the digest at the end."""
        hasher = hashlib.new(digest_algorithm(digest))
        received = 0
        attempt = 0
        while True:
            headers = {"Accept-Encoding": "identity"}
            if received:
                headers["Range"] = f"bytes={received}-"
            response = self._request(
                "GET", f"/v2/{repo}/blobs/{digest}", action="pull blob", repository=repo, reference=digest,
                headers=headers, expect=(200, 206), stream=True, follow_redirects=True,
            )
            failure: RegistryError | None = None
            try:
                skip = 0
                if received and response.status_code == 200:
                    skip = received  # server ignored Range: drop what we already have
                elif received:
                    start = response.headers.get("content-range", "").removeprefix("bytes ").split("-", 1)[0]
                    if start != str(received):
                        raise RegistryError(
                            f"registry {self.registry}: resuming blob {repo}@{digest} at byte {received} got "
                            f"Content-Range {response.headers.get('content-range')!r}",
                            registry=self.registry, repository=repo, reference=digest,
                        )
                for chunk in response.iter_raw(chunk_size):
                    if skip:
                        drop = min(skip, len(chunk))
                        chunk, skip = chunk[drop:], skip - drop
                        if not chunk:
                            continue
                    hasher.update(chunk)
                    received += len(chunk)
                    yield chunk
                break
            except httpx.TransportError as exc:
                if attempt >= self.retries:
                    failure = self._transport_error(exc, "pull blob", repo, digest, attempt + 1)
                else:
                    self._sleep_before_retry(attempt, f"blob download broke at byte {received}: {type(exc).__name__}")
                    attempt += 1
            finally:
                response.close()
            if failure is not None:
                raise failure
        actual = f"{digest_algorithm(digest)}:{hasher.hexdigest()}"
        if actual != digest:
            raise DigestMismatchError(
                f"registry {self.registry}: blob {repo}@{digest} hashes to {actual} ({received} bytes)",
                registry=self.registry, repository=repo, reference=digest,
            )

    @contextmanager
    def stream_blob(self, repository: str, digest: str, chunk_size: int = 1 << 20) -> Iterator[Iterator[bytes]]:
        """Stream a blob without buffering it (following redirects); DigestMismatchError when fully read and wrong."""
        repo, ref = self._repo(repository), validate_digest(digest)
        chunks = self._blob_chunks(repo, ref, chunk_size)
        try:
            yield chunks
        finally:
            chunks.close()

    @contextmanager
    def open_blob(self, repository: str, digest: str, chunk_size: int = 1 << 20) -> Iterator[BinaryIO]:
        """A file-like reader (`read(n)`) over a streamed blob; reading to EOF verifies the digest."""
        with self.stream_blob(repository, digest, chunk_size) as chunks:
            reader = io.BufferedReader(_BlobReader(chunks), buffer_size=chunk_size)
            try:
                yield reader  # type: ignore[misc]
            finally:
                reader.close()

    def get_blob(self, repository: str, digest: str) -> bytes:
        """A whole blob in memory, digest verified (use stream_blob/open_blob for large blobs)."""
        with self.stream_blob(repository, digest) as chunks:
            return b"".join(chunks)

    def get_blob_range(self, repository: str, digest: str, start: int, end: int) -> bytes:
        """Bytes [start, end) of a blob via an HTTP Range request; RegistryError when the registry ignores Range."""
        repo, ref = self._repo(repository), validate_digest(digest)
        if start < 0 or end < start:
            raise ValueError(f"invalid byte range [{start}, {end}) for blob {repo}@{ref}")
        if start == end:
            return b""
        wanted = f"{start}-{end - 1}"
        attempt = 0
        while True:
            response = self._request(
                "GET", f"/v2/{repo}/blobs/{ref}", action=f"read bytes {wanted} of blob", repository=repo,
                reference=ref, headers={"Range": f"bytes={wanted}", "Accept-Encoding": "identity"},
                expect=(200, 206, 416), stream=True, follow_redirects=True,
            )
            failure: RegistryError | None = None
            try:
                self._check_range_response(response, repo, ref, start, end)
                data = b"".join(response.iter_raw())
            except httpx.TransportError as exc:  # body broke off: ask again
                if attempt >= self.retries:
                    failure = self._transport_error(exc, f"read bytes {wanted} of blob", repo, ref, attempt + 1)
                else:
                    self._sleep_before_retry(attempt, f"range read broke: {type(exc).__name__}")
                    attempt += 1
                    continue
            finally:
                response.close()
            if failure is not None:
                raise failure
            if len(data) != end - start:
                raise RegistryError(
                    f"registry {self.registry}: asked {end - start} bytes ({wanted}) of blob {repo}@{ref}, got {len(data)}",
                    registry=self.registry, repository=repo, reference=ref,
                )
            return data

    def _check_range_response(self, response: httpx.Response, repo: str, ref: str, start: int, end: int) -> None:
        """Raise unless the response carries exactly bytes [start, end) (a 200 is fine only for the whole blob)."""
        wanted = f"{start}-{end - 1}"
        if response.status_code == 416:  # body not read: distribution announces a wrong Content-Length here
            raise RegistryError(
                f"registry {self.registry}: bytes {wanted} are outside blob {repo}@{ref} "
                f"(Content-Range {response.headers.get('content-range')!r})",
                registry=self.registry, repository=repo, reference=ref, status=416,
            )
        if response.status_code == 200:
            total = response.headers.get("content-length")
            if not (start == 0 and total is not None and int(total) == end):
                raise RegistryError(
                    f"registry {self.registry}: ignored the Range request for bytes {wanted} of blob {repo}@{ref} "
                    "and answered with the whole blob (HTTP 200); range reads need a registry that supports Range",
                    registry=self.registry, repository=repo, reference=ref, status=200,
                )
            return
        got = response.headers.get("content-range", "").removeprefix("bytes ").split("/", 1)[0]
        if got != wanted:
            raise RegistryError(
                f"registry {self.registry}: asked bytes {wanted} of blob {repo}@{ref}, got Content-Range {got!r}",
                registry=self.registry, repository=repo, reference=ref, status=206,
            )

    # ---- blobs: write ------------------------------------------------------------------------

    def _push_scopes(self, repo: str) -> list[str]:
        return [f"repository:{repo}:pull,push"]

    def _start_upload(self, repo: str, digest: str | None = None) -> httpx.URL:
        """POST a new upload session; returns its Location."""
        return self._start_upload_session(repo, digest)[0]

    def _start_upload_session(self, repo: str, digest: str | None) -> tuple[httpx.URL, int]:
        """POST a new upload session; returns its Location and the registry's minimum chunk size (0 if none)."""
        response = self._request(
            "POST", f"/v2/{repo}/blobs/uploads/", action="start blob upload", repository=repo, reference=digest,
            scopes=self._push_scopes(repo), expect=(202,),
        )
        try:
            min_chunk = int(response.headers.get("oci-chunk-min-length", "0"))
        except ValueError:
            min_chunk = 0
        return self._upload_location(response, repo, digest), max(min_chunk, 0)

    def _upload_location(self, response: httpx.Response, repo: str, digest: str | None) -> httpx.URL:
        location = response.headers.get("location")
        if not location:
            raise RegistryError(
                f"registry {self.registry}: upload to {repo} answered HTTP {response.status_code} without a Location",
                registry=self.registry, repository=repo, reference=digest,
            )
        url = response.request.url.join(location)
        self._check_url(url, "upload blob")
        return url

    def _cancel_upload(self, repo: str, location: httpx.URL) -> None:
        """Best-effort DELETE of an upload session."""
        try:
            self._request(
                "DELETE", location, action="cancel blob upload", repository=repo, scopes=self._push_scopes(repo),
                expect=(200, 202, 204, 404), retry=False,
            )
        except RegistryError as exc:
            log.warning("registry %s: could not cancel upload to %s: %s", self.registry, repo, exc)

    def push_blob(
        self, repository: str, data: bytes, *, digest: str | None = None, media_type: str = "application/octet-stream"
    ) -> Descriptor:
        """Upload a blob in one POST+PUT (skipped when the repository already has it); restarts from the POST on failure."""
        repo = self._repo(repository)
        actual = compute_digest(data, digest_algorithm(digest) if digest else "sha256")
        if digest is not None and actual != validate_digest(digest):
            raise DigestMismatchError(
                f"blob for {repo} hashes to {actual}, not the given {digest}", registry=self.registry, repository=repo,
                reference=digest,
            )
        descriptor = Descriptor(media_type=media_type, digest=actual, size=len(data))
        attempt = 0
        while True:
            if self.blob_size(repo, actual) is not None:
                return descriptor
            try:
                location = self._start_upload(repo, actual)
                self._request(
                    "PUT", location, action="push blob", repository=repo, reference=actual,
                    scopes=self._push_scopes(repo), params={"digest": actual},
                    headers={"Content-Type": "application/octet-stream"}, content=data, expect=(201,), retry=False,
                )
                return descriptor
            except (RegistryUnavailableError, RegistryNotFoundError) as exc:
                if attempt >= self.retries:
                    raise
                self._sleep_before_retry(attempt, f"blob upload failed, restarting it: {exc}")
                attempt += 1

    def _upload_offset(self, repo: str, location: httpx.URL) -> tuple[int, httpx.URL]:
        """How many bytes an upload session holds (from `GET <location>`'s Range) and its current Location."""
        response = self._request(
            "GET", location, action="check blob upload", repository=repo, scopes=self._push_scopes(repo), expect=(204,),
        )
        new_location = self._upload_location(response, repo, None) if "location" in response.headers else location
        rng = response.headers.get("range", "")
        try:
            end = int(rng.rsplit("-", 1)[1]) if "-" in rng else -1
        except ValueError:
            end = -1
        # distribution answers "0-0" for an empty session; an upload of one byte is indistinguishable and rare.
        return (0 if end <= 0 else end + 1), new_location

    def _patch_chunk(self, repo: str, location: httpx.URL, offset: int, chunk: bytes) -> httpx.URL:
        """PATCH one chunk at `offset`; after a failure, ask the session how much it has and resend only if needed."""
        attempt = 0
        while True:
            try:
                response = self._request(
                    "PATCH", location, action="upload blob chunk", repository=repo, scopes=self._push_scopes(repo),
                    headers={"Content-Type": "application/octet-stream",
                             "Content-Range": f"{offset}-{offset + len(chunk) - 1}"},
                    content=chunk, expect=(202,), retry=False,
                )
                return self._upload_location(response, repo, None)
            except RegistryUnavailableError as exc:
                if attempt >= self.retries:
                    raise
                self._sleep_before_retry(attempt, f"chunk upload at byte {offset} failed: {exc}")
                attempt += 1
                held, location = self._upload_offset(repo, location)
                if held == offset + len(chunk):
                    return location
                if held != offset:
                    raise RegistryError(
                        f"registry {self.registry}: upload to {repo} holds {held} bytes after a failed chunk at "
                        f"{offset}-{offset + len(chunk) - 1}; cannot resume",
                        registry=self.registry, repository=repo,
                    ) from None

    def push_blob_stream(
        self, repository: str, chunks: Iterable[bytes], digest: str, size: int, chunk_size: int = 8 << 20
    ) -> Descriptor:
        """Upload a blob from an iterable of bytes in PATCH chunks, then PUT ?digest=; digest and size are checked first.

        Pieces are gathered until at least `chunk_size` bytes (or the registry's OCI-Chunk-Min-Length) are pending,
        then sent as one chunk (peak memory is about 3 x chunk_size, counting the HTTP stack's copy); pieces are
        not split.

        A failed chunk is resent after asking the session how much it holds. When the session is lost, the upload
        restarts from the POST if `chunks` can be iterated again (a list, not a generator). When the repository
        already has the blob, `chunks` is not consumed.
        """
        repo, digest = self._repo(repository), validate_digest(digest)
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        descriptor = Descriptor(media_type="application/octet-stream", digest=digest, size=size)
        restartable = not isinstance(chunks, Iterator)
        attempt = 0
        while True:
            if self.blob_size(repo, digest) is not None:
                return descriptor
            try:
                self._upload_session(repo, chunks, digest, size, chunk_size)
                return descriptor
            except (RegistryUnavailableError, RegistryNotFoundError) as exc:
                if attempt >= self.retries:
                    raise
                if not restartable:
                    raise RegistryUnavailableError(
                        f"{exc}; the upload of {digest} to {repo} cannot restart because its chunks came from a "
                        "one-shot iterator (pass a list or another re-iterable to allow restarts)",
                        registry=self.registry, repository=repo, reference=digest, status=exc.status,
                    ) from None
                self._sleep_before_retry(attempt, f"chunked upload of {digest} failed, restarting it: {exc}")
                attempt += 1

    def _upload_session(self, repo: str, chunks: Iterable[bytes], digest: str, size: int, chunk_size: int) -> None:
        """One upload session: POST, PATCH chunks, verify, PUT ?digest=; the session is cancelled on any error."""
        location, min_chunk = self._start_upload_session(repo, digest)
        chunk_size = max(chunk_size, min_chunk)
        hasher = hashlib.new(digest_algorithm(digest))
        offset = 0
        parts: list[bytes] = []
        pending = 0
        try:
            for piece in itertools.chain(chunks, [b""]):
                if piece:
                    parts.append(bytes(piece))
                    pending += len(piece)
                if pending >= chunk_size or (not piece and pending):  # full chunk, or the tail at the end
                    chunk = b"".join(parts)
                    parts, pending = [], 0
                    location = self._patch_chunk(repo, location, offset, chunk)
                    hasher.update(chunk)
                    offset += len(chunk)
            actual = f"{digest_algorithm(digest)}:{hasher.hexdigest()}"
            if actual != digest or offset != size:
                raise DigestMismatchError(
                    f"blob streamed to {repo} is {offset} bytes with digest {actual}, expected {size} bytes with "
                    f"{digest}; upload cancelled",
                    registry=self.registry, repository=repo, reference=digest,
                )
            self._request(
                "PUT", location, action="finish blob upload", repository=repo, reference=digest,
                scopes=self._push_scopes(repo), params={"digest": digest}, expect=(201,),
            )
        except Exception:
            self._cancel_upload(repo, location)
            raise

    def mount_blob(self, repository: str, digest: str, from_repository: str) -> bool:
        """Cross-repository mount; True when mounted (201), False when the registry opened an upload instead (cancelled)."""
        repo, src, ref = self._repo(repository), self._repo(from_repository), validate_digest(digest)
        response = self._request(
            "POST", f"/v2/{repo}/blobs/uploads/", action=f"mount blob from {src} into", repository=repo, reference=ref,
            scopes=[f"repository:{repo}:pull,push", f"repository:{src}:pull"], params={"mount": ref, "from": src},
            expect=(201, 202),
        )
        if response.status_code == 201:
            return True
        if "location" in response.headers:
            self._cancel_upload(repo, self._upload_location(response, repo, ref))
        return False

    # ---- listings ----------------------------------------------------------------------------

    def _paginate(self, path: str, key: str, *, action: str, repository: str | None, scopes: list[str], page_size: int) -> list[str]:
        items: list[str] = []
        url: str | httpx.URL = path
        params: Any = {"n": page_size}
        seen: set[str] = set()
        for _ in range(MAX_PAGES):
            response = self._request("GET", url, action=action, repository=repository, scopes=scopes, params=params)
            try:
                items.extend(response.json().get(key) or [])
            except (ValueError, AttributeError):
                raise RegistryError(
                    f"registry {self.registry}: {action} {repository or ''} returned invalid JSON",
                    registry=self.registry, repository=repository,
                ) from None
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

    # ---- referrers ---------------------------------------------------------------------------

    def _referrers_api(self, repo: str, digest: str, artifact_type: str | None) -> list[dict[str, Any]] | None:
        """Referrers from `GET /v2/<repo>/referrers/<digest>`, or None when the registry lacks the API."""
        params = {"artifactType": artifact_type} if artifact_type else None
        url: str | httpx.URL = f"/v2/{repo}/referrers/{digest}"
        found: list[dict[str, Any]] = []
        filtered = False
        for _ in range(MAX_PAGES):
            response = self._request(
                "GET", url, action="list referrers of", repository=repo, reference=digest, params=params,
                headers={"Accept": OCI_INDEX}, expect=(200, *_REFERRERS_UNSUPPORTED),
            )
            if response.status_code != 200:
                return None
            try:
                doc = response.json()
            except ValueError:
                return None
            if not isinstance(doc, dict) or doc.get("mediaType") != OCI_INDEX or not isinstance(doc.get("manifests"), list):
                return None
            filtered = filtered or "artifactType" in response.headers.get("oci-filters-applied", "")
            found.extend(m for m in doc["manifests"] if isinstance(m, dict))
            nxt = response.links.get("next", {}).get("url")
            if not nxt:
                break
            url, params = response.request.url.join(nxt), None
        if artifact_type and not filtered:
            found = [m for m in found if m.get("artifactType") == artifact_type]
        return found

    def supports_referrers(self, repository: str) -> bool:
        """True when the registry implements the OCI referrers API (cached per repository)."""
        repo = self._repo(repository)
        if repo not in self._referrers_support:
            self._referrers_support[repo] = self._referrers_api(repo, _EMPTY_SHA256, None) is not None
        return self._referrers_support[repo]

    def _referrers_tag_index(self, repo: str, digest: str) -> dict[str, Any] | None:
        """The fallback `sha256-<hex>` index document, or None when the tag does not exist."""
        tag = referrers_tag(digest)
        try:
            manifest = self.get_manifest(repo, tag, accept=(OCI_INDEX,))
        except RegistryNotFoundError:
            return None
        doc = manifest.json()
        if manifest.media_type != OCI_INDEX or not isinstance(doc.get("manifests"), list):
            raise RegistryError(
                f"registry {self.registry}: referrers tag {repo}:{tag} is a {manifest.media_type}, not an OCI index",
                registry=self.registry, repository=repo, reference=tag,
            )
        return doc

    def referrers(self, repository: str, digest: str, artifact_type: str | None = None) -> list[dict[str, Any]]:
        """Descriptors of manifests whose `subject` is `digest` (referrers API, else the `sha256-<hex>` tag index)."""
        repo, ref = self._repo(repository), validate_digest(digest)
        if self._referrers_support.get(repo, True):
            found = self._referrers_api(repo, ref, artifact_type)
            if found is not None:
                self._referrers_support[repo] = True
                return found
            self._referrers_support[repo] = False
        doc = self._referrers_tag_index(repo, ref)
        if doc is None:
            return []
        entries = [m for m in doc["manifests"] if isinstance(m, dict)]
        if artifact_type:
            entries = [m for m in entries if m.get("artifactType") == artifact_type]
        return entries

    def put_referrers_tag(self, repository: str, subject_digest: str, descriptor: Mapping[str, Any] | Descriptor) -> str:
        """Add a referrer descriptor to the `sha256-<hex>` tag index of `subject_digest` (deduped by digest); returns the index digest.

        Read-modify-write without a lock: concurrent writers to the same subject can lose an entry.
        """
        repo, subject = self._repo(repository), validate_digest(subject_digest)
        entry = descriptor.to_dict() if isinstance(descriptor, Descriptor) else dict(descriptor)
        Descriptor.from_dict(entry)  # validates mediaType/digest/size
        doc = self._referrers_tag_index(repo, subject) or {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
        manifests = [m for m in doc["manifests"] if isinstance(m, dict) and m.get("digest") != entry["digest"]]
        manifests.append(entry)
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
        data = json.dumps(index, separators=(",", ":")).encode()
        return self.put_manifest(repo, referrers_tag(subject), data, OCI_INDEX)

    def push_referrer(self, repository: str, data: bytes, media_type: str) -> str:
        """Push a manifest that has a `subject` by digest; without registry referrers support, also update the tag index."""
        manifest = Manifest.from_data(data, media_type)
        subject = (manifest.json().get("subject") or {}).get("digest")
        if not subject:
            raise ValueError(f"manifest {manifest.digest} for {repository} has no subject; it is not a referrer")
        digest, response = self._put_manifest(repository, manifest.digest, data, media_type)
        if response.headers.get("oci-subject") != subject and not self.supports_referrers(repository):
            self.put_referrers_tag(repository, subject, referrer_descriptor(manifest))
        return digest
