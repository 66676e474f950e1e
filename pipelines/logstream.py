"""Forward subprocess output into the Dagster log in batches (one event per burst, not per line).

Each batch starts with a header line (`build output, lines 1-40`) so the UI's log view shows what the event is and
`make demo` can print the build's output as one block (`split_batch`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

BUILD_OUTPUT = "build output"
_HEADER = re.compile(r"^(?P<title>[^\n]+), lines \d+-\d+\n")


class BatchedLog:
    """Collects lines and emits them joined every `max_lines` lines or `max_seconds` seconds, under a header."""

    def __init__(self, emit: Callable[[str], None], *, max_lines: int = 40, max_seconds: float = 2.0,
                 title: str = BUILD_OUTPUT) -> None:
        self._emit = emit
        self._lines: list[str] = []
        self._max_lines = max_lines
        self._max_seconds = max_seconds
        self._title = title
        self._emitted = 0
        self._last = time.monotonic()

    def __call__(self, line: str) -> None:
        self._lines.append(line)
        if len(self._lines) >= self._max_lines or time.monotonic() - self._last >= self._max_seconds:
            self.flush()

    def flush(self) -> None:
        if self._lines:
            first, last = self._emitted + 1, self._emitted + len(self._lines)
            self._emit(f"{self._title}, lines {first}-{last}\n" + "\n".join(self._lines))
            self._emitted = last
            self._lines = []
        self._last = time.monotonic()

    def __enter__(self) -> BatchedLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.flush()


def split_batch(message: str, title: str = BUILD_OUTPUT) -> list[str] | None:
    """The lines of a batch that BatchedLog emitted under `title`; None for any other log message."""
    match = _HEADER.match(message)
    if match is None or match["title"] != title:
        return None
    return message[match.end():].split("\n")
