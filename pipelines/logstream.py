"""Forward subprocess output into the Dagster log in batches (one event per burst, not per line)."""

from __future__ import annotations

import time
from collections.abc import Callable


class BatchedLog:
    """Collects lines and emits them joined every `max_lines` lines or `max_seconds` seconds."""

    def __init__(self, emit: Callable[[str], None], *, max_lines: int = 40, max_seconds: float = 2.0) -> None:
        self._emit = emit
        self._lines: list[str] = []
        self._max_lines = max_lines
        self._max_seconds = max_seconds
        self._last = time.monotonic()

    def __call__(self, line: str) -> None:
        self._lines.append(line)
        if len(self._lines) >= self._max_lines or time.monotonic() - self._last >= self._max_seconds:
            self.flush()

    def flush(self) -> None:
        if self._lines:
            self._emit("\n".join(self._lines))
            self._lines = []
        self._last = time.monotonic()

    def __enter__(self) -> BatchedLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.flush()
