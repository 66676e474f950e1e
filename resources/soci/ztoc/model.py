"""The zTOC data model: what one zTOC blob says about one layer (soci-snapshotter's `ztoc.Ztoc`).

Strings are Python `str`. Tar names and PAX values are raw bytes in the archive and need not be
UTF-8; such bytes are carried as lone surrogates (`errors="surrogateescape"`), so
`s.encode("utf-8", "surrogateescape")` gives back the exact archive bytes. Use `raw_bytes()`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

from resources.errors import StreamableError

ZTOC_VERSION = "0.9"
TAR_BLOCK_SIZE = 512
TEXT_ENCODING = "utf-8"
TEXT_ERRORS = "surrogateescape"


class ZtocFormatError(StreamableError, ValueError):
    """A zTOC (or a TarZinfo inside it) is malformed or cannot be encoded."""


class CompressionAlgorithm(IntEnum):
    """The `CompressionAlgorithm` byte enum of the zTOC schema."""

    GZIP = 1
    UNCOMPRESSED = 2


@dataclass(frozen=True)
class Xattr:
    """One PAX record of a tar entry (the schema calls every PAX record an `Xattr`)."""

    key: str
    value: str


@dataclass(frozen=True)
class FileMetadata:
    """One tar entry: where its data sits in the uncompressed stream, plus its header fields."""

    name: str
    type: str
    uncompressed_offset: int
    uncompressed_size: int
    linkname: str
    mode: int
    uid: int
    gid: int
    uname: str
    gname: str
    mod_time: str
    devmajor: int
    devminor: int
    xattrs: list[Xattr]


@dataclass(frozen=True)
class CompressionInfo:
    """The zinfo part: span layout and the opaque checkpoints blob."""

    algorithm: CompressionAlgorithm
    max_span_id: int
    span_digests: list[str]
    checkpoints: bytes


@dataclass(frozen=True)
class Ztoc:
    """A whole zTOC: header fields, the TOC entries in archive order, and the zinfo."""

    version: str
    build_tool_identifier: str
    compressed_archive_size: int
    uncompressed_archive_size: int
    entries: Sequence[FileMetadata]  # a list, or `flatbuf.ZtocEntries` decoding them from zTOC bytes
    compression: CompressionInfo


def raw_bytes(text: str) -> bytes:
    """Return the archive bytes behind a model string (inverse of `from_raw_bytes`)."""
    return text.encode(TEXT_ENCODING, TEXT_ERRORS)


def from_raw_bytes(data: bytes) -> str:
    """Turn archive bytes into a model string without losing any byte."""
    return data.decode(TEXT_ENCODING, TEXT_ERRORS)


def check_toc_offsets(entries: Sequence[FileMetadata]) -> None:
    """Raise ZtocFormatError where soci-snapshotter's Unmarshal fails with ErrInvalidTOCEntry.

    Sorted by offset, each entry's data must start at or after the previous entry's data end
    rounded up to a tar block. A tar whose header-only entry (e.g. a directory) declares a
    size above 512 bytes yields such a TOC: the node could not load it.
    """
    next_header = 0
    for entry in sorted(entries, key=lambda e: e.uncompressed_offset):
        if next_header > entry.uncompressed_offset:
            raise ZtocFormatError(
                f"entry {entry.name!r}: its data offset {entry.uncompressed_offset} lies before "
                f"the end of the previous entry ({next_header}); soci-snapshotter rejects such "
                "a zTOC (ErrInvalidTOCEntry)"
            )
        next_header = _align_to_tar_block(entry.uncompressed_offset + entry.uncompressed_size)


def _align_to_tar_block(offset: int) -> int:
    """Go's AlignToTarBlock, including its truncated remainder for negative offsets."""
    remainder = offset % TAR_BLOCK_SIZE if offset >= 0 else -(-offset % TAR_BLOCK_SIZE)
    return offset + TAR_BLOCK_SIZE - remainder if remainder > 0 else offset
