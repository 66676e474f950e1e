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
    _stamp(workdir, start="1")  # this pid, but a process started at tick 1
    assert not scratch.owner_alive(workdir)
    assert scratch.reclaim_stale(tmp_path).directories == [str(workdir)]
    assert not workdir.exists()


def _stamp(workdir: Path, **fields: str) -> None:
    """Rewrite `workdir`'s owner stamp with some fields replaced."""
    pid, start, namespace, boot = (workdir / scratch.OWNER_FILE).read_text().split()
    values = {"pid": pid, "start": start, "namespace": namespace, "boot": boot, **fields}
    (workdir / scratch.OWNER_FILE).write_text(" ".join(values[k] for k in ("pid", "start", "namespace", "boot")))


def test_stamps_prove_death_only_in_our_pid_namespace_and_boot(tmp_path: Path) -> None:
    workdir = scratch.create(tmp_path)
    _stamp(workdir, start="1")
    assert not scratch.owner_alive(workdir)  # same namespace, same boot, no such process: dead
    _stamp(workdir, namespace="pid:[1]")
    assert scratch.owner_alive(workdir)  # another pid namespace (a container sharing the dir): cannot tell
    _stamp(workdir, boot="00000000-0000-0000-0000-000000000000")
    assert not scratch.owner_alive(workdir)  # an earlier boot: dead, and its mounts went with it
    for unknown in ({"start": "None"}, {"namespace": "None"}, {"boot": "None"}):
        fresh = scratch.create(tmp_path)
        _stamp(fresh, **{"start": "1", **unknown})
        assert scratch.owner_alive(fresh), unknown  # no /proc when it was written: keep


def test_only_our_own_private_directories_are_swept(tmp_path: Path) -> None:
    """In a shared root like /var/tmp, nobody else's directory or symlink can steer the root-run sweep."""
    root = tmp_path / "root"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep").write_text("x")
    victims = []
    for name, make in (
        ("link", lambda d: d.symlink_to(elsewhere)),
        ("foreign", lambda d: (d.mkdir(), os.chown(d, 65534, 65534))),
        ("open", lambda d: (d.mkdir(), d.chmod(0o755))),
    ):
        root.mkdir(exist_ok=True)
        path = root / (scratch.PREFIX + name)
        make(path)
        if not path.is_symlink():
            (path / scratch.OWNER_FILE).write_text("1 1 " + scratch._pid_namespace() + " " + str(scratch._boot_id()))
        victims.append(path)
    assert scratch.reclaim_stale(root) == scratch.Reclaimed()
    assert all(os.path.lexists(v) for v in victims) and (elsewhere / "keep").exists()

    own = scratch.create(root)  # a dead owner's own directory whose backing file is a symlink: files go, no losetup
    _stamp(own, start="1")
    target = elsewhere / "some-other.img"
    target.write_bytes(b"\0" * 4096)
    (own / scratch.BACKING_FILE).symlink_to(target)
    done = scratch.reclaim_stale(root)
    assert done.directories == [str(own)] and done.detached == [] and target.exists()


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


def _processes_under(root: Path) -> list[int]:
    """Pids whose command line names a path under `root` (the sandbox: unshare, strace, launcher)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if str(root).encode() in cmdline:
                found.append(int(entry.name))
    return found


def test_a_killed_recorder_takes_its_sandbox_with_it(client, registry, busybox, tmp_path: Path) -> None:
    from tests.resources.startup.images import push_image

    push_image(client, "t/sleeper", "v1", [busybox], config={"Cmd": ["/bin/sleep", "600"]})
    root = tmp_path / "work"
    child = textwrap.dedent(
        f"""
        from pathlib import Path
        from resources.oci.refs import ImageRef
        from resources.registry import RegistryClient
        from resources.startup.recorder import StartupRecorder
        with RegistryClient({registry.addr!r}) as client:
            StartupRecorder(client, work_root=Path({str(root)!r})).record(
                ImageRef.parse({registry.addr + "/t/sleeper:v1"!r}), timeout_s=600
            )
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", child], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        deadline = time.monotonic() + 60
        while len(_processes_under(root)) < 2 and time.monotonic() < deadline:  # unshare, strace, the program
            assert proc.poll() is None, "the recorder ended before its sandbox started"
            time.sleep(0.05)
        sandbox = _processes_under(root)
        assert len(sandbox) >= 2, sandbox
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    deadline = time.monotonic() + 10
    while _processes_under(root) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = _processes_under(root)
    for pid in left:  # never leave a sleeper (or, through it, a mount) behind, even when the assertion fails
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.2 if left else 0)
    logged: list[str] = []
    reclaimed = scratch.reclaim_stale(root, logged.append)
    assert left == [], "the sandbox outlived its recorder"
    assert len(reclaimed.directories) == 1 and reclaimed.unmounted, logged  # and the next run converges
    assert list(root.iterdir()) == []
