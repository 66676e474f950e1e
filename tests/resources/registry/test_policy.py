"""The retry policy's parts (Retry-After parsing, backoff, deadlines) and `redact`, on their own."""

from __future__ import annotations

import base64
import email.utils
import time

import pytest

from resources.registry import redact
from resources.registry.errors import RegistryDeadlineError, RegistryUnavailableError
from resources.registry.retry import (
    MAX_RETRY_AFTER_SECONDS,
    REFUSED_RETRIES,
    Deadline,
    Retry,
    RetryPolicy,
    parse_retry_after,
    run,
)

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("3", 3.0), ("1.5", 1.5), ("1.5s", 1.5), (" 2 ", 2.0), ("2, 2", 2.0), ("1, 4", 4.0), (["1", "3"], 3.0),
        ("-5", 0.0), ("0", 0.0), ("999999", MAX_RETRY_AFTER_SECONDS), ("1e9", MAX_RETRY_AFTER_SECONDS),
        ("soon-ish", None), ("", None), ("nan", None), ("inf", None), (None, None), ("soon, 2", 2.0),
        (email.utils.formatdate(NOW + 7, usegmt=True), 7.0), (email.utils.formatdate(NOW - 60, usegmt=True), 0.0),
        ("Wed, 21 Oct 2015 07:28:00", None),  # no zone: not an HTTP-date
    ],
)
def test_parse_retry_after(value: str | list[str] | None, seconds: float | None) -> None:
    got = parse_retry_after(value, now=NOW)
    assert got == pytest.approx(seconds) if seconds is not None else got is None


def test_backoff_grows_is_capped_and_honours_retry_after() -> None:
    policy = RetryPolicy(retries=10, backoff=0.5, max_backoff=4.0)
    assert 0.25 <= policy.delay(0) <= 0.5 and 1.0 <= policy.delay(2) <= 2.0
    assert all(2.0 <= policy.delay(9) <= 4.0 for _ in range(20))
    assert policy.delay(0, retry_after=3.0) == 3.0


def _error(text: str = "boom") -> RegistryUnavailableError:
    return RegistryUnavailableError(f"registry r: {text}", registry="r")


def _deadline_error(text: str) -> RegistryDeadlineError:
    return RegistryDeadlineError(text, registry="r")


def test_run_retries_per_kind_then_raises_the_last_error() -> None:
    calls: list[int] = []

    def attempt(n: int) -> str:
        calls.append(n)
        raise Retry(_error(f"attempt {n}"), kind="refused")

    with pytest.raises(RegistryUnavailableError, match=f"attempt {REFUSED_RETRIES}"):
        run(attempt, policy=RetryPolicy(retries=5, backoff=5.0), deadline=None, what="t", on_deadline=_deadline_error)
    assert calls == list(range(REFUSED_RETRIES + 1))  # refused: 2 quick retries, not the policy's 5 slow ones


def test_run_stops_before_sleeping_past_the_deadline() -> None:
    def attempt(n: int) -> str:
        raise Retry(_error(), retry_after=30.0)

    start = time.monotonic()
    with pytest.raises(RegistryDeadlineError, match="2 s deadline"):
        run(attempt, policy=RetryPolicy(retries=5), deadline=Deadline(2, "t"), what="t", on_deadline=_deadline_error)
    assert time.monotonic() - start < 1


def test_run_returns_after_transient_failures() -> None:
    answers = iter([Retry(_error()), Retry(_error()), "done"])

    def attempt(n: int) -> str:
        item = next(answers)
        if isinstance(item, Retry):
            raise item
        return item

    assert run(attempt, policy=RetryPolicy(retries=2, backoff=0.001), deadline=None, what="t",
               on_deadline=_deadline_error) == "done"


SECRET = "s3cr3t-Pa55word"
BASIC = base64.b64encode(f"alice:{SECRET}".encode()).decode()
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MTcwMDAwMDAwMH0.c2lnbmF0dXJlLWJ5dGVzLWhlcmU"


@pytest.mark.parametrize(
    "text",
    [
        f"request had Authorization: Basic {BASIC}", f"authorization=Bearer {JWT}", f"bad token {JWT} given",
        f'{{"password": "{SECRET}"}}', f"login failed: password={SECRET}&user=alice", f"secret: {SECRET}",
        f"header basic%20{BASIC}", f"blob {BASIC}{BASIC} corrupt", f"X-Amz-Security-Token={SECRET}",
    ],
)
def test_redact_removes_credentials(text: str) -> None:
    out = redact(text)
    assert SECRET not in out and BASIC not in out and JWT not in out and "[redacted]" in out


@pytest.mark.parametrize(
    "text",
    [
        "blob unknown to registry", "manifest invalid: sha256:" + "a" * 64 + " not found",
        "repository name not known to registry: team/app/sub/path-with-many-segments-here",
        "upload 2c9f1d3e-8b7a-4c5d-9e0f-123456789abc invalid", "token server 127.0.0.1 unreachable",
    ],
)
def test_redact_keeps_ordinary_registry_text(text: str) -> None:
    assert redact(text) == text


def test_redact_cuts_long_text() -> None:
    out = redact("x " * 1000, limit=50)
    assert len(out) == 50 and out.endswith("...")
