"""The targets file's `startup:` section: defaults, readiness forms, and errors naming file, target and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from resources.release.targets import TargetsFileError, load_targets
from resources.startup.sandbox import Readiness

BASE = """
targets:
  - name: api
    source: {local: ./ctx}
    repository: 127.0.0.1:5055/team/api
"""


def _load(tmp_path: Path, startup: str):
    p = tmp_path / "targets.yaml"
    p.write_text(BASE + (f"    startup: {startup}\n" if startup else ""))
    return load_targets(p).get("api"), p


def test_defaults(tmp_path: Path) -> None:
    t, _ = _load(tmp_path, "")
    s = t.startup
    assert (s.enabled, s.command, s.ready, s.timeout_s, s.prefetch, s.node_compat) == (False, None, None, 120, "files", "v0.12")
    assert (s.bandwidth_mbps, s.latency_ms) == (1000.0, 20.0)
    assert s.readiness() == Readiness()


@pytest.mark.parametrize(("ready", "expected"), [
    ("{log: 'listening on :8080'}", Readiness(log="listening on :8080")),
    ("{tcp_port: 8080}", Readiness(tcp_port=8080)),
    ("{exit: true}", Readiness(exit=True)),
])
def test_readiness_forms(tmp_path: Path, ready: str, expected: Readiness) -> None:
    t, _ = _load(tmp_path, f"{{enabled: true, command: [/app/serve, --port, '80'], ready: {ready}, timeout_s: 30, prefetch: ranges, node_compat: v0.15}}")
    assert t.startup.enabled and t.startup.command == ("/app/serve", "--port", "80") and t.startup.readiness() == expected
    assert t.startup.prefetch == "ranges" and t.startup.node_compat == "v0.15" and t.startup.timeout_s == 30


@pytest.mark.parametrize(("startup", "field", "why"), [
    ("{timeout_s: 0}", "startup.timeout_s", "greater than 0"),
    ("{timeout_s: 100000}", "startup.timeout_s", "less than or equal to 1800"),
    ("{ready: {log: x, tcp_port: 80}}", "startup.ready", "exactly one"),
    ("{ready: {}}", "startup.ready", "exactly one"),
    ("{ready: {tcp_port: 70000}}", "startup.ready.tcp_port", "less than 65536"),
    ("{ready: {log: '('}}", "startup.ready.log", "not a valid regular expression"),
    ("{ready: {exit: false}}", "startup.ready.exit", "only `exit: true`"),
    ("{command: []}", "startup.command", "non-empty"),
    ("{prefetch: spans}", "startup.prefetch", "'files' or 'ranges'"),
    ("{node_compat: '0.13'}", "startup.node_compat", "v0.12"),
    ("{bandwidth_mbps: 0}", "startup.bandwidth_mbps", "greater than 0"),
    ("{latency_ms: -1}", "startup.latency_ms", "greater than or equal to 0"),
    ("{enable: true}", "startup.enable", "Extra inputs"),
])
def test_errors_name_file_target_and_field(tmp_path: Path, startup: str, field: str, why: str) -> None:
    with pytest.raises(TargetsFileError) as err:
        _load(tmp_path, startup)
    text = str(err.value)
    assert str(tmp_path / "targets.yaml") in text and "target 'api'" in text and f"field '{field}'" in text and why in text, text
