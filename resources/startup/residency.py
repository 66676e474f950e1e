"""Page-cache residency of files: evict them (cold start) and read back which pages a run brought in.

Why this mechanism: a program reads file data through `read`/`pread` *and* through page faults on
`mmap`ed ranges (shared libraries, model files); only the page cache sees both. After `fsync` +
`posix_fadvise(POSIX_FADV_DONTNEED)` every page of a file is gone, so the pages resident after the run
are exactly the pages the kernel read for it during the run. `mincore(2)` on a fresh `MAP_SHARED`
mapping reports them without touching them.

Kernel readahead: the kernel reads more than was asked. Buffered reads start a readahead window and a
page fault on a mapping reads around the fault, both sized by the backing device's `read_ahead_kb`
(8192 KiB on this project's CI disk: one touched page of a mapped model file brings in 8 MiB). So the
recorder builds the rootfs on its own loop device with `read_ahead_kb` = 0 (resources/startup/loopfs.py):
then a read brings in exactly the pages it covers and a fault exactly its page (fault-around only maps
pages already cached), and the resident pages are exactly the pages read (tests/resources/startup/
test_mapped.py checks one page per touched offset). Without it (`exact_ranges=False`) the ranges are a
page-aligned superset, wider by up to one readahead window per access cluster. In both cases a range
never misses a page the program read, unless memory pressure evicted it during the run.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os
from collections.abc import Iterable
from pathlib import Path

PAGE_SIZE = mmap.PAGESIZE
_PROT_READ, _MAP_SHARED = 0x1, 0x01
_MAP_FAILED = ctypes.c_void_p(-1).value

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long)
_libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
_libc.mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_ubyte))
_libc.syncfs.argtypes = (ctypes.c_int,)


def evict(path: Path) -> None:
    """Write back and drop every cached page of a regular file."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _syncfs(directory: Path) -> bool:
    """Write back every dirty page of the filesystem holding `directory` (syncfs(2)); False if that failed."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return _libc.syncfs(fd) == 0
    finally:
        os.close(fd)


def evict_all(paths: Iterable[Path], root: Path | None = None) -> int:
    """Evict every file (one syncfs of `root`'s filesystem, else an fsync per file); returns how many still
    have resident pages afterwards (0 for a cold start)."""
    listed = list(paths)
    synced = root is not None and _syncfs(root)
    for p in listed:
        if synced:
            fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
        else:
            evict(p)
    return sum(1 for p in listed if resident_ranges(p))


def resident_pages(path: Path) -> list[bool]:
    """Per page of the file: is it in the page cache (mincore on a MAP_SHARED mapping, nothing touched)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            return []
        addr = _libc.mmap(None, size, _PROT_READ, _MAP_SHARED, fd, 0)
        if addr in (None, _MAP_FAILED):
            err = ctypes.get_errno()
            raise OSError(err, f"mmap {path}: {os.strerror(err)}")
        try:
            pages = (size + PAGE_SIZE - 1) // PAGE_SIZE
            vec = (ctypes.c_ubyte * pages)()
            if _libc.mincore(addr, size, vec) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"mincore {path}: {os.strerror(err)}")
            return [bool(b & 1) for b in vec]
        finally:
            _libc.munmap(addr, size)
    finally:
        os.close(fd)


def resident_ranges(path: Path) -> list[tuple[int, int]]:
    """Resident byte ranges [start, end) of a file, merged, the last clipped to the file size."""
    pages = resident_pages(path)
    size = path.stat().st_size
    ranges: list[tuple[int, int]] = []
    for i, hot in enumerate(pages):
        if not hot:
            continue
        start, end = i * PAGE_SIZE, min((i + 1) * PAGE_SIZE, size)
        if ranges and ranges[-1][1] == start:
            ranges[-1] = (ranges[-1][0], end)
        else:
            ranges.append((start, end))
    return ranges
