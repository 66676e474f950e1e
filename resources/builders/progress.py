"""Parse BuildKit's plain progress output: steps, cache hits, warnings, pushes and the step that failed the build.

Read against real buildctl v0.23.2 output (tests/fakes/buildctl_transcripts/v0.23.2/): a vertex prints
`#N <name>` when it starts, `#N <secs> <line>` for its output, `#N WARN: <text>` for a warning, and ends with
`#N DONE`, `#N CACHED`, `#N CANCELED` or `#N ERROR: <text>`; after the vertices BuildKit prints one
`------ / > <name>: / ... / ------` block per errored vertex and buildctl ends with `error: <why it failed>`.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass, field

_STEP_RE = re.compile(r"^#(\d+) (\S.*)$")
_END_RE = re.compile(r"^#(\d+) (DONE|CACHED|CANCELED)\b")
_ERROR_RE = re.compile(r"^#(\d+) ERROR:? ?(.*)$")
_WARN_RE = re.compile(r"^#(\d+) WARN: (.*)$")
_PUSHED_RE = re.compile(r"^#\d+ pushing manifest for (\S+)@(sha256:[0-9a-f]{64})\b.*\bdone$")
# A Dockerfile instruction: `[1/2] RUN ...`, `[stage 1/2] FROM ...`, `[linux/arm64 stage 1/2] ...` in
# multi-platform builds (not `[internal] ...`, not `[auth] ...`).
_INSTRUCTION_RE = re.compile(r"^\[(?:[^\]]* )?\d+/\d+\] ")
# Vertices whose ERROR does not fail the build: BuildKit logs a failed cache import and carries on
# (e.g. `failed to configure registry cache importer: ...:buildcache: not found` on a cold cache).
_NON_FATAL_STEP_RE = re.compile(r"^importing cache manifest from ")
_FINAL_ERROR_RE = re.compile(r"^error: (.*)$")
PLATFORM_WARNING = "InvalidBaseImagePlatform"


@dataclass
class ProgressParser:
    """Feed plain-progress lines; learn step names, their output, cache hits, warnings, pushes and errors."""

    names: dict[str, str] = field(default_factory=dict)
    output: OrderedDict[str, list[str]] = field(default_factory=OrderedDict)
    cached: set[str] = field(default_factory=set)
    done: set[str] = field(default_factory=set)
    errors: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    pushed: list[tuple[str, str]] = field(default_factory=list)
    """(reference, digest) of every manifest BuildKit reported as pushed."""
    final_errors: list[str] = field(default_factory=list)
    trailing: list[str] = field(default_factory=list)

    def feed(self, line: str) -> None:
        line = line.rstrip("\n")
        m = _END_RE.match(line)
        if m:
            (self.cached if m[2] == "CACHED" else self.done).add(m[1])
            return
        m = _WARN_RE.match(line)
        if m:
            if m[2] not in self.warnings:
                self.warnings.append(m[2])
            return
        m = _ERROR_RE.match(line)
        if m:
            self.errors.setdefault(m[1], m[2])
            return
        m = _PUSHED_RE.match(line)
        if m and (m[1], m[2]) not in self.pushed:
            self.pushed.append((m[1], m[2]))
        m = _STEP_RE.match(line)
        if m:
            num, rest = m[1], m[2]
            if num not in self.names and not rest[:1].isdigit():
                self.names[num] = rest
            else:
                self.output.setdefault(num, []).append(rest)
            return
        m = _FINAL_ERROR_RE.match(line)
        if m:
            self.final_errors.append(m[1])
        if line.strip():
            self.trailing.append(line)

    @property
    def build_steps(self) -> list[str]:
        """Step numbers of Dockerfile instructions (`[stage n/m] ...`), as BuildKit numbers its steps."""
        return [n for n, name in self.names.items() if _INSTRUCTION_RE.match(name)]

    @property
    def cache_hits(self) -> int:
        return sum(1 for n in self.build_steps if n in self.cached)

    @property
    def started(self) -> bool:
        """True once BuildKit started any vertex (the daemon was reached and took the build)."""
        return bool(self.names)

    @property
    def platform_warnings(self) -> list[str]:
        """BuildKit's `InvalidBaseImagePlatform` warnings (a base image of another platform was used)."""
        return [w for w in self.warnings if w.startswith(PLATFORM_WARNING)]

    def _fatal(self, num: str) -> bool:
        return not _NON_FATAL_STEP_RE.match(self.names.get(num, ""))

    def failing_step(self) -> tuple[str | None, str]:
        """Name and output of the step that failed the build (None when no step failed, e.g. a lost daemon).

        The step is the one whose ERROR buildctl's final `error:` line reports, else the first fatal ERROR;
        without any fatal ERROR (daemon killed, connection lost) it is the last step that started and never
        finished, with buildctl's final error as its error.
        """
        final = self.final_errors[-1] if self.final_errors else ""
        fatal = [(n, msg) for n, msg in self.errors.items() if self._fatal(n)]
        chosen = next(((n, msg) for n, msg in fatal if msg and msg in final), fatal[0] if fatal else None)
        if chosen is None:
            ended = self.done | self.cached | set(self.errors)
            running = [n for n in self.names if n not in ended and self._fatal(n)]
            if not running:
                return None, "\n".join(self._trailing_blocks()[-40:])
            chosen = (running[-1], final or "the build stopped before this step finished")
        num, msg = chosen
        out = [re.sub(r"^\d+(\.\d+)? ", "", ln) for ln in self.output.get(num, [])]
        tail = out[-60:] + [f"ERROR: {msg}"]
        if final and final not in msg:
            tail.append(f"error: {final}")
        return self.names.get(num), "\n".join(tail + self._context_lines())

    def _trailing_blocks(self) -> list[str]:
        """The lines after the vertices, without the `> <name>:` blocks of non-fatal steps."""
        skip_names = {f" > {self.names[n]}:" for n in self.names if not self._fatal(n)}
        out: list[str] = []
        skipping = False
        for i, line in enumerate(self.trailing):
            if line == "------" and i + 1 < len(self.trailing) and self.trailing[i + 1] in skip_names:
                skipping = True
                continue
            if skipping:
                skipping = line != "------"
                continue
            out.append(line)
        return out

    def _context_lines(self) -> list[str]:
        """BuildKit's Dockerfile excerpt around the failing instruction (`Dockerfile:4` + numbered lines)."""
        blocks = self._trailing_blocks()
        start = next((i for i, ln in enumerate(blocks) if re.match(r"^\S+:\d+$", ln)), None)
        if start is None:
            return []
        return [ln for ln in blocks[start:] if not _FINAL_ERROR_RE.match(ln)][:12]
