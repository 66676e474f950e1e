"""Read an `strace -f -ttt -y -x -z` log: the files a sandboxed program executed, opened or mapped, in order.

Only events after the launcher's `chroot(...) = 0` count (before it, the recorder's own launcher runs).
With `-y` strace prints the path behind every file descriptor as `N</host/path>`, resolved by the
kernel (symlinks followed), seen from strace's root, i.e. the host path under the rootfs directory.
`execve` has no descriptor: its path is reported as the program passed it (resolved later in the root).
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

# `?name`: strace skips a syscall this architecture lacks (open, creat and uselib do not exist on arm64).
TRACED_SYSCALLS = ("execve", "execveat", "?open", "openat", "?openat2", "?creat", "mmap", "?uselib", "chroot")
_LINE_RE = re.compile(r"^(\d+)\s+(\d+\.\d+)\s+(.*)$")
_CALL_RE = re.compile(r"^([a-z0-9_]+)\((.*)$")
_RESUMED_RE = re.compile(r"^<\.\.\. ([a-z0-9_]+) resumed>(.*)$")
_RET_FD_RE = re.compile(r"\)\s+=\s+(\d+)<(.*)>$")
_RET_OK_RE = re.compile(r"\)\s+=\s+(0|0x[0-9a-f]+|\d+)(?:<.*>)?$")
_MMAP_FD_RE = re.compile(r", (\d+)<(.*)>, (?:0x[0-9a-f]+|\d+)\)\s+=\s+0x[0-9a-f]+$")
_FIRST_STRING_RE = re.compile(r'^"((?:[^"\\]|\\.)*)"')
_OPENS = {"open", "openat", "openat2", "creat", "uselib"}

EventKind = Literal["exec", "open", "mmap"]


@dataclass(frozen=True)
class TraceEvent:
    """One successful file access after the chroot: epoch seconds, pid, what, and the path."""

    time: float
    pid: int
    kind: EventKind
    path: str  # exec: as passed to execve (in-root, maybe relative); open/mmap: host path


def _unescape(text: str) -> str:
    """Undo strace's C-style escaping (`-x`: non-ASCII as \\xNN)."""
    raw = codecs.escape_decode(text.encode("utf-8", "surrogateescape"))[0]
    assert isinstance(raw, bytes)
    return raw.decode("utf-8", "surrogateescape")


def _event(name: str, args: str, time: float, pid: int) -> TraceEvent | None:
    """The access a completed syscall line describes, or None."""
    if name in ("execve", "execveat"):
        if not re.search(r"\)\s+=\s+0$", args):
            return None
        if name == "execveat":
            m = re.match(r"^\d+<(.*?)>, \"((?:[^\"\\]|\\.)*)\"", args)
            if not m:
                return None
            path = _unescape(m.group(2))
            return TraceEvent(time, pid, "exec", path if path.startswith("/") else _unescape(m.group(1)) + "/" + path)
        m = _FIRST_STRING_RE.match(args)
        return TraceEvent(time, pid, "exec", _unescape(m.group(1))) if m else None
    if name in _OPENS:
        if "O_PATH" in args:  # a handle to the path only: no data can be read through it
            return None
        m = _RET_FD_RE.search(args)
        return TraceEvent(time, pid, "open", _unescape(m.group(2))) if m else None
    if name == "mmap":
        m = _MMAP_FD_RE.search(args)
        return TraceEvent(time, pid, "mmap", _unescape(m.group(2))) if m else None
    return None


def parse_trace(text: str) -> tuple[float | None, list[TraceEvent]]:
    """(time of the chroot, accesses after it in log order); (None, []) when the launcher never chrooted."""
    pending: dict[int, tuple[str, str, float]] = {}
    chrooted_at: float | None = None
    events: list[TraceEvent] = []
    for line in text.splitlines():
        m = _LINE_RE.match(line)
        if not m:
            continue
        pid, time, body = int(m.group(1)), float(m.group(2)), m.group(3)
        if body.startswith(("+++", "---")):
            continue
        resumed = _RESUMED_RE.match(body)
        if resumed:
            name, rest = resumed.groups()
            if pid not in pending:
                continue
            _name, head, started = pending.pop(pid)
            name, args, time = _name, head + rest, started
        else:
            call = _CALL_RE.match(body)
            if not call:
                continue
            name, args = call.groups()
            if args.endswith("<unfinished ...>"):
                pending[pid] = (name, args[: -len("<unfinished ...>")].rstrip(), time)
                continue
        if name == "chroot":
            if chrooted_at is None and _RET_OK_RE.search(args) and re.search(r"\)\s+=\s+0$", args):
                chrooted_at = time
            continue
        if chrooted_at is None:
            continue
        event = _event(name, args, time, pid)
        if event is not None:
            events.append(event)
    return chrooted_at, events


def in_root(host_path: str, root: Path) -> str | None:
    """The in-root absolute path of a host path under `root` (already resolved), or None outside it."""
    prefix = str(root).rstrip("/")
    if host_path == prefix:
        return "/"
    if host_path.startswith(prefix + "/"):
        return host_path[len(prefix) :]
    return None
