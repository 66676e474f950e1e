"""Span size advice: the one-pass derivation equals real builds at every span size."""

from __future__ import annotations

import gzip
import io
import itertools

import pytest

from resources.oci import media_types as mt
from resources.soci.ztoc.builder import ZtocBuilder
from resources.soci.ztoc.checkpoints import parse_checkpoints
from resources.soci.ztoc.lazy import LazyLayerReader
from resources.startup.cost import SpanLayout
from resources.startup.profile import ProfiledFile
from resources.startup.span_advice import (
    SPAN_SIZES,
    SpanAdviceError,
    advise_span_size,
    measure_layer,
)
from tests.resources.soci.conftest import (
    Layer,
    random_bytes,
    sha256,
    tar_bytes,
    tar_layer,
    text_bytes,
)

MiB = 1 << 20


def _layer() -> Layer:
    files = {
        "srv/model.bin": random_bytes(5 * MiB, 1),
        "srv/vocab.txt": text_bytes(12 * MiB, 2),
        "srv/empty": b"",
        "srv/config.json": b'{"a": 1}\n',
        "srv/lib.so": random_bytes(3 * MiB, 3),
    }
    tar = tar_bytes(files)
    cut = len(tar) // 3  # two gzip members, like pigz output
    return Layer(
        gzip.compress(tar[:cut], 6, mtime=0) + gzip.compress(tar[cut:], 1, mtime=0),
        mt.OCI_LAYER_GZIP,
        sha256(tar),
        files,
    )


def _chunks(blob: bytes, n: int = 1 << 20):
    return (blob[i : i + n] for i in range(0, len(blob), n))


@pytest.mark.parametrize("kind", ["gzip", "tar"])
def test_one_pass_gives_exactly_the_checkpoints_and_ztoc_sizes_of_real_builds(kind: str) -> None:
    layer = _layer() if kind == "gzip" else tar_layer({"a.bin": random_bytes(9 * MiB + 5, 4), "b.txt": b"x" * 1000})
    measured = measure_layer(layer.digest, layer.media_type, _chunks(layer.blob))
    for span in SPAN_SIZES:
        built = ZtocBuilder(span_size=span).build(io.BytesIO(layer.blob), layer.media_type)
        assert measured.ztoc_size(span) == built.size, span
        layout = measured.layout(span)
        real = SpanLayout.of_ztoc(built.ztoc, layer.size)
        assert layout.count == real.count == built.ztoc.compression.max_span_id + 1
        if kind == "gzip":
            points = parse_checkpoints(built.ztoc.compression.checkpoints)[1]
            assert measured.checkpoints(span) == [(p.in_offset, p.out_offset, p.bits) for p in points], span
        reader = LazyLayerReader(built.ztoc, lambda s, e: b"", layer=layer.digest)
        for span_id in range(layout.count):
            r = reader.span(span_id)
            assert layout.size(span_id) == real.size(span_id) == r.end - r.start
    assert measured.entries == built.ztoc.entries


def test_auto_picks_the_fewest_bytes_to_start_within_the_ztoc_budget() -> None:
    layer = _layer()
    measured = measure_layer(layer.digest, layer.media_type, _chunks(layer.blob))
    files = [
        ProfiledFile("/srv/config.json", layer.digest, 9, 0.0, ((0, 9),)),
        ProfiledFile("/srv/model.bin", layer.digest, 5 * MiB, 1.0, ((0, 4096), (4 * MiB, 4 * MiB + 4096))),
    ]
    advice = advise_span_size([measured], files)
    rows = {o.span_size: o for o in advice.options}
    assert [o.span_size for o in advice.options] == list(SPAN_SIZES)
    assert all(rows[a].ztoc_bytes > rows[b].ztoc_bytes for a, b in itertools.pairwise(SPAN_SIZES))
    assert advice.ztoc_budget == int(layer.size * 0.02)
    fitting = [o for o in advice.options if o.ztoc_bytes <= advice.ztoc_budget]
    assert advice.chosen == min(fitting, key=lambda o: (o.bytes_to_start, -o.span_size)).span_size
    assert rows[advice.chosen].within_budget and sum(r["chosen"] for r in advice.table()) == 1
    unlimited = advise_span_size([measured], files, ztoc_budget=10**12)
    assert unlimited.chosen == min(unlimited.options, key=lambda o: (o.bytes_to_start, -o.span_size)).span_size
    with pytest.raises(SpanAdviceError, match="raise the zTOC budget"):
        advise_span_size([measured], files, ztoc_budget=10)
