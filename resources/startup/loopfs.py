"""A scratch ext4 filesystem on its own loop device with readahead off, so page residency is exact.

Readahead is a property of the backing device (`/sys/block/<dev>/queue/read_ahead_kb`, copied into
each open file). On a shared disk it is often large (8 MiB on this project's CI host): one touched
page of a mapped model file then brings in 8 MiB. A loop device is a block device of our own: with
its `read_ahead_kb` set to 0, a `read` brings in just the pages it covers and a page fault on a
mapping just its page (mm/filemap.c: no sync/async readahead when `ra_pages` is 0), so the pages
resident after a cold run are the pages the program read. The backing file lives on the disk.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from resources.startup.errors import SandboxUnavailableError
from resources.startup.rootfs import require_disk_filesystem
from resources.startup.scratch import BACKING_FILE, MOUNTPOINT, loop_devices

MIN_SIZE = 4 << 30
MAX_SIZE = 1 << 40


def _run(argv: list[str], what: str) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise SandboxUnavailableError(
            f"{what}: {argv[0]} is not installed (Debian packages e2fsprogs, util-linux, mount)"
        ) from None
    if out.returncode != 0:
        raise SandboxUnavailableError(f"{what} failed ({' '.join(argv[:2])}): {out.stderr.strip()[-300:]}")
    return out.stdout.strip()


def device_readahead_kb(path: Path) -> int | None:
    """`read_ahead_kb` of the block device holding `path` (its disk for a partition), or None if unknown."""
    st = os.stat(path)
    base = Path(f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}")
    for candidate in (base / "queue/read_ahead_kb", base / "../queue/read_ahead_kb"):
        try:
            return int(candidate.read_text())
        except (OSError, ValueError):
            continue
    return None


@contextmanager
def no_readahead_mount(workdir: Path, size_hint: int) -> Iterator[Path]:
    """Mount a fresh ext4 on a loop device with readahead 0 at `workdir/rootfs`; unmount and detach after."""
    require_disk_filesystem(workdir)
    backing, mountpoint = workdir / BACKING_FILE, workdir / MOUNTPOINT
    mountpoint.mkdir()
    with open(backing, "wb") as f:
        f.truncate(min(MAX_SIZE, max(MIN_SIZE, size_hint)))  # sparse: only written blocks use disk
    _run(
        ["mkfs.ext4", "-q", "-F", "-O", "^has_journal", "-E", "lazy_itable_init=1,lazy_journal_init=1", str(backing)],
        "mkfs.ext4",
    )
    # `-o loop` attaches the device with autoclear: the kernel detaches it when the mount goes, also when a
    # killed recorder's mount namespace (a pod's) dies with it. Readahead is set before any file is opened.
    _run(["mount", "-t", "ext4", "-o", "loop,noatime", str(backing), str(mountpoint)], "mount")
    try:
        devices = loop_devices(backing)
        if len(devices) != 1:
            raise SandboxUnavailableError(f"mount -o loop: expected one loop device on {backing}, found {devices}")
        Path(f"/sys/block/{Path(devices[0]).name}/queue/read_ahead_kb").write_text("0")
        (mountpoint / "lost+found").rmdir()
        yield mountpoint
    finally:
        if subprocess.run(["umount", str(mountpoint)], capture_output=True, check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True, check=False)
        backing.unlink(missing_ok=True)
