"""Deterministic (seeded) layer blobs for the zTOC byte-identity test, one per layer shape.

Every generator depends only on its seed, Python's tarfile and the system zlib (level and
strategy fixed), so the same blob comes out on every run; the test records each blob's sha256
next to the zTOC's so that a change of generator (or of zlib's deflate output) is told apart
from a change of the zTOC builder.
"""

from __future__ import annotations

import io
import random
import tarfile
from collections.abc import Callable

from .conftest import (
    TarMember,
    gzip_member,
    make_tar,
    mixed_bytes,
    sample_tar_members,
    text_bytes,
)
from .tar_fixtures import (
    END,
    gnu_tar_with_long_names,
    header,
    mixed_pax_tar,
    padded,
    pax_entry,
)

OCI_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_TAR = "application/vnd.oci.image.layer.v1.tar"
KIB = 1024


def gzip_blob(data: bytes, level: int = 6, members: int = 1, seed: int = 0) -> bytes:
    """``data`` as ``members`` gzip members cut at seeded positions (one member when 1)."""
    rnd = random.Random(seed)
    cuts = sorted({0, len(data), *(rnd.randrange(len(data) + 1) for _ in range(members - 1))})
    while len(cuts) < members + 1:  # tiny inputs: allow empty members
        cuts.append(len(data))
    return b"".join(gzip_member(data[a:b], level) for a, b in zip(cuts, cuts[1:]))


def small_files_tar(seed: int, files: int) -> bytes:
    """Many small files in few directories (ustar, as Go's writer emits them)."""
    rnd = random.Random(seed)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for d in range(8):
            info = tarfile.TarInfo(f"usr/share/doc/pkg{d}")
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 1_700_000_000
            tar.addfile(info)
        for i in range(files):
            size = int(rnd.expovariate(1 / 900)) if rnd.random() < 0.95 else 0
            info = tarfile.TarInfo(f"usr/share/doc/pkg{rnd.randrange(8)}/f{i:06d}.txt")
            info.size, info.mode, info.mtime = size, 0o644, 1_700_000_000 + rnd.randrange(3)
            info.uid = info.gid = rnd.choice((0, 0, 1000))
            info.uname = info.gname = "root" if info.uid == 0 else "user"
            tar.addfile(info, io.BytesIO(text_bytes(rnd, size)))
    return buf.getvalue()


def xattr_tar(seed: int, files: int) -> bytes:
    """PAX entries with xattrs, sub-second mtimes and long names (BuildKit-like layers)."""
    rnd = random.Random(seed)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for i in range(files):
            name = f"opt/app/{'deep/' * rnd.randrange(30)}file-{i}.bin"
            data = rnd.randbytes(rnd.randrange(3000))
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o640, 1_700_000_000
            headers = {"mtime": f"1700000000.{rnd.randrange(10**9):09d}"}
            if rnd.random() < 0.5:
                headers["SCHILY.xattr.user.k" + str(rnd.randrange(3))] = "v" * rnd.randrange(20)
            if rnd.random() < 0.3:
                headers["SCHILY.xattr.security.capability"] = "\x01\x00\x00\x02"
            info.pax_headers = headers
            tar.addfile(info, io.BytesIO(data))
        tar.addfile(tarfile.TarInfo("opt/app/.wh..wh..opq"))
    return buf.getvalue()


def odd_entries_tar() -> bytes:
    """Hand-made headers: header-only sizes, base-256, prefixes, devices, non-UTF-8, PAX ids."""
    from .tar_fixtures import base256, octal

    gnu = {"magic": b"ustar ", "version": b" \x00"}
    parts = [
        header(b"olddir/", typeflag=b"\x00", size=100),
        header(b"f", typeflag=b"\x00", size=3) + padded(b"abc"),
        header(b"s", typeflag=b"2", linkname=b"t", size=10),
        header(b"d/", typeflag=b"5", size=400),
        pax_entry({"size": "700"}) + header(b"paxsize", size=1) + padded(b"s" * 700),
        pax_entry({"uname": "", "path": "", "c": "c"}) + header(b"emptyvals", uname=b"al"),
        pax_entry({"uid": "-1", "gid": "4294967297", "mtime": "-1.5"}) + header(b"ids"),
        pax_entry({"mtime": "253402300800"}) + header(b"year-10000"),
        pax_entry({"GNU.sparse.major": "2", "GNU.sparse.minor": "0"}) + header(b"unknown-sparse"),
        header(b"b256", raw={124: base256(700, 12), 108: base256(-1, 8), 136: base256(-5, 12)}, **gnu)
        + padded(b"b" * 700),
        header(b"m", mode=0o100755, uid=7, gid=2**21 - 1),
        header(b"file", prefix=b"star/dir", raw={508: b"tar\x00"}),
        header(b"file", prefix=b"ustar/dir"),
        header(b"file2", prefix=b"some/dir", **gnu),
        header(b"gnutimes", raw={345: octal(5, 12), 357: octal(6, 12)}, **gnu),
        header(b"caf\xe9", uname=b"\xff", linkname=b"\xfe"),
        header("é".encode() * 20, signed_checksum=True),
        header(b"dev/null", typeflag=b"3", devmajor=1, devminor=3, mode=0o666),
        header(b"dev/sda", typeflag=b"4", devmajor=8, devminor=0),
        header(b"fifo", typeflag=b"6"),
        header(b"octal-spaces", raw={108: b"  17 \x00\x00\x00", 124: b"\x00\x00 3\x00      "}) + padded(b"abc"),
        header(b"empty-file"),
        header(b"hard", typeflag=b"1", linkname=b"f"),
    ]
    return b"".join(parts) + END


def _sample(seed: int) -> bytes:
    return make_tar(sample_tar_members(seed))


def _large_files(seed: int) -> bytes:
    rnd = random.Random(seed)
    return make_tar(
        [TarMember(f"m/w{i}.bin", mixed_bytes(seed + i, rnd.randint(700_000, 2_000_000))) for i in range(4)]
    )


def _without_end_blocks(tar: bytes) -> bytes:
    """The archive cut right after its last header (its last entry has no data): no end blocks."""
    stripped = tar.rstrip(b"\x00")
    return stripped + bytes(-len(stripped) % 512)


# name -> (blob factory, media type, span size)
LAYERS: dict[str, tuple[Callable[[], bytes], str, int]] = {
    "gzip-large-files": (lambda: gzip_blob(_large_files(11), 6), OCI_GZIP, 256 * KIB),
    "gzip-large-files-level1-4member": (lambda: gzip_blob(_large_files(12), 1, 4, seed=5), OCI_GZIP, 128 * KIB),
    "gzip-level9-small-span": (lambda: gzip_blob(_sample(3), 9), OCI_GZIP, 64 * KIB),
    "gzip-stored-blocks": (lambda: gzip_blob(_sample(4), 0, 2, seed=1), OCI_GZIP, 100 * KIB),
    "gzip-many-small-files": (lambda: gzip_blob(small_files_tar(21, 3000), 6), OCI_GZIP, 256 * KIB),
    "gzip-many-small-files-multi": (lambda: gzip_blob(small_files_tar(22, 2000), 6, 7, seed=9), OCI_GZIP, 64 * KIB),
    "gzip-xattrs": (lambda: gzip_blob(xattr_tar(31, 400), 6), OCI_GZIP, 64 * KIB),
    "gzip-pax-mixed": (lambda: gzip_blob(mixed_pax_tar(), 6), OCI_GZIP, 4096 * KIB),
    "gzip-gnu-long-names": (lambda: gzip_blob(gnu_tar_with_long_names(), 6, 3, seed=2), OCI_GZIP, 1024),
    "gzip-odd-entries": (lambda: gzip_blob(odd_entries_tar(), 6), OCI_GZIP, 1024),
    "gzip-empty-tar": (lambda: gzip_blob(END, 6), OCI_GZIP, 4096 * KIB),
    "gzip-empty-members": (lambda: gzip_member(b"") + gzip_member(_sample(5)) + gzip_member(b""), OCI_GZIP, 512 * KIB),
    "tar-sample": (lambda: _sample(7) + bytes(10 * KIB), OCI_TAR, 300 * KIB),
    "tar-many-small-files": (lambda: small_files_tar(23, 3000), OCI_TAR, 256 * KIB),
    "tar-xattrs": (lambda: xattr_tar(32, 300), OCI_TAR, 4096 * KIB),
    "tar-pax-mixed": (lambda: mixed_pax_tar(), OCI_TAR, 512),
    "tar-gnu-long-names": (lambda: gnu_tar_with_long_names(), OCI_TAR, 4096 * KIB),
    "tar-odd-entries": (lambda: odd_entries_tar(), OCI_TAR, 2048),
    "tar-empty": (lambda: b"", OCI_TAR, 4096 * KIB),
    "tar-no-end-blocks": (lambda: _without_end_blocks(_sample(8)), OCI_TAR, 1 << 20),
}

__all__ = ["LAYERS", "OCI_GZIP", "OCI_TAR", "gzip_blob", "small_files_tar", "xattr_tar"]
