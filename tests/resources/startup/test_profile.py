"""The profile contract (version 1): round trip, exact field set, and errors that name the field."""

from __future__ import annotations

import json

import pytest

from resources.startup.errors import ProfileFormatError
from resources.startup.profile import ProfiledFile, StartupProfile

D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64


def _profile() -> StartupProfile:
    return StartupProfile(
        image="127.0.0.1:5000/app:v1",
        manifest_digest=D1,
        platform="linux/amd64",
        command=("/app/serve", "--port", "80"),
        stopped_by="ready_log",
        duration_ms=812.5,
        files=(
            ProfiledFile("/app/serve", D2, 9000, 0.0, ((0, 9000),), "command"),
            ProfiledFile("/lib64/ld-linux-x86-64.so.2", D2, 200000, 0.0, ((0, 8192), (16384, 20480)), "loader"),
            ProfiledFile("/models/model.bin", D1, 1 << 30, 12.25, ((0, 4096),), "file"),
            ProfiledFile("/etc/empty", D1, 0, 13.0, (), "file"),
        ),
    )


def test_round_trip_and_exact_shape() -> None:
    p = _profile()
    doc = json.loads(p.to_json())
    assert list(doc) == [
        "version",
        "image",
        "manifest_digest",
        "platform",
        "command",
        "stopped_by",
        "duration_ms",
        "files",
    ]
    assert list(doc["files"][0]) == ["path", "layer_digest", "size", "first_access_ms", "ranges", "kind"]
    assert doc["version"] == 1 and doc["files"][1]["ranges"] == [[0, 8192], [16384, 20480]]
    assert StartupProfile.from_json(p.to_json()) == p
    assert StartupProfile.from_json(p.to_json(indent=2)) == p
    assert p.bytes_read == 9000 + 8192 + 4096 + 4096


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d.pop("stopped_by"), "stopped_by"),
        (lambda d: d.update(extra=1), "extra"),
        (lambda d: d.update(version=2), "version"),
        (lambda d: d.update(stopped_by="crashed"), "stopped_by"),
        (lambda d: d.update(manifest_digest="sha256:abc"), "manifest_digest"),
        (lambda d: d.update(command=[]), "command"),
        (lambda d: d["files"][2].update(ranges=[[0, (1 << 30) + 1]]), "files[2].ranges[0]"),
        (lambda d: d["files"][1].update(ranges=[[16384, 20480], [0, 8192]]), "files[1].ranges[1]"),
        (lambda d: d["files"][1].update(ranges=[[5, 5]]), "files[1].ranges[0]"),
        (lambda d: d["files"][0].update(kind="library"), "files[0].kind"),
        (lambda d: d["files"][0].update(path="relative/x"), "files[0].path"),
        (lambda d: d["files"][3].pop("size"), "files[3].size"),
        (lambda d: d["files"][3].update(first_access_ms=1.0), "files[3].first_access_ms"),
        (lambda d: d["files"][3].update(path="/app/serve"), "files[3].path"),
        (lambda d: d["files"][0].update(size=True), "files[0].size"),
    ],
)
def test_bad_input_names_the_field(mutate, field: str) -> None:
    doc = json.loads(_profile().to_json())
    mutate(doc)
    with pytest.raises(ProfileFormatError, match=f"field '{field.replace('[', '.').replace(']', '.')}'") as err:
        StartupProfile.from_json(json.dumps(doc))
    assert field in str(err.value)


def test_not_json_and_not_an_object() -> None:
    with pytest.raises(ProfileFormatError, match="not JSON"):
        StartupProfile.from_json("{")
    with pytest.raises(ProfileFormatError, match="JSON object"):
        StartupProfile.from_json("[]")


def test_constructor_validates_too() -> None:
    with pytest.raises(ProfileFormatError, match="files.0..ranges.0."):
        StartupProfile(
            image="r/a:b",
            manifest_digest=D1,
            platform="linux/amd64",
            command=("x",),
            stopped_by="exit",
            duration_ms=1,
            files=(ProfiledFile("/a", D1, 10, 0.0, ((0, 11),)),),
        )
