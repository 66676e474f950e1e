"""Scratch directories of recordings: stamped with their owner, and reclaimed once that owner is dead.

A recording mounts an ext4 on a loop device inside its scratch directory (`loopfs.py`). A recorder
killed with SIGKILL (OOM killer, `kill -9`, a node drain) cannot unmount or detach it, so the mount,
the loop device and the sparse backing file would stay until reboot. Each scratch directory holds an
`owner` file (pid and the process's start time, so a reused pid is not taken for the owner); the next
recording under the same root reclaims every directory whose owner is gone: it unmounts the rootfs
(lazily when busy), detaches the loop devices backed by its file and removes the directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

PREFIX = "streamable-startup-"
OWNER_FILE = "owner"
BACKING_FILE = "rootfs.ext4"
MOUNTPOINT = "rootfs"


def _start_time(pid: int) -> str | None:
    """Field 22 of /proc/<pid>/stat (start time in clock ticks since boot), or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # fields after "(comm)": state is field 3, starttime field 22


def create(root: Path) -> Path:
    """A fresh scratch directory under `root`, stamped with this process as its owner."""
    root.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=PREFIX, dir=root))
    pid = os.getpid()
    (workdir / OWNER_FILE).write_text(f"{pid} {_start_time(pid)}\n")
    return workdir


def owner_alive(workdir: Path) -> bool:
    """True while the process that created `workdir` runs (True too when its stamp cannot be read: keep it)."""
    try:
        pid_text, start = (workdir / OWNER_FILE).read_text().split()
        pid = int(pid_text)
    except (OSError, ValueError):
        return True
    return _start_time(pid) == start


@dataclass
class Reclaimed:
    """What one sweep cleaned up."""

    directories: list[str] = field(default_factory=list)
    unmounted: list[str] = field(default_factory=list)
    detached: list[str] = field(default_factory=list)


def _loop_devices(backing: Path) -> list[str]:
    """Loop devices attached to `backing` (`losetup --associated`); none when losetup is missing."""
    try:
        out = subprocess.run(
            ["losetup", "--list", "--noheadings", "--output", "NAME", "--associated", str(backing)],
            capture_output=True, text=True, check=False,
        )
    except FileNotFoundError:
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []


def reclaim_stale(root: Path, log: Callable[[str], None] = lambda _m: None) -> Reclaimed:
    """Unmount, detach and remove the scratch directories under `root` whose owner process is dead."""
    done = Reclaimed()
    if not root.is_dir():
        return done
    for workdir in sorted(root.glob(PREFIX + "*")):
        if not workdir.is_dir() or owner_alive(workdir):
            continue
        mountpoint = workdir / MOUNTPOINT
        devices = _loop_devices(workdir / BACKING_FILE)  # before the unmount, which autoclears them
        if os.path.ismount(mountpoint):
            if subprocess.run(["umount", str(mountpoint)], capture_output=True, check=False).returncode != 0:
                subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True, check=False)
            done.unmounted.append(str(mountpoint))
        for device in _loop_devices(workdir / BACKING_FILE):  # attached without autoclear (older recorders)
            subprocess.run(["losetup", "-d", device], capture_output=True, check=False)
        done.detached += devices
        if os.path.ismount(mountpoint):  # still mounted: leave the directory rather than delete under a mount
            log(f"scratch {workdir}: {mountpoint} is still mounted; left in place")
            continue
        shutil.rmtree(workdir, ignore_errors=True)
        done.directories.append(str(workdir))
        log(
            f"reclaimed the scratch of a recorder that died: {workdir}"
            + (f" (detached {', '.join(devices)})" if devices else "")
        )
    return done
