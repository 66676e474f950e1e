"""Git helpers for tests and benchmarks: real repositories made by the test, a hanging git server, targets files."""

from __future__ import annotations

import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x",
           "PATH": "/usr/bin:/bin", "HOME": "/nonexistent"}


def git(repo: Path, *args: str) -> str:
    """Run git in `repo` (argv, no shell) and return stdout."""
    return subprocess.run(["git", "-C", str(repo), *args], env=GIT_ENV, check=True, capture_output=True,
                          text=True).stdout.strip()


@dataclass
class Repo:
    """A git repository playing the remote: commits, branches, tags, force-pushes happen right here."""

    path: Path

    @property
    def url(self) -> str:
        return f"file://{self.path}"

    def commit(self, files: dict[str, str], message: str = "change", *, amend: bool = False) -> str:
        for name, text in files.items():
            p = self.path / name
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
        git(self.path, "add", "-A")
        git(self.path, "commit", "-q", "--allow-empty", "-m", message, *(["--amend"] if amend else []))
        return self.head()

    def head(self, ref: str = "HEAD") -> str:
        return git(self.path, "rev-parse", f"{ref}^{{commit}}")

    def checkout(self, branch: str, *, create: bool = False) -> None:
        git(self.path, "checkout", "-q", *(["-b"] if create else []), branch)

    def tag(self, name: str, *, annotated: bool = True) -> None:
        git(self.path, "tag", *(["-a", "-m", name] if annotated else []), name)

    def delete_branch(self, name: str) -> None:
        git(self.path, "branch", "-q", "-D", name)


@pytest.fixture
def make_repo(tmp_path: Path) -> Callable[..., Repo]:
    """Factory: a new repository on branch main with an initial commit of `files`."""

    def make(name: str, files: dict[str, str]) -> Repo:
        path = tmp_path / "remotes" / name
        path.mkdir(parents=True)
        subprocess.run(["git", "init", "-q", "-b", "main", str(path)], env=GIT_ENV, check=True)
        repo = Repo(path)
        repo.commit(files, "initial")
        return repo

    return make


@pytest.fixture
def hanging_git_server() -> Iterator[str]:
    """A git:// URL whose server accepts the connection and never answers (a remote that times out)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    conns: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conns.append(srv.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield f"git://127.0.0.1:{srv.getsockname()[1]}/stuck.git"
    stop.set()
    t.join()
    for c in conns:
        c.close()
    srv.close()


def write_targets(path: Path, entries: list[dict]) -> Path:
    """Write a targets file: entries of name, repo, context (and optional ref)."""
    lines = ["targets:"]
    for e in entries:
        lines += [
            f"  - name: {e['name']}",
            f"    source: {{git: {{repo: '{e['repo']}', ref: {e.get('ref', 'main')}, "
            f"context: '{e.get('context', '.')}'}}}}",
            f"    repository: 127.0.0.1:5055/team/{e['name']}",
        ]
    path.write_text("\n".join(lines) + "\n")
    return path
