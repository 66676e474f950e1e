"""Targets file validation: errors name the file, the target and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from resources.release.targets import TargetsFileError, load_targets

GOOD = """
targets:
  - name: app
    source: {local: ./ctx}
    repository: 127.0.0.1:5055/team/app
    build_args: {A: "1"}
  - name: svc
    source: {git: {repo: http://127.0.0.1:9/svc.git, ref: main, context: services/api}}
    repository: 123456789012.dkr.ecr.us-east-1.amazonaws.com/team/svc
    platforms: [linux/amd64, linux/arm64/v8]
    soci: {format: v1, span_size: 1048576}
    verify: {sample: 3, required_files: [usr/bin/app]}
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "targets.yaml"
    p.write_text(text)
    return p


def test_good_file_loads_with_defaults(tmp_path: Path) -> None:
    cfg = load_targets(write(tmp_path, GOOD))
    assert cfg.names == ["app", "svc"]
    app = cfg.get("app")
    assert app.source.local == (tmp_path / "ctx").resolve()
    assert app.soci.format == "v2" and app.soci.span_size == 4194304 and app.soci.min_layer_size == 10485760
    svc = cfg.get("svc")
    assert svc.registry == "123456789012.dkr.ecr.us-east-1.amazonaws.com"
    assert svc.repository_path == "team/svc"
    assert svc.routing_key == "http://127.0.0.1:9/svc.git:services/api"
    assert svc.cache_ref == "123456789012.dkr.ecr.us-east-1.amazonaws.com/team/svc:buildcache"


def test_secrets_name_environment_variables(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        GOOD.replace('build_args: {A: "1"}', 'build_args: {A: "1"}\n    secrets: {npm: NPM_TOKEN}\n    cache: none'),
    )
    app = load_targets(p).get("app")
    assert app.secrets == {"npm": "NPM_TOKEN"} and app.cache_ref is None
    p = write(tmp_path, GOOD.replace('build_args: {A: "1"}', 'secrets: {npm: "not a var"}'))
    with pytest.raises(TargetsFileError, match=r"target 'app', field 'secrets'.*not an environment variable name"):
        load_targets(p)


@pytest.mark.parametrize(
    ("replace", "field"),
    [
        ("span_size: 1048576", "soci.span_size"),
        ("format: v1", "soci.format"),
        ("repository: 123456789012.dkr.ecr.us-east-1.amazonaws.com/team/svc", "repository"),
        ("platforms: [linux/amd64, linux/arm64/v8]", "platforms"),
        ("sample: 3", "verify.sample"),
    ],
)
def test_bad_field_names_file_target_and_field(tmp_path: Path, replace: str, field: str) -> None:
    bad = {
        "span_size: 1048576": "span_size: -5",
        "format: v1": "format: v3",
        "repository: 123456789012.dkr.ecr.us-east-1.amazonaws.com/team/svc": "repository: Team/Svc:latest",
        "platforms: [linux/amd64, linux/arm64/v8]": "platforms: [amd64]",
        "sample: 3": "sample: many",
    }[replace]
    p = write(tmp_path, GOOD.replace(replace, bad))
    with pytest.raises(TargetsFileError) as exc:
        load_targets(p)
    msg = str(exc.value)
    assert str(p) in msg
    assert "target 'svc'" in msg
    assert f"field '{field}'" in msg


def test_unknown_field_and_both_sources_rejected(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD.replace("build_args: {A: \"1\"}", "buildargs: {A: \"1\"}"))
    with pytest.raises(TargetsFileError, match=r"target 'app', field 'buildargs'"):
        load_targets(p)
    p = write(tmp_path, GOOD.replace("source: {local: ./ctx}", "source: {local: ./ctx, git: {repo: x}}"))
    with pytest.raises(TargetsFileError, match=r"target 'app', field 'source'.*exactly one"):
        load_targets(p)


def test_duplicate_names_and_missing_file(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD.replace("name: svc", "name: app"))
    with pytest.raises(TargetsFileError, match="used twice"):
        load_targets(p)
    with pytest.raises(TargetsFileError, match="nope.yaml"):
        load_targets(tmp_path / "nope.yaml")


def test_env_var_overrides_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = write(tmp_path, GOOD)
    monkeypatch.setenv("STREAMABLE_TARGETS", str(p))
    assert load_targets().path == p
    with pytest.raises(KeyError, match="known: app, svc"):
        load_targets().get("other")


def test_platform_mismatch_is_refused_unless_the_target_opts_out(tmp_path: Path) -> None:
    assert load_targets(write(tmp_path, GOOD)).get("app").allow_platform_mismatch is False
    p = write(tmp_path, GOOD.replace('build_args: {A: "1"}', 'build_args: {A: "1"}\n    allow_platform_mismatch: true'))
    assert load_targets(p).get("app").allow_platform_mismatch is True
    p = write(tmp_path, GOOD.replace('build_args: {A: "1"}', 'allow_platform_mismatch: sometimes'))
    with pytest.raises(TargetsFileError, match="allow_platform_mismatch"):
        load_targets(p)
