"""Scratch directories of recordings: stamped with their owner, and reclaimed once that owner is dead.

A recording mounts an ext4 on a loop device inside its scratch directory (`loopfs.py`). A recorder
killed with SIGKILL (OOM killer, `kill -9`, a node drain) cannot unmount or detach it, so the mount,
the loop device and the sparse backing file would stay until reboot. Each scratch directory holds an
`owner` file (pid, the process's start time, so a reused pid is not taken for the owner, its pid namespace
and the boot id); the next recording under the same root reclaims every directory whose owner is provably
gone: it unmounts the rootfs (lazily when busy), detaches the loop devices backed by its file and removes
the directory. A stamp from another pid namespace (a container sharing the directory) is left alone.
"""

from __future__ import annotations

import os
import shutil
import stat
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


def _pid_namespace() -> str | None:
    """This process's pid namespace (`pid:[inode]`): pids and start times mean something only inside it."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def _boot_id() -> str | None:
    """The kernel's boot id: a stamp from an earlier boot has a dead owner and no mounts left."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _stamp() -> str:
    pid = os.getpid()
    return f"{pid} {_start_time(pid)} {_pid_namespace()} {_boot_id()}\n"


def create(root: Path) -> Path:
    """A fresh scratch directory under `root` (mode 0700, ours), stamped with this process as its owner."""
    root.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=PREFIX, dir=root))
    (workdir / OWNER_FILE).write_text(_stamp())
    return workdir


def owner_alive(workdir: Path) -> bool:
    """False only when the stamp proves its process gone: another boot, or the same pid namespace and no process
    with that pid and start time. Anything unreadable or foreign (another pid namespace) counts as alive."""
    try:
        pid_text, start, namespace, boot = (workdir / OWNER_FILE).read_text().split()
        pid = int(pid_text)
    except (OSError, ValueError):
        return True
    if "None" in (start, namespace, boot):
        return True
    current_boot = _boot_id()
    if current_boot is not None and boot != current_boot:
        return False
    if namespace != _pid_namespace():
        return True
    return _start_time(pid) == start


def _ours(path: Path, want_dir: bool) -> bool:
    """`path` is a real directory (or regular file), not a symlink, owned by us and closed to others."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    kind_ok = stat.S_ISDIR(st.st_mode) if want_dir else stat.S_ISREG(st.st_mode)
    return kind_ok and st.st_uid == os.geteuid() and not (want_dir and st.st_mode & 0o077)


@dataclass
class Reclaimed:
    """What one sweep cleaned up."""

    directories: list[str] = field(default_factory=list)
    unmounted: list[str] = field(default_factory=list)
    detached: list[str] = field(default_factory=list)


def loop_devices(backing: Path) -> list[str]:
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
    """Unmount, detach and remove the scratch directories under `root` whose owner process is dead.

    Only directories this user created the way `create` does are touched (no symlinks, owned by us, mode
    0700), so files others can write in a shared `root` such as /var/tmp cannot point the sweep elsewhere.
    """
    done = Reclaimed()
    if not root.is_dir():
        return done
    for workdir in sorted(root.glob(PREFIX + "*")):
        if not _ours(workdir, want_dir=True) or owner_alive(workdir):
            continue
        mountpoint, backing = workdir / MOUNTPOINT, workdir / BACKING_FILE
        devices = loop_devices(backing) if _ours(backing, want_dir=False) else []  # before the unmount (autoclear)
        if not mountpoint.is_symlink() and os.path.ismount(mountpoint):  # inside a 0700 dir of ours: ours
            if subprocess.run(["umount", str(mountpoint)], capture_output=True, check=False).returncode != 0:
                subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True, check=False)
            done.unmounted.append(str(mountpoint))
        for device in loop_devices(backing) if devices else []:  # attached without autoclear (older recorders)
            subprocess.run(["losetup", "-d", device], capture_output=True, check=False)
        done.detached += devices
        still = loop_devices(backing) if devices else []
        if still or os.path.ismount(mountpoint):  # busy: leave the files rather than delete under a mount
            log(f"scratch {workdir}: still in use ({', '.join(still) or 'mounted'}); left in place")
            continue
        shutil.rmtree(workdir, ignore_errors=True)
        done.directories.append(str(workdir))
        log(
            f"reclaimed the scratch of a recorder that died: {workdir}"
            + (f" (detached {', '.join(devices)})" if devices else "")
        )
    return done
