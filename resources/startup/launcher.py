"""Inside the sandbox's namespaces: mount /proc and a minimal /dev, bring up lo, chroot, drop to the user, exec.

Run by the recorder as `python -I -S launcher.py SPEC.json` under `unshare --net --mount --pid --fork`
and `strace`; standard library only (it runs isolated from the project's path). The spec names the
root, working directory, uid/gid, argv[0]'s resolved path, argv and environment.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import socket
import struct
import sys

MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_PRIVATE = 0x2, 0x4, 0x8, 0x4000, 0x40000
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
_DEVICES = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8), "urandom": (1, 9), "tty": (5, 0)}
_libc = ctypes.CDLL(None, use_errno=True)


def _mount(source: str, target: str, fstype: str, flags: int, data: str = "") -> None:
    if _libc.mount(source.encode(), target.encode(), fstype.encode(), flags, data.encode() or None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {fstype} on {target}: {os.strerror(err)}")


def _loopback_up() -> None:
    """`ip link set lo up` in this (new, empty) network namespace: loopback only, no route out."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))


def _prepare(root: str) -> None:
    _mount("none", "/", "", MS_REC | MS_PRIVATE)
    proc, dev = os.path.join(root, "proc"), os.path.join(root, "dev")
    for d in (proc, dev):
        if os.path.islink(d):
            os.unlink(d)
        os.makedirs(d, exist_ok=True)
    _mount("proc", proc, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    _mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=755,size=65536k")
    for name, (major, minor) in _DEVICES.items():
        os.mknod(os.path.join(dev, name), 0o666 | 0o020000, os.makedev(major, minor))
        os.chmod(os.path.join(dev, name), 0o666)
    for i, name in enumerate(("stdin", "stdout", "stderr")):
        os.symlink(f"/proc/self/fd/{i}", os.path.join(dev, name))
    os.symlink("/proc/self/fd", os.path.join(dev, "fd"))
    os.makedirs(os.path.join(dev, "shm"), mode=0o1777, exist_ok=True)
    _loopback_up()


def main(spec_path: str) -> None:
    with open(spec_path) as f:
        spec = json.load(f)
    root = spec["root"]
    _prepare(root)
    os.chroot(root)
    try:
        os.chdir(spec["cwd"])
    except OSError:
        os.chdir("/")
    os.setgroups(spec.get("groups") or [])
    os.setgid(spec["gid"])
    os.setuid(spec["uid"])
    try:
        os.execve(spec["path"], spec["argv"], spec["env"])
    except OSError as exc:
        sys.stderr.write(f"streamable-recorder: cannot execute {spec['argv'][0]}: {exc.strerror}\n")
        os._exit(127)


if __name__ == "__main__":
    main(sys.argv[1])
