"""Record a startup profile: assemble the image's rootfs from its layers, run it sandboxed from a cold page
cache, and list every file it executed, opened or mapped, with its first access time and the pages read.

Order and time come from strace (every open/exec/mmap, timestamped); byte ranges from page-cache
residency (`resources/startup/residency.py`: exact pages the kernel read, a superset of the bytes asked
for by at most a readahead window). Nothing is pulled: layers come from the registry through the
project's client; the sandbox has no network (a network namespace with only `lo`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from resources.oci.refs import ImageRef
from resources.registry import RegistryClient
from resources.startup import scratch
from resources.startup.errors import (
    MissingCommandError,
    NotReadyError,
    ProgramCrashedError,
    RecordingError,
)
from resources.startup.execinfo import exec_chain
from resources.startup.image import ResolvedImage, resolve_image
from resources.startup.loopfs import device_readahead_kb, no_readahead_mount
from resources.startup.profile import ProfiledFile, StartupProfile
from resources.startup.residency import evict_all, resident_ranges
from resources.startup.rootfs import Rootfs, assemble_rootfs
from resources.startup.sandbox import LaunchSpec, Readiness, SandboxRun, run_sandboxed
from resources.startup.strace_log import in_root, parse_trace
from resources.startup.users import home_of, resolve_user

DEFAULT_TIMEOUT_S = 60.0
WORK_DIR_ENV = "STREAMABLE_STARTUP_WORK_DIR"


def default_work_root() -> Path:
    """Where rootfs scratch space goes: $STREAMABLE_STARTUP_WORK_DIR, else /var/tmp (a disk, unlike many /tmp)."""
    return Path(os.environ.get(WORK_DIR_ENV) or "/var/tmp")


_KIND_RANK = {"file": 0, "loader": 1, "command": 2}


@dataclass(frozen=True)
class Recording:
    """A profile plus facts about the run that are not part of the profile contract."""

    profile: StartupProfile
    still_cached_before_run: int
    output_tail: tuple[str, ...]
    readahead_kb: int | None  # of the rootfs's device during the run: 0 means the ranges are exact pages


def find_command(rootfs: Rootfs, argv0: str, env: dict[str, str], cwd: str) -> str:
    """The in-root path that `execvp(argv0)` would run (PATH search like the runtime does), or MissingCommandError."""
    if "/" in argv0:
        candidates = [argv0 if argv0.startswith("/") else cwd.rstrip("/") + "/" + argv0]
    else:
        candidates = [d.rstrip("/") + "/" + argv0 for d in env.get("PATH", "").split(":") if d.startswith("/")]
    for candidate in candidates:
        resolved = rootfs.resolve(candidate)
        if resolved is None:
            continue
        host = rootfs.host_path(resolved)
        try:
            mode = host.stat().st_mode
        except OSError:
            continue
        if stat.S_ISREG(mode) and mode & 0o111:
            return resolved
    where = "" if "/" in argv0 else f" in PATH {env.get('PATH', '')!r}"
    raise MissingCommandError(f"command {argv0!r} not found (or not an executable file) in the image{where}")


class StartupRecorder:
    """Records startup profiles of images in a registry, locally (root, strace, unshare)."""

    def __init__(
        self,
        client: RegistryClient,
        *,
        work_root: Path | None = None,
        exact_ranges: bool = True,
        keep_rootfs: bool = False,
        log_fn: Callable[[str], None] = lambda _m: None,
    ) -> None:
        """`exact_ranges`: build the rootfs on a loop device with readahead off (else on `work_root` itself, whose
        device's readahead then widens every range)."""
        self.client = client
        self.work_root = work_root
        self.exact_ranges = exact_ranges
        self.keep_rootfs = keep_rootfs
        self.log = log_fn

    def record(
        self,
        ref: ImageRef,
        *,
        command: tuple[str, ...] | None = None,
        readiness: Readiness | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        platform: str | None = None,
    ) -> Recording:
        """Record the start of `ref` (its Entrypoint + Cmd, or `command`) until exit, readiness or timeout."""
        readiness = readiness or Readiness()
        image = resolve_image(self.client, ref, platform)
        argv = image.config.command(command)
        if not argv:
            raise MissingCommandError(f"image {ref} defines no Entrypoint or Cmd and no command was given")
        scratch_root = self.work_root or default_work_root()
        scratch.reclaim_stale(scratch_root, self.log)  # what a killed recorder left: mounts, loop devices, files
        workdir = scratch.create(scratch_root)
        try:
            with contextlib.ExitStack() as stack:
                if self.exact_ranges:
                    size_hint = 8 * sum(layer.size for layer in image.layers)
                    root = stack.enter_context(no_readahead_mount(workdir, size_hint))
                else:
                    root = workdir / scratch.MOUNTPOINT
                rootfs = assemble_rootfs(self.client, image, root)
                self.log(f"rootfs of {ref} ({image.manifest_digest}) assembled: {len(rootfs.provenance)} files")
                return self._run(image, rootfs, argv, readiness, timeout_s, workdir)
        finally:
            if not self.keep_rootfs:
                shutil.rmtree(workdir, ignore_errors=True)

    def _run(
        self,
        image: ResolvedImage,
        rootfs: Rootfs,
        argv: tuple[str, ...],
        readiness: Readiness,
        timeout_s: float,
        workdir: Path,
    ) -> Recording:
        env = image.config.environment()
        cwd = image.config.working_dir
        uid, gid, groups = resolve_user(rootfs.root, image.config.user)
        env.setdefault("HOME", home_of(rootfs.root, uid))
        path = find_command(rootfs, argv[0], env, cwd)
        spec = LaunchSpec(
            root=rootfs.root.resolve(), path=path, argv=argv, env=env, cwd=cwd, uid=uid, gid=gid, groups=groups
        )
        still_cached = evict_all(rootfs.regular_files(), rootfs.root)
        if still_cached:
            self.log(
                f"{still_cached} files of {image.ref} kept pages in the cache after eviction: their ranges "
                "may be too wide"
            )
        readahead = device_readahead_kb(rootfs.root)
        run = run_sandboxed(spec, workdir / "run", readiness, timeout_s)
        self._check(image, argv, readiness, timeout_s, run)
        files, started = self._files(rootfs, run, cwd)
        duration_ms = max(0.0, (run.stopped_at - started) * 1000) if started else 0.0
        profile = StartupProfile(
            image=str(image.ref),
            manifest_digest=image.manifest_digest,
            platform=image.platform,
            command=argv,
            stopped_by=run.stopped_by,  # type: ignore[arg-type]  # the sandbox only returns the four stop reasons
            duration_ms=round(duration_ms, 3),
            files=tuple(files),
        )
        return Recording(
            profile=profile, still_cached_before_run=still_cached, output_tail=run.output_tail, readahead_kb=readahead
        )

    @staticmethod
    def _check(
        image: ResolvedImage, argv: tuple[str, ...], readiness: Readiness, timeout_s: float, run: SandboxRun
    ) -> None:
        """Turn a crash, an early exit or a timeout without readiness into a clear error."""
        who = f"image {image.ref}: command {list(argv)!r}"
        code = run.returncode
        if run.stopped_by == "exit" and code is not None and code != 0:
            how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
            if code == 127 and any("cannot execute" in line for line in run.output_tail):
                raise MissingCommandError(f"{who} could not be executed", run.output_tail)
            raise ProgramCrashedError(
                f"{who} {how} before it was ready (readiness: {readiness.describe()})", run.output_tail
            )
        if run.stopped_by == "exit" and (readiness.log is not None or readiness.tcp_port is not None):
            raise NotReadyError(
                f"{who} exited with status 0 before it was ready ({readiness.describe()})", run.output_tail
            )
        if run.stopped_by == "timeout" and readiness.required:
            raise NotReadyError(
                f"{who} was not ready after {timeout_s:g}s (readiness: {readiness.describe()})", run.output_tail
            )

    def _files(self, rootfs: Rootfs, run: SandboxRun, cwd: str) -> tuple[list[ProfiledFile], float | None]:
        """Profiled files in first-access order, and the time (epoch) the command started."""
        chrooted_at, events = parse_trace(run.trace)
        if chrooted_at is None:
            raise RecordingError(
                "the sandbox launcher never entered the root (no chroot in the trace)", run.output_tail
            )
        host_root = rootfs.root.resolve()
        first: dict[str, tuple[float, str]] = {}
        started: float | None = None
        accesses: list[tuple[float, str, str]] = []
        for ev in events:
            if ev.kind == "exec":
                started = ev.time if started is None else started
                resolved = rootfs.resolve(ev.path, cwd)
                if resolved is None:
                    continue
                accesses.append((ev.time, resolved, "command"))
            else:
                p = in_root(ev.path, host_root)
                if p is not None:
                    accesses.append((ev.time, p, "file"))
        # Residency of every layer file first: reading headers (interpreters, loaders) below pages files in.
        ranges = {p: resident_ranges(rootfs.host_path(p)) for p in rootfs.provenance if self._regular(rootfs, p)}
        expanded: list[tuple[float, str, str]] = []
        for t, p, kind in accesses:
            chain = exec_chain(rootfs, p) if kind == "command" else [(p, kind)]
            expanded.extend((t, q, k) for q, k in chain)
        t0 = started if started is not None else chrooted_at
        for t, p, kind in expanded:
            if p not in ranges or p not in rootfs.provenance:
                continue
            if p not in first:
                first[p] = (t, kind)
            elif _KIND_RANK[kind] > _KIND_RANK[first[p][1]]:
                first[p] = (first[p][0], kind)
        files = [
            ProfiledFile(
                path=p,
                layer_digest=rootfs.provenance[p],
                size=rootfs.host_path(p).stat().st_size,
                first_access_ms=round(max(0.0, (t - t0) * 1000), 3),
                ranges=tuple(ranges[p]),
                kind=kind,  # type: ignore[arg-type]
            )
            for p, (t, kind) in first.items()
        ]
        files.sort(key=lambda f: f.first_access_ms)
        return files, started

    @staticmethod
    def _regular(rootfs: Rootfs, path: str) -> bool:
        try:
            return stat.S_ISREG(rootfs.host_path(path).lstat().st_mode)
        except OSError:
            return False
