"""Parse BuildKit's plain progress output: steps, cache hits and the failing step's output."""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass, field

_STEP_RE = re.compile(r"^#(\d+) (\[.*?\] .*|\S.*)$")
_DONE_RE = re.compile(r"^#(\d+) (DONE|CACHED)\b")
_ERROR_RE = re.compile(r"^#(\d+) ERROR:? ?(.*)$")


@dataclass
class ProgressParser:
    """Feed plain-progress lines; learn step names, their output, cache hits and errors."""

    names: dict[str, str] = field(default_factory=dict)
    output: OrderedDict[str, list[str]] = field(default_factory=OrderedDict)
    cached: set[str] = field(default_factory=set)
    done: set[str] = field(default_factory=set)
    errors: dict[str, str] = field(default_factory=dict)
    trailing_errors: list[str] = field(default_factory=list)

    def feed(self, line: str) -> None:
        line = line.rstrip("\n")
        m = _DONE_RE.match(line)
        if m:
            (self.cached if m[2] == "CACHED" else self.done).add(m[1])
            return
        m = _ERROR_RE.match(line)
        if m:
            self.errors[m[1]] = m[2]
            return
        m = _STEP_RE.match(line)
        if m:
            num, rest = m[1], m[2]
            if num not in self.names and not rest[:1].isdigit():
                self.names[num] = rest
            else:
                self.output.setdefault(num, []).append(rest)
            return
        if line.startswith(("ERROR", "error:", "failed to solve", "------", " > ")) or self.trailing_errors:
            self.trailing_errors.append(line)

    @property
    def build_steps(self) -> list[str]:
        """Step numbers of Dockerfile instructions (`[stage n/m] ...`)."""
        return [n for n, name in self.names.items() if name.startswith("[") and "internal]" not in name]

    @property
    def cache_hits(self) -> int:
        return sum(1 for n in self.build_steps if n in self.cached)

    def failing_step(self) -> tuple[str | None, str]:
        """Name and output of the step that failed, if any."""
        if not self.errors:
            return None, "\n".join(self.trailing_errors[-40:])
        num = next(iter(self.errors))
        out = [re.sub(r"^\d+(\.\d+)? ", "", ln) for ln in self.output.get(num, [])]
        tail = out[-60:] + [f"ERROR: {self.errors[num]}"] + self.trailing_errors[-20:]
        return self.names.get(num), "\n".join(tail)
