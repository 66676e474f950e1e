"""A minimal typed reader of the startup profile (JSON, version 1), for the cost and prefetch code.

The contract (the recorder writes it; field names and meaning as in issue 16):

    {"version": 1, "image": "<ref>", "manifest_digest": "sha256:..", "platform": "linux/amd64",
     "command": [..], "stopped_by": "exit"|"ready_log"|"ready_tcp"|"timeout", "duration_ms": N,
     "files": [{"path": "/abs/path", "layer_digest": "sha256:..", "size": N, "first_access_ms": F,
                "ranges": [[start, end_exclusive], ...], "kind": "file"|"loader"|"command"}]}

`layer_digest` is the topmost layer that provides the file; `ranges` are byte ranges of the file's
contents. Class and field names match the recorder's model so the two can be unified.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from resources.errors import StreamableError

PROFILE_VERSION = 1
STOPPED_BY = ("exit", "ready_log", "ready_tcp", "timeout")
FILE_KINDS = ("file", "loader", "command")


class ProfileFormatError(StreamableError, ValueError):
    """A profile document that does not follow the version-1 contract; the message names the field."""


@dataclass(frozen=True)
class ProfiledFile:
    """One file read to start."""

    path: str
    layer_digest: str
    size: int
    first_access_ms: float
    ranges: tuple[tuple[int, int], ...]
    kind: str = "file"


@dataclass(frozen=True)
class StartupProfile:
    """A recorded start of one image manifest."""

    image: str
    manifest_digest: str
    platform: str
    command: tuple[str, ...]
    stopped_by: str
    duration_ms: float
    files: tuple[ProfiledFile, ...]
    version: int = PROFILE_VERSION

    @classmethod
    def from_json(cls, text: str | bytes) -> StartupProfile:
        """Parse and check profile JSON."""
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise ProfileFormatError(f"startup profile is not JSON: {exc}") from None
        return cls.from_dict(doc)

    @classmethod
    def from_dict(cls, doc: Any) -> StartupProfile:
        """Check a parsed document; ProfileFormatError names the first bad field."""
        if not isinstance(doc, dict):
            raise ProfileFormatError("startup profile must be a JSON object")
        if doc.get("version") != PROFILE_VERSION:
            raise ProfileFormatError(f"startup profile field 'version': {doc.get('version')!r} is not {PROFILE_VERSION}")
        if doc.get("stopped_by") not in STOPPED_BY:
            raise ProfileFormatError(f"startup profile field 'stopped_by': {doc.get('stopped_by')!r} is not one of {STOPPED_BY}")
        files = doc.get("files")
        if not isinstance(files, list):
            raise ProfileFormatError("startup profile field 'files': must be a list")
        return cls(
            image=_typed(doc, "image", str, ""),
            manifest_digest=_typed(doc, "manifest_digest", str, ""),
            platform=_typed(doc, "platform", str, ""),
            command=tuple(_typed(doc, "command", list, "")),
            stopped_by=doc["stopped_by"],
            duration_ms=float(_typed(doc, "duration_ms", (int, float), "")),
            files=tuple(_file(f, i) for i, f in enumerate(files)),
        )


def _typed(doc: dict[str, Any], key: str, kind: type | tuple[type, ...], prefix: str) -> Any:
    value = doc.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ProfileFormatError(f"startup profile field '{prefix}{key}': missing or of the wrong type")
    return value


def _file(doc: Any, i: int) -> ProfiledFile:
    prefix = f"files[{i}]."
    if not isinstance(doc, dict):
        raise ProfileFormatError(f"startup profile field 'files[{i}]': must be an object")
    size = _typed(doc, "size", int, prefix)
    ranges: list[tuple[int, int]] = []
    for j, r in enumerate(_typed(doc, "ranges", list, prefix)):
        ok = isinstance(r, list) and len(r) == 2 and all(isinstance(x, int) and not isinstance(x, bool) for x in r)
        if not ok or not 0 <= r[0] < r[1] <= size:
            raise ProfileFormatError(f"startup profile field '{prefix}ranges[{j}]': {r!r} is not [start, end) within 0..{size}")
        ranges.append((r[0], r[1]))
    kind = doc.get("kind", "file")
    if kind not in FILE_KINDS:
        raise ProfileFormatError(f"startup profile field '{prefix}kind': {kind!r} is not one of {FILE_KINDS}")
    return ProfiledFile(
        path=_typed(doc, "path", str, prefix),
        layer_digest=_typed(doc, "layer_digest", str, prefix),
        size=size,
        first_access_ms=float(_typed(doc, "first_access_ms", (int, float), prefix)),
        ranges=tuple(ranges),
        kind=kind,
    )
