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
import threading
from collections.abc import Callable
from queue import SimpleQueue
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

    At most ``MAX_TASKS_IN_FLIGHT`` calls are queued; a call's exception is raised by the next
    ``submit``/``wait``/``drain`` (calls queued after a failed one are skipped). ``submit``
    returns a ticket for ``wait``. A plain thread and a `SimpleQueue` rather than an executor:
    no `Future` and no wake-up per call unless the caller actually waits (thousands of calls
    per layer).
    """

    def __init__(self, threaded: bool = True, inline_when: Callable[[], bool] | None = None) -> None:
        self._inline_when = inline_when
        """Asked at each submit with nothing queued: True runs the call on the caller's thread (the cores
        are busy with other builds, so a hand-off to this worker would only add switching)."""
        self._queue: SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...]] | None] = SimpleQueue()
        self._done_cond = threading.Condition()
        self._submitted = 0
        self._done = 0
        self._error: BaseException | None = None
        self._stopping = False
        self._thread: threading.Thread | None = None
        if threaded:
            self._thread = threading.Thread(target=self._run, name="ztoc-digest", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        """The worker thread: run calls until the sentinel; after a failure, skip the rest."""
        queue, cond = self._queue, self._done_cond
        while True:
            item = queue.get()
            if item is None:
                return
            if self._error is None and not self._stopping:
                fn, args = item
                try:
                    fn(*args)
                except BaseException as exc:  # noqa: BLE001 - handed to the submitting thread
                    self._error = exc
            with cond:
                self._done += 1
                cond.notify_all()

    def submit(self, fn: Callable[..., Any], *args: Any) -> int | None:
        """Queue ``fn(*args)`` (arguments must stay unchanged until it ran); inline mode runs it now."""
        if self._thread is None:
            fn(*args)
            return None
        self._raise_error()
        if self._inline_when is not None and self._done == self._submitted and self._inline_when():
            fn(*args)  # nothing is queued, so order holds; done before it returns, so no ticket to wait for
            return None
        self._submitted += 1
        self._queue.put((fn, args))
        if self._submitted - self._done > MAX_TASKS_IN_FLIGHT:
            self._wait_for(self._submitted - MAX_TASKS_IN_FLIGHT)
        return self._submitted

    def _wait_for(self, ticket: int) -> None:
        """Block until call number ``ticket`` ran, then raise a failure of any call so far."""
        if self._done < ticket:
            with self._done_cond:
                while self._done < ticket:
                    self._done_cond.wait()
        self._raise_error()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def wait(self, ticket: int | None) -> None:
        """Block until a submitted call finished (re-raising a failure)."""
        if ticket is not None:
            self._wait_for(ticket)

    def drain(self) -> None:
        """Wait for every queued call."""
        if self._thread is not None:
            self._wait_for(self._submitted)

    def close(self) -> None:
        """Stop the thread, skipping queued calls (idempotent)."""
        if self._thread is not None:
            self._stopping = True
            self._queue.put(None)
            self._thread.join()
            self._thread = None
