"""The `streamable` command explains itself: help for every option with its default, an example per command that
parses, `--version`, and the help (not "required: group") when no command is given."""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from resources.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = ("ztoc", "convert", "verify", "inspect")


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`python -m resources.cli ARGS` from this tree (what the `streamable` console script runs)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "120"}
    return subprocess.run([sys.executable, "-m", "resources.cli", *args], check=False, cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """name -> parser of the sub-commands directly below `parser`."""
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def command_parsers() -> dict[str, argparse.ArgumentParser]:
    return subparsers(subparsers(build_parser())["soci"])


def flat(text: str) -> str:
    """Help text with argparse's line wrapping undone."""
    return " ".join(text.split())


@pytest.mark.parametrize("argv", [(), ("soci",)])
def test_no_command_prints_the_help_and_exits_2(argv: tuple[str, ...]) -> None:
    proc = run_cli(*argv)
    assert proc.returncode == 2, proc
    assert proc.stderr.startswith(f"usage: streamable {' '.join(argv)}".rstrip() + " "), proc.stderr
    assert "required" not in proc.stderr and "Traceback" not in proc.stderr
    listed = ["soci"] if not argv else list(COMMANDS)
    assert all(f"\n    {name} " in proc.stderr for name in listed), proc.stderr
    assert "example:" in proc.stderr


def test_version_comes_from_the_package_metadata() -> None:
    proc = run_cli("--version")
    assert proc.returncode == 0, proc
    assert proc.stdout.strip() == f"streamable {importlib.metadata.version('streamable')} (inflate: zlib-ng " + (
        zlib_ng_version()
    ) + ")"


def zlib_ng_version() -> str:
    """The zlib-ng version the wheel reports (the CLI must name the library zTOC builds run on)."""
    import zlib_ng.zlib_ng as module

    return str(module.ZLIBNG_VERSION)


@pytest.mark.parametrize("name", COMMANDS)
def test_every_argument_has_help_and_its_default(name: str) -> None:
    parser = command_parsers()[name]
    text = flat(parser.format_help())
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        label = action.option_strings[-1] if action.option_strings else action.dest
        assert action.help and action.help.strip(), f"{name} {label}: no help text"
        if action.default not in (None, False, argparse.SUPPRESS):
            assert f"(default: {action.default}" in text, f"{name} {label}: default {action.default!r} not in the help"
    assert "positional arguments:" in text and f"usage: streamable soci {name}" in text


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_an_example_that_parses(name: str) -> None:
    parser = command_parsers()[name]
    epilog = parser.epilog or ""
    examples = [line.strip() for line in epilog.splitlines() if line.strip().startswith(f"streamable soci {name} ")]
    assert examples, f"soci {name}: no example in its help"
    for example in examples:
        args = build_parser().parse_args(shlex.split(example)[1:])
        assert args.command == name and callable(args.func), example
    shown = run_cli("soci", name, "--help")
    assert shown.returncode == 0 and all(e in shown.stdout for e in examples), shown.stdout
