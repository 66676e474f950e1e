"""The fast zTOC writer against the official FlatBuffers builder on random TOCs (same bytes)."""

from __future__ import annotations

import random

import pytest

from resources.soci.ztoc import flatbuf_writer
from resources.soci.ztoc.flatbuf import parse_ztoc, serialize_table, serialize_ztoc
from resources.soci.ztoc.model import (
    CompressionAlgorithm,
    CompressionInfo,
    FileMetadata,
    Xattr,
    Ztoc,
)
from resources.soci.ztoc.toc_table import TocTable

from .flatbuf_reference import reference_serialize


def _text(rnd: random.Random) -> str:
    length = rnd.choice([0, 0, 1, 2, 3, 4, 5, 7, 8, 31, 100, 300])
    raw = bytes(rnd.choice(b"abcdefgh/._-\xe9\xff") for _ in range(length))
    return raw.decode("utf-8", "surrogateescape")


def _number(rnd: random.Random, low: int, high: int) -> int:
    return rnd.choice([0, 0, 0, 1, low, high, rnd.randint(low, high)])


def random_ztoc(seed: int, entries: int) -> Ztoc:
    """A TOC exercising every field's presence, string lengths mod 4, and PAX records."""
    rnd = random.Random(seed)
    items = []
    offset = 0
    for _ in range(entries):
        offset += 512 * rnd.randint(0 if offset else 1, 3)
        size = _number(rnd, 0, 5000)
        xattrs = []
        if rnd.random() < 0.2:
            keys = rnd.sample(["mtime", "SCHILY.xattr.user.a", "path", "x", "SCHILY.xattr.b"], rnd.randint(1, 4))
            xattrs = [Xattr(k, _text(rnd)) for k in keys]
        items.append(
            FileMetadata(
                name=_text(rnd) or "n", type=rnd.choice(["reg", "dir", "symlink", "hardlink", "char"]),
                uncompressed_offset=offset, uncompressed_size=size, linkname=_text(rnd),
                mode=_number(rnd, -(2**63), 2**63 - 1), uid=_number(rnd, 0, 2**32 - 1),
                gid=_number(rnd, 0, 2**32 - 1), uname=_text(rnd), gname=_text(rnd),
                mod_time=rnd.choice(["", "2023-11-14T22:13:20Z", "1970-01-01T00:00:00.5Z"]),
                devmajor=_number(rnd, -(2**63), 2**63 - 1), devminor=_number(rnd, -(2**63), 2**63 - 1),
                xattrs=xattrs,
            )  # fmt: skip
        )
        offset += size + (-size % 512)
    algorithm = rnd.choice([CompressionAlgorithm.GZIP, CompressionAlgorithm.UNCOMPRESSED])
    spans = rnd.randint(1, 5)
    return Ztoc(
        version="0.9",
        build_tool_identifier=_text(rnd),
        compressed_archive_size=_number(rnd, 0, 2**40),
        uncompressed_archive_size=_number(rnd, 0, 2**40),
        entries=items,
        compression=CompressionInfo(
            algorithm=algorithm,
            max_span_id=spans - 1,
            span_digests=[f"sha256:{rnd.randbytes(32).hex()}" for _ in range(spans)],
            checkpoints=rnd.randbytes(rnd.randint(0, 999)),
        ),
    )


@pytest.mark.parametrize("seed", range(40))
def test_random_tocs_encode_like_the_official_builder(seed: int) -> None:
    z = random_ztoc(seed, entries=seed * 7)
    expected = reference_serialize(z)
    assert serialize_ztoc(z) == expected
    general = flatbuf_writer.encode_ztoc(
        version=b"0.9", build_tool_identifier=z.build_tool_identifier.encode("utf-8", "surrogateescape"),
        compressed_archive_size=z.compressed_archive_size, uncompressed_archive_size=z.uncompressed_archive_size,
        table=TocTable.from_entries(z.entries), algorithm=int(z.compression.algorithm),
        max_span_id=z.compression.max_span_id, span_digests=[d.encode() for d in z.compression.span_digests],
        checkpoints=z.compression.checkpoints, general_only=True,
    )  # fmt: skip
    assert general == expected
    assert parse_ztoc(expected).entries == _sorted_xattrs(z.entries)


def _sorted_xattrs(entries: list[FileMetadata]) -> list[FileMetadata]:
    """The entries with PAX records in zTOC order (bytewise by key)."""
    return [
        FileMetadata(
            **{**e.__dict__, "xattrs": sorted(e.xattrs, key=lambda x: x.key.encode("utf-8", "surrogateescape"))}
        )
        for e in entries
    ]


def test_the_writer_grows_when_its_estimate_is_short(monkeypatch: pytest.MonkeyPatch) -> None:
    z = random_ztoc(99, entries=300)
    expected = reference_serialize(z)
    monkeypatch.setattr(flatbuf_writer, "encoded_size_bound", lambda *args: 8)
    assert serialize_ztoc(z) == expected


def test_table_round_trips_entries() -> None:
    z = random_ztoc(5, entries=200)
    table = TocTable.from_entries(z.entries)
    assert len(table) == 200
    assert list(table.entries()) == _sorted_xattrs(z.entries)
    assert serialize_table(z, table) == reference_serialize(z)
