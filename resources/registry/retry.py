"""The one retry policy of the registry client: what is retried, how often, how long to wait, and deadlines.

One function, `run`, retries an attempt that raised `Retry`; everything else (HTTP requests, blob resumes,
upload session restarts, manifest PUTs the registry refused while it settles) goes through it, as
containerd funnels its requests through one retry check (`core/remotes/docker/resolver.go`,
`request.retryRequest`) and oras-py keeps its retry decorator apart from auth (`oras/decorator.py`).
"""

from __future__ import annotations

import email.utils
import logging
import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

import httpx

from resources.errors import StreamableError
from resources.registry.errors import RegistryDeadlineError, RegistryError

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_BACKOFF_SECONDS = 30.0
MAX_RETRY_AFTER_SECONDS = 60.0
REFUSED_RETRIES = 2  # a refused connection: nothing listens; two quick retries cover a restarting registry
REFUSED_DELAY_SECONDS = 0.1
SETTLE_RETRIES = 4  # manifest PUTs answered 400 for blobs the registry has just stored (eventual consistency)
SETTLE_BACKOFF_SECONDS = 0.5
# bytes/s a blob read or upload may not fall below on average: adds size/rate to its deadline
MIN_TRANSFER_RATE = 1 << 20


def is_retryable_status(status: int) -> bool:
    """429, 408 and 5xx but 501 (not implemented will not change)."""
    return status in (408, 429) or (status >= 500 and status != 501)


class Deadline:
    """A point in time an operation must finish by (monotonic clock)."""

    def __init__(self, seconds: float, what: str) -> None:
        self.seconds = seconds
        self.what = what
        self.ends_at = time.monotonic() + seconds

    def extend(self, seconds: float) -> None:
        """Allow `seconds` more (once a blob's size is known)."""
        self.seconds += seconds
        self.ends_at += seconds

    def remaining(self) -> float:
        """Seconds left (never negative)."""
        return max(0.0, self.ends_at - time.monotonic())

    def expired(self) -> bool:
        """True once the deadline has passed."""
        return time.monotonic() >= self.ends_at

    def check(self, error: Callable[[str], RegistryError]) -> None:
        """Raise `error(message)` (a RegistryDeadlineError) once the deadline has passed."""
        if self.expired():
            raise error(f"did not finish within its {self.seconds:g} s deadline (the registry stalled or dripped)")

    def timeout(self, per_read: float) -> httpx.Timeout:
        """The httpx timeout of one request: the per-read timeout, never beyond the deadline."""
        return httpx.Timeout(max(0.05, min(per_read, self.remaining())))


def parse_retry_after(values: str | Iterable[str] | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from Retry-After (RFC 9110: delta-seconds or an HTTP-date), capped; None when unusable.

    Tolerant of what registries and proxies send: fractions (`1.5`), units (`2s`), junk (`soon-ish`),
    repeated headers joined by commas (`2, 2`: the largest usable value wins), negative or past values (0).
    """
    if values is None:
        return None
    items = [values] if isinstance(values, str) else list(values)
    found: list[float] = []
    for item in items:
        text = item.strip()
        candidates = [text] if _looks_like_date(text) else [p.strip() for p in text.split(",")]
        for candidate in candidates:
            seconds = _one_retry_after(candidate, now)
            if seconds is not None:
                found.append(seconds)
    if not found:
        return None
    return min(max(max(found), 0.0), MAX_RETRY_AFTER_SECONDS)


def _looks_like_date(text: str) -> bool:
    return any(day in text for day in ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")) and ":" in text


def _one_retry_after(text: str, now: float | None) -> float | None:
    number = text.lower().removesuffix("seconds").removesuffix("s").strip()
    try:
        seconds = float(number)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) else None
    try:
        parsed = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed is None:
        return None
    if parsed.tzinfo is None:
        return None
    return parsed.timestamp() - (time.time() if now is None else now)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long: `retries` further attempts with exponential backoff (full jitter, capped)."""

    retries: int = 5
    backoff: float = 0.5
    max_backoff: float = MAX_BACKOFF_SECONDS

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds before retry number `attempt + 1`: jittered backoff, at least the registry's Retry-After."""
        base = min(self.max_backoff, self.backoff * (2**attempt))
        delay = random.uniform(base / 2, base)
        return max(delay, retry_after) if retry_after is not None else delay


class Retry(StreamableError):
    """Raised by an attempt that may be repeated; `error` is raised if it may not (retries or deadline used up).

    kind: "transient" (429/5xx, timeouts, resets: the policy's retries), "refused" (connection refused:
    REFUSED_RETRIES quick ones), "settle" (a manifest PUT refused for blobs just stored: SETTLE_RETRIES).
    """

    def __init__(self, error: RegistryError, *, kind: str = "transient", retry_after: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.kind = kind
        self.retry_after = retry_after


def _allowed(policy: RetryPolicy, kind: str) -> tuple[int, Callable[[int, float | None], float]]:
    if kind == "refused":
        return min(policy.retries, REFUSED_RETRIES), lambda attempt, _after: REFUSED_DELAY_SECONDS * (attempt + 1)
    if kind == "settle":
        settle = RetryPolicy(SETTLE_RETRIES, SETTLE_BACKOFF_SECONDS, 8.0)
        return SETTLE_RETRIES, settle.delay
    return policy.retries, policy.delay


class Budget:
    """The retries left to one operation: `spend(retry)` sleeps before the next attempt or raises the error."""

    def __init__(self, policy: RetryPolicy, deadline: Deadline | None, what: str,
                 on_deadline: Callable[[str], RegistryDeadlineError]) -> None:
        self.policy = policy
        self.deadline = deadline
        self.what = what
        self.on_deadline = on_deadline
        self.used: dict[str, int] = {}
        self.attempts = 1

    def spend(self, failure: Retry) -> None:
        """Wait before another attempt, or raise `failure.error` (retries of its kind used up, or no time left)."""
        allowed, delay_of = _allowed(self.policy, failure.kind)
        count = self.used.get(failure.kind, 0)
        if count >= allowed:
            raise failure.error from None
        delay = delay_of(count, failure.retry_after)
        if self.deadline is not None and delay >= self.deadline.remaining():
            raise self.on_deadline(
                f"failed ({failure.error}) with no time left for another attempt "
                f"within its {self.deadline.seconds:g} s deadline"
            ) from None
        self.used[failure.kind] = count + 1
        self.attempts += 1
        log.warning("%s: %s; retry %d/%d in %.2fs", self.what, failure.error, count + 1, allowed, delay)
        time.sleep(delay)


def run(
    attempt: Callable[[int], T],
    *,
    policy: RetryPolicy,
    deadline: Deadline | None,
    what: str,
    on_deadline: Callable[[str], RegistryDeadlineError],
) -> T:
    """Call `attempt(n)` until it returns; after a `Retry`, wait per the policy and call again, within the deadline."""
    budget = Budget(policy, deadline, what, on_deadline)
    while True:
        try:
            return attempt(budget.attempts - 1)
        except Retry as exc:
            failure = exc
        budget.spend(failure)
