"""The settings model: every STREAMABLE_* variable read once, bad values named, secrets never held."""

from __future__ import annotations

import pytest

from pipelines.settings import SettingError, Settings, load_settings, variable_name


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in [variable_name(f) for f in Settings.model_fields] + ["STREAMABLE_GIT_PASSWORD",
                                                                      "STREAMABLE_REGISTRY_PASSWORD"]:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_defaults_and_derived_values(env: pytest.MonkeyPatch) -> None:
    s = load_settings()
    assert s.env == "local" and s.state_root == ".streamable" and s.soci_filter_list == ["*:*"]
    assert s.gc_policy_file_list is None and s.builder_discovery == "statefulset"
    env.setenv("STREAMABLE_ENV", "eks")
    env.setenv("STREAMABLE_SOCI_FILTERS", "team/*:v*, other:latest ,")
    env.setenv("STREAMABLE_GC_POLICY_FILES", "")  # blank counts as not set
    env.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    s = load_settings()
    assert s.state_root == "/tmp/streamable" and s.soci_filter_list == ["team/*:v*", "other:latest"]
    assert s.gc_policy_file_list is None and s.region == "eu-west-1"


def test_bad_values_name_the_variable(env: pytest.MonkeyPatch) -> None:
    env.setenv("STREAMABLE_ENV", "prod")
    with pytest.raises(SettingError, match=r"STREAMABLE_ENV='prod' is not one of: local, eks"):
        load_settings()
    env.setenv("STREAMABLE_ENV", "local")
    env.setenv("STREAMABLE_BUILDER_MAX_PARALLEL", "two")
    with pytest.raises(SettingError, match=r"^STREAMABLE_BUILDER_MAX_PARALLEL: .*integer"):
        load_settings()
    env.delenv("STREAMABLE_BUILDER_MAX_PARALLEL")
    env.setenv("STREAMABLE_INFLATE_LIBRARY", "libdeflate")
    with pytest.raises(SettingError, match=r"STREAMABLE_INFLATE_LIBRARY must be 'auto', 'zlib-ng' or 'zlib', got"):
        load_settings()
    env.setenv("STREAMABLE_INFLATE_LIBRARY", "ZLIB")  # as resources/soci/ztoc/zlib_ctypes.py reads it
    assert load_settings().inflate_library == "zlib"


def test_required_settings_name_the_variable(env: pytest.MonkeyPatch) -> None:
    with pytest.raises(SettingError, match=r"STREAMABLE_IO_BUCKET is not set: needed"):
        load_settings().require("io_bucket", "needed")
    assert variable_name("aws_region") == "AWS_REGION"


def test_secrets_are_only_seen_as_present(env: pytest.MonkeyPatch) -> None:
    env.setenv("STREAMABLE_GIT_PASSWORD", "s3cr3t-token")
    s = load_settings()
    assert s.git_password_set and not s.registry_password_set
    assert "s3cr3t-token" not in repr(s) and "s3cr3t-token" not in s.model_dump_json()
