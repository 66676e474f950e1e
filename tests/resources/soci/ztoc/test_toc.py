"""The streaming tar TOC builder against Go archive/tar semantics (docs/soci-format.md section 6)."""

from __future__ import annotations

import io
import os
import random
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from resources.soci.ztoc.flatbuf import parse_ztoc, serialize_ztoc
from resources.soci.ztoc.model import (
    CompressionAlgorithm,
    CompressionInfo,
    FileMetadata,
    Xattr,
    Ztoc,
    ZtocFormatError,
    from_raw_bytes,
    raw_bytes,
)
from resources.soci.ztoc.toc import (
    TarFormatError,
    TarTocBuilder,
    TocResult,
    build_toc,
    format_go_time,
)
from tests.resources.soci.ztoc.tar_fixtures import (
    END,
    MTIME,
    add,
    base256,
    gnu_tar_with_long_names,
    header,
    make_tree,
    mixed_pax_tar,
    octal,
    padded,
    pax_entry,
    tarfile_members,
    toc,
    utc_text,
)

# --------------------------------------------------------------------------- basic semantics


def test_pax_tar_matches_tarfile_offsets_sizes_and_types() -> None:
    data = mixed_pax_tar()
    result = toc(data)
    members = tarfile_members(data)
    assert len(result.entries) == len(members) == 12
    kinds = {
        tarfile.DIRTYPE: "dir",
        tarfile.REGTYPE: "reg",
        tarfile.LNKTYPE: "hardlink",
        tarfile.SYMTYPE: "symlink",
        tarfile.CHRTYPE: "char",
        tarfile.BLKTYPE: "block",
        tarfile.FIFOTYPE: "fifo",
    }
    for entry, member in zip(result.entries, members):
        assert entry.uncompressed_offset == member.offset_data, member.name
        assert entry.uncompressed_size == member.size, member.name
        assert entry.type == kinds[member.type], member.name
        assert entry.name.rstrip("/") == member.name
        assert entry.linkname == member.linkname
        assert entry.mode == member.mode
        assert entry.uid == member.uid and entry.gid == member.gid
        assert entry.uname == member.uname and entry.gname == member.gname
        assert entry.devmajor == member.devmajor and entry.devminor == member.devminor
        assert {x.key: x.value for x in entry.xattrs} == member.pax_headers, member.name
        keys = [raw_bytes(x.key) for x in entry.xattrs]
        assert keys == sorted(keys)


def test_pax_tar_field_details() -> None:
    entries = {e.name: e for e in toc(mixed_pax_tar()).entries}
    assert entries["app/"].type == "dir"  # tarfile writes the trailing '/', Go keeps it
    big = entries["app/big-ids"]
    assert (big.uid, big.gid) == (2**32 - 1, 3_000_000)
    assert big.uname == "ü" * 40
    assert {x.key for x in big.xattrs} == {"uid", "gid", "uname"}
    assert entries["dev/null"].devmajor == 1 and entries["dev/null"].devminor == 3
    assert entries["app/symlink"].linkname == "../" + "target-" * 20
    xattrs = entries["app/xattrs"]
    assert xattrs.mod_time == "2023-01-02T03:04:05.123456789Z"
    assert [x.key for x in xattrs.xattrs] == [
        "SCHILY.xattr.security.selinux",
        "SCHILY.xattr.user.comment",
        "mtime",
    ]
    assert entries["app/hello.txt"].mod_time == utc_text(MTIME) == "2023-11-14T22:13:20Z"
    assert entries["app/hello.txt"].xattrs == []


def test_end_of_archive_ignores_record_padding() -> None:
    data = mixed_pax_tar()
    assert len(data) % 10240 == 0
    last = tarfile_members(data)[-1]
    # the end-of-archive marker is two zero blocks right after the last entry's padded data
    end_of_archive = last.offset_data + -(-last.size // 512) * 512 + 1024
    assert end_of_archive < len(data)
    assert toc(data).uncompressed_archive_size == end_of_archive


def test_bytes_after_end_of_archive_are_not_read() -> None:
    data = header(b"a", size=3) + padded(b"abc") + END
    result = toc(data + b"garbage that is not a tar header" * 100)
    assert result.uncompressed_archive_size == len(data)
    assert [e.name for e in result.entries] == ["a"]


@pytest.mark.parametrize("chunk", [1, 7, 512, 1 << 20, None])
def test_chunk_boundaries_do_not_matter(chunk: int | None) -> None:
    data = mixed_pax_tar() + gnu_tar_with_long_names()
    assert toc(data, chunk) == toc(data)


def test_random_chunk_sizes_and_memoryview_input() -> None:
    data = mixed_pax_tar()
    rnd = random.Random(5)
    builder = TarTocBuilder()
    view = memoryview(bytearray(data))
    pos = 0
    while pos < len(data):
        step = rnd.choice([1, 2, 511, 513, 1024, 4096, 70_000])
        builder.feed(view[pos : pos + step])
        pos += step
    assert builder.finish() == toc(data)


def test_build_toc_reads_a_stream() -> None:
    data = mixed_pax_tar()
    assert build_toc(io.BytesIO(data), chunk_size=1000) == toc(data)


def test_large_entry_data_is_skipped() -> None:
    size = 64 * 1024 * 1024 + 3
    head = header(b"huge.bin", size=size)
    tail = bytes(-size % 512) + header(b"after", size=1) + padded(b"z") + END
    builder = TarTocBuilder()
    builder.feed(head)
    zeros = bytes(1 << 20)
    remaining = size
    while remaining:
        n = min(remaining, len(zeros))
        builder.feed(zeros[:n])
        remaining -= n
    builder.feed(tail)
    result = builder.finish()
    assert [(e.name, e.uncompressed_offset, e.uncompressed_size) for e in result.entries] == [
        ("huge.bin", 512, size),
        ("after", 512 + size + (-size % 512) + 512, 1),
    ]


# --------------------------------------------------------------------------- names


def test_gnu_long_names_and_links() -> None:
    data = gnu_tar_with_long_names()
    result = toc(data)
    members = tarfile_members(data)
    assert [e.uncompressed_offset for e in result.entries] == [m.offset_data for m in members]
    names = [e.name for e in result.entries]
    assert names[0] == "d" * 120 + "/"  # trailing slash kept
    assert names[1] == "d" * 120 + "/" + "f" * 150
    assert result.entries[2].linkname == "t" * 200
    assert (names[3], result.entries[3].linkname) == ("l" * 130, "k" * 140)
    assert all(e.xattrs == [] for e in result.entries)  # GNU long names are not PAX records
    # the 'L' and 'K' blocks precede the header: the data offset is after all of them
    assert result.entries[3].uncompressed_offset - result.entries[2].uncompressed_offset > 512


def test_gnu_base256_numbers() -> None:
    entries = {e.name: e for e in toc(gnu_tar_with_long_names()).entries}
    assert (entries["base256-ids"].uid, entries["base256-ids"].gid) == (2**21, 2**30)
    assert entries["before-epoch"].mod_time == "1969-12-31T23:59:59Z"


def test_base256_size_negative_uid_and_raw_mode() -> None:
    data = (
        header(
            b"bin",
            size=0,
            raw={124: base256(700, 12), 108: base256(-1, 8), 100: octal(0o100755, 8)},
            magic=b"ustar ",
            version=b" \x00",
        )
        + padded(b"b" * 700)
        + header(b"next", size=0)
        + END
    )
    first, second = toc(data).entries
    assert (first.uncompressed_size, first.uid, first.mode) == (700, 2**32 - 1, 0o100755)
    assert second.uncompressed_offset == 512 + 1024 + 512


def test_ustar_prefix_is_joined() -> None:
    name = "p" * 120 + "/" + "n" * 90
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        add(tf, name, b"x")
    data = buf.getvalue()
    assert data[345:465] == b"p" * 120  # tarfile really used the prefix field
    (entry,) = toc(data).entries
    assert entry.name == name and entry.xattrs == []


def test_gnu_header_prefix_fallback_for_pre_go18_writers() -> None:
    # GNU magic, but the atime/ctime area holds a ustar prefix (old Go writers): Go reads it.
    data = header(b"file", magic=b"ustar ", version=b" \x00", prefix=b"some/dir") + END
    assert toc(data).entries[0].name == "some/dir/file"
    # with parseable atime/ctime there is no prefix
    data = header(
        b"file", magic=b"ustar ", version=b" \x00", raw={345: octal(5, 12), 357: octal(6, 12)}
    ) + END
    assert toc(data).entries[0].name == "file"


def test_star_header_prefix() -> None:
    data = header(b"file", prefix=b"star/dir", raw={508: b"tar\x00"}) + END
    assert toc(data).entries[0].name == "star/dir/file"


def test_v7_header_has_no_user_names_or_devices() -> None:
    data = header(b"v7file", magic=b"\x00" * 6, version=b"\x00\x00", uname=b"ignored", size=2)
    (entry,) = toc(data + padded(b"ab") + END).entries
    assert (entry.name, entry.uname, entry.type, entry.uncompressed_size) == ("v7file", "", "reg", 2)


def test_non_utf8_names_are_kept_byte_exact() -> None:
    data = header(b"caf\xe9", uname=b"\xff") + END
    (entry,) = toc(data).entries
    assert raw_bytes(entry.name) == b"caf\xe9" and raw_bytes(entry.uname) == b"\xff"
    assert entry.name == from_raw_bytes(b"caf\xe9")


# --------------------------------------------------------------------------- types


def test_typeflag_nul_is_dir_with_trailing_slash_else_reg() -> None:
    data = (
        header(b"olddir/", typeflag=b"\x00", size=100)  # dir: header-only, no data follows
        + header(b"oldfile", typeflag=b"\x00", size=3)
        + padded(b"abc")
        + header(b"zero-with-slash/", typeflag=b"0")
        + END
    )
    entries = toc(data).entries
    assert [(e.name, e.type) for e in entries] == [
        ("olddir/", "dir"),
        ("oldfile", "reg"),
        ("zero-with-slash/", "reg"),
    ]
    assert entries[0].uncompressed_size == 100  # recorded, but not skipped
    assert entries[1].uncompressed_offset == 1024


def test_header_only_types_keep_their_size_but_have_no_data() -> None:
    data = (
        header(b"sym", typeflag=b"2", linkname=b"target", size=10)
        + header(b"dir/", typeflag=b"5", size=4096)
        + header(b"f", size=1)
        + padded(b"1")
        + END
    )
    entries = toc(data).entries
    assert [e.uncompressed_size for e in entries] == [10, 4096, 1]
    assert [e.uncompressed_offset for e in entries] == [512, 1024, 1536]


@pytest.mark.parametrize(
    ("flag", "description"),
    [
        (b"S", "GNU sparse file"),
        (b"7", "contiguous file"),
        (b"V", "GNU volume header"),
        (b"D", "GNU incremental dump directory"),
        (b"Z", "unknown type"),
    ],
)
def test_unsupported_types_fail_naming_the_entry(flag: bytes, description: str) -> None:
    data = header(b"ok", size=1) + padded(b"1") + header(b"weird-entry", typeflag=flag, size=5)
    data += padded(b"12345") + END
    with pytest.raises(TarFormatError) as err:
        toc(data)
    message = str(err.value)
    assert "'weird-entry'" in message and "offset 1024" in message
    assert repr(flag.decode()) in message and description in message


def test_pax_global_header_fails_naming_the_entry() -> None:
    buf = io.BytesIO()
    with tarfile.open(
        fileobj=buf, mode="w", format=tarfile.PAX_FORMAT, pax_headers={"comment": "global"}
    ) as tf:
        add(tf, "file", b"x")
    data = buf.getvalue()
    assert data[156:157] == b"g"
    with pytest.raises(TarFormatError, match=r"'g' \(PAX global header\)") as err:
        toc(data)
    assert "offset 0" in str(err.value) and "@PaxHeader" in str(err.value)


# --------------------------------------------------------------------------- PAX semantics


def test_pax_size_wins_over_header_size() -> None:
    data = (
        pax_entry({"size": "700"})
        + header(b"file", size=1)
        + padded(b"s" * 700)
        + header(b"next")
        + END
    )
    first, second = toc(data).entries
    assert first.uncompressed_size == 700
    assert first.uncompressed_offset == 512 + 512 + 512  # PAX header, its payload, own header
    assert second.uncompressed_offset == 1536 + 1024 + 512  # 700 bytes padded to 1024
    assert first.xattrs == [Xattr("size", "700")]


def test_pax_records_with_empty_values_are_kept_but_do_not_override() -> None:
    data = pax_entry({"uname": "", "path": "", "comment": "c"}) + header(b"f", uname=b"alice") + END
    (entry,) = toc(data).entries
    assert (entry.name, entry.uname) == ("f", "alice")
    assert entry.xattrs == [Xattr("comment", "c"), Xattr("path", ""), Xattr("uname", "")]


def test_later_pax_header_replaces_earlier_one() -> None:
    data = pax_entry({"path": "first", "comment": "1"}) + pax_entry({"path": "second"})
    data += header(b"f") + END
    (entry,) = toc(data).entries
    assert entry.name == "second" and entry.xattrs == [Xattr("path", "second")]


def test_gnu_long_name_wins_over_pax_path() -> None:
    long_name = b"gnu-name" * 20
    gnu = header(b"././@LongLink", typeflag=b"L", size=len(long_name) + 1) + padded(long_name + b"\x00")
    data = pax_entry({"path": "pax-name"}) + gnu + header(b"short") + END
    (entry,) = toc(data).entries
    assert entry.name == long_name.decode()
    assert entry.xattrs == [Xattr("path", "pax-name")]
    assert entry.uncompressed_offset == 512 + 512 + 512 + 512 + 512


def test_pax_uid_gid_wrap_to_uint32_and_mtime_variants() -> None:
    cases = {
        "1672628645": "2023-01-02T03:04:05Z",
        "1672628645.5": "2023-01-02T03:04:05.5Z",
        "1672628645.1234567891234": "2023-01-02T03:04:05.123456789Z",  # truncated to ns
        "1672628645.000000000": "2023-01-02T03:04:05Z",
        "-1.5": "1969-12-31T23:59:58.5Z",
        "-0.5": "1969-12-31T23:59:59.5Z",
        "+7": "1970-01-01T00:00:07Z",
        "253402300800": "",  # year 10000: Go's MarshalText fails, soci stores ""
        "-62135596800": "0001-01-01T00:00:00Z",
    }
    for value, expected in cases.items():
        data = pax_entry({"mtime": value, "uid": "-1", "gid": "4294967297"}) + header(b"f") + END
        (entry,) = toc(data).entries
        assert entry.mod_time == expected, value
        assert (entry.uid, entry.gid) == (2**32 - 1, 1)


@pytest.mark.parametrize(
    "payload",
    [
        b"4 a=b\n",  # record length below the minimum of 5
        b"11 path=x\n",  # length 11 but the record is 10 bytes
        b"10 nokey\n\n",  # no '='
        b"abc path=x\n",  # length is not a number
        b"9 =empty\n",  # empty key
        b"13 path=a\x00b\n",  # NUL in a path value
    ],
)
def test_malformed_pax_records_fail(payload: bytes) -> None:
    data = header(b"PaxHeader", typeflag=b"x", size=len(payload)) + padded(payload)
    data += header(b"f") + END
    with pytest.raises(TarFormatError, match="PaxHeader"):
        toc(data)


@pytest.mark.parametrize(
    ("key", "value"),
    [("mtime", "12.3a"), ("mtime", ""), ("uid", "1_000"), ("size", "0x10"), ("atime", "x")],
)
def test_bad_pax_values_fail(key: str, value: str) -> None:
    records = [(key.encode(), value.encode())] if value else [(b"mtime", b".5")]
    data = pax_entry(records) + header(b"target-file") + END
    with pytest.raises(TarFormatError, match="target-file"):
        toc(data)


def test_pax_gnu_sparse_records_are_rejected() -> None:
    records = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": "s"}
    data = pax_entry(records) + header(b"GNUSparseFile.0/s", size=512) + padded(b"1\n0\n512\n")
    with pytest.raises(TarFormatError, match="GNU sparse"):
        toc(data + END)


def test_unknown_gnu_sparse_version_is_a_plain_file_and_offsets_fold_into_map() -> None:
    records = [
        (b"GNU.sparse.major", b"2"),
        (b"GNU.sparse.minor", b"0"),
        (b"GNU.sparse.offset", b"0"),
        (b"GNU.sparse.numbytes", b"5"),
    ]
    data = pax_entry(records) + header(b"f", size=1) + padded(b"x") + END
    (entry,) = toc(data).entries
    assert entry.xattrs == [
        Xattr("GNU.sparse.major", "2"),
        Xattr("GNU.sparse.map", "0,5"),
        Xattr("GNU.sparse.minor", "0"),
    ]


# --------------------------------------------------------------------------- disable_xattrs


def test_disable_xattrs_true_without_xattrs_or_opaque_dirs() -> None:
    data = pax_entry({"path": "x" * 200, "comment": "SCHILY.xattr.not-a-key"}) + header(b"f") + END
    assert toc(data).disable_xattrs is True


def test_disable_xattrs_false_with_schily_xattr() -> None:
    data = header(b"a") + pax_entry({"SCHILY.xattr.user.x": ""}) + header(b"b") + END
    assert toc(data).disable_xattrs is False


def test_disable_xattrs_false_with_opaque_whiteout() -> None:
    data = header(b"dir/") + header(b"dir/.wh..wh..opq") + END
    assert toc(data).disable_xattrs is False
    assert toc(header(b"dir/.wh.file") + END).disable_xattrs is True


# --------------------------------------------------------------------------- checksums


def test_signed_checksum_is_accepted() -> None:
    name = "é" * 20
    block = header(name.encode(), signed_checksum=True)
    unsigned = sum(block[:148]) + sum(block[156:]) + 256
    assert int(block[148:154], 8) != unsigned  # really the signed variant
    assert toc(block + END).entries[0].name == name


def test_bad_checksum_fails_naming_offset() -> None:
    block = bytearray(header(b"broken-entry"))
    block[50] = ord("!")
    data = header(b"ok") + bytes(block) + END
    with pytest.raises(TarFormatError, match=r"offset 512 .*'broken-entry.*checksum mismatch"):
        toc(data)


def test_bad_numeric_field_fails_naming_the_field() -> None:
    data = header(b"f", raw={108: b"12 34\x00\x00\x00"}) + END
    with pytest.raises(TarFormatError, match="bad uid field"):
        toc(data)


# --------------------------------------------------------------------------- end of stream


def test_end_on_a_block_boundary_without_zero_blocks_is_a_normal_end() -> None:
    data = header(b"a", size=512) + b"x" * 512
    result = toc(data)
    assert [e.name for e in result.entries] == ["a"]
    assert result.uncompressed_archive_size == len(data)


def test_end_after_one_zero_block_is_a_normal_end() -> None:
    data = header(b"a") + bytes(512)
    assert toc(data).uncompressed_archive_size == 1024


def test_end_inside_padding_is_a_normal_end() -> None:
    data = header(b"a", size=3) + b"abc" + bytes(100)
    assert toc(data).uncompressed_archive_size == len(data)


def test_end_inside_entry_data_fails_naming_the_entry() -> None:
    data = header(b"ok") + header(b"cut-short", size=1000) + b"x" * 999
    with pytest.raises(TarFormatError, match=r"inside the data of tar entry 'cut-short'.*1 bytes"):
        toc(data)


def test_end_inside_a_header_fails() -> None:
    data = header(b"ok") + header(b"half")[:300]
    with pytest.raises(TarFormatError, match=r"inside a header block at offset 512 .*'ok'"):
        toc(data)


def test_end_inside_second_zero_block_fails() -> None:
    with pytest.raises(TarFormatError, match="inside a header block"):
        toc(header(b"ok") + bytes(700))


def test_end_inside_pax_payload_fails() -> None:
    data = header(b"ok") + pax_entry({"path": "p" * 300})[:700]
    with pytest.raises(TarFormatError, match="inside the payload"):
        toc(data)


def test_zero_block_then_header_fails() -> None:
    with pytest.raises(TarFormatError, match="zero block is followed by a non-zero block"):
        toc(header(b"a") + bytes(512) + header(b"b") + END)


def test_empty_stream_is_an_empty_toc() -> None:
    assert toc(b"") == TocResult(entries=[], uncompressed_archive_size=0, disable_xattrs=True)


def test_errors_are_sticky_and_finish_is_idempotent() -> None:
    builder = TarTocBuilder()
    with pytest.raises(TarFormatError):
        builder.feed(b"\x01" * 512)
    with pytest.raises(TarFormatError):
        builder.feed(b"")
    with pytest.raises(TarFormatError):
        builder.finish()
    ok = TarTocBuilder()
    ok.feed(header(b"a") + END)
    assert ok.finish() is ok.finish()
    with pytest.raises(RuntimeError, match="after finish"):
        ok.feed(b"")


# --------------------------------------------------------------------------- time formatting


@pytest.mark.parametrize(
    ("seconds", "nanos", "expected"),
    [
        (0, 0, "1970-01-01T00:00:00Z"),
        (1672628645, 123000000, "2023-01-02T03:04:05.123Z"),
        (1672628645, 1, "2023-01-02T03:04:05.000000001Z"),
        (-62135596800, 0, "0001-01-01T00:00:00Z"),
        (-62167219200, 0, "0000-01-01T00:00:00Z"),
        (-62167219201, 0, ""),
        (253402300799, 999999999, "9999-12-31T23:59:59.999999999Z"),
        (951782400, 0, "2000-02-29T00:00:00Z"),
    ],
)
def test_format_go_time(seconds: int, nanos: int, expected: str) -> None:
    assert format_go_time(seconds, nanos) == expected


def test_format_go_time_agrees_with_datetime() -> None:
    rnd = random.Random(1)
    for _ in range(2000):
        seconds = rnd.randint(-62135596800, 253402300799)
        assert format_go_time(seconds) == utc_text(seconds)


# --------------------------------------------------------------------------- real GNU tar


@pytest.fixture
def gnu_tar() -> str:
    path = shutil.which("tar")
    assert path, "GNU tar is required for these tests"
    return path


@pytest.mark.parametrize("fmt", ["gnu", "posix", "ustar"])
def test_real_gnu_tar_archives(gnu_tar: str, tmp_path: Path, fmt: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    if fmt == "ustar":
        (src / "dir").mkdir()
        (src / "dir" / "a").write_bytes(b"a" * 10)
        os.symlink("a", src / "dir" / "s")
        os.mkfifo(src / "dir" / "f")
    else:
        make_tree(src)
    out = tmp_path / "layer.tar"
    subprocess.run(
        [gnu_tar, f"--format={fmt}", "--sort=name", "-C", str(src), "-cf", str(out), "dir"],
        check=True,
    )
    data = out.read_bytes()
    result = toc(data, 4096)
    members = tarfile_members(data)
    assert [e.uncompressed_offset for e in result.entries] == [m.offset_data for m in members]
    assert [e.name.rstrip("/") for e in result.entries] == [m.name for m in members]
    assert [e.linkname for e in result.entries] == [m.linkname for m in members]
    assert result.entries[0].name == "dir/" and result.entries[0].type == "dir"
    types = {e.name.rsplit("/", 1)[-1]: e.type for e in result.entries}
    assert types.get("fifo", types.get("f")) == "fifo"
    if fmt != "ustar":
        assert types["hard"] == "hardlink" and types["long-sym"] == "symlink"
    if fmt == "posix":
        file_entry = next(e for e in result.entries if e.name == "dir/file.txt")
        assert file_entry.mod_time == "2023-11-14T22:13:20.123456789Z"
        assert "mtime" in {x.key for x in file_entry.xattrs}
    end_of_archive = data.rstrip(b"\x00")
    assert result.uncompressed_archive_size <= len(data)
    assert result.uncompressed_archive_size >= len(end_of_archive) + 1024


def test_real_gnu_tar_sparse_files_are_rejected(gnu_tar: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "sparse.img", "wb") as f:
        f.seek(10 * 1024 * 1024)
        f.write(b"end")
    for fmt, pattern in (("gnu", r"'S' \(GNU sparse file\)"), ("posix", "GNU sparse")):
        out = tmp_path / f"{fmt}.tar"
        subprocess.run(
            [gnu_tar, f"--format={fmt}", "--sparse", "-C", str(src), "-cf", str(out), "sparse.img"],
            check=True,
        )
        with pytest.raises(TarFormatError, match=pattern):
            toc(out.read_bytes())


# --------------------------------------------------------------------------- into a zTOC


def test_toc_round_trips_through_the_ztoc_encoding() -> None:
    data = mixed_pax_tar()
    result = toc(data)
    z = Ztoc(
        version="0.9",
        build_tool_identifier="streamable",
        compressed_archive_size=len(data),
        uncompressed_archive_size=result.uncompressed_archive_size,
        entries=result.entries,
        compression=CompressionInfo(CompressionAlgorithm.UNCOMPRESSED, 0, ["sha256:" + "0" * 64], b""),
    )
    encoded = serialize_ztoc(z)
    parsed = parse_ztoc(encoded)
    assert parsed == z
    assert serialize_ztoc(parsed) == encoded
    assert all(isinstance(e, FileMetadata) for e in parsed.entries)


def test_oversized_header_only_entry_builds_a_toc_that_serialize_refuses() -> None:
    """soci builds this TOC (Go parity) but its nodes reject it; serialize_ztoc says so."""
    data = header(b"dir/", typeflag=b"5", size=4096) + header(b"dir/f", size=1) + padded(b"x") + END
    result = toc(data)
    assert [(e.name, e.uncompressed_offset) for e in result.entries] == [("dir/", 512), ("dir/f", 1024)]
    z = Ztoc("0.9", "t", len(data), result.uncompressed_archive_size, result.entries,
             CompressionInfo(CompressionAlgorithm.UNCOMPRESSED, 0, [], b""))
    with pytest.raises(ZtocFormatError, match="'dir/f'.*ErrInvalidTOCEntry"):
        serialize_ztoc(z)
