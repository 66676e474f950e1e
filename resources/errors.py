"""The base of every error streamable raises on purpose."""

from __future__ import annotations


class StreamableError(Exception):
    """Base of every error streamable raises on purpose."""
