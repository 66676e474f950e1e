"""A recorder killed with SIGKILL leaves a mounted loop device; the next recording reclaims it, and only it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from resources.startup import scratch

REPO = Path(__file__).resolve().parents[3]


def _loop_devices(backing: Path) -> list[str]:
    out = subprocess.run(
        ["losetup", "--list", "--noheadings", "--output", "NAME", "--associated", str(backing)],
        capture_output=True, text=True, check=True,
    )
    return out.stdout.split()


def _killed_recorder(root: Path, prefix: tuple[str, ...] = ()) -> Path:
    """Run what a recorder does up to the mounted rootfs in a child (under `prefix`), SIGKILL it there; returns its
    scratch dir."""
    child = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from resources.startup import scratch
        from resources.startup.loopfs import no_readahead_mount
        workdir = scratch.create(Path({str(root)!r}))
        with no_readahead_mount(workdir, 0) as rootfs:
            (rootfs / "file").write_bytes(b"x" * 4096)
            print(workdir, flush=True)
            time.sleep(600)
        """
    )
    proc = subprocess.Popen([*prefix, sys.executable, "-c", child], cwd=REPO, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert proc.stdout is not None
        workdir = Path(proc.stdout.readline().strip())
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    return workdir


def test_sigkilled_recorder_scratch_is_unmounted_detached_and_removed(tmp_path: Path) -> None:
    root = tmp_path / "work"
    workdir = _killed_recorder(root)
    backing, mountpoint = workdir / scratch.BACKING_FILE, workdir / scratch.MOUNTPOINT
    try:
        assert os.path.ismount(mountpoint), "the killed recorder's rootfs should still be mounted"
        devices = _loop_devices(backing)
        assert len(devices) == 1
        assert not scratch.owner_alive(workdir)

        mine = scratch.create(root)  # a live recording next to it is not touched
        logged: list[str] = []
        done = scratch.reclaim_stale(root, logged.append)

        assert done.directories == [str(workdir)]
        assert done.unmounted == [str(mountpoint)] and done.detached == devices
        assert not workdir.exists() and not os.path.ismount(mountpoint)
        assert _loop_devices(backing) == []
        assert mine.is_dir() and scratch.owner_alive(mine)
        assert logged and str(workdir) in logged[0] and devices[0] in logged[0]
        assert scratch.reclaim_stale(root) == scratch.Reclaimed()  # converged: nothing left to do
    finally:  # never leave a loop device behind, whatever failed above
        subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True, check=False)
        for device in _loop_devices(backing) if backing.exists() else []:
            subprocess.run(["losetup", "-d", device], capture_output=True, check=False)


def test_a_recorder_killed_in_its_own_mount_namespace_leaves_no_loop_device(tmp_path: Path) -> None:
    """As in a pod: the mount dies with the namespace, and the loop device (autoclear) with the mount."""
    workdir = _killed_recorder(tmp_path / "work", ("unshare", "--mount", "--propagation", "private"))
    backing = workdir / scratch.BACKING_FILE
    try:
        deadline = time.monotonic() + 10
        while _loop_devices(backing) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _loop_devices(backing) == []
        assert not os.path.ismount(workdir / scratch.MOUNTPOINT)
        assert scratch.reclaim_stale(tmp_path / "work").directories == [str(workdir)]  # the files go at the next run
    finally:
        for device in _loop_devices(backing) if backing.exists() else []:
            subprocess.run(["losetup", "-d", device], capture_output=True, check=False)


def test_a_reused_pid_is_not_taken_for_the_owner(tmp_path: Path) -> None:
    workdir = scratch.create(tmp_path)
    assert scratch.owner_alive(workdir)
    (workdir / scratch.OWNER_FILE).write_text(f"{os.getpid()} 1\n")  # this pid, but a process started at tick 1
    assert not scratch.owner_alive(workdir)
    assert scratch.reclaim_stale(tmp_path).directories == [str(workdir)]
    assert not workdir.exists()


def test_unknown_directories_are_left_alone(tmp_path: Path) -> None:
    unstamped = tmp_path / (scratch.PREFIX + "old")
    unstamped.mkdir()
    other = tmp_path / "not-ours"
    other.mkdir()
    (other / scratch.OWNER_FILE).write_text("1 1\n")
    assert scratch.reclaim_stale(tmp_path) == scratch.Reclaimed()
    assert unstamped.is_dir() and other.is_dir()
    assert scratch.reclaim_stale(tmp_path / "missing") == scratch.Reclaimed()


def test_the_next_recording_reclaims_a_killed_ones_scratch(client, registry, busybox, tmp_path: Path) -> None:
    from resources.oci.refs import ImageRef
    from resources.startup.recorder import StartupRecorder
    from tests.resources.startup.images import push_image

    root = tmp_path / "work"
    workdir = _killed_recorder(root)
    backing = workdir / scratch.BACKING_FILE
    try:
        push_image(client, "t/scratch", "v1", [busybox], config={"Cmd": ["/bin/true"]})
        logged: list[str] = []
        recorder = StartupRecorder(client, work_root=root, log_fn=logged.append)
        recording = recorder.record(ImageRef.parse(f"{registry.addr}/t/scratch:v1"))
        assert recording.profile.stopped_by == "exit"
        assert not workdir.exists() and _loop_devices(backing) == []
        assert any(str(workdir) in line for line in logged)
        assert list(root.iterdir()) == []  # the recording's own scratch is gone too
    finally:
        subprocess.run(["umount", "-l", str(workdir / scratch.MOUNTPOINT)], capture_output=True, check=False)
        for device in _loop_devices(backing) if backing.exists() else []:
            subprocess.run(["losetup", "-d", device], capture_output=True, check=False)
