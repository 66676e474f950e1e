"""The base of every error streamable raises on purpose."""


class StreamableError(Exception):
    """Base of every error streamable raises on purpose."""
