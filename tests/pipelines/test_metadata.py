"""UI metadata helpers: human sizes with exact bytes, short digests, typed tables without empty cells."""

from __future__ import annotations

import dagster as dg

from pipelines.metadata import backfill_record_metadata, human_size, short_digest, sized, table, text_lines
from resources.release.backfill import ImageStatus, StatusRecord


def test_sizes_are_human_with_the_exact_bytes() -> None:
    assert human_size(512) == "512 B"
    assert human_size(25_173_768) == "24.0 MiB"
    assert human_size(3 * 1024**4) == "3.0 TiB"
    assert sized(25_173_768) == "24.0 MiB (25173768 bytes)"
    assert sized(7) == "7 bytes"


def test_short_digest_keeps_the_algorithm() -> None:
    assert short_digest("sha256:" + "ab" * 32) == "sha256:" + "ab" * 6
    assert short_digest(None) == "" and short_digest("") == ""


def test_table_is_typed_and_unknown_cells_are_empty() -> None:
    value = table([{"tag": "latest", "from": None, "to": "sha256:1"}, {"tag": "main", "from": "sha256:0", "to": "x"}],
                  [("tag", str, ""), ("from", str, "before"), ("to", str, "")])
    assert isinstance(value, dg.TableMetadataValue)
    assert [c.name for c in value.schema.columns] == ["tag", "from", "to"]
    assert value.schema.columns[1].description == "before"
    assert value.records[0].data == {"tag": "latest", "from": None, "to": "sha256:1"}  # not "-1", not "None"
    assert value.records[1].data["from"] == "sha256:0"


def test_no_notes_row_when_there_is_nothing_to_say() -> None:
    assert text_lines(["", ""]) == {}
    assert text_lines(["a", ""])["notes"].value == "- a"


def test_backfill_metadata_round_trips_and_omits_empty_values() -> None:
    rec = StatusRecord(key="k", image="r/a:v1@sha256:1", status=ImageStatus.NOT_INDEXABLE, reason="zstd",
                       layers_built=0, duration_s=1.5)
    md = backfill_record_metadata(rec)
    assert "soci_image" not in md and "soci_digest" not in md
    assert all(isinstance(v, dg.TextMetadataValue) for v in md.values())  # no auto-plot of per-image counts
    assert StatusRecord.from_metadata("k", md) == rec
