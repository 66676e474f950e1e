"""Registry authentication: `WWW-Authenticate` challenges, Basic credentials and cached Bearer tokens per scope."""

from __future__ import annotations

import base64
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import httpx

from resources.errors import StreamableError
from resources.oci.refs import is_loopback_host
from resources.registry.docker_config import Credentials

DEFAULT_TOKEN_LIFETIME = 60.0  # seconds, when the token server does not say (distribution's token spec default)
TOKEN_CLIENT_ID = "streamable"
_PARAM_RE = re.compile(r'\s*([A-Za-z0-9_.-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*,?')


@dataclass(frozen=True)
class Challenge:
    """One challenge of a `WWW-Authenticate` header: scheme (lowercase) and its parameters."""

    scheme: str
    params: dict[str, str]


def parse_www_authenticate(header: str) -> list[Challenge]:
    """Parse `Bearer realm="...",service="...",scope="..."` (several challenges allowed) into Challenges."""
    challenges: list[Challenge] = []
    rest = header.strip()
    while rest:
        m = re.match(r"([A-Za-z][A-Za-z0-9_-]*)\s*", rest)
        if not m:
            break
        scheme = m.group(1).lower()
        rest = rest[m.end() :]
        params: dict[str, str] = {}
        while rest:
            pm = _PARAM_RE.match(rest)
            # A bare word not followed by '=' starts the next challenge.
            if not pm:
                break
            value = pm.group(2) if pm.group(2) is not None else pm.group(3)
            params[pm.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)
            rest = rest[pm.end() :]
        challenges.append(Challenge(scheme, params))
        rest = rest.lstrip(", ")
    return challenges


class TokenRequestError(StreamableError):
    """The token server refused or failed; `status` is its HTTP status (None for a connection error)."""

    def __init__(self, message: str, *, status: int | None, retryable: bool) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable


def basic_header(username: str, password: str) -> str:
    """`Basic base64(user:password)` for an Authorization header."""
    raw = f"{username}:{password}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


def scope_key(scopes: Iterable[str]) -> str:
    """A stable cache key for a set of scopes."""
    return " ".join(sorted(set(scopes)))


@dataclass
class _CachedToken:
    token: str
    expires_at: float


class Authenticator:
    """Chooses the Authorization header for a request and reacts to 401 challenges; thread-safe."""

    def __init__(
        self,
        http: httpx.Client,
        credentials: Credentials | None,
        *,
        user_agent: str,
        allow_plain_http: bool = False,
        refresh: Callable[[], Credentials] | None = None,
    ) -> None:
        self._http = http
        self._refresh = refresh
        self._allow_plain_http = allow_plain_http
        self._credentials = credentials
        self._user_agent = user_agent
        self._lock = threading.Lock()
        self.scheme: str | None = None  # None until the registry answered; "none", "basic" or "bearer"
        self._realm: str | None = None
        self._service: str | None = None
        self._tokens: dict[str, _CachedToken] = {}
        self.token_requests = 0  # how many tokens were fetched (for tests and logs)

    @property
    def known(self) -> bool:
        """True once the registry's auth scheme has been learned."""
        return self.scheme is not None

    def describe(self) -> str:
        """How requests authenticate, without secrets: `anonymously` or `as user 'x'`."""
        creds = self._credentials
        if creds is None:
            return "anonymously"
        if creds.identity_token:
            return "with an identity token"
        return f"as user {creds.username!r}"

    def learn(self, response: httpx.Response | None) -> None:
        """Record the scheme from the registry's answer to `GET /v2/` (None or non-401 => no auth needed)."""
        if response is None or response.status_code != 401:
            with self._lock:
                if self.scheme is None:
                    self.scheme = "none"
            return
        self._adopt(response.headers.get("www-authenticate", ""))

    def _adopt(self, header: str) -> list[str]:
        """Take the Bearer (preferred) or Basic challenge of a header; returns the challenge's scopes."""
        challenges = parse_www_authenticate(header)
        bearer = next((c for c in challenges if c.scheme == "bearer" and c.params.get("realm")), None)
        with self._lock:
            if bearer is not None:
                self.scheme = "bearer"
                self._realm = bearer.params["realm"]
                self._service = bearer.params.get("service")
                scope = bearer.params.get("scope", "")
                return scope.split() if scope else []
            if any(c.scheme == "basic" for c in challenges):
                self.scheme = "basic"
            else:
                self.scheme = self.scheme or "none"
        return []

    def header(self, scopes: Iterable[str], *, timeout: float) -> str | None:
        """The Authorization header value for a request needing `scopes` (fetching a token if needed)."""
        if self.scheme == "basic":
            creds = self._credentials
            if creds is not None and creds.password is not None and creds.username:
                return basic_header(creds.username, creds.password)
            return None
        if self.scheme == "bearer":
            return "Bearer " + self._token(list(scopes), timeout=timeout, force=False)
        return None

    def on_unauthorized(self, response: httpx.Response, scopes: list[str], *, timeout: float) -> bool:
        """React to a 401; True when a retry with new credentials can help."""
        sent = response.request.headers.get("authorization")
        previous = self.scheme
        extra = self._adopt(response.headers.get("www-authenticate", ""))
        if self.scheme == "basic":
            rejected = previous == "basic" and sent is not None and sent.startswith("Basic ")
            if rejected:  # the credentials we sent were refused: only fresh ones can help
                return self.refresh_credentials()
            creds = self._credentials
            return creds is not None and creds.password is not None and bool(creds.username)
        if self.scheme == "bearer":
            wanted = sorted(set(scopes) | set(extra))
            with self._lock:
                self._tokens.pop(scope_key(scopes), None)
            self._token(wanted, timeout=timeout, force=True, cache_as=scope_key(scopes))
            return True
        return False

    def refresh_credentials(self) -> bool:
        """Ask the credentials provider for new credentials and drop cached tokens; False without a provider."""
        if self._refresh is None:
            return False
        fresh = self._refresh()
        with self._lock:
            self._credentials = fresh
            self._tokens.clear()
        return True

    def _token(self, scopes: list[str], *, timeout: float, force: bool, cache_as: str | None = None) -> str:
        key = cache_as or scope_key(scopes)
        now = time.monotonic()
        with self._lock:
            cached = self._tokens.get(key)
            if cached and not force and cached.expires_at > now:
                return cached.token
        try:
            token, lifetime = self._fetch(scopes, timeout=timeout)
        except TokenRequestError as exc:
            if exc.status != 401 or not self.refresh_credentials():
                raise
            token, lifetime = self._fetch(scopes, timeout=timeout)
        margin = min(30.0, lifetime / 2)
        with self._lock:
            self._tokens[key] = _CachedToken(token, time.monotonic() + lifetime - margin)
        return token

    def _fetch(self, scopes: list[str], *, timeout: float) -> tuple[str, float]:
        """A token from the realm: OAuth2 refresh-token POST with an identity token, else GET (Basic or anonymous)."""
        realm = self._realm
        if not realm:
            raise TokenRequestError("registry asked for a Bearer token without a realm", status=None, retryable=False)
        realm_url = httpx.URL(realm)
        if realm_url.scheme != "https" and not (self._allow_plain_http or is_loopback_host(realm_url.host)):
            raise TokenRequestError(
                f"refusing token realm {realm_url.scheme}://{realm_url.host}: credentials would travel unencrypted",
                status=None, retryable=False,
            )
        creds = self._credentials
        headers = {"User-Agent": self._user_agent}
        failure: TokenRequestError | None
        try:
            if creds is not None and creds.identity_token:
                form = {"grant_type": "refresh_token", "refresh_token": creds.identity_token,
                        "client_id": TOKEN_CLIENT_ID, "scope": " ".join(scopes)}
                if self._service:
                    form["service"] = self._service
                resp = self._http.post(realm, data=form, headers=headers, timeout=timeout)
            else:
                params: list[tuple[str, str | int | float | bool | None]] = (
                    [("service", self._service)] if self._service else []
                )
                params += [("scope", s) for s in scopes]
                if creds is not None and creds.username and creds.password is not None:
                    headers["Authorization"] = basic_header(creds.username, creds.password)
                resp = self._http.get(realm, params=params, headers=headers, timeout=timeout)
        except httpx.TransportError as exc:
            failure = TokenRequestError(
                f"token server {realm_url.host} unreachable: {type(exc).__name__}: {exc}", status=None, retryable=True
            )
        else:
            failure = None
        if failure is not None:
            raise failure  # outside the except block: no __context__ holding the request's Basic header
        self.token_requests += 1
        realm_host = resp.request.url.host
        if resp.status_code != 200:
            retryable = resp.status_code == 429 or resp.status_code >= 500
            raise TokenRequestError(
                f"token server {realm_host} answered HTTP {resp.status_code} for scope {' '.join(scopes) or '(none)'}",
                status=resp.status_code, retryable=retryable,
            )
        try:
            body = resp.json()
            token = body.get("token") or body.get("access_token")
            lifetime = float(body.get("expires_in") or DEFAULT_TOKEN_LIFETIME)
        except (ValueError, AttributeError, TypeError):
            token, lifetime = None, DEFAULT_TOKEN_LIFETIME
        if not token or not isinstance(token, str):
            raise TokenRequestError(f"token server {realm_host} returned no token", status=200, retryable=False)
        return token, max(lifetime, 1.0)
