"""The root of streamable's own exceptions."""


class StreamableError(Exception):
    """Base of every error streamable raises on purpose."""
