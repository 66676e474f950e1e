"""How the browser tests match facts in a page's text: short digests, values shown on their own, labelled values."""

from __future__ import annotations

import re


def hex12(digest: str) -> str:
    """The first 12 hex digits of a digest: what a short digest in the UI still shows."""
    return digest.split(":", 1)[1][:12]


def shown_alone(word: str) -> re.Pattern[str]:
    """`word` as a value of its own (a table cell, a JSON string), not inside `refs/heads/main` or `svc:latest`."""
    return re.compile(rf"(?<![\w/:.-]){re.escape(word)}(?![\w/:.-])")


def labelled(label: str, value: str) -> re.Pattern[str]:
    """`value` in the row of the metadata entry `label`: its cell, after the label's and the timestamp's
    (the asset page's metadata table reads "label / timestamp / value", a check's "label / value")."""
    return re.compile(rf"(?m)^{re.escape(label)}\s*\n(?:[^\n]*\n\s*){{0,2}}{re.escape(value)}$")


def table_row(*cells: str) -> re.Pattern[str]:
    """A row of a typed table (cells separated by tabs) that starts with `cells`."""
    return re.compile(r"(?m)^" + r"\t".join(re.escape(c) for c in cells) + r"(\t|$)")


def missing(text: str, expected: dict[str, str | re.Pattern[str]]) -> list[str]:
    """Names of the expected facts whose text (or pattern) is not on the page."""
    return [f"{what} ({value if isinstance(value, str) else value.pattern})" for what, value in expected.items()
            if (value not in text if isinstance(value, str) else value.search(text) is None)]
