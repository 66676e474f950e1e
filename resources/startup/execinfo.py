"""What the kernel loads for an exec without a syscall the tracer sees: `#!` interpreters and the ELF loader.

An `execve` of a script makes the kernel load its interpreter (fs/binfmt_script.c); an `execve` of a
dynamically linked ELF makes it map the program interpreter named by `PT_INTERP` (fs/binfmt_elf.c).
Neither shows up as an open in the trace, yet both are read to start, so the recorder adds them.
"""

from __future__ import annotations

import struct
from pathlib import Path

from resources.startup.rootfs import Rootfs

PT_INTERP = 3
MAX_INTERPRETER_DEPTH = 4  # Linux's BINPRM_MAX_RECURSION


def _read_head(path: Path, size: int) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(size)
    except OSError:
        return b""


def elf_interpreter(path: Path) -> str | None:
    """The PT_INTERP path of an ELF file (its dynamic loader), or None for static / non-ELF files."""
    head = _read_head(path, 64)
    if len(head) < 52 or head[:4] != b"\x7fELF":
        return None
    is64, endian = head[4] == 2, "<" if head[5] == 1 else ">"
    if is64:
        phoff, phentsize, phnum = (
            struct.unpack_from(endian + "Q", head, 32)[0],
            *struct.unpack_from(endian + "HH", head, 54),
        )
    else:
        phoff, phentsize, phnum = (
            struct.unpack_from(endian + "I", head, 28)[0],
            *struct.unpack_from(endian + "HH", head, 42),
        )
    try:
        with open(path, "rb") as f:
            f.seek(phoff)
            table = f.read(phentsize * phnum)
            for i in range(phnum):
                entry = table[i * phentsize : (i + 1) * phentsize]
                if len(entry) < (56 if is64 else 32) or struct.unpack_from(endian + "I", entry, 0)[0] != PT_INTERP:
                    continue
                if is64:
                    offset, filesz = (
                        struct.unpack_from(endian + "Q", entry, 8)[0],
                        struct.unpack_from(endian + "Q", entry, 32)[0],
                    )
                else:
                    offset, filesz = (
                        struct.unpack_from(endian + "I", entry, 4)[0],
                        struct.unpack_from(endian + "I", entry, 16)[0],
                    )
                f.seek(offset)
                return f.read(min(filesz, 4096)).split(b"\0", 1)[0].decode("utf-8", "surrogateescape") or None
    except (OSError, struct.error):
        return None
    return None


def shebang_interpreter(path: Path) -> str | None:
    """The interpreter of a `#!` script (first word after `#!`), or None."""
    head = _read_head(path, 256)
    if not head.startswith(b"#!"):
        return None
    words = head[2:].split(b"\n", 1)[0].split()
    return words[0].decode("utf-8", "surrogateescape") if words else None


def exec_chain(rootfs: Rootfs, path: str) -> list[tuple[str, str]]:
    """[(in-root path, kind)] the kernel loads to exec `path` (already resolved): the file, interpreters, loader."""
    out: list[tuple[str, str]] = [(path, "command")]
    current = path
    for _ in range(MAX_INTERPRETER_DEPTH):
        interp = shebang_interpreter(rootfs.host_path(current))
        if interp is None:
            break
        resolved = rootfs.resolve(interp)
        if resolved is None:
            return out
        out.append((resolved, "command"))
        current = resolved
    loader = elf_interpreter(rootfs.host_path(current))
    if loader:
        resolved = rootfs.resolve(loader)
        if resolved is not None:
            out.append((resolved, "loader"))
    return out
