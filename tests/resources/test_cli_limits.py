"""Bounds on every numeric CLI flag and targets field, `--timeout`, and inputs that never end (issue 11)."""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from resources.cli import _image_ref
from resources.oci import media_types as mt
from resources.release.targets import TargetsFileError, load_targets
from tests.conftest import RunningRegistry, free_port
from tests.support.registry_helpers.fault_proxy import Fault, FaultProxy, fault_proxy

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "STREAMABLE_REGISTRY_PASSWORD"}
    env["PYTHONPATH"] = str(ROOT)
    env["DOCKER_CONFIG"] = "/nonexistent-docker-config"
    return subprocess.run([sys.executable, "-m", "resources.cli", *args], capture_output=True, text=True, env=env,
                          check=False, timeout=timeout, cwd=ROOT)


def assert_clear_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 2, proc
    assert "Traceback" not in proc.stderr and "struct.error" not in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


@pytest.mark.parametrize("media_type", [mt.OCI_LAYER_GZIP, mt.OCI_LAYER_TAR])
def test_huge_span_size_is_refused_before_reading_the_layer(tmp_path: Path, media_type: str) -> None:
    from tests.resources.soci.conftest import tar_bytes

    tar = tar_bytes({"a.txt": b"hello" * 1000})
    layer = tmp_path / "layer"
    layer.write_bytes(gzip.compress(tar) if media_type == mt.OCI_LAYER_GZIP else tar)
    proc = run("soci", "ztoc", str(layer), "--media-type", media_type, "--span-size",
               "9223372036854775808", "-o", str(tmp_path / "out"))
    assert_clear_error(proc, "--span-size 9223372036854775808 is out of range", "64 KiB..1 GiB")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("flag", "value", "allowed"),
    [("--span-size", "1024", "64 KiB..1 GiB"), ("--span-size", "-1", "64 KiB..1 GiB"),
     ("--min-layer-size", "-1", "0 bytes..1 TiB"), ("--min-layer-size", str(1 << 50), "0 bytes..1 TiB"),
     ("--retries", "1000", "0..20"), ("--timeout", "0", "1 s..86400 s")],
)
def test_convert_flags_out_of_range_name_the_limit(flag: str, value: str, allowed: str) -> None:
    closed = f"127.0.0.1:{free_port()}"
    proc = run("soci", "convert", f"{closed}/team/app:v1", f"{closed}/team/app:soci", flag, value)
    assert_clear_error(proc, f"{flag} {value} is out of range", allowed)


def test_verify_sample_and_inspect_entries_are_bounded() -> None:
    closed = f"127.0.0.1:{free_port()}"
    assert_clear_error(run("soci", "verify", f"{closed}/team/app:v1", "--sample", "99999999"), "0 files..10000 files")
    assert_clear_error(run("soci", "inspect", f"{closed}/team/app:v1", "--entries", "-3"), "0 entries..1000000 entries")


def test_ztoc_of_an_endless_device_ends_with_a_clear_error(tmp_path: Path) -> None:
    start = time.monotonic()
    proc = run("soci", "ztoc", "/dev/zero", "--media-type", mt.OCI_LAYER_TAR, "-o", str(tmp_path / "out"), timeout=30)
    assert_clear_error(proc, "/dev/zero is not a regular file")
    assert time.monotonic() - start < 30


@pytest.fixture
def drip_proxy(registry: RunningRegistry) -> Iterator[FaultProxy]:
    with fault_proxy(registry.addr) as p:
        yield p


def test_timeout_flag_ends_a_stalled_command(drip_proxy: FaultProxy) -> None:
    # no such tag: the registry's 404 error body (about 100 bytes) is dripped one byte a second
    drip_proxy.add(Fault(path=r"/manifests/v1", method="GET", kind="drip", delay=1.0, times=100))
    start = time.monotonic()
    proc = run("soci", "verify", f"{drip_proxy.addr}/team/app:v1", "--timeout", "3", "--retries", "0", timeout=60)
    elapsed = time.monotonic() - start
    assert_clear_error(proc, "3 s deadline", drip_proxy.addr)
    assert elapsed < 15, elapsed


BOUNDED_TARGETS = """targets:
  - name: app
    source: {local: .}
    repository: 127.0.0.1:5055/team/app
    soci: {span_size: 4194304, min_layer_size: 10485760}
    verify: {sample: 8}
"""


def test_targets_bounds_name_the_limit(tmp_path: Path) -> None:
    good = BOUNDED_TARGETS
    load_targets_text_ok = tmp_path / "ok.yaml"
    load_targets_text_ok.write_text(good)
    load_targets(load_targets_text_ok)  # the unchanged file is valid: only the bad values below fail
    for old, new, limit in [("span_size: 4194304", "span_size: 9223372036854775808", "1073741824"),
                            ("span_size: 4194304", "span_size: 4096", "65536"),
                            ("sample: 8", "sample: 123456", "10000"),
                            ("min_layer_size: 10485760", f"min_layer_size: {1 << 50}", str(1 << 40))]:
        assert old in good
        path = tmp_path / "targets.yaml"
        path.write_text(good.replace(old, new))
        with pytest.raises(TargetsFileError) as exc:
            load_targets(path)
        assert limit in str(exc.value) and str(path) in str(exc.value)


def test_a_ref_without_a_host_is_said_to_mean_docker_hub() -> None:
    err = io.StringIO()
    ref = _image_ref("alpine:3", err)  # parsing only: nothing is contacted
    assert ref.registry == "docker.io" and "docker.io (Docker Hub)" in err.getvalue()
    quiet = io.StringIO()
    _image_ref(f"127.0.0.1:{free_port()}/team/app:v1", quiet)
    assert quiet.getvalue() == ""
