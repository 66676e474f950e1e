"""Bounds on the numbers a user gives (CLI flags, targets file), with the limit named in the error.

soci-snapshotter itself only refuses negative values (`soci/soci_index.go`, `WithSpanSize`); these bounds
stop values that cannot work before any layer is streamed:
- span size 64 KiB..1 GiB: each span checkpoint stores a 32 KiB gzip window, so smaller spans make a zTOC
  bigger than the data it saves fetching; a node fetches whole spans, so a larger one fetches a GiB per read
  (the default is 4 MiB, as upstream's `defaultSpanSize`).
- min layer size 0..1 TiB, verify sample 0..10 000 files, TOC entries listed 0..1 000 000.
- registry retries 0..20, timeout 1 s..1 day.
"""

from __future__ import annotations

from dataclasses import dataclass

KIB, MIB, GIB, TIB = 1 << 10, 1 << 20, 1 << 30, 1 << 40


@dataclass(frozen=True)
class Bound:
    """An inclusive integer range with its unit for messages."""

    low: int
    high: int
    unit: str = ""

    def describe(self, value: int) -> str:
        """A value in the bound's unit (`64 KiB`, `5 s`, `3`)."""
        if self.unit == "bytes":
            for size, name in ((TIB, "TiB"), (GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")):
                if value >= size and value % size == 0:
                    return f"{value // size} {name}"
            return f"{value} bytes"
        return f"{value} {self.unit}".strip()

    def check(self, name: str, value: int) -> int:
        """`value`, or ValueError naming `name`, the value and the allowed range."""
        if not self.low <= value <= self.high:
            raise ValueError(
                f"{name} {value} is out of range: allowed {self.describe(self.low)}..{self.describe(self.high)}"
                + (f" ({self.low}..{self.high})" if self.unit == "bytes" else "")
            )
        return value


SPAN_SIZE = Bound(64 * KIB, GIB, "bytes")
MIN_LAYER_SIZE = Bound(0, TIB, "bytes")
SAMPLE = Bound(0, 10_000, "files")
ENTRIES = Bound(0, 1_000_000, "entries")
RETRIES = Bound(0, 20)
TIMEOUT_SECONDS = Bound(1, 86_400, "s")
PARALLEL_LAYERS = Bound(1, 64, "layers")
