"""The one way streamable runs git: argv lists, a hard timeout on the whole process group, no prompts, and
credentials through GIT_ASKPASS and the environment only (never in argv, URLs or messages)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from resources.errors import StreamableError

_USERINFO_RE = re.compile(r"([a-z][a-z0-9+.-]*://)[^/@\s]+@", re.IGNORECASE)
_ASKPASS_SCRIPT = """#!/bin/sh
# Answers git's credential prompts from the environment; holds no secret itself.
case "$1" in
  [Uu]sername*) printf '%s\\n' "$STREAMABLE_GIT_USERNAME" ;;
  *) printf '%s\\n' "$STREAMABLE_GIT_PASSWORD" ;;
esac
"""


class GitRemoteError(StreamableError, RuntimeError):
    """A git operation against one remote failed; the message names the remote (credentials redacted)."""


@dataclass(frozen=True)
class GitCredentials:
    """HTTPS credentials for git remotes; handed to git through GIT_ASKPASS and the environment only."""

    username: str
    password: str = field(repr=False)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Remove URL userinfo (`https://user:pass@`) and any known secret value from `text`."""
    out = _USERINFO_RE.sub(r"\1***@", text)
    for secret in secrets:
        if secret:
            out = out.replace(secret, "***")
    return out


def check_remote_url(url: str) -> None:
    """Refuse remote URLs that embed a password: credentials belong in config, not in URLs or cursors."""
    if "://" in url and urlsplit(url).password is not None:
        raise GitRemoteError(
            f"remote {redact(url)}: the URL embeds a password; remove it and configure git credentials instead"
        )


class GitRunner:
    """Runs git with argv lists, a hard timeout (whole process group), no prompts, and askpass credentials."""

    def __init__(self, *, credentials: GitCredentials | None = None, askpass_dir: Path | None = None,
                 timeout_s: float = 30.0) -> None:
        self.timeout_s = timeout_s
        self._secrets = (credentials.password,) if credentials else ()
        self._env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", "GIT_PROTOCOL": "version=2"}
        self._env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes -o ConnectTimeout=10")
        if credentials is not None:
            if askpass_dir is None:
                raise ValueError("askpass_dir is required when credentials are given")
            self._env.update({
                "GIT_ASKPASS": str(_write_askpass(askpass_dir)),
                "STREAMABLE_GIT_USERNAME": credentials.username,
                "STREAMABLE_GIT_PASSWORD": credentials.password,
            })

    def redact(self, text: str) -> str:
        """`redact` with this runner's secrets."""
        return redact(text, self._secrets)

    def stream(self, args: Sequence[str], *, what: str, cwd: Path | None = None) -> subprocess.Popen[bytes]:
        """Start `git <args>` with its stdout as a byte stream (e.g. `git archive`); the caller reads it and waits."""
        try:
            return subprocess.Popen(["git", *args], cwd=cwd, env=self._env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except OSError as exc:
            raise GitRemoteError(f"{what}: cannot run git ({exc.strerror or exc})") from None

    def run(self, args: Sequence[str], *, what: str, cwd: Path | None = None, timeout_s: float | None = None) -> str:
        """Run `git <args>` and return stdout; raise GitRemoteError naming `what` on failure or timeout."""
        timeout = timeout_s if timeout_s is not None else self.timeout_s
        argv = ["git", "-c", "http.lowSpeedLimit=1000", "-c", f"http.lowSpeedTime={max(1, int(timeout))}", *args]
        try:
            proc = subprocess.Popen(argv, cwd=cwd, env=self._env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, start_new_session=True)
        except OSError as exc:
            raise GitRemoteError(f"{what}: cannot run git ({exc.strerror or exc})") from None
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise GitRemoteError(f"{what}: git {args[0]} timed out after {timeout:g}s") from None
        if proc.returncode != 0:
            msg = self.redact(_first_error_line(err) or f"exit status {proc.returncode}")
            raise GitRemoteError(f"{what}: git {args[0]} failed: {msg}")
        return out


def _first_error_line(stderr: str) -> str:
    """The most telling line of git's stderr: the first `fatal:`/`error:` line, else the last line."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for ln in lines:
        if ln.startswith(("fatal:", "error:")):
            return ln
    return lines[-1] if lines else ""


def _kill_group(proc: subprocess.Popen[str]) -> None:
    """Kill git and its helpers (git-remote-http, ssh) that share its process group."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.communicate()


def _write_askpass(directory: Path) -> Path:
    """Write (once) the askpass helper script, which reads the credentials from the environment."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "streamable-git-askpass.sh"
    if not path.exists() or path.read_text() != _ASKPASS_SCRIPT:
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(_ASKPASS_SCRIPT)
        tmp.chmod(0o700)
        tmp.replace(path)
    return path
