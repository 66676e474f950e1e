"""Metadata made for reading in the UI: typed tables, human sizes next to exact bytes, short digests, links.

Rules: unknown values are left out (no `-1`, no empty rows); a number goes in as a number only when its series
over materializations is worth a plot, otherwise as text or inside a table.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import dagster as dg

from resources.release.backfill import StatusRecord

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def human_size(n: int) -> str:
    """`25173768` -> `24.0 MiB`; exact below 1 KiB."""
    size = float(n)
    for unit in _UNITS:
        if abs(size) < 1024 or unit == _UNITS[-1]:
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def sized(n: int) -> str:
    """Human size with the exact byte count: `24.0 MiB (25173768 bytes)`."""
    return f"{human_size(n)} ({n} bytes)" if n >= 1024 else f"{n} bytes"


def short_digest(digest: str | None, chars: int = 12) -> str:
    """`sha256:0123456789abcdef...` -> `sha256:0123456789ab`."""
    if not digest:
        return ""
    algo, _, hexpart = digest.partition(":")
    return f"{algo}:{hexpart[:chars]}" if hexpart else digest[:chars]


_COLUMN_TYPES: dict[type, str] = {bool: "bool", int: "int", float: "float", str: "string"}


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, type, str]]) -> dg.TableMetadataValue:
    """A typed UI table; `columns` are (name, python type, description). Unknown cells are None (shown empty):
    Dagster needs every record to have every column."""
    schema = dg.TableSchema(columns=[
        dg.TableColumn(name, _COLUMN_TYPES.get(kind, "string"), description=desc or None)
        for name, kind, desc in columns])
    names = [c[0] for c in columns]
    records = [dg.TableRecord({n: r.get(n) for n in names}) for r in rows]
    return dg.MetadataValue.table(records=records, schema=schema)


def image_link(ref: str, ui_url: str | None = None) -> dg.MetadataValue:
    """An image reference: a link when the registry has a known web UI URL for it, else text."""
    return dg.MetadataValue.url(ui_url) if ui_url else dg.MetadataValue.text(ref)


def text_lines(lines: Iterable[str]) -> dict[str, dg.MetadataValue]:
    """`{"notes": md}` for non-empty lines, `{}` when there is nothing to say (no empty row)."""
    items = [line for line in lines if line]
    return {"notes": dg.MetadataValue.md("\n".join(f"- {line}" for line in items))} if items else {}


def counts_table(counts: Mapping[str, int]) -> dg.TableMetadataValue:
    """Outcome -> count as a table."""
    return table([{"outcome": k, "images": v} for k, v in sorted(counts.items())],
                 [("outcome", str, ""), ("images", int, "")])


def backfill_record_metadata(rec: StatusRecord) -> dict[str, Any]:
    """A backfill outcome as the partition's metadata: the keys `StatusRecord.from_metadata` reads, empty ones left
    out; counts as text (a series over different images is not worth a plot)."""
    md: dict[str, Any] = {"status": dg.MetadataValue.text(rec.status.value), "image": dg.MetadataValue.text(rec.image)}
    for key, value in rec.to_metadata().items():
        if key in md or value in ("", None):
            continue
        md[key] = dg.MetadataValue.text(str(value))
    return md
