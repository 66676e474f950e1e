"""Differential test: toc.py against Go's real archive/tar, driven the way soci-snapshotter's
`metadataFromTarReader` drives it (go_reference/main.go), on hand-made edge cases, real GNU tar
archives and a few hundred random mutations of them.

Needs the Go toolchain (`bash scripts/test-deps.sh` installs it; `make test` runs that first).
"""

from __future__ import annotations

import base64
import json
import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from resources.soci.ztoc.model import raw_bytes
from resources.soci.ztoc.toc import TarFormatError, TarTocBuilder
from tests.resources.soci.ztoc.tar_fixtures import (
    END,
    base256,
    gnu_tar_with_long_names,
    header,
    make_tree,
    mixed_pax_tar,
    octal,
    padded,
    pax_entry,
)

GO = shutil.which("go")
GO_SOURCE = Path(__file__).parent / "go_reference" / "main.go"

if GO is None:  # `make test` installs it (scripts/test-deps.sh); a missing reference is a failure, not a skip
    raise RuntimeError("Go toolchain not installed: run `bash scripts/test-deps.sh` (the Go archive/tar reference)")


@pytest.fixture(scope="module")
def go_reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The compiled reference program."""
    workdir = tmp_path_factory.mktemp("go_reference")
    binary = workdir / "go_reference"
    env = {**os.environ, "GO111MODULE": "off", "CGO_ENABLED": "0"}
    subprocess.run([GO, "build", "-o", str(binary), str(GO_SOURCE)], check=True, env=env, timeout=600)
    return binary


def run_go(binary: Path, tars: list[bytes], workdir: Path) -> list[dict]:
    """Go's view of each tar: {'entries': [...], 'uncompressed_archive_size': n} or {'error': ...}."""
    paths = []
    for i, data in enumerate(tars):
        path = workdir / f"{i}.tar"
        path.write_bytes(data)
        paths.append(str(path))
    out = subprocess.run(
        [str(binary), *paths],
        check=True,
        capture_output=True,
        env={**os.environ, "TZ": "UTC"},
        timeout=600,
    ).stdout
    results = [json.loads(line) for line in out.splitlines()]
    assert len(results) == len(tars)
    return results


def ours(data: bytes, chunk: int) -> dict:
    """Our view of a tar, in the reference program's JSON shape."""
    builder = TarTocBuilder()
    try:
        for i in range(0, len(data), chunk):
            builder.feed(data[i : i + chunk])
        result = builder.finish()
    except TarFormatError as exc:
        return {"error": str(exc)}

    def b64(text: str) -> str:
        return base64.b64encode(raw_bytes(text)).decode()

    return {
        "entries": [
            {
                "name": b64(e.name),
                "type": e.type,
                "uncompressed_offset": e.uncompressed_offset,
                "uncompressed_size": e.uncompressed_size,
                "linkname": b64(e.linkname),
                "mode": e.mode,
                "uid": e.uid,
                "gid": e.gid,
                "uname": b64(e.uname),
                "gname": b64(e.gname),
                "mod_time": b64(e.mod_time),
                "devmajor": e.devmajor,
                "devminor": e.devminor,
                "xattrs": [{"key": b64(x.key), "value": b64(x.value)} for x in e.xattrs],
            }
            for e in result.entries
        ],
        "uncompressed_archive_size": result.uncompressed_archive_size,
    }


def normalize_go(result: dict) -> dict:
    """Go's JSON encodes empty []byte as "" and nil []byte as null: treat both as empty."""
    if "error" in result:
        return result
    for entry in result["entries"]:
        for key in ("name", "linkname", "uname", "gname", "mod_time"):
            entry[key] = entry[key] or ""
        for record in entry["xattrs"]:
            record["key"] = record["key"] or ""
            record["value"] = record["value"] or ""
    return result


def compare(cases: list[tuple[str, bytes]], go_results: list[dict]) -> list[str]:
    """Human-readable differences between Go and us (empty when they agree)."""
    problems = []
    for (name, data), go in zip(cases, go_results):
        go = normalize_go(go)
        chunk = 1 + (len(name) * 97) % 700  # vary chunking per case too
        mine = ours(data, chunk)
        if "error" in go or "error" in mine:
            if ("error" in go) != ("error" in mine):
                problems.append(f"{name}: go={go.get('error', 'ok')!r} ours={mine.get('error', 'ok')!r}")
            continue
        if go != mine:
            problems.append(f"{name}: go={json.dumps(go)[:600]}\n   ours={json.dumps(mine)[:600]}")
    return problems


# --------------------------------------------------------------------------- corpus


def edge_cases() -> list[tuple[str, bytes]]:
    """Hand-made archives for each Go rule the TOC depends on."""
    long_name = b"gnu-name" * 20
    gnu_long = header(b"././@LongLink", typeflag=b"L", size=len(long_name) + 1)
    gnu_long += padded(long_name + b"\x00")
    gnu = {"magic": b"ustar ", "version": b" \x00"}
    cases = {
        "nul-type-dir": header(b"olddir/", typeflag=b"\x00", size=100)
        + header(b"f", typeflag=b"\x00", size=3)
        + padded(b"abc")
        + END,
        "zero-type-with-slash": header(b"z/", typeflag=b"0") + END,
        "header-only-sizes": header(b"s", typeflag=b"2", linkname=b"t", size=10)
        + header(b"d/", typeflag=b"5", size=4096) + END,
        "pax-size": pax_entry({"size": "700"}) + header(b"f", size=1) + padded(b"s" * 700) + END,
        "pax-empty-values": pax_entry({"uname": "", "path": "", "c": "c"}) + header(b"f", uname=b"al") + END,
        "pax-twice": pax_entry({"path": "a", "x": "1"}) + pax_entry({"path": "b"}) + header(b"f") + END,
        "gnu-over-pax": pax_entry({"path": "pax"}) + gnu_long + header(b"short") + END,
        "pax-ids": pax_entry({"uid": "-1", "gid": "4294967297", "mtime": "-1.5"}) + header(b"f") + END,
        "pax-mtime-long-fraction": pax_entry({"mtime": "1.1234567891234"}) + header(b"f") + END,
        "pax-mtime-year-10000": pax_entry({"mtime": "253402300800"}) + header(b"f") + END,
        "pax-mtime-plus": pax_entry({"mtime": "+7.25"}) + header(b"f") + END,
        "pax-mtime-bad": pax_entry({"mtime": "1.2e3"}) + header(b"f") + END,
        "pax-atime-bad": pax_entry({"atime": "x"}) + header(b"f") + END,
        "pax-uid-underscore": pax_entry({"uid": "1_0"}) + header(b"f") + END,
        "pax-record-short": header(b"P", typeflag=b"x", size=6) + padded(b"4 a=b\n") + header(b"f") + END,
        "pax-valid-min": header(b"P", typeflag=b"x", size=5) + padded(b"5 a=\n") + header(b"f") + END,
        "pax-nul-in-path": pax_entry([(b"path", b"a\x00b")]) + header(b"f") + END,
        "pax-nul-in-other": pax_entry([(b"comment", b"a\x00b")]) + header(b"f") + END,
        "pax-unknown-sparse": pax_entry({"GNU.sparse.major": "2", "GNU.sparse.minor": "0"})
        + header(b"f")
        + END,
        "base256": header(b"b", raw={124: base256(700, 12), 108: base256(-1, 8), 136: base256(-5, 12)}, **gnu)
        + padded(b"b" * 700)
        + END,
        "base256-huge-mtime": header(b"h", raw={136: base256(2**62, 12)}, **gnu) + END,
        "raw-mode-bits": header(b"m", mode=0o100755) + END,
        "star-prefix": header(b"file", prefix=b"star/dir", raw={508: b"tar\x00"}) + END,
        "gnu-prefix-fallback": header(b"file", prefix=b"some/dir", **gnu) + END,
        "gnu-times": header(b"file", raw={345: octal(5, 12), 357: octal(6, 12)}, **gnu) + END,
        "v7": header(b"v7", magic=b"\x00" * 6, version=b"\x00\x00", uname=b"x", size=2) + padded(b"ab") + END,
        "non-utf8": header(b"caf\xe9", uname=b"\xff", linkname=b"\xfe") + END,
        "signed-checksum": header("é".encode() * 20, signed_checksum=True) + END,
        "bad-checksum": header(b"ok")[:148] + b"0000000\x00" + header(b"ok")[156:] + END,
        "bad-octal": header(b"f", raw={108: b"12 34\x00\x00\x00"}) + END,
        "octal-spaces": header(b"f", raw={108: b"  17 \x00\x00\x00", 124: b"\x00\x00 3\x00      "})
        + padded(b"abc")
        + END,
        "eof-boundary": header(b"a", size=512) + b"x" * 512,
        "eof-one-zero-block": header(b"a") + bytes(512),
        "eof-in-padding": header(b"a", size=3) + b"abc" + bytes(100),
        "eof-in-data": header(b"a", size=1000) + b"x" * 999,
        "eof-in-header": header(b"a") + header(b"b")[:300],
        "eof-in-second-zero": header(b"a") + bytes(700),
        "eof-after-pax": header(b"a") + pax_entry({"path": "p"}),
        "eof-in-pax": header(b"a") + pax_entry({"path": "p" * 300})[:700],
        "zero-then-header": header(b"a") + bytes(512) + header(b"b") + END,
        "trailing-junk": header(b"a") + END + b"junk" * 300,
        "empty": b"",
        "type-S": header(b"s", typeflag=b"S", **gnu) + END,
        "type-7": header(b"c", typeflag=b"7", size=1) + padded(b"1") + END,
        "type-g": pax_entry({"comment": "g"})[:156] + b"g" + pax_entry({"comment": "g"})[157:],
        "type-V": header(b"vol", typeflag=b"V") + END,
        "negative-size": header(b"n", raw={124: base256(-1, 12)}, **gnu) + END,
        "negative-size-symlink": header(b"n", typeflag=b"2", raw={124: base256(-1, 12)}, **gnu) + END,
        "opaque": header(b"d/") + header(b"d/.wh..wh..opq") + END,
    }
    type_g = bytearray(cases["type-g"])
    fix_checksum(type_g, 0)
    cases["type-g"] = bytes(type_g)
    return list(cases.items())


def fix_checksum(data: bytearray, offset: int) -> None:
    """Recompute the header checksum of the block at `offset`."""
    block = data[offset : offset + 512]
    block[148:156] = b" " * 8
    data[offset + 148 : offset + 156] = f"{sum(block):06o}".encode() + b"\x00 "


def header_offsets(data: bytes) -> list[int]:
    """512-aligned blocks whose checksum is valid (header candidates)."""
    found = []
    for offset in range(0, len(data) - 511, 512):
        block = data[offset : offset + 512]
        if block == bytes(512):
            continue
        try:
            stored = int(block[148:156].strip(b" \x00").split(b"\x00")[0] or b"0", 8)
        except ValueError:
            continue
        if stored == sum(block[:148]) + sum(block[156:]) + 256:
            found.append(offset)
    return found


PAX_POOL = [
    ("mtime", lambda r: f"{r.randint(-10**11, 10**11)}.{r.randint(0, 10**15)}"),
    ("mtime", lambda r: str(r.choice([0, -1, 2**33, 10**12, 2**62, -(2**62), 253402300799]))),
    ("mtime", lambda r: r.choice(["-0.000000001", "5.", ".5", "1.2.3", "+1", "", "  1"])),
    ("uid", lambda r: str(r.choice([-1, 0, 2**31, 2**32, 2**40, -(2**63)]))),
    ("gid", lambda r: str(r.randint(-(2**40), 2**40))),
    ("uname", lambda r: r.choice(["", "root", "ü" * 50])),
    ("path", lambda r: r.choice(["", "renamed", "dir-like/", "x" * 300])),
    ("linkpath", lambda r: r.choice(["", "target", "t" * 200])),
    ("size", lambda r: str(r.choice([0, 1, 511, 512, 513, -1]))),
    ("SCHILY.xattr.user.k", lambda r: r.choice(["", "v", "\u00ff"])),
    ("comment", lambda r: "c" * r.randint(0, 40)),
    ("GNU.sparse.major", lambda r: "2"),
]


def mutate(rnd: random.Random, base: bytes) -> bytes:
    """One random, mostly still-parseable, change to a tar archive."""
    data = bytearray(base)
    headers = header_offsets(base) or [0]
    kind = rnd.randrange(7)
    if kind == 0:
        return bytes(data[: rnd.randrange(len(data) + 1)])
    at = rnd.choice(headers)
    if len(data) < at + 512:
        data += bytes(at + 512 - len(data))
    if kind == 1:  # random byte anywhere in a header, checksum usually fixed
        pos = at + rnd.randrange(512)
        data[pos] = rnd.randrange(256)
        if rnd.random() < 0.8:
            fix_checksum(data, at)
    elif kind == 2:  # typeflag
        data[at + 156] = ord(rnd.choice("0123456789xgLKSVDA\x00"))
        fix_checksum(data, at)
    elif kind == 3:  # a numeric field
        offset, width = rnd.choice([(100, 8), (108, 8), (116, 8), (124, 12), (136, 12), (329, 8), (337, 8)])
        if rnd.random() < 0.5:
            value = base256(rnd.randint(-(2**40), 2**40), width)
        else:
            digits = f"{rnd.randrange(8 ** (width - 2)):o}"
            value = (rnd.choice(["", " ", "\x00"]) + digits + rnd.choice(["\x00", " ", ""])).encode()
        data[at + offset : at + offset + width] = value[:width].ljust(width, b"\x00")
        fix_checksum(data, at)
    elif kind == 4:  # insert a PAX header before an entry
        records = {}
        for _ in range(rnd.randint(1, 4)):
            key, make = rnd.choice(PAX_POOL)
            records[key] = make(rnd)
        return bytes(data[:at]) + pax_entry(records) + bytes(data[at:])
    elif kind == 5:  # insert a GNU long name or long link
        flag = rnd.choice([b"L", b"K"])
        payload = ("n" * rnd.randint(0, 300)).encode() + rnd.choice([b"\x00", b"", b"\x00junk"])
        block = header(b"././@LongLink", typeflag=flag, size=len(payload)) + padded(payload)
        return bytes(data[:at]) + block + bytes(data[at:])
    else:  # drop or damage the end-of-archive blocks
        stripped = bytes(data).rstrip(b"\x00")
        return stripped + bytes(rnd.choice([0, 1, 511, 512, 1024, 1536]))
    return bytes(data)


# --------------------------------------------------------------------------- tests


def test_edge_cases_match_go(go_reference: Path, tmp_path: Path) -> None:
    cases = edge_cases()
    results = run_go(go_reference, [d for _, d in cases], tmp_path)
    failing = {name for (name, _), r in zip(cases, results) if "error" in r}
    assert {"eof-in-data", "type-7", "type-g", "pax-mtime-bad", "bad-checksum"} <= failing
    assert {"eof-in-padding", "eof-after-pax", "nul-type-dir", "pax-size"}.isdisjoint(failing)
    assert compare(cases, results) == []


def test_sample_archives_match_go(go_reference: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    make_tree(src)
    cases = [("pax-mixed", mixed_pax_tar()), ("gnu-long", gnu_tar_with_long_names())]
    for fmt in ("gnu", "posix", "ustar", "oldgnu", "v7"):
        out = tmp_path / f"{fmt}.tar"
        subprocess.run(
            ["tar", f"--format={fmt}", "--sort=name", "-C", str(src), "-cf", str(out), "dir"],
            check=False,  # ustar/v7 refuse the long names: still a tar to compare
            capture_output=True,
        )
        cases.append((f"gnu-tar-{fmt}", out.read_bytes()))
    results = run_go(go_reference, [d for _, d in cases], tmp_path)
    assert all("error" not in r for r in results[:4])
    assert compare(cases, results) == []


def test_random_mutations_match_go(go_reference: Path, tmp_path: Path) -> None:
    rnd = random.Random(20260827)
    bases = [mixed_pax_tar(), gnu_tar_with_long_names(), *[d for _, d in edge_cases()[:12]]]
    cases = []
    for i in range(600):
        data = rnd.choice(bases)
        for _ in range(rnd.randint(1, 3)):
            data = mutate(rnd, data)
        cases.append((f"mutation-{i}", data))
    results = run_go(go_reference, [d for _, d in cases], tmp_path)
    accepted = sum("error" not in r for r in results)
    assert 100 < accepted < 590  # the corpus exercises both outcomes
    assert compare(cases, results) == []
