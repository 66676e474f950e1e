"""The recorder on real images in a real registry: exact file sets, layer attribution, stop conditions, errors."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from resources.oci.refs import ImageRef
from resources.registry import RegistryClient
from resources.startup.errors import (
    MissingCommandError,
    NotReadyError,
    ProgramCrashedError,
)
from resources.startup.recorder import StartupRecorder
from resources.startup.sandbox import Readiness
from tests.conftest import RunningRegistry
from tests.resources.startup.images import Entry, Layer, layer, push_image

DATA = layer(
    [
        Entry("data", is_dir=True),
        Entry("data/a", b"A" * 10000),
        Entry("data/b", b"B" * 5),
        Entry("data/unused", b"U" * 100),
        Entry("data/empty", b""),
    ]
)


def _image(
    client: RegistryClient,
    registry: RunningRegistry,
    busybox: Layer,
    config: dict,
    extra: list[Layer] = (),
    name: str = "app",
) -> ImageRef:
    push_image(client, f"t/{name}", "v1", [busybox, DATA, *extra], config=config)
    return ImageRef.parse(f"{registry.addr}/t/{name}:v1")


def _paths(profile) -> dict[str, str]:
    return {f.path: f.kind for f in profile.files}


def test_entrypoint_reads_exactly_its_files(client, registry, busybox, recorder: StartupRecorder) -> None:
    ref = _image(client, registry, busybox, {"Entrypoint": ["/bin/cat", "/data/a"], "Cmd": ["/data/b", "/data/empty"]})
    rec = recorder.record(ref)
    p = rec.profile
    assert _paths(p) == {"/bin/busybox": "command", "/data/a": "file", "/data/b": "file", "/data/empty": "file"}
    assert p.files[0].path == "/bin/busybox"  # the command is first, then files in the order read
    assert [f.path for f in p.files][1:] == ["/data/a", "/data/b", "/data/empty"]
    by = {f.path: f for f in p.files}
    assert (
        by["/data/a"].ranges == ((0, 10000),) and by["/data/b"].ranges == ((0, 5),) and by["/data/empty"].ranges == ()
    )
    assert by["/data/a"].layer_digest == DATA.digest and by["/bin/busybox"].layer_digest == busybox.digest
    assert p.command == ("/bin/cat", "/data/a", "/data/b", "/data/empty") and p.stopped_by == "exit"
    assert rec.still_cached_before_run == 0
    assert p.manifest_digest == client.head_manifest("t/app", "v1").digest and p.platform == "linux/amd64"


def test_script_entrypoint_lists_script_and_interpreter(client, registry, busybox, recorder) -> None:
    script = layer([Entry("app", is_dir=True), Entry("app/run", b"#!/bin/sh\ncat /data/b\n", 0o755)])
    ref = _image(client, registry, busybox, {"Entrypoint": ["/app/run"]}, [script])
    p = recorder.record(ref).profile
    assert _paths(p) == {"/app/run": "command", "/bin/busybox": "command", "/data/b": "file"}


def test_explicit_command_env_and_workdir(client, registry, busybox, recorder) -> None:
    ref = _image(
        client, registry, busybox, {"Entrypoint": ["/bin/cat", "/data/a"], "Env": ["WHICH=b"], "WorkingDir": "/data"}
    )
    rec = recorder.record(ref, command=("sh", "-c", 'cat "$WHICH"; echo; echo "cwd=$(pwd)"'))
    assert set(_paths(rec.profile)) == {"/bin/busybox", "/data/b"}
    assert "cwd=/data" in rec.output_tail


def test_ready_log_stops_a_server(client, registry, busybox, recorder) -> None:
    ref = _image(
        client, registry, busybox, {"Entrypoint": ["/bin/sh", "-c", "cat /data/b; echo server READY; sleep 60"]}
    )
    started = time.monotonic()
    p = recorder.record(ref, readiness=Readiness(log=r"server READY"), timeout_s=30).profile
    assert p.stopped_by == "ready_log" and time.monotonic() - started < 20
    assert set(_paths(p)) == {"/bin/busybox", "/data/b"}


def test_ready_tcp_port_inside_the_sandbox(client, registry, busybox, recorder) -> None:
    ref = _image(client, registry, busybox, {"Entrypoint": ["/bin/sh", "-c", "cat /data/b; exec nc -l -p 8080"]})
    p = recorder.record(ref, readiness=Readiness(tcp_port=8080), timeout_s=30).profile
    assert p.stopped_by == "ready_tcp"
    assert set(_paths(p)) == {"/bin/busybox", "/data/b"}


def test_ready_exit_and_timeout_without_readiness(client, registry, busybox, recorder) -> None:
    ref = _image(client, registry, busybox, {"Entrypoint": ["/bin/sh", "-c", "cat /data/b; sleep 60"]})
    p = recorder.record(ref, timeout_s=2).profile  # no readiness: a timeout ends the run and is recorded
    assert p.stopped_by == "timeout" and 1500 <= p.duration_ms < 15000
    assert set(_paths(p)) == {"/bin/busybox", "/data/b"}
    p = recorder.record(ref, command=("/bin/cat", "/data/a"), readiness=Readiness(exit=True), timeout_s=30).profile
    assert p.stopped_by == "exit"


def test_crash_is_an_error_with_the_last_output_lines(client, registry, busybox, recorder) -> None:
    ref = _image(
        client,
        registry,
        busybox,
        {"Entrypoint": ["/bin/sh", "-c", "echo loading model; echo fatal: no GPU >&2; exit 3"]},
    )
    with pytest.raises(ProgramCrashedError, match="exited with status 3") as err:
        recorder.record(ref)
    assert "fatal: no GPU" in str(err.value) and "loading model" in str(err.value)


def test_missing_command_is_an_error(client, registry, busybox, recorder) -> None:
    ref = _image(client, registry, busybox, {"Entrypoint": ["/usr/bin/serve"]})
    with pytest.raises(MissingCommandError, match="/usr/bin/serve"):
        recorder.record(ref)
    with pytest.raises(MissingCommandError, match="'gunicorn' not found.*PATH"):
        recorder.record(ref, command=("gunicorn", "app:main"))
    bare = _image(client, registry, busybox, {}, name="bare")
    with pytest.raises(MissingCommandError, match="defines no Entrypoint or Cmd"):
        recorder.record(bare)


def test_timeout_without_readiness_is_an_error(client, registry, busybox, recorder) -> None:
    ref = _image(client, registry, busybox, {"Entrypoint": ["/bin/sh", "-c", "echo waiting for a database; sleep 60"]})
    with pytest.raises(NotReadyError, match="not ready after 2s") as err:
        recorder.record(ref, readiness=Readiness(log="listening"), timeout_s=2)
    assert "waiting for a database" in str(err.value)
    with pytest.raises(NotReadyError, match="exited with status 0 before it was ready"):
        recorder.record(ref, command=("/bin/true",), readiness=Readiness(tcp_port=8080), timeout_s=10)


def test_the_sandbox_has_no_network(client, registry, busybox, recorder) -> None:
    host = socket.socket()
    host.bind(("127.0.0.1", 0))
    host.listen(1)
    host.settimeout(3)
    port = host.getsockname()[1]
    accepted: list[object] = []

    def accept() -> None:
        try:
            accepted.append(host.accept())
        except OSError:
            pass

    t = threading.Thread(target=accept)
    t.start()
    script = (
        f"cat /proc/net/dev; if nc -w 2 127.0.0.1 {port} </dev/null; then echo CONNECTED; else echo REFUSED; fi;"
        "ls /sys/class/net 2>/dev/null; true"
    )
    ref = _image(client, registry, busybox, {"Entrypoint": ["/bin/sh", "-c", script]})
    rec = recorder.record(ref, timeout_s=20)
    t.join()
    host.close()
    assert accepted == [], "a program in the sandbox reached a port on the host's loopback"
    assert "REFUSED" in rec.output_tail and "CONNECTED" not in rec.output_tail
    interfaces = [
        line.split(":")[0].strip() for line in rec.output_tail if ":" in line and "|" not in line and "nc" not in line
    ]
    assert interfaces == ["lo"], rec.output_tail


def test_image_user_and_home(client, registry, busybox, recorder) -> None:
    ref = _image(
        client,
        registry,
        busybox,
        {"Entrypoint": ["/bin/sh", "-c", 'echo "id=$(id -u):$(id -g) home=$HOME"; cat /data/b'], "User": "nobody"},
    )
    rec = recorder.record(ref)
    assert "id=65534:65534 home=/" in rec.output_tail[0]
