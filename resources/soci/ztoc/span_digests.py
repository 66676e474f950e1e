"""Span digests (and the whole-blob digest) computed while a layer blob streams past.

The blob is fed in order, chunk by chunk, together with the span starts ("cuts") that fall in
the chunk. A cut ``(in_offset, bits)`` ends the previous span at ``in_offset`` and starts the
next one at ``in_offset - 1`` when ``bits`` is non-zero (that byte belongs to both spans), as
soci-snapshotter's ``getPerSpanDigests`` reads them. Bytes before the first cut (the gzip header)
belong to no span.

sha256 and crc32 release the GIL, so ``OrderedWorker`` runs them on a second thread while the
main thread inflates.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

Cut = tuple[int, int]  # (in_offset, bits)

MAX_TASKS_IN_FLIGHT = 8


class SpanDigester:
    """Incremental sha256 per span, plus optionally of the whole blob."""

    def __init__(self, whole_blob: bool = False) -> None:
        self._blob_hash = hashlib.sha256() if whole_blob else None
        self._span_hash: hashlib._Hash | None = None
        self._hashed_to = 0
        self._base = 0
        self._last_byte = 0
        self._digests: list[str] = []

    def update(self, chunk: bytes, cuts: list[Cut]) -> None:
        """Hash the next chunk; ``cuts`` are the span starts with ``in_offset`` inside it (ascending)."""
        base = self._base
        end = base + len(chunk)
        view = memoryview(chunk)
        if self._blob_hash is not None:
            self._blob_hash.update(view)
        for in_offset, bits in cuts:
            if not base <= in_offset <= end:
                raise ValueError(f"span cut at {in_offset} is outside the chunk [{base}, {end})")
            if self._span_hash is not None:
                self._span_hash.update(view[self._hashed_to - base : in_offset - base])
                self._digests.append("sha256:" + self._span_hash.hexdigest())
            span_hash = hashlib.sha256()
            if bits:
                previous = in_offset - 1
                if previous >= base:
                    span_hash.update(view[previous - base : previous - base + 1])
                else:
                    span_hash.update(bytes((self._last_byte,)))
            self._span_hash = span_hash
            self._hashed_to = in_offset
        if self._span_hash is not None and self._hashed_to < end:
            self._span_hash.update(view[self._hashed_to - base :])
            self._hashed_to = end
        self._base = end
        if chunk:
            self._last_byte = chunk[-1]

    def finish(self) -> tuple[list[str], str | None]:
        """(span digests, whole-blob digest or None); the last span ends at the blob's end."""
        if self._span_hash is not None:
            self._digests.append("sha256:" + self._span_hash.hexdigest())
            self._span_hash = None
        blob = "sha256:" + self._blob_hash.hexdigest() if self._blob_hash is not None else None
        return self._digests, blob


class OrderedWorker:
    """Runs submitted calls in submission order on one background thread, or inline.

    At most ``MAX_TASKS_IN_FLIGHT`` calls are queued; a call's exception is raised by the
    ``submit``/``wait``/``drain`` that collects it.
    """

    def __init__(self, threaded: bool = True) -> None:
        self._executor = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="ztoc-digest") if threaded else None
        )
        self._pending: deque[Future[Any]] = deque()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any] | None:
        """Queue ``fn(*args)`` (arguments must stay unchanged until it ran); inline mode runs it now."""
        if self._executor is None:
            fn(*args)
            return None
        future = self._executor.submit(fn, *args)
        self._pending.append(future)
        while len(self._pending) > MAX_TASKS_IN_FLIGHT:
            self._pending.popleft().result()
        return future

    @staticmethod
    def wait(future: Future[Any] | None) -> None:
        """Block until a submitted call finished (re-raising its exception)."""
        if future is not None:
            future.result()

    def drain(self) -> None:
        """Wait for every queued call."""
        while self._pending:
            self._pending.popleft().result()

    def close(self) -> None:
        """Stop the thread, dropping queued calls (idempotent)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        self._pending.clear()
