"""Cost of a start, checked on a constructed image whose bytes and requests are worked out by hand."""

from __future__ import annotations

import io
import tarfile

import pytest

from resources.oci import media_types as mt
from resources.soci.ztoc.builder import ZtocBuilder
from resources.soci.ztoc.lazy import LazyLayerReader
from resources.startup.cost import (
    ImageDocuments,
    ImageLayer,
    NetworkModel,
    StartCostError,
    compare_start_costs,
)
from resources.startup.profile import ProfiledFile
from tests.resources.soci.conftest import gzip_layer, random_bytes, tar_layer

S = 65536  # span size


def _ztoc(layer, span: int = S):
    built = ZtocBuilder(span_size=span).build(io.BytesIO(layer.blob), layer.media_type)
    return built.ztoc, built.size


def _image():
    big = tar_layer({"a.bin": random_bytes(5 * S, 1)})
    tiny = tar_layer({"run.sh": b"#!/bin/sh\n"})
    other = tar_layer({"b.bin": random_bytes(2 * S, 2)})
    unread = tar_layer({"etc/motd": b"hello\n"})
    z_big, z_big_size = _ztoc(big)
    z_other, z_other_size = _ztoc(other)
    layers = [
        ImageLayer(big.digest, big.size, z_big, z_big_size),
        ImageLayer(tiny.digest, tiny.size, None, 0),  # too small to index: fetched whole
        ImageLayer(other.digest, other.size, z_other, z_other_size),  # nothing read from it
        ImageLayer(unread.digest, unread.size, None, 0),  # no zTOC, nothing read: still pulled whole
    ]
    return big, tiny, other, unread, layers, z_big_size + z_other_size


def test_hand_worked_costs_of_lazy_prefetch_and_full_pull() -> None:
    big, tiny, other, unread, layers, ztoc_bytes = _image()
    # Hand-worked layout of the big layer: one 512-byte ustar header, a.bin's 5 spans of data, the 1024-byte
    # end marker, padded by tarfile to a 10240-byte record: 512 + 327680 + 1024 -> 337920 bytes, 6 spans.
    with tarfile.open(fileobj=io.BytesIO(big.blob)) as t:
        assert t.getmember("a.bin").offset_data == 512
    assert big.size == 337920
    files = [
        ProfiledFile("/run.sh", tiny.digest, 10, 0.0, ((0, 10),), "command"),
        # reads at absolute offsets [512, 612) -> span 0; [3S+512, 3S+522) -> span 3;
        # [5S+502, 5S+512) -> span 5 (a node's end offset 5S+512 is in span 5 too)
        ProfiledFile("/a.bin", big.digest, 5 * S, 1.0, ((0, 100), (3 * S, 3 * S + 10), (5 * S - 10, 5 * S))),
    ]
    docs = ImageDocuments(manifest=1000, config=500, soci_index=700)
    net = NetworkModel()
    cmp = compare_start_costs(files, layers, docs, net)

    image_bytes = 1000 + 500 + big.size + tiny.size + other.size + unread.size
    whole = tiny.size + unread.size  # the two layers without a zTOC
    lazy = cmp.lazy
    spans_bytes = S + S + (337920 - 5 * S)  # spans 0 and 3 are whole spans; span 5 is the 10240-byte tail
    assert lazy.bytes_to_start == 1000 + 500 + 700 + ztoc_bytes + whole + spans_bytes
    assert lazy.image_bytes == image_bytes
    # requests: manifest, config, SOCI index, 2 zTOCs, the 2 unindexed layers, 3 spans
    assert lazy.requests == 3 + 2 + 2 + 3
    # round trips: manifest, config, SOCI index, zTOCs (parallel), unindexed layers (parallel), then 3 reads
    assert lazy.round_trips == 3 + 1 + 1 + 3
    assert lazy.seconds == pytest.approx(8 * 0.020 + lazy.bytes_to_start / 100e6)
    rows = {r.layer_digest: r for r in lazy.layers}
    assert (rows[big.digest].spans, rows[big.digest].bytes_to_start) == (3, spans_bytes)
    assert (rows[tiny.digest].indexed, rows[tiny.digest].bytes_to_start) == (False, tiny.size)
    assert rows[other.digest].bytes_to_start == 0
    assert (rows[unread.digest].indexed, rows[unread.digest].bytes_to_start, rows[unread.digest].files) == (
        False,
        unread.size,
        0,
    )

    # prefetch (files), as soci: span(512) .. span(512 + 5S) = spans 0..5, the whole big layer, 6 requests
    pf = cmp.prefetch_files
    blob = len(b'{"version":"1.0","prefetch_spans":[{"start_span":0,"end_span":5}]}')
    descriptor = len(
        b',{"mediaType":"application/vnd.amazon.soci.prefetch.v1+json","digest":"sha256:' + b"0" * 64 + b'","size":67,'
        b'"annotations":{"com.amazon.soci.image-layer-digest":"sha256:' + b"0" * 64 + b'"}}'
    )
    assert pf.bytes_to_start == 1000 + 500 + 700 + descriptor + ztoc_bytes + blob + whole + big.size
    assert pf.requests == 3 + 3 + 2 + 6  # the artifact is a third blob
    assert pf.round_trips == 3 + 1 + 1 + 2  # 6 spans by 4 workers: 2 rounds; every read then hits the cache

    # prefetch (ranges): spans 0, 3 and 5 only ({"start_span":0,"end_span":0},{3,3},{5,5})
    pr = cmp.prefetch_ranges
    blob_r = len(
        b'{"version":"1.0","prefetch_spans":[{"start_span":0,"end_span":0},{"start_span":3,"end_span":3},'
        b'{"start_span":5,"end_span":5}]}'
    )
    descriptor_r = descriptor + len(str(blob_r)) - 2
    assert pr.bytes_to_start == 1000 + 500 + 700 + descriptor_r + ztoc_bytes + blob_r + whole + spans_bytes
    assert pr.round_trips == 3 + 1 + 1 + 1

    full = cmp.full_pull
    assert full.bytes_to_start == full.image_bytes == image_bytes
    assert (full.requests, full.round_trips) == (2 + 4, 2 + 2)  # 4 layers, 3 at a time
    assert lazy.summary == (
        f"to start: {lazy.bytes_to_start / 1e6:.1f} MB of {image_bytes / 1e6:.1f} MB "
        f"({100 * lazy.bytes_to_start / image_bytes:.1f}%)"
    )
    layer_rows = cmp.layer_table()
    assert [r["layer"] for r in layer_rows] == [x.digest for x in layers]
    assert [r["lazy_bytes"] for r in layer_rows] == [spans_bytes, tiny.size, 0, unread.size]
    assert layer_rows[0]["prefetch_files_bytes"] == big.size and layer_rows[0]["prefetch_ranges_bytes"] == spans_bytes
    assert [row["mode"] for row in cmp.table()] == [
        "lazy",
        "lazy + prefetch (files)",
        "lazy + prefetch (ranges)",
        "full pull",
    ]


def test_gzip_span_bytes_are_the_span_ranges_a_node_requests() -> None:
    layer = gzip_layer({"srv/m.bin": random_bytes(400_000, 5), "srv/c.json": b"{}"})
    ztoc, size = _ztoc(layer)
    reader = LazyLayerReader(ztoc, lambda s, e: layer.blob[s:e], cached_spans=0)
    entry = reader.entry("srv/m.bin")
    files = [ProfiledFile("/srv/m.bin", layer.digest, 400_000, 0.0, ((200_000, 200_001),))]
    docs = ImageDocuments(manifest=1, config=1, soci_index=1, image_index=1)
    lazy = compare_start_costs(files, [ImageLayer(layer.digest, layer.size, ztoc, size)], docs).lazy
    reader.read_range(entry.uncompressed_offset + 200_000, 1)
    (span,) = reader.touched
    r = reader.span(span)
    assert lazy.layers[0].bytes_to_start == r.end - r.start and lazy.layers[0].spans == 1
    assert lazy.requests == 4 + 1 + 1 and lazy.round_trips == 4 + 1 + 1  # with an image index: 4 documents


def test_profile_that_does_not_fit_the_image_is_an_error() -> None:
    big, _, _, _, layers, _ = _image()
    docs = ImageDocuments(manifest=1, config=1, soci_index=1)
    with pytest.raises(StartCostError, match="not in the zTOC of layer"):
        compare_start_costs([ProfiledFile("/nope", big.digest, 1, 0.0, ((0, 1),))], layers, docs)
    with pytest.raises(StartCostError, match="is not a layer of the image"):
        compare_start_costs([ProfiledFile("/a.bin", "sha256:" + "f" * 64, 1, 0.0, ((0, 1),))], layers, docs)
    assert mt.SOCI_PREFETCH  # media type used in the descriptor arithmetic above
