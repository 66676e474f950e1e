"""HTTP to one registry: connection pool, auth header and 401 challenge, redirects, and requests retried per policy."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Collection, Iterator, Mapping
from typing import Any

import httpx

from resources.oci.refs import DEFAULT_REGISTRY, is_loopback_host, validate_registry
from resources.registry import retry
from resources.registry.auth import Authenticator, TokenRequestError
from resources.registry.docker_config import Credentials, load_credentials
from resources.registry.errors import (
    RegistryAuthError,
    RegistryDeadlineError,
    RegistryError,
    RegistryUnavailableError,
    describe_target,
    redact,
    registry_label,
    status_error,
)

MAX_REDIRECTS = 10
MAX_BODY_BYTES = 32 << 20  # a JSON answer (tag list page, referrers index) read whole
MAX_ERROR_BODY_BYTES = 64 << 10  # an error answer: enough for its JSON error list
REDIRECTS = (301, 302, 303, 307, 308)
DOCKER_HUB_API = "registry-1.docker.io"


def split_host(registry: str) -> str:
    """Host part of `host[:port]` / `[v6]:port`."""
    if registry.startswith("["):
        return registry[: registry.index("]") + 1]
    return registry.rsplit(":", 1)[0] if registry.count(":") == 1 else registry


def parse_registry(registry: str, plain_http: bool | None) -> tuple[str, str]:
    """(`host[:port]`, scheme), refusing plain HTTP to a non-loopback host unless explicitly allowed."""
    value = registry.strip().rstrip("/")
    scheme: str | None = None
    for prefix in ("http://", "https://"):
        if value.lower().startswith(prefix):
            scheme, value = prefix[:-3], value[len(prefix) :]
    if not value or "/" in value or "@" in value:
        raise ValueError(f"invalid registry {registry!r}: expected 'host[:port]'")
    validate_registry(value)
    loopback = is_loopback_host(split_host(value))
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


def is_refused(exc: BaseException) -> bool:
    """True for a connection refused by the peer (nothing listens: retrying with backoff does not help)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError) or "Connection refused" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def credentials_for(
    registry: str, username: str | None, password: str | None, docker_config: Any,
    provider: Callable[[], tuple[str, str]] | None,
) -> tuple[Credentials | None, str, Callable[[], Credentials] | None]:
    """(credentials, where they came from, refresher) from explicit values, a provider or the Docker config."""
    if (username is None) != (password is None):
        raise ValueError(f"registry {registry}: give both username and password, or neither")
    if username is not None and provider is not None:
        raise ValueError(f"registry {registry}: give username/password or credentials_provider, not both")
    if provider is not None:
        def refresh() -> Credentials:
            user, secret = provider()
            return Credentials(username=user, password=secret)
        return refresh(), "credentials provider", refresh
    if username is not None:
        return Credentials(username=username, password=password), "explicit", None
    found = load_credentials(registry, docker_config)
    return found, ("docker config" if found else "anonymous"), None


class Transport:
    """Requests to one registry: auth, redirects, URL checks, and the retry policy around each request."""

    def __init__(
        self,
        registry: str,
        scheme: str,
        *,
        credentials: Credentials | None,
        credential_source: str,
        refresh: Callable[[], Credentials] | None,
        plain_http_anywhere: bool,
        timeout: float,
        policy: retry.RetryPolicy,
        transport: httpx.BaseTransport | None,
        user_agent: str,
        verify: bool | ssl.SSLContext,
    ) -> None:
        self.registry = registry
        self.label = registry_label(registry)
        api_host = DOCKER_HUB_API if registry == DEFAULT_REGISTRY else registry
        self.base_url = f"{scheme}://{api_host}"
        self.plain_http_anywhere = plain_http_anywhere
        self.timeout = timeout
        self.policy = policy
        self.credential_source = credential_source
        self.http = httpx.Client(
            base_url=self.base_url, timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
            headers={"User-Agent": user_agent}, transport=transport, verify=verify, follow_redirects=False,
            trust_env=True,
        )
        self.auth = Authenticator(
            self.http, credentials, user_agent=user_agent, allow_plain_http=plain_http_anywhere, refresh=refresh
        )

    def close(self) -> None:
        """Close pooled connections."""
        self.http.close()

    # ---- errors ----------------------------------------------------------------------------

    def auth_note(self) -> str:
        """How requests authenticate (no secrets), for 401/403 messages."""
        return f"authenticated {self.auth.describe()} (credentials: {self.credential_source})"

    def status_error(self, response: httpx.Response, action: str, repository: str | None, reference: str | None,
                     attempts: int = 1) -> RegistryError:
        """The exception for an unexpected status (body read)."""
        return status_error(response, registry=self.registry, action=action, repository=repository,
                            reference=reference, attempts=attempts, auth=self.auth_note())

    def transport_error(self, exc: Exception, action: str, repository: str | None, reference: str | None,
                        attempts: int) -> RegistryUnavailableError:
        """The exception for a connection error or timeout; carries the message only, never the request."""
        plural = "s" if attempts > 1 else ""
        return RegistryUnavailableError(
            f"registry {self.label} ({self.base_url}) unreachable while trying to {action} "
            f"{describe_target(repository, reference)} after {attempts} attempt{plural}: "
            f"{type(exc).__name__}: {redact(str(exc))}",
            registry=self.registry, repository=repository, reference=reference,
        )

    def deadline_error(
        self, action: str, repository: str | None, reference: str | None
    ) -> Callable[[str], RegistryDeadlineError]:
        """A factory for the deadline exception of one operation."""
        def make(detail: str) -> RegistryDeadlineError:
            return RegistryDeadlineError(
                f"registry {self.label}: {action} {describe_target(repository, reference)} {detail}",
                registry=self.registry, repository=repository, reference=reference,
            )
        return make

    def error(self, message: str, repository: str | None = None, reference: str | None = None,
              cls: type[RegistryError] = RegistryError, status: int | None = None) -> RegistryError:
        """A RegistryError whose message starts with `registry <label>: `."""
        return cls(f"registry {self.label}: {message}", registry=self.registry, repository=repository,
                   reference=reference, status=status)

    # ---- URLs ------------------------------------------------------------------------------

    def same_origin(self, url: httpx.URL) -> bool:
        base = httpx.URL(self.base_url)
        return (url.scheme, url.host, url.port) == (base.scheme, base.host, base.port)

    def check_url(
        self, url: httpx.URL, action: str, repository: str | None = None, reference: str | None = None
    ) -> None:
        """Refuse a URL (redirect or upload Location) on plain HTTP off loopback unless plain_http=True was given."""
        target = describe_target(repository, reference)
        if url.scheme == "http" and not self.plain_http_anywhere and not is_loopback_host(url.host):
            raise self.error(
                f"refusing to {action} via plain-HTTP location on {url.host} ({target})", repository, reference
            )
        if url.scheme not in ("http", "https"):
            raise self.error(f"unsupported location scheme {url.scheme!r} to {action} {target}", repository, reference)

    # ---- one attempt -----------------------------------------------------------------------

    def _ensure_auth_known(self, timeout: httpx.Timeout) -> httpx.Response | None:
        """Learn the registry's auth scheme once, from `GET /v2/` (as docker and containerd do)."""
        if self.auth.known:
            return None
        response = self.http.get("/v2/", headers={"Accept-Encoding": "identity"}, timeout=timeout)
        if retry.is_retryable_status(response.status_code):
            return response
        self.auth.learn(response)
        return None

    def send(self, method: str, url: str | httpx.URL, *, scopes: list[str], headers: Mapping[str, str] | None,
             params: Any, content: bytes | None, follow_redirects: bool, action: str,
             timeout: httpx.Timeout, repository: str | None = None, reference: str | None = None) -> httpx.Response:
        """One attempt: auth header, one re-try after a 401 challenge, redirects; returns an unread response."""
        early = self._ensure_auth_known(timeout)
        if early is not None:
            return early
        target = self.http.build_request(method, url).url
        if params:
            target = target.copy_merge_params(params)  # keep Location's own query (e.g. upload `_state`)
        self.check_url(target, action, repository, reference)
        tried_challenge, hops = False, 0
        while True:
            request_headers = dict(headers or {})
            if self.same_origin(target):
                auth = self.auth.header(scopes, timeout=self.timeout)
                if auth:
                    request_headers["Authorization"] = auth
            body: Iterator[bytes] | None = None
            if content is not None:
                # A one-shot iterator instead of the bytes: httpx responses sit in reference cycles until the
                # cyclic GC runs, and a finished request must not keep a multi-MiB upload chunk alive with them.
                request_headers["Content-Length"] = str(len(content))
                body = iter((content,))
            request = self.http.build_request(method, target, headers=request_headers, content=body, timeout=timeout)
            response = self.http.send(request, stream=True)
            if response.status_code == 401 and not tried_challenge and self.same_origin(target):
                tried_challenge = True
                response.read()
                response.close()
                if self.auth.on_unauthorized(response, scopes, timeout=self.timeout):
                    continue
                return response
            if follow_redirects and response.status_code in REDIRECTS and "location" in response.headers:
                hops += 1
                location = response.headers["location"]
                response.close()
                if hops > MAX_REDIRECTS:
                    raise self.error(
                        f"too many redirects while trying to {action} {describe_target(repository, reference)}",
                        repository,
                        reference,
                    )
                target = target.join(location)
                self.check_url(target, action, repository, reference)
                if response.status_code == 303 and method != "HEAD":
                    method, content = "GET", None
                continue
            return response

    def _read(self, response: httpx.Response, deadline: retry.Deadline | None, action: str, repository: str | None,
              reference: str | None, limit: int) -> None:
        """Read a (small) body within the deadline and at most `limit` bytes, so `response.json()` works."""
        body = bytearray()
        try:
            for chunk in response.iter_bytes():
                if deadline is not None:
                    deadline.check(self.deadline_error(action, repository, reference))
                body += chunk
                if len(body) > limit:
                    break
        finally:
            response.close()
        response._content = bytes(body[:limit])  # what Response.read() sets; read() itself has no deadline

    # ---- with retries ----------------------------------------------------------------------

    def request(
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
        retry_transient: bool = True,
        deadline: retry.Deadline | None = None,
    ) -> httpx.Response:
        """Send with the retry policy; return a response whose status is in `expect` (unread when stream=True).

        retry_transient=False sends once (a PATCH or PUT whose answer may be lost is not blindly resent); a
        refused connection is still retried, since nothing was sent.
        """
        if scopes is None:
            scopes = [f"repository:{repository}:pull"] if repository else []
        on_deadline = self.deadline_error(action, repository, reference)

        def attempt(number: int) -> httpx.Response:
            if deadline is not None:
                deadline.check(on_deadline)
            timeout = deadline.timeout(self.timeout) if deadline is not None else httpx.Timeout(self.timeout)
            return self._attempt(method, url, number, action=action, repository=repository, reference=reference,
                                 scopes=scopes, headers=headers, params=params, content=content, expect=expect,
                                 stream=stream, follow_redirects=follow_redirects, retry_transient=retry_transient,
                                 timeout=timeout, deadline=deadline)

        return retry.run(attempt, policy=self.policy, deadline=deadline, what=f"registry {self.label}: {action}",
                         on_deadline=on_deadline)

    def _attempt(self, method: str, url: str | httpx.URL, number: int, *, action: str, repository: str | None,
                 reference: str | None, scopes: list[str], headers: Mapping[str, str] | None, params: Any,
                 content: bytes | None, expect: Collection[int], stream: bool, follow_redirects: bool,
                 retry_transient: bool, timeout: httpx.Timeout, deadline: retry.Deadline | None) -> httpx.Response:
        """One request; raises retry.Retry for what the policy may retry, a RegistryError otherwise."""
        response: httpx.Response | None = None
        failure: RegistryError | retry.Retry
        try:
            response = self.send(method, url, scopes=scopes, headers=headers, params=params, content=content,
                                 follow_redirects=follow_redirects, action=action, timeout=timeout,
                                 repository=repository, reference=reference)
            if response.status_code in expect:
                if not stream:
                    self._read(response, deadline, action, repository, reference, MAX_BODY_BYTES)
                return response
            self._read(response, deadline, action, repository, reference, MAX_ERROR_BODY_BYTES)
            error = self.status_error(response, action, repository, reference, number + 1)
            if retry.is_retryable_status(response.status_code) and retry_transient:
                after = retry.parse_retry_after(response.headers.get_list("retry-after"))
                failure = retry.Retry(error, retry_after=after)
            else:
                failure = error
        except httpx.TransportError as exc:
            if response is not None:
                response.close()
            error = self.transport_error(exc, action, repository, reference, number + 1)
            if is_refused(exc):
                failure = retry.Retry(error, kind="refused")
            else:
                failure = retry.Retry(error) if retry_transient else error
        except TokenRequestError as exc:
            cls = RegistryUnavailableError if exc.retryable else RegistryAuthError
            error = cls(
                f"registry {self.label}: cannot get a token to {action} {describe_target(repository, reference)} "
                f"({exc}); authenticating {self.auth.describe()} (credentials: {self.credential_source})",
                registry=self.registry, repository=repository, reference=reference, status=exc.status,
            )
            failure = retry.Retry(error) if exc.retryable and retry_transient else error
        raise failure  # outside the except blocks: no __context__ pointing at requests with credentials
