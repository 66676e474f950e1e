"""`streamable soci profile REF [--timeout S] [--ready-log RE | --ready-tcp-port N | --ready-exit] [-- CMD ...]`.

Records the image's start in the local sandbox (root, strace, unshare) and prints the profile JSON;
`--push` also attaches it to the image manifest as an OCI artifact.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from resources.oci.refs import ImageRef
from resources.startup.recorder import StartupRecorder
from resources.startup.sandbox import Readiness
from resources.startup.settings import MAX_TIMEOUT_S
from resources.startup.store import push_profile

ClientFactory = Callable[[argparse.Namespace, str], Any]


def _timeout(text: str) -> float:
    value = float(text)
    if not 0 < value <= MAX_TIMEOUT_S:
        raise argparse.ArgumentTypeError(f"must be > 0 and <= {MAX_TIMEOUT_S} seconds, got {text}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"not a TCP port: {text}")
    return value


def add_profile_parser(
    commands: Any, registry_options: Callable[[argparse.ArgumentParser], None], client: ClientFactory
) -> None:
    """Register `profile` on the `soci` subcommands; `client(args, registry)` opens a RegistryClient."""
    p = commands.add_parser(
        "profile", help="record what the image reads to start (sandboxed) and print the profile JSON"
    )
    p.add_argument("ref")
    p.add_argument("--timeout", type=_timeout, default=60.0, help="seconds before the run is stopped (default 60)")
    ready = p.add_mutually_exclusive_group()
    ready.add_argument("--ready-log", metavar="REGEX", help="ready at the first output line matching REGEX")
    ready.add_argument("--ready-tcp-port", type=_port, metavar="N", help="ready when TCP port N listens in the sandbox")
    ready.add_argument("--ready-exit", action="store_true", help="ready when the program exits with status 0")
    p.add_argument("--platform", help="os/arch of an image index to record (default: this host's)")
    p.add_argument("-o", "--output", help="also write the profile JSON to FILE")
    p.add_argument("--push", action="store_true", help="attach the profile to the image manifest (OCI artifact)")
    p.add_argument(
        "--work-dir",
        help="directory (on a disk filesystem) for the rootfs; default $STREAMABLE_STARTUP_WORK_DIR or /var/tmp",
    )
    registry_options(p)
    p.set_defaults(func=lambda args, out, err: cmd_profile(args, out, err, client), command_argv=[])


def split_command(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """(options, command) split at the first `--` (argparse cannot take `REF [options] -- CMD ...` itself)."""
    items = list(argv)
    if "--" not in items:
        return items, []
    i = items.index("--")
    return items[:i], items[i + 1 :]


def cmd_profile(args: argparse.Namespace, out: TextIO, err: TextIO, client: ClientFactory) -> int:
    """Record, print (and optionally write and push) the profile."""
    ref = ImageRef.parse(args.ref)
    command = list(args.command_argv)
    readiness = Readiness(log=args.ready_log, tcp_port=args.ready_tcp_port, exit=args.ready_exit)

    def log_fn(msg: str) -> None:
        if args.verbose:
            err.write(msg + "\n")

    with client(args, ref.registry) as registry:
        recorder = StartupRecorder(registry, work_root=Path(args.work_dir) if args.work_dir else None, log_fn=log_fn)
        recording = recorder.record(
            ref, command=tuple(command) or None, readiness=readiness, timeout_s=args.timeout, platform=args.platform
        )
        profile = recording.profile
        if args.push:
            stored = push_profile(registry, ref.repository, profile)
            err.write(f"streamable: profile attached to {profile.manifest_digest} as {stored.manifest_digest}\n")
    text = profile.to_json(indent=2) + "\n"
    if args.output:
        Path(args.output).write_text(text)
    out.write(text)
    return 0
