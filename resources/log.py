"""The one log callback type: plain modules report progress through it (Dagster passes `context.log.info`)."""

from collections.abc import Callable

LogFn = Callable[[str], None]
"""Takes one human-readable line."""
