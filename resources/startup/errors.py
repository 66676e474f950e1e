"""Errors of the startup recorder and the profile store."""

from __future__ import annotations

from collections.abc import Sequence

from resources.errors import StreamableError


class StartupError(StreamableError):
    """Base of the startup recorder's errors."""


class ProfileFormatError(StartupError, ValueError):
    """A profile document is not valid; the message names the field."""


class RootfsError(StartupError):
    """An image's layers cannot be assembled into a root filesystem; the message names image and layer."""


class SandboxUnavailableError(StartupError):
    """The host lacks what the sandbox needs (strace, unshare, root, a disk filesystem)."""


class RecordingError(StartupError):
    """The program did not start as required; carries the last lines of its output."""

    def __init__(self, message: str, output_tail: Sequence[str] = ()) -> None:
        self.output_tail = list(output_tail)
        text = message
        if self.output_tail:
            text += "\nlast lines of its output:\n" + "\n".join("  " + line for line in self.output_tail)
        super().__init__(text)


class MissingCommandError(RecordingError):
    """The command to run is not in the image (or the image defines none)."""


class ProgramCrashedError(RecordingError):
    """The program exited with a non-zero status (or a signal) before it was ready."""


class NotReadyError(RecordingError):
    """The program did not become ready: the timeout passed, or it exited with status 0 before readiness."""
