"""FastHeaders (the tar parser's fast path) against parse_header on random header blocks."""

from __future__ import annotations

import random

from resources.soci.ztoc.model import raw_bytes
from resources.soci.ztoc.tar_header import (
    FastHeaders,
    TarFormatError,
    format_go_time_bytes,
    parse_header,
)

from .tar_fixtures import base256, header, octal


def _random_block(rnd: random.Random) -> bytes:
    """A header most writers could emit, then (often) one random change to it."""
    gnu = rnd.random() < 0.3
    block = bytearray(
        header(
            rnd.choice([b"f", b"dir/", b"a" * 100, b"x/y.txt", b"caf\xe9"]),
            typeflag=rnd.choice([b"0", b"\x00", b"1", b"2", b"5", b"x", b"L", b"3"]),
            size=rnd.choice([0, 1, 511, 512, 10**6, 8**11 - 1]),
            mode=rnd.choice([0o644, 0o755, 0o100644]),
            uid=rnd.choice([0, 1000, 8**7 - 1]),
            gid=rnd.choice([0, 50]),
            mtime=rnd.choice([0, 1_700_000_000, 8**11 - 1]),
            linkname=rnd.choice([b"", b"target", b"t" * 100]),
            uname=rnd.choice([b"", b"root", b"u" * 32]),
            gname=rnd.choice([b"", b"wheel"]),
            devmajor=rnd.choice([0, 0, 0, 8]),
            prefix=b"" if gnu else rnd.choice([b"", b"", b"pre/fix", b"p" * 155]),
            **({"magic": b"ustar ", "version": b" \x00"} if gnu else {}),
        )
    )
    kind = rnd.randrange(6)
    if kind == 1:  # a random byte anywhere
        block[rnd.randrange(512)] = rnd.randrange(256)
    elif kind == 2:  # a numeric field in another spelling
        offset, width = rnd.choice([(100, 8), (108, 8), (116, 8), (124, 12), (136, 12), (148, 8), (329, 8), (337, 8)])
        value = rnd.choice([base256(rnd.randrange(2**20), width), octal(rnd.randrange(8**5), width),
                            b" " + octal(5, width - 1), b"\x00" * width, b"7" * width, b"0000644 "])  # fmt: skip
        block[offset : offset + width] = value[:width].ljust(width, b"\x00")
    elif kind == 3:  # GNU atime/ctime or a STAR trailer
        block[rnd.choice([345, 357, 508])] = ord("1")
        if rnd.random() < 0.5:
            block[508:512] = b"tar\x00"
    if kind and rnd.random() < 0.7:  # checksum fixed (else it mostly mismatches)
        block[148:156] = b" " * 8
        block[148:156] = f"{sum(block):06o}".encode() + rnd.choice([b"\x00 ", b" \x00"])
    return bytes(block)


def test_fast_headers_agree_with_parse_header() -> None:
    rnd = random.Random(4242)
    fast = FastHeaders()
    accepted = 0
    for i in range(20_000):
        block = _random_block(rnd)
        decoded = fast.decode(block)
        if decoded is None:
            continue
        accepted += 1
        name, size, (flag, linkname, mode, uid, gid, mod_time, uname, gname, _) = decoded
        try:
            reference = parse_header(block, 0)
        except TarFormatError as exc:  # pragma: no cover - reported below
            raise AssertionError(f"block {i}: fast path accepted what parse_header rejects: {exc}") from None
        assert (flag, raw_bytes(reference.name), size, raw_bytes(reference.linkname), mode, reference.uid,
                reference.gid, raw_bytes(reference.uname), raw_bytes(reference.gname), reference.devmajor,
                reference.devminor) == (reference.typeflag, name, reference.size, linkname, reference.mode, uid, gid,
                                        uname, gname, 0, 0), f"block {i}"  # fmt: skip
        assert mod_time == format_go_time_bytes(reference.mtime, 0)
    assert 3_000 < accepted < 19_000  # both paths are exercised
