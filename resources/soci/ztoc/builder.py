"""Build a zTOC for one layer blob in a single streaming pass.

Each blob chunk is hashed (layer digest), fed to the gzip indexer (checkpoints and span digests)
and its uncompressed output to the tar TOC builder. Memory stays bounded by one chunk, the
inflate buffer, the checkpoints (one 32 KiB window per span) and the TOC, never the layer size.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import BinaryIO

from resources.defaults import SOCI_BUILD_TOOL_IDENTIFIER, SOCI_SPAN_SIZE
from resources.errors import StreamableError
from resources.oci.media_types import LayerCompression, is_layer_type, layer_compression
from resources.soci.ztoc.flatbuf import ZtocEntries, check_ztoc_fields, serialize_table
from resources.soci.ztoc.gzip_index import GzipFormatError, GzipIndexer
from resources.soci.ztoc.model import (
    ZTOC_VERSION,
    CompressionAlgorithm,
    CompressionInfo,
    Ztoc,
    ZtocFormatError,
)
from resources.soci.ztoc.span_digests import OrderedWorker, SpanDigester
from resources.soci.ztoc.tar_zinfo import encode_tar_zinfo, uncompressed_max_span_id
from resources.soci.ztoc.toc import TarFormatError, TarTocBuilder, TocResult
from resources.soci.ztoc.zlib_ctypes import MAX_CALL_BYTES, InflateLibrary

READ_CHUNK = 1 << 20

Progress = Callable[[int], None]


class ZtocBuildError(StreamableError):
    """A layer blob could not be indexed (the message names the layer and what is wrong)."""


class UnsupportedLayerError(ZtocBuildError):
    """The layer's media type has no zTOC (zstd, encrypted, not a layer)."""

    def __init__(self, message: str, media_type: str) -> None:
        super().__init__(message)
        self.media_type = media_type


@dataclass(frozen=True)
class BuiltZtoc:
    """A built zTOC, its serialized bytes, and what the single pass learned about the layer.

    ``digest``/``size`` describe the zTOC blob (``data``); ``layer_digest`` and
    ``compressed_size`` the layer blob; ``uncompressed_size`` is the tar size soci records (where
    the tar reader stopped) and ``decompressed_size`` every byte the blob inflates to.
    ``ztoc.entries`` is a view that decodes entries from ``data`` when read (`ZtocEntries`): a
    layer's TOC is held once, as the zTOC bytes, not also as one object per file.
    """

    ztoc: Ztoc
    data: bytes
    digest: str
    size: int
    disable_xattrs: bool
    layer_digest: str
    compressed_size: int
    uncompressed_size: int
    decompressed_size: int
    span_size: int
    media_type: str
    gzip_member_starts: tuple[tuple[int, int], ...] = ()
    """(compressed, uncompressed) offset where each gzip member after the first starts (gzip layers)."""


def compression_for_media_type(media_type: str, layer: str = "layer") -> CompressionAlgorithm:
    """The zTOC algorithm for a layer media type, or UnsupportedLayerError (docs/soci-format.md section 3)."""
    if not is_layer_type(media_type):
        raise UnsupportedLayerError(f"{layer}: {media_type!r} is not a layer media type", media_type)
    kind = layer_compression(media_type)
    if kind == LayerCompression.GZIP:
        return CompressionAlgorithm.GZIP
    if kind == LayerCompression.UNCOMPRESSED:
        return CompressionAlgorithm.UNCOMPRESSED
    if kind == LayerCompression.ZSTD:
        raise UnsupportedLayerError(
            f"{layer}: zstd layers are not supported by SOCI (layer media type {media_type!r})", media_type
        )
    raise UnsupportedLayerError(
        f"{layer}: no zTOC can be built for layer media type {media_type!r}", media_type
    )


def _chunks(stream: BinaryIO | Iterable[bytes], chunk_size: int) -> Iterator[bytes]:
    """Blob chunks from a binary file object or an iterable of byte strings."""
    read = getattr(stream, "read", None)
    if read is not None:
        while True:
            chunk = read(chunk_size)
            if not chunk:
                return
            yield chunk if isinstance(chunk, bytes) else bytes(chunk)
    else:
        for chunk in stream:
            if len(chunk) > MAX_CALL_BYTES:  # zlib's counts are 32-bit: hand it giant chunks in pieces
                view = memoryview(chunk)
                for start in range(0, len(view), chunk_size):
                    yield bytes(view[start : start + chunk_size])
            elif chunk:
                yield chunk if isinstance(chunk, bytes) else bytes(chunk)


class ZtocBuilder:
    """Builds zTOCs (version 0.9) for gzip and uncompressed tar layers."""

    def __init__(
        self,
        span_size: int = SOCI_SPAN_SIZE,
        build_tool_identifier: str = SOCI_BUILD_TOOL_IDENTIFIER,
        chunk_size: int = READ_CHUNK,
        digest_in_thread: bool = True,
        library: InflateLibrary | None = None,
        inline_digests_when: Callable[[], bool] | None = None,
    ) -> None:
        if span_size <= 0:
            raise ValueError(f"span size must be positive, got {span_size}")
        self.span_size = span_size
        self.build_tool_identifier = build_tool_identifier
        self.chunk_size = chunk_size
        self.digest_in_thread = digest_in_thread
        self.library = library
        """The inflate implementation (None: `inflate_library`'s choice, zlib-ng when installed)."""
        self.inline_digests_when = inline_digests_when
        """Asked while building: True runs the digest work on the build's own thread (the cores are busy)."""

    def build(
        self,
        stream: BinaryIO | Iterable[bytes],
        media_type: str,
        progress: Progress | None = None,
        layer: str = "layer",
        verified_digest: str | None = None,
    ) -> BuiltZtoc:
        """Read the whole blob once and return its zTOC; ``layer`` labels error messages.

        ``verified_digest``: the caller checks the blob against this digest while it streams it
        (as `RegistryClient.stream_blob` does, once fully read), so the builder does not hash the
        whole blob a second time and reports this digest as ``layer_digest``. Without it, the
        builder computes ``layer_digest`` itself.
        """
        algorithm = compression_for_media_type(media_type, layer)
        chunks = _chunks(stream, self.chunk_size)
        try:
            if algorithm == CompressionAlgorithm.GZIP:
                return self._build_gzip(chunks, media_type, progress, verified_digest)
            return self._build_uncompressed(chunks, media_type, progress, verified_digest)
        except (GzipFormatError, TarFormatError, ZtocFormatError) as exc:
            raise ZtocBuildError(f"{layer} ({media_type}): {exc}") from exc

    def _build_gzip(
        self, chunks: Iterator[bytes], media_type: str, progress: Progress | None, verified_digest: str | None
    ) -> BuiltZtoc:
        toc = TarTocBuilder()
        processed = 0
        with GzipIndexer(
            self.span_size,
            blob_digest=verified_digest is None,
            digest_in_thread=self.digest_in_thread,
            output_sink=toc.feed,  # the tar parse runs on the worker while inflate runs here
            library=self.library,
            inline_when=self.inline_digests_when,
        ) as indexer:
            for chunk in chunks:
                for _ in indexer.feed(chunk):
                    pass
                processed += len(chunk)
                if progress is not None:
                    progress(processed)
            index = indexer.finish()
        info = CompressionInfo(
            algorithm=CompressionAlgorithm.GZIP,
            max_span_id=index.max_span_id,
            span_digests=index.span_digests,
            checkpoints=index.checkpoints,
        )
        layer_digest = verified_digest or index.blob_digest
        assert layer_digest is not None
        built = self._assemble(
            toc.finish(), info, layer_digest, index.compressed_size, index.uncompressed_size, media_type
        )
        return dataclasses.replace(built, gzip_member_starts=index.member_starts)

    def _build_uncompressed(
        self, chunks: Iterator[bytes], media_type: str, progress: Progress | None, verified_digest: str | None
    ) -> BuiltZtoc:
        toc = TarTocBuilder()
        span = self.span_size
        digester = SpanDigester(whole_blob=verified_digest is None)
        worker = OrderedWorker(threaded=self.digest_in_thread, inline_when=self.inline_digests_when)
        processed = 0
        try:
            for chunk in chunks:
                end = processed + len(chunk)
                first_cut = -(-processed // span) * span  # spans start at multiples of the span size
                worker.submit(digester.update, chunk, [(cut, 0) for cut in range(first_cut, end, span)])
                toc.feed(chunk)
                processed = end
                if progress is not None:
                    progress(processed)
            worker.drain()
        finally:
            worker.close()
        digests, layer_digest = digester.finish()
        layer_digest = verified_digest or layer_digest
        max_span_id = uncompressed_max_span_id(processed, span)
        assert len(digests) == max_span_id + 1 and layer_digest is not None
        info = CompressionInfo(
            algorithm=CompressionAlgorithm.UNCOMPRESSED,
            max_span_id=max_span_id,
            span_digests=digests,
            checkpoints=encode_tar_zinfo(span, processed),
        )
        return self._assemble(toc.finish(), info, layer_digest, processed, processed, media_type)

    def _assemble(
        self,
        toc: TocResult,
        info: CompressionInfo,
        layer_digest: str,
        compressed_size: int,
        decompressed_size: int,
        media_type: str,
    ) -> BuiltZtoc:
        header = Ztoc(
            version=ZTOC_VERSION,
            build_tool_identifier=self.build_tool_identifier,
            compressed_archive_size=compressed_size,
            uncompressed_archive_size=toc.uncompressed_archive_size,
            entries=[],
            compression=info,
        )
        check_ztoc_fields(header)
        toc.table.check_offsets()
        data = serialize_table(header, toc.table, release_table=True)  # the TOC's memory goes early
        ztoc = replace(header, entries=ZtocEntries(data))
        return BuiltZtoc(
            ztoc=ztoc,
            data=data,
            digest="sha256:" + hashlib.sha256(data).hexdigest(),
            size=len(data),
            disable_xattrs=toc.disable_xattrs,
            layer_digest=layer_digest,
            compressed_size=compressed_size,
            uncompressed_size=toc.uncompressed_archive_size,
            decompressed_size=decompressed_size,
            span_size=self.span_size,
            media_type=media_type,
        )
