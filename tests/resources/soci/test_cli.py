"""The `streamable soci ...` console script, run as a subprocess against real registries."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from resources.oci import media_types as mt
from resources.soci.ztoc.builder import ZtocBuilder
from tests.conftest import free_port

from .conftest import ImageFactory, gzip_layer, random_bytes, text_bytes

STREAMABLE = Path(sys.executable).parent / "streamable"


def run(*args: str, env: dict[str, str] | None = None, tmp: Path | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "STREAMABLE_REGISTRY_PASSWORD"}
    if tmp is not None:
        base["DOCKER_CONFIG"] = str(tmp / "no-docker-config")
    base.update(env or {})
    return subprocess.run([str(STREAMABLE), *args], capture_output=True, text=True, env=base, timeout=300)


def _assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 2, proc
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("streamable: error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0]


def test_console_script_is_installed() -> None:
    assert STREAMABLE.exists()
    proc = run("soci", "--help")
    assert proc.returncode == 0 and "convert" in proc.stdout and "verify" in proc.stdout


def test_ztoc_and_inspect_a_local_layer(tmp_path: Path) -> None:
    layer = gzip_layer({"srv/a.bin": random_bytes(200_000, 1), "srv/b.txt": text_bytes(50_000, 2)})
    layer_file = tmp_path / "layer.tar.gz"
    layer_file.write_bytes(layer.blob)
    out = tmp_path / "layer.ztoc"
    proc = run("soci", "ztoc", str(layer_file), "--media-type", mt.OCI_LAYER_GZIP, "--span-size", "65536",
               "--build-tool-identifier", "cli-test", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    direct = ZtocBuilder(span_size=65536, build_tool_identifier="cli-test").build([layer.blob], mt.OCI_LAYER_GZIP)
    assert out.read_bytes() == direct.data
    assert summary["ztoc_digest"] == direct.digest and summary["layer_digest"] == layer.digest
    assert summary["spans"] == direct.ztoc.compression.max_span_id + 1 and summary["files"] == 3
    assert proc.stderr == ""  # no progress when stderr is not a terminal

    inspected = run("soci", "inspect", str(out))
    assert inspected.returncode == 0, inspected.stderr
    assert "build tool 'cli-test'" in inspected.stdout and "span size 65536" in inspected.stdout
    assert "srv/a.bin" in inspected.stdout and "entries 3: dir 1, reg 2" in inspected.stdout


def test_ztoc_of_a_zstd_layer_is_a_clear_error(tmp_path: Path) -> None:
    blob = tmp_path / "layer.zst"
    blob.write_bytes(b"\x28\xb5\x2f\xfd" + b"\0" * 100)
    proc = run("soci", "ztoc", str(blob), "--media-type", mt.OCI_LAYER_ZSTD, "-o", str(tmp_path / "o"))
    _assert_one_line_error(proc, "zstd")
    assert not (tmp_path / "o").exists()


def test_convert_verify_inspect(images: ImageFactory, tmp_path: Path) -> None:
    src = images.push_image("cli/app", "1", [gzip_layer({"app/model.bin": random_bytes(300_000, 3)})]).ref
    dst = src.with_tag("1-soci")
    proc = run("soci", "convert", str(src), str(dst), "--min-layer-size", "1000", "--span-size", "65536", tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["destination"] == str(dst) and result["layers_built"] == 1
    assert result["platforms"][0]["soci_index_digest"].startswith("sha256:")

    verified = run("soci", "verify", str(dst), "--sample", "2", "--file", "/app/model.bin", tmp=tmp_path)
    assert verified.returncode == 0, verified.stderr
    report = json.loads(verified.stdout)
    assert report["passed"] is True and report["image_digest"] == result["image_digest"]

    inspected = run("soci", "inspect", str(dst), tmp=tmp_path)
    assert inspected.returncode == 0, inspected.stderr
    assert result["platforms"][0]["soci_index_digest"] in inspected.stdout and "app/model.bin" in inspected.stdout

    plain = run("soci", "verify", str(src), tmp=tmp_path)
    assert plain.returncode == 1
    assert json.loads(plain.stdout)["passed"] is False
    assert "would not lazy-load" in plain.stderr and "no SOCI index found" in plain.stderr


def test_empty_index_and_bad_arguments_are_one_line_errors(images: ImageFactory, tmp_path: Path) -> None:
    src = images.push_image("cli/tiny", "1", [gzip_layer({"x": b"tiny"})]).ref
    _assert_one_line_error(
        run("soci", "convert", str(src), str(src.with_tag("s")), tmp=tmp_path), "not lazily loadable", str(src)
    )
    _assert_one_line_error(run("soci", "convert", "UPPER/Case:tag", "a/b:c", tmp=tmp_path), "invalid")
    _assert_one_line_error(
        run("soci", "convert", str(src), str(src.with_tag("s")), "--platform", "linux/", tmp=tmp_path),
        "invalid platform",
    )
    both = run("soci", "convert", str(src), "x/y:z", "--platform", "linux/amd64", "--all-platforms")
    assert both.returncode == 2 and "not allowed with argument" in both.stderr


def test_unreachable_registry(tmp_path: Path) -> None:
    addr = f"127.0.0.1:{free_port()}"
    _assert_one_line_error(run("soci", "verify", f"{addr}/a/b:1", tmp=tmp_path), addr)


def test_credentials_come_from_the_environment_never_argv(auth_registry, tmp_path: Path) -> None:
    factory = ImageFactory(auth_registry)
    src = factory.push_image("cli/private", "1", [gzip_layer({"p.bin": random_bytes(100_000, 5)})]).ref
    factory.client.close()
    args = (
        "soci",
        "convert",
        str(src),
        str(src.with_tag("soci")),
        "--min-layer-size",
        "1000",
        "--username",
        "streamable",
    )

    missing = run(*args, tmp=tmp_path)
    _assert_one_line_error(missing, "STREAMABLE_REGISTRY_PASSWORD")

    wrong = run(*args, env={"STREAMABLE_REGISTRY_PASSWORD": "not-the-password-123"}, tmp=tmp_path)
    _assert_one_line_error(wrong, auth_registry.addr)
    assert "not-the-password-123" not in wrong.stdout + wrong.stderr

    assert auth_registry.password is not None
    ok = run(*args, env={"STREAMABLE_REGISTRY_PASSWORD": auth_registry.password}, tmp=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert auth_registry.password not in ok.stdout + ok.stderr
    assert json.loads(ok.stdout)["layers_built"] == 1

    anonymous = run("soci", "verify", str(src.with_tag("soci")), tmp=tmp_path)
    _assert_one_line_error(anonymous, auth_registry.addr)


@pytest.mark.parametrize("flag", ["--password", "-p"])
def test_there_is_no_password_flag(flag: str) -> None:
    proc = run("soci", "convert", "a/b:c", "a/b:d", flag, "secret")
    assert proc.returncode == 2 and "unrecognized arguments" in proc.stderr


class _Terminal(io.StringIO):
    """Captured output that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_verify_prints_a_summary_on_a_terminal_and_json_with_flag(images: ImageFactory) -> None:
    from resources.cli import main

    src = images.push_image("cli/sum", "1", [gzip_layer({"app/model.bin": random_bytes(300_000, 3)})]).ref
    dst = src.with_tag("1-soci")
    assert main(["soci", "convert", str(src), str(dst), "--min-layer-size", "1000", "--span-size", "65536"],
                io.StringIO(), io.StringIO()) == 0
    out, err = _Terminal(), io.StringIO()
    assert main(["soci", "verify", str(dst), "--file", "/app/model.bin"], out, err) == 0
    text = out.getvalue()
    assert "PASS: would lazy-load [complete check]" in text and "proven 1" in text and "cold start of" in text
    assert not text.lstrip().startswith("{")
    out = _Terminal()
    assert main(["soci", "verify", str(dst), "--json", "--quick"], out, io.StringIO()) == 0
    report = json.loads(out.getvalue())
    assert report["passed"] is True and report["mode"] == "quick"
    out = _Terminal()
    assert main(["soci", "verify", str(src)], out, io.StringIO()) == 1
    assert "FAIL: would not lazy-load" in out.getvalue() and "no SOCI index found" in out.getvalue()
