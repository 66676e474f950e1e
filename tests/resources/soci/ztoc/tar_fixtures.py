"""Tar archives for the TOC tests: hand-made header blocks and Python tarfile / GNU tar samples."""

from __future__ import annotations

import io
import os
import random
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from resources.soci.ztoc.toc import TarTocBuilder, TocResult

MTIME = 1_700_000_000


# --------------------------------------------------------------------------- helpers


def toc(data: bytes, chunk: int | None = None) -> TocResult:
    """Feed `data` in chunks of `chunk` bytes (all at once when None) and finish."""
    builder = TarTocBuilder()
    step = chunk or max(len(data), 1)
    for i in range(0, len(data), step):
        builder.feed(data[i : i + step])
    return builder.finish()


def octal(value: int, width: int) -> bytes:
    """A NUL-terminated, zero-padded octal field."""
    return f"{value:0{width - 1}o}".encode() + b"\x00"


def base256(value: int, width: int) -> bytes:
    """GNU base-256: two's complement big-endian with the top bit set."""
    raw = bytearray((value & ((1 << (8 * width)) - 1)).to_bytes(width, "big"))
    raw[0] |= 0x80
    return bytes(raw)


def header(
    name: bytes,
    *,
    typeflag: bytes = b"0",
    size: int = 0,
    mode: int = 0o644,
    uid: int = 0,
    gid: int = 0,
    mtime: int = MTIME,
    linkname: bytes = b"",
    magic: bytes = b"ustar\x00",
    version: bytes = b"00",
    uname: bytes = b"",
    gname: bytes = b"",
    devmajor: int = 0,
    devminor: int = 0,
    prefix: bytes = b"",
    raw: dict[int, bytes] | None = None,
    signed_checksum: bool = False,
) -> bytes:
    """One hand-made header block (for what Python's tarfile cannot write)."""
    block = bytearray(512)

    def put(offset: int, width: int, value: bytes) -> None:
        assert len(value) <= width
        block[offset : offset + len(value)] = value

    put(0, 100, name)
    put(100, 8, octal(mode, 8))
    put(108, 8, octal(uid, 8))
    put(116, 8, octal(gid, 8))
    put(124, 12, octal(size, 12))
    put(136, 12, octal(mtime, 12))
    put(156, 1, typeflag)
    put(157, 100, linkname)
    put(257, 6, magic)
    put(263, 2, version)
    put(265, 32, uname)
    put(297, 32, gname)
    if magic.startswith(b"ustar"):
        put(329, 8, octal(devmajor, 8))
        put(337, 8, octal(devminor, 8))
    put(345, 155, prefix)
    for offset, value in (raw or {}).items():
        block[offset : offset + len(value)] = value
    block[148:156] = b" " * 8
    checksum = sum(block)
    if signed_checksum:
        checksum -= 256 * sum(1 for b in block if b >= 0x80)
    block[148:156] = f"{checksum:06o}".encode() + b"\x00 "
    return bytes(block)


def padded(data: bytes) -> bytes:
    """Entry data padded to a block boundary."""
    return data + bytes(-len(data) % 512)


def pax_payload(records: dict[str, str] | list[tuple[bytes, bytes]]) -> bytes:
    """PAX extended header records ('%d %s=%s\\n')."""
    items = records.items() if isinstance(records, dict) else records
    out = b""
    for key, value in items:
        k = key.encode() if isinstance(key, str) else key
        v = value.encode() if isinstance(value, str) else value
        body = b" " + k + b"=" + v + b"\n"
        n = len(body) + 1
        while len(str(n)) + len(body) != n:
            n = len(str(n)) + len(body)
        out += str(n).encode() + body
    return out


def pax_entry(records: dict[str, str] | list[tuple[bytes, bytes]], name: bytes = b"PaxHeader") -> bytes:
    """A PAX 'x' header block plus its padded payload."""
    payload = pax_payload(records)
    return header(name, typeflag=b"x", size=len(payload)) + padded(payload)


END = bytes(1024)


def tarfile_members(data: bytes) -> list[tarfile.TarInfo]:
    """Members as Python's tarfile reads them (independent reference for offsets)."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return tf.getmembers()


def add(tf: tarfile.TarFile, name: str, data: bytes = b"", **attrs: object) -> None:
    """Add one member with fixed metadata."""
    info = tarfile.TarInfo(name)
    info.mtime = MTIME
    info.size = len(data)
    for key, value in attrs.items():
        setattr(info, key, value)
    tf.addfile(info, io.BytesIO(data) if data else None)


def utc_text(seconds: int) -> str:
    """Whole-second RFC 3339 in UTC, computed with datetime (an independent reference)."""
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)
    return moment.isoformat().replace("+00:00", "Z")


def mixed_pax_tar() -> bytes:
    """A PAX tar (Python tarfile) with every entry type and many PAX features."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        add(tf, "app", type=tarfile.DIRTYPE, mode=0o755, uname="root", gname="wheel")
        add(tf, "app/hello.txt", b"hello world\n", mode=0o644, uid=1000, gid=1000)
        add(tf, "app/" + "long-name-" * 20 + ".bin", random.Random(3).randbytes(1500))
        add(tf, "app/link-to-hello", type=tarfile.LNKTYPE, linkname="app/hello.txt")
        add(tf, "app/symlink", type=tarfile.SYMTYPE, linkname="../" + "target-" * 20)
        add(tf, "dev/null", type=tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666)
        add(tf, "dev/sda", type=tarfile.BLKTYPE, devmajor=8, devminor=0, mode=0o660)
        add(tf, "run/fifo", type=tarfile.FIFOTYPE, mode=0o600)
        add(tf, "app/big-ids", b"x" * 10, uid=2**32 - 1, gid=3_000_000, uname="ü" * 40)
        add(
            tf,
            "app/xattrs",
            b"payload",
            pax_headers={
                "SCHILY.xattr.user.comment": "hi",
                "SCHILY.xattr.security.selinux": "system_u:object_r:bin_t:s0",
                "mtime": "1672628645.123456789",
            },
        )
        add(tf, "app/ünïcode.txt", b"u" * 513)
        add(tf, "app/empty", b"")
    return buf.getvalue()


def gnu_tar_with_long_names() -> bytes:
    """GNU format (Python tarfile): long names and link names become 'L' and 'K' entries."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        add(tf, "d" * 120 + "/", type=tarfile.DIRTYPE, mode=0o755)
        add(tf, "d" * 120 + "/" + "f" * 150, b"data" * 300)
        add(tf, "short-link", type=tarfile.SYMTYPE, linkname="t" * 200)
        add(tf, "l" * 130, type=tarfile.LNKTYPE, linkname="k" * 140)
        add(tf, "base256-ids", b"q", uid=2**21, gid=2**30)
        add(tf, "before-epoch", b"", mtime=-1)
    return buf.getvalue()


def make_tree(root: Path) -> None:
    """Files of several kinds, with long names, on the real filesystem."""
    (root / "dir" / ("sub-" * 30)).mkdir(parents=True)
    (root / "dir" / "file.txt").write_bytes(b"hello\n" * 100)
    (root / "dir" / ("sub-" * 30) / ("name-" * 25)).write_bytes(random.Random(4).randbytes(3000))
    os.symlink("file.txt", root / "dir" / "sym")
    os.symlink("x" * 150, root / "dir" / "long-sym")
    os.link(root / "dir" / "file.txt", root / "dir" / "hard")
    os.mkfifo(root / "dir" / "fifo")
    os.utime(root / "dir" / "file.txt", ns=(MTIME * 10**9 + 123456789, MTIME * 10**9 + 123456789))
