"""Run a command in an isolated sandbox over a rootfs, traced by strace, until it exits, is ready, or times out.

Isolation: `setpriv --pdeathsig KILL -- unshare --net --mount --pid --fork --kill-child` (a new network
namespace holding only `lo`, private mounts, its own pid 1; all of it dies with the recorder), then the
launcher chroots into the rootfs and drops to the image's user.
Tracing: Debian's `strace -f -ttt -y -x -z --seccomp-bpf` (children followed, epoch timestamps, fd paths,
successful calls only, and only the traced syscalls stop the tracee). Argument lists only, never a shell.
"""

from __future__ import annotations

import collections
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from resources.startup.errors import SandboxUnavailableError
from resources.startup.strace_log import TRACED_SYSCALLS

LAUNCHER = Path(__file__).with_name("launcher.py")
OUTPUT_TAIL_LINES = 20
MAX_LINE_CHARS = 400
_POLL_S = 0.01
_TCP_LISTEN = "0A"


@dataclass(frozen=True)
class Readiness:
    """When the program counts as started: a log line matching `log`, a TCP `tcp_port` listening, or exit."""

    log: str | None = None
    tcp_port: int | None = None
    exit: bool = False

    def __post_init__(self) -> None:
        given = sum(x is not None and x is not False for x in (self.log, self.tcp_port, self.exit or None))
        if given > 1:
            raise ValueError("readiness: give one of log, tcp_port or exit")
        if self.log is not None:
            re.compile(self.log)
        if self.tcp_port is not None and not 0 < self.tcp_port < 65536:
            raise ValueError(f"readiness: tcp_port {self.tcp_port} is not a TCP port")

    @property
    def required(self) -> bool:
        """True when the program must reach this condition (else exit or timeout both end the run)."""
        return self.log is not None or self.tcp_port is not None or self.exit

    def describe(self) -> str:
        if self.log is not None:
            return f"log line matching {self.log!r}"
        if self.tcp_port is not None:
            return f"TCP port {self.tcp_port} listening"
        return "exit with status 0" if self.exit else "none (exit or timeout)"


@dataclass(frozen=True)
class LaunchSpec:
    """What the launcher executes inside the root."""

    root: Path
    path: str
    argv: tuple[str, ...]
    env: dict[str, str]
    cwd: str
    uid: int
    gid: int
    groups: tuple[int, ...] = ()


@dataclass(frozen=True)
class SandboxRun:
    """How the run ended: why, when (epoch seconds), the exit status if it exited, and its output's tail."""

    stopped_by: str  # exit | ready_log | ready_tcp | timeout
    stopped_at: float
    returncode: int | None
    output_tail: tuple[str, ...]
    trace: str


def host_tools() -> tuple[str, str, str]:
    """Absolute paths of setpriv, unshare and strace, or a clear error naming the Debian packages."""
    setpriv, unshare, strace = shutil.which("setpriv"), shutil.which("unshare"), shutil.which("strace")
    if not strace:
        raise SandboxUnavailableError(
            "strace is not installed (Debian package `strace`; `bash scripts/stack.sh install`)"
        )
    if not unshare or not setpriv:
        raise SandboxUnavailableError("unshare and setpriv are needed (Debian package `util-linux`)")
    if os.geteuid() != 0:
        raise SandboxUnavailableError(
            "the startup recorder needs root (or CAP_SYS_ADMIN + CAP_SYS_PTRACE) for unshare, chroot and mounts"
        )
    return setpriv, unshare, strace


def _listening(pid: int, port: int) -> bool:
    """True when a TCP socket in `pid`'s network namespace listens on `port` (/proc/PID/net/tcp{,6})."""
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) > 3 and cols[3] == _TCP_LISTEN and int(cols[1].rsplit(":", 1)[1], 16) == port:
                return True
    return False


def _children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


class _OutputReader(threading.Thread):
    """Collects the program's merged stdout/stderr lines and flags the first that matches the readiness log."""

    def __init__(self, stream, pattern: re.Pattern[str] | None) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.pattern = pattern
        self.tail: collections.deque[str] = collections.deque(maxlen=OUTPUT_TAIL_LINES)
        self.matched_at: float | None = None

    def run(self) -> None:
        for raw in iter(self.stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.tail.append(line if len(line) <= MAX_LINE_CHARS else line[:MAX_LINE_CHARS] + " ...")
            if self.pattern is not None and self.matched_at is None and self.pattern.search(line):
                self.matched_at = time.time()


def run_sandboxed(spec: LaunchSpec, workdir: Path, readiness: Readiness, timeout_s: float) -> SandboxRun:
    """Run `spec` traced and isolated; stop on exit, readiness or timeout, and return how it ended + the trace."""
    setpriv, unshare, strace = host_tools()
    workdir.mkdir(parents=True, exist_ok=True)
    spec_file, trace_file = workdir / "launch.json", workdir / "strace.log"
    spec_file.write_text(
        json.dumps(
            {
                "root": str(spec.root),
                "path": spec.path,
                "argv": list(spec.argv),
                "env": spec.env,
                "cwd": spec.cwd,
                "uid": spec.uid,
                "gid": spec.gid,
                "groups": list(spec.groups),
            }
        )
    )
    argv = [
        setpriv,  # unshare dies with the recorder, even a SIGKILLed one; --kill-child then ends the sandbox
        "--pdeathsig",
        "KILL",
        "--",
        unshare,
        "--net",
        "--mount",
        "--pid",
        "--fork",
        "--kill-child",
        "--propagation",
        "private",
        "--",
        strace,
        "-f",
        "-ttt",
        "-y",
        "-x",
        "-z",
        "--seccomp-bpf",
        "-e",
        "trace=" + ",".join(TRACED_SYSCALLS),
        "-e",
        "signal=none",
        "-qq",
        "-o",
        str(trace_file),
        "--",
        sys.executable,
        "-I",
        "-S",
        str(LAUNCHER),
        str(spec_file),
    ]
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"},
        start_new_session=True,
    )
    reader = _OutputReader(proc.stdout, re.compile(readiness.log) if readiness.log is not None else None)
    reader.start()
    deadline = time.monotonic() + timeout_s
    stopped_by, returncode = "timeout", None
    while True:
        if proc.poll() is not None:
            returncode = proc.returncode
            reader.join(5)
            stopped_by = "ready_log" if reader.matched_at is not None else "exit"
            break
        if reader.matched_at is not None:
            stopped_by = "ready_log"
            break
        if readiness.tcp_port is not None and _listening(proc.pid, readiness.tcp_port):
            stopped_by = "ready_tcp"
            break
        if time.monotonic() >= deadline:
            break
        time.sleep(_POLL_S)
    stopped_at = time.time()
    if returncode is None:
        _stop(proc)
        reader.join(5)
    trace = trace_file.read_text(errors="surrogateescape") if trace_file.exists() else ""
    return SandboxRun(stopped_by, stopped_at, returncode, tuple(reader.tail), trace)


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (breadth first)."""
    found, queue = [], _children(pid)
    while queue:
        child = queue.pop(0)
        found.append(child)
        queue.extend(_children(child))
    return found


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """End the sandbox: SIGKILL every traced process (strace, pid 1 of the namespace, then sees them go and exits,
    its log complete); SIGKILL the whole session if that does not end it in time."""
    deadline = time.monotonic() + 10
    while proc.poll() is None and time.monotonic() < deadline:
        tracers = _children(proc.pid)
        for pid in [d for t in tracers for d in _descendants(t)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            proc.wait(0.1)
        except subprocess.TimeoutExpired:
            continue
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
