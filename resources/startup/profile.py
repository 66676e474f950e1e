"""The startup profile (JSON, version 1): what a container read to start, per file, in first-access order.

The contract (shared with the prefetch/cost code and the CLI):

    {"version": 1, "image": "<ref>", "manifest_digest": "sha256:..", "platform": "linux/amd64",
     "command": [..], "stopped_by": "exit"|"ready_log"|"ready_tcp"|"timeout", "duration_ms": N,
     "files": [{"path": "/abs/path", "layer_digest": "sha256:..", "size": N, "first_access_ms": F,
                "ranges": [[start, end_exclusive], ...], "kind": "file"|"loader"|"command"}]}

`ranges` are sorted, disjoint, non-empty byte ranges inside [0, size) at page granularity (the last one
clipped to the file size); `files` are sorted by `first_access_ms` (ties keep the order of access).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from resources.startup.errors import ProfileFormatError

PROFILE_VERSION = 1
StoppedBy = Literal["exit", "ready_log", "ready_tcp", "timeout"]
FileKind = Literal["file", "loader", "command"]
STOPPED_BY: tuple[str, ...] = ("exit", "ready_log", "ready_tcp", "timeout")
FILE_KINDS: tuple[str, ...] = ("file", "loader", "command")
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_PLATFORM_RE = re.compile(r"^[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?$")
_TOP_FIELDS = ("version", "image", "manifest_digest", "platform", "command", "stopped_by", "duration_ms", "files")
_FILE_FIELDS = ("path", "layer_digest", "size", "first_access_ms", "ranges", "kind")


@dataclass(frozen=True)
class ProfiledFile:
    """One file the program opened, executed or mapped (or the kernel mapped for it: loader, interpreter)."""

    path: str
    layer_digest: str
    size: int
    first_access_ms: float
    ranges: tuple[tuple[int, int], ...]
    kind: FileKind = "file"

    @property
    def bytes_read(self) -> int:
        """Bytes inside `ranges` (page-level: what was in the page cache after the run)."""
        return sum(end - start for start, end in self.ranges)


@dataclass(frozen=True)
class StartupProfile:
    """A recorded start of one image manifest."""

    image: str
    manifest_digest: str
    platform: str
    command: tuple[str, ...]
    stopped_by: StoppedBy
    duration_ms: float
    files: tuple[ProfiledFile, ...] = field(default_factory=tuple)
    version: int = PROFILE_VERSION

    def __post_init__(self) -> None:
        _validate(self.to_dict())

    @property
    def bytes_read(self) -> int:
        """Bytes read to start, over all files."""
        return sum(f.bytes_read for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document as a dict, fields in contract order."""
        raw = asdict(self)
        doc = {k: raw[k] for k in _TOP_FIELDS}
        doc["command"] = list(self.command)
        doc["files"] = [
            {**{k: asdict(f)[k] for k in _FILE_FIELDS}, "ranges": [list(r) for r in f.ranges]} for f in self.files
        ]
        return doc

    def to_json(self, indent: int | None = None) -> str:
        """The profile as JSON text (compact by default)."""
        separators = (",", ":") if indent is None else (",", ": ")
        return json.dumps(self.to_dict(), indent=indent, separators=separators)

    @classmethod
    def from_dict(cls, doc: Any) -> StartupProfile:
        """Validate a parsed document; ProfileFormatError names the first bad field."""
        _validate(doc)
        files = tuple(
            ProfiledFile(
                path=f["path"],
                layer_digest=f["layer_digest"],
                size=f["size"],
                first_access_ms=float(f["first_access_ms"]),
                ranges=tuple((int(a), int(b)) for a, b in f["ranges"]),
                kind=f["kind"],
            )
            for f in doc["files"]
        )
        return cls(
            image=doc["image"],
            manifest_digest=doc["manifest_digest"],
            platform=doc["platform"],
            command=tuple(doc["command"]),
            stopped_by=doc["stopped_by"],
            duration_ms=float(doc["duration_ms"]),
            files=files,
            version=doc["version"],
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> StartupProfile:
        """Parse and validate profile JSON."""
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise ProfileFormatError(f"startup profile is not JSON: {exc}") from None
        return cls.from_dict(doc)


def _fail(where: str, why: str) -> None:
    raise ProfileFormatError(f"startup profile field {where!r}: {why}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v) and v >= 0


def _check_keys(doc: dict[str, Any], expected: tuple[str, ...], prefix: str) -> None:
    for key in expected:
        if key not in doc:
            _fail(prefix + key, "missing")
    for key in doc:
        if key not in expected:
            _fail(prefix + str(key), "unknown field")


def _validate(doc: Any) -> None:
    """Check a profile document against the version-1 contract."""
    if not isinstance(doc, dict):
        raise ProfileFormatError("startup profile must be a JSON object")
    if "version" in doc and doc["version"] != PROFILE_VERSION:
        _fail("version", f"unsupported version {doc['version']!r} (this code reads {PROFILE_VERSION})")
    _check_keys(doc, _TOP_FIELDS, "")
    if not isinstance(doc["image"], str) or not doc["image"]:
        _fail("image", "must be a non-empty string")
    if not isinstance(doc["manifest_digest"], str) or not _DIGEST_RE.match(doc["manifest_digest"]):
        _fail("manifest_digest", "must be sha256:<64 hex>")
    if not isinstance(doc["platform"], str) or not _PLATFORM_RE.match(doc["platform"]):
        _fail("platform", "must be os/arch[/variant]")
    if (
        not isinstance(doc["command"], (list, tuple))
        or not doc["command"]
        or not all(isinstance(a, str) for a in doc["command"])
    ):
        _fail("command", "must be a non-empty list of strings")
    if doc["stopped_by"] not in STOPPED_BY:
        _fail("stopped_by", f"must be one of {', '.join(STOPPED_BY)}")
    if not _is_number(doc["duration_ms"]):
        _fail("duration_ms", "must be a number >= 0")
    if not isinstance(doc["files"], (list, tuple)):
        _fail("files", "must be a list")
    seen: set[str] = set()
    last_ms = 0.0
    for i, f in enumerate(doc["files"]):
        _validate_file(f, f"files[{i}]")
        if f["path"] in seen:
            _fail(f"files[{i}].path", f"{f['path']} is listed twice")
        if f["first_access_ms"] < last_ms:
            _fail(f"files[{i}].first_access_ms", "files must be in first-access order")
        seen.add(f["path"])
        last_ms = f["first_access_ms"]


def _validate_file(f: Any, where: str) -> None:
    if not isinstance(f, dict):
        _fail(where, "must be an object")
    _check_keys(f, _FILE_FIELDS, where + ".")
    if not isinstance(f["path"], str) or not f["path"].startswith("/") or "\0" in f["path"]:
        _fail(where + ".path", "must be an absolute path")
    if not isinstance(f["layer_digest"], str) or not _DIGEST_RE.match(f["layer_digest"]):
        _fail(where + ".layer_digest", "must be sha256:<64 hex>")
    if not _is_int(f["size"]) or f["size"] < 0:
        _fail(where + ".size", "must be an integer >= 0")
    if not _is_number(f["first_access_ms"]):
        _fail(where + ".first_access_ms", "must be a number >= 0")
    if f["kind"] not in FILE_KINDS:
        _fail(where + ".kind", f"must be one of {', '.join(FILE_KINDS)}")
    if not isinstance(f["ranges"], (list, tuple)):
        _fail(where + ".ranges", "must be a list of [start, end) pairs")
    previous_end = 0
    for j, r in enumerate(f["ranges"]):
        at = f"{where}.ranges[{j}]"
        if not isinstance(r, (list, tuple)) or len(r) != 2 or not all(_is_int(x) for x in r):
            _fail(at, "must be a pair of integers [start, end_exclusive]")
        start, end = r
        if not previous_end <= start < end <= f["size"]:
            _fail(at, f"[{start}, {end}) must be non-empty, sorted, disjoint and inside the file (size {f['size']})")
        previous_end = end
