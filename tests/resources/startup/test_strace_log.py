"""The strace log reader: only events after the chroot, resumed calls, fd paths, escapes, O_PATH skipped."""

from __future__ import annotations

from pathlib import Path

from resources.startup.strace_log import in_root, parse_trace

ROOT = "/var/tmp/w/rootfs"
LOG = f"""\
5     1796118832.600000 openat(AT_FDCWD</work>, "/usr/lib/python3.11/os.py", O_RDONLY|O_CLOEXEC) = 3</usr/lib/python3.11/os.py>
5     1796118832.675088 chroot("{ROOT}") = 0
5     1796118832.675129 execve("/app/run", ["/app/run"], 0x7f6b87b4c180 /* 1 var */) = 0
5     1796118832.675847 openat(AT_FDCWD<{ROOT}>, "/app/run", O_RDONLY|O_CLOEXEC) = 3<{ROOT}/app/run>
6     1796118832.676000 openat(AT_FDCWD<{ROOT}/data>, "caf\\xc3\\xa9.txt", O_RDONLY <unfinished ...>
5     1796118832.676100 openat(AT_FDCWD<{ROOT}>, "/data", O_RDONLY|O_PATH) = 4<{ROOT}/data>
6     1796118832.676200 <... openat resumed>) = 5<{ROOT}/data/caf\\xc3\\xa9.txt>
6     1796118832.676300 mmap(NULL, 8192, PROT_READ, MAP_PRIVATE, 5<{ROOT}/data/caf\\xc3\\xa9.txt>, 0) = 0x7f0000000000
6     1796118832.676400 mmap(NULL, 8192, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f0000002000
6     1796118832.676500 execve("/bin/cat", ["cat", "/data/a"], 0xd92eaf8 /* 3 vars */) = 0
6     1796118832.680677 +++ exited with 0 +++
5     1796118832.680709 --- SIGCHLD {{si_signo=SIGCHLD, si_code=CLD_EXITED, si_pid=6}} ---
"""


def test_events_after_chroot_in_order() -> None:
    chrooted, events = parse_trace(LOG)
    assert chrooted == 1796118832.675088
    assert [(e.pid, e.kind, e.path) for e in events] == [
        (5, "exec", "/app/run"),
        (5, "open", f"{ROOT}/app/run"),
        (6, "open", f"{ROOT}/data/café.txt"),  # the unfinished call's start time, the resumed call's result
        (6, "mmap", f"{ROOT}/data/café.txt"),
        (6, "exec", "/bin/cat"),
    ]
    assert events[2].time == 1796118832.676000
    assert in_root(events[1].path, Path(ROOT)) == "/app/run" and in_root("/etc/passwd", Path(ROOT)) is None


def test_no_chroot_means_no_events() -> None:
    assert parse_trace(LOG.split("\n", 1)[0]) == (None, [])
