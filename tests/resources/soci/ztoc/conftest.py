"""Helpers for the gzip index / lazy reader / builder tests: deterministic data, tars, gzips."""

from __future__ import annotations

import functools
import io
import random
import struct
import tarfile
import zlib
from dataclasses import dataclass

import pytest

WINDOW = 32768


_WORDS = [
    b"def",
    b"return",
    b"self",
    b"import",
    b"value",
    b"for",
    b"in",
    b"(",
    b")",
    b":",
    b"\n    ",
    b"x",
    b"0",
]


@functools.cache
def _text_corpus() -> bytes:
    """2 MiB of source-code-like text (generated once)."""
    rnd = random.Random(1234)
    out = bytearray()
    while len(out) < 2 * 1024 * 1024:
        out += rnd.choice(_WORDS) + (b" " if rnd.random() < 0.7 else b"") + str(rnd.randint(0, 999)).encode()
    return bytes(out)


def text_bytes(rnd: random.Random, size: int) -> bytes:
    """Compressible source-code-like text: random slices of a fixed corpus."""
    corpus = _text_corpus()
    out = bytearray()
    while len(out) < size:
        start = rnd.randrange(len(corpus) // 2)
        out += corpus[start : start + min(size - len(out), len(corpus) // 2)]
    return bytes(out)


def mixed_bytes(seed: int, size: int) -> bytes:
    """Alternating compressible text and incompressible random runs (stored blocks follow Huffman ones)."""
    rnd = random.Random(seed)
    out = bytearray()
    while len(out) < size:
        if rnd.random() < 0.5:
            out += text_bytes(rnd, rnd.randint(1000, 120_000))
        else:
            out += rnd.randbytes(rnd.randint(1000, 200_000))
    return bytes(out[:size])


def gzip_member(
    data: bytes,
    level: int = 6,
    *,
    name: bytes | None = None,
    extra: bytes | None = None,
    comment: bytes | None = None,
    header_crc: bool = False,
    mtime: int = 0,
) -> bytes:
    """One gzip member with the requested optional header fields (RFC 1952)."""
    flags = 0
    tail = b""
    if extra is not None:
        flags |= 0x04
        tail += struct.pack("<H", len(extra)) + extra
    if name is not None:
        flags |= 0x08
        tail += name + b"\0"
    if comment is not None:
        flags |= 0x10
        tail += comment + b"\0"
    if header_crc:
        flags |= 0x02
    header = b"\x1f\x8b\x08" + bytes([flags]) + struct.pack("<I", mtime) + b"\x00\x03" + tail
    if header_crc:
        header += struct.pack("<H", zlib.crc32(header) & 0xFFFF)
    compressor = zlib.compressobj(level, zlib.DEFLATED, -15)
    body = compressor.compress(data) + compressor.flush()
    return header + body + struct.pack("<II", zlib.crc32(data), len(data) & 0xFFFFFFFF)


@dataclass(frozen=True)
class TarMember:
    """One file for make_tar."""

    name: str
    data: bytes = b""
    type: bytes = tarfile.REGTYPE
    linkname: str = ""


def make_tar(members: list[TarMember], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    """A tar archive (Python tarfile) of the given members, mtime fixed."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for member in members:
            info = tarfile.TarInfo(member.name)
            info.type = member.type
            info.mtime = 1_700_000_000
            info.mode = 0o755 if member.type == tarfile.DIRTYPE else 0o644
            info.linkname = member.linkname
            if member.type == tarfile.REGTYPE:
                info.size = len(member.data)
                tar.addfile(info, io.BytesIO(member.data))
            else:
                tar.addfile(info)
    return buf.getvalue()


def sample_tar_members(seed: int, files: int = 60, big: int = 3) -> list[TarMember]:
    """A small realistic mix: dirs, text files, random binaries, a few bigger files, links."""
    rnd = random.Random(seed)
    members = [TarMember("app/", type=tarfile.DIRTYPE), TarMember("app/lib/", type=tarfile.DIRTYPE)]
    for i in range(files):
        if rnd.random() < 0.7:
            members.append(TarMember(f"app/lib/mod_{i}.py", text_bytes(rnd, rnd.randint(0, 40_000))))
        else:
            members.append(TarMember(f"app/lib/blob_{i}.bin", rnd.randbytes(rnd.randint(1, 90_000))))
    for i in range(big):
        members.append(
            TarMember(f"app/weights_{i}.bin", mixed_bytes(seed * 31 + i, rnd.randint(600_000, 1_500_000)))
        )
    members.append(TarMember("app/link_to_weights", type=tarfile.LNKTYPE, linkname="app/weights_0.bin"))
    members.append(TarMember("app/symlink", type=tarfile.SYMTYPE, linkname="weights_0.bin"))
    return members


@pytest.fixture(scope="session")
def sample_tar() -> bytes:
    """A ~5 MB tar with a realistic mix of files."""
    return make_tar(sample_tar_members(7))
