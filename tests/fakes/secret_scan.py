"""Find known secret values (and their usual encodings) in everything a Dagster run leaves behind.

A `KnownSecret` expands one secret into the byte strings that would betray it: the raw value, the base64
`user:password` of a Basic auth header or docker config `auth` field, base64 of the value alone, and for PEM
keys each base64 body line. The `scan_*` functions return `Finding`s (secret label, channel, where) instead
of asserting, so a test can prove the scan detects a planted leak and then require zero findings for a run.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg


@dataclass(frozen=True)
class KnownSecret:
    """One secret under a label, with every byte string that reveals it."""

    label: str
    needles: tuple[bytes, ...]

    @classmethod
    def password(cls, label: str, password: str, *, username: str | None = None) -> KnownSecret:
        """A password or token: raw, base64 alone, and base64 `username:password` (Basic auth / config.json)."""
        needles = [password.encode(), base64.b64encode(password.encode())]
        if username is not None:
            needles.append(base64.b64encode(f"{username}:{password}".encode()))
        return cls(label, tuple(needles))

    @classmethod
    def pem(cls, label: str, pem: bytes) -> KnownSecret:
        """A PEM private key: each base64 body line (>= 16 chars) and a middle slice of base64(PEM) (a k8s secret)."""
        lines = [ln.strip() for ln in pem.splitlines() if ln.strip() and not ln.startswith(b"-----")]
        encoded = base64.b64encode(pem)
        middle = len(encoded) // 2 // 4 * 4  # 4-char aligned, so any leak of the whole encoding contains it
        needles = [ln for ln in lines if len(ln) >= 16] + [encoded[middle: middle + 40]]
        if not needles:
            raise ValueError(f"PEM for {label} has no body line to look for")
        return cls(label, tuple(needles))

    def found_in(self, data: bytes) -> bool:
        return any(n in data for n in self.needles)


@dataclass(frozen=True)
class Finding:
    """A secret seen somewhere: which one, in which channel (event, file, run, python-log, console) and where."""

    secret: str
    channel: str
    where: str


def scan_bytes(data: bytes | str, secrets: Iterable[KnownSecret], channel: str, where: str) -> list[Finding]:
    """Findings for every secret present in data."""
    raw = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data
    return [Finding(s.label, channel, where) for s in secrets if s.found_in(raw)]


def strings_in(obj: Any, _seen: set[int] | None = None) -> Iterator[str]:
    """Every str/bytes leaf (and each object's repr) of nested records, namedtuples, dataclasses, dicts, lists."""
    seen = _seen if _seen is not None else set()
    if isinstance(obj, (str, bytes)):
        yield obj if isinstance(obj, str) else obj.decode("utf-8", "replace")
        return
    if obj is None or isinstance(obj, (int, float, bool)) or id(obj) in seen:
        return
    seen.add(id(obj))
    yield repr(obj)
    if isinstance(getattr(type(obj), "_fields", None), tuple):  # namedtuples and dagster @record classes
        children: Iterable[Any] = [getattr(obj, name, None) for name in type(obj)._fields]
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        children = (getattr(obj, f.name) for f in dataclasses.fields(obj))
    elif isinstance(obj, Mapping):
        children = [*obj.keys(), *obj.values()]
    elif isinstance(obj, (list, tuple, set, frozenset)):
        children = obj
    elif hasattr(obj, "__dict__") and not isinstance(obj, type):
        children = vars(obj).values()
    else:
        return
    for child in children:
        yield from strings_in(child, seen)


def scan_events(records: Iterable[Any], secrets: list[KnownSecret]) -> list[Finding]:
    """Each EventLogEntry: as stored (serialized), repr, message, every nested value (metadata, error infos)."""
    findings: list[Finding] = []
    for i, entry in enumerate(records):
        event = entry.dagster_event
        where = f"event #{i} {event.event_type_value if event else 'log'} step={entry.step_key}"
        texts = [dg.serialize_value(entry), str(entry), entry.user_message or "", *strings_in(entry)]
        error = getattr(event.event_specific_data, "error", None) if event and event.event_specific_data else None
        if error is not None:
            texts.append(error.to_string())
        seen = {f.secret for f in findings if f.where == where}
        for text in texts:
            for f in scan_bytes(text, secrets, "event", where):
                if f.secret not in seen:
                    seen.add(f.secret)
                    findings.append(f)
    return findings


def scan_run(run: Any, secrets: list[KnownSecret]) -> list[Finding]:
    """The stored run: tags, run config, everything in its serialized form."""
    texts = [dg.serialize_value(run), repr(run.tags), repr(run.run_config), *strings_in(run)]
    return sorted({f for t in texts for f in scan_bytes(t, secrets, "run", f"run {run.run_id}")}, key=repr)


def scan_files(root: Path, secrets: list[KnownSecret]) -> tuple[list[Finding], list[Path]]:
    """Every file under root (event log DB, compute logs, pickled outputs); (findings, files scanned)."""
    findings: list[Finding] = []
    scanned: list[Path] = []
    for path in sorted(root.rglob("*")):
        if path.is_file():
            scanned.append(path)
            findings += scan_bytes(path.read_bytes(), secrets, "file", str(path.relative_to(root)))
    return findings, scanned


def scan_log_records(records: Iterable[logging.LogRecord], secrets: list[KnownSecret]) -> list[Finding]:
    """Python logging records (e.g. pytest's caplog.records): message, arguments and exception text."""
    formatter = logging.Formatter()
    findings: list[Finding] = []
    for rec in records:
        texts = [rec.getMessage(), repr(rec.args)]
        if rec.exc_info:
            texts.append(formatter.formatException(rec.exc_info))
        if rec.exc_text:
            texts.append(rec.exc_text)
        where = f"python log {rec.name}:{rec.levelname}"
        findings += {f for t in texts for f in scan_bytes(t, secrets, "python-log", where)}
    return findings


def channels(findings: Iterable[Finding]) -> dict[str, set[str]]:
    """secret label -> channels it was found in."""
    out: dict[str, set[str]] = {}
    for f in findings:
        out.setdefault(f.secret, set()).add(f.channel)
    return out
