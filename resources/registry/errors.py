"""Registry errors: the exception classes, the registry's own error codes, and `redact` for text it echoes back.

Every message names the registry, the repository and the reference (containerd's
`core/remotes/docker/errcode.go` keeps the registry's codes in the same way); text that came from the
registry is passed through `redact` first, because registries and proxies echo request headers.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import httpx

from resources.errors import StreamableError
from resources.oci.refs import DEFAULT_REGISTRY, is_digest

MAX_REGISTRY_TEXT = 300
REDACTED = "[redacted]"

_AUTH_VALUE = re.compile(
    r"(?i)\b(basic|bearer)(?:\s+|%20)[A-Za-z0-9._~+/=%-]{4,}|\b(token|digest|negotiate)(?:\s+|%20)[A-Za-z0-9._~+/=%-]{16,}"
)
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{2,}(?:\.[A-Za-z0-9_-]*)?")
_KEY_VALUE = re.compile(
    r"""(?ix)
    (["']?\b(?:password|passwd|pwd|secret|client_secret|token|access_token|refresh_token|id_token|identitytoken
    |registrytoken|auth|authorization|api[_-]?key|x-amz-security-token|x-amz-signature|signature|credential)\b["']?
    \s*[:=]\s*)
    (?!(?:basic|bearer|token|digest|negotiate)\s|\[redacted\])
    ("[^"]*"|'[^']*'|[^\s&,;"'}]+)
    """
)
_LONG_RUN = re.compile(r"[A-Za-z0-9+/_=-]{32,}")


def _long_run(match: re.Match[str]) -> str:
    """Redact a long base64-looking run; keep hex (digests), and lowercase paths or words."""
    text = match.group(0)
    body = text.split(":", 1)[-1]
    if re.fullmatch(r"[0-9a-f-]+", body):
        return text
    has_upper, has_lower = re.search(r"[A-Z]", text), re.search(r"[a-z]", text)
    has_digit_or_sym = re.search(r"[0-9+/=]", text)
    if has_upper and has_lower and has_digit_or_sym:
        return REDACTED
    return text


def redact(text: str, limit: int = MAX_REGISTRY_TEXT) -> str:
    """Text a registry sent, with anything like a credential removed (Authorization values, JWTs, `password=`,
    long base64 runs), cut to `limit` characters."""
    text = _AUTH_VALUE.sub(lambda m: f"{m.group(1) or m.group(2)} {REDACTED}", text)
    text = _JWT.sub(REDACTED, text)
    text = _KEY_VALUE.sub(lambda m: m.group(1) + REDACTED, text)
    text = _LONG_RUN.sub(_long_run, text)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def registry_label(registry: str) -> str:
    """How messages name a registry: `docker.io (Docker Hub)` for the default one, else `host[:port]`."""
    return f"{registry} (Docker Hub)" if registry == DEFAULT_REGISTRY else registry


def describe_target(repository: str | None, reference: str | None) -> str:
    """`repo:tag`, `repo@digest`, `repo` or `(registry)`."""
    target = repository or "(registry)"
    if reference:
        target += f"@{reference}" if is_digest(reference) else f":{reference}"
    return target


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


class RegistryDeadlineError(RegistryUnavailableError):
    """An operation did not finish within its overall deadline (a stalled or dripping registry)."""


class DigestMismatchError(RegistryError):
    """Content did not hash to the digest it was requested or announced by, or was longer than declared."""


class SourceReadError(RegistryError):
    """Reading the source of a copy failed (e.g. the source blob is gone); the upload itself did not fail."""


def error_codes(response: httpx.Response) -> tuple[list[str], str]:
    """Error codes and a redacted short message from a registry error body (`{"errors": [{"code", "message"}]}`)."""
    try:
        errors = response.json().get("errors") or []
        codes = [str(e.get("code")) for e in errors if isinstance(e, dict) and e.get("code")]
        messages = [str(e.get("message")) for e in errors if isinstance(e, dict) and e.get("message")]
        return [redact(c, 64) for c in codes], redact("; ".join(messages))
    except (ValueError, AttributeError, httpx.ResponseNotRead):
        return [], ""


def status_error(
    response: httpx.Response,
    *,
    registry: str,
    action: str,
    repository: str | None,
    reference: str | None,
    attempts: int = 1,
    auth: str = "",
) -> RegistryError:
    """The exception for an unexpected status (the body must have been read); `auth` says how we authenticated."""
    status = response.status_code
    codes, message = error_codes(response)
    detail = f"HTTP {status}" + (f" {', '.join(codes)}" if codes else "") + (f": {message}" if message else "")
    target = describe_target(repository, reference)
    label = registry_label(registry)
    cls: type[RegistryError] = RegistryError
    message = f"registry {label}: failed to {action} {target} ({detail})"
    if status in (401, 403):
        what = "not authorized to" if status == 401 else "access denied to"
        cls, message = RegistryAuthError, f"registry {label}: {what} {action} {target} ({detail}); {auth}"
    elif status == 404:
        cls, message = (
            RegistryNotFoundError,
            f"registry {label}: {target} not found while trying to {action} ({detail})",
        )
    elif status in (408, 429) or status >= 500:
        plural = "s" if attempts > 1 else ""
        cls = RegistryUnavailableError
        message = f"registry {label}: failed to {action} {target} after {attempts} attempt{plural} ({detail})"
    return cls(message, registry=registry, repository=repository, reference=reference, status=status, codes=codes)
