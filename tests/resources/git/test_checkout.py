"""Build contexts come from real git repositories at exact commits."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from resources.git.checkout import GitCheckoutError, checkout_source
from resources.release.targets import GitSource, Source


def git(repo: Path, *args: str) -> str:
    env = {
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@x",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@x",
        "PATH": "/usr/bin:/bin",
    }
    return subprocess.run(
        ["git", "-C", str(repo), *args], env=env, check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    r = tmp_path / "repo"
    r.mkdir()
    git(r, "init", "-q", "-b", "main")
    (r / "svc").mkdir()
    (r / "svc" / "Dockerfile").write_text("FROM scratch\n")
    (r / "svc" / "v.txt").write_text("one\n")
    git(r, "add", ".")
    git(r, "commit", "-qm", "one")
    return r


def test_git_source_head_and_exact_commit(repo: Path, tmp_path: Path) -> None:
    first = git(repo, "rev-parse", "HEAD")
    (repo / "svc" / "v.txt").write_text("two\n")
    git(repo, "commit", "-qam", "two")
    second = git(repo, "rev-parse", "HEAD")
    src = Source(git=GitSource(repo=str(repo), ref="main", context="svc"))
    head = checkout_source(src, commit=None, ref=None, workdir=tmp_path / "w1", cache_root=tmp_path / "cache")
    assert head.commit == second and head.ref == "refs/heads/main"
    assert (head.context_dir / "v.txt").read_text() == "two\n"
    assert not (head.context_dir / ".git").exists()
    old = checkout_source(src, commit=first[:10], ref=None, workdir=tmp_path / "w2", cache_root=tmp_path / "cache")
    assert old.commit == first and (old.context_dir / "v.txt").read_text() == "one\n"


def test_unknown_commit_and_missing_repo_name_the_repo(repo: Path, tmp_path: Path) -> None:
    src = Source(git=GitSource(repo=str(repo), context="svc"))
    with pytest.raises(GitCheckoutError, match=str(repo)):
        checkout_source(src, commit="deadbeef" * 5, ref=None, workdir=tmp_path / "w", cache_root=tmp_path / "c")
    gone = Source(git=GitSource(repo=str(tmp_path / "nope"), context="."))
    with pytest.raises(GitCheckoutError, match="nope"):
        checkout_source(gone, commit=None, ref=None, workdir=tmp_path / "w3", cache_root=tmp_path / "c")


def test_credentials_in_urls_are_redacted(tmp_path: Path) -> None:
    src = Source(git=GitSource(repo="http://user:s3cr3t-token@127.0.0.1:9/repo.git"))
    with pytest.raises(GitCheckoutError) as exc:
        checkout_source(src, commit=None, ref=None, workdir=tmp_path / "w", cache_root=tmp_path / "c")
    assert "s3cr3t-token" not in str(exc.value)


def test_local_source_builds_the_committed_tree_and_reports_dirt(repo: Path, tmp_path: Path) -> None:
    first = git(repo, "rev-parse", "HEAD")
    (repo / "svc" / "v.txt").write_text("two\n")
    git(repo, "commit", "-qam", "two")
    src = Source(local=repo / "svc")
    cur = checkout_source(src, commit=None, ref=None, workdir=tmp_path / "w", cache_root=tmp_path / "c")
    assert cur.commit == git(repo, "rev-parse", "HEAD") and not cur.dirty and cur.ref == "refs/heads/main"
    assert (cur.context_dir / "v.txt").read_text() == "two\n" and not (cur.context_dir / ".git").exists()
    (repo / "svc" / "v.txt").write_text("uncommitted\n")
    dirty = checkout_source(src, commit=None, ref=None, workdir=tmp_path / "w2", cache_root=tmp_path / "c")
    assert dirty.dirty and (dirty.context_dir / "v.txt").read_text() == "two\n", "only committed content is built"
    old = checkout_source(src, commit=first, ref=None, workdir=tmp_path / "w4", cache_root=tmp_path / "c")
    assert old.commit == first and (old.context_dir / "v.txt").read_text() == "one\n"


def test_local_source_outside_git_builds_in_place(tmp_path: Path) -> None:
    ctx = tmp_path / "plain"
    ctx.mkdir()
    co = checkout_source(Source(local=ctx), commit=None, ref=None, workdir=tmp_path / "w", cache_root=tmp_path / "c")
    assert co.context_dir == ctx and co.dirty and co.commit == "0" * 40
    with pytest.raises(GitCheckoutError, match="not in a git repository"):
        checkout_source(Source(local=ctx), commit="abc", ref=None, workdir=tmp_path / "w", cache_root=tmp_path / "c")


def test_private_remote_is_fetched_with_askpass_credentials(repo: Path, tmp_path: Path) -> None:
    from resources.git.runner import GitCredentials
    from tests.support.gitserver import GitHttpServer

    password = "tok-" + os.urandom(6).hex()
    served = tmp_path / "served"
    served.mkdir()
    git(served, "clone", "-q", "--bare", str(repo), str(served / "private.git"))
    with GitHttpServer(served, username="bot", password=password) as srv:
        src = Source(git=GitSource(repo=srv.url("private.git"), context="svc"))
        with pytest.raises(GitCheckoutError, match="private.git") as anon:
            checkout_source(src, commit=None, ref=None, workdir=tmp_path / "w0", cache_root=tmp_path / "c0")
        co = checkout_source(src, commit=None, ref=None, workdir=tmp_path / "w1", cache_root=tmp_path / "c1",
                             credentials=GitCredentials("bot", password))
        assert co.commit == git(repo, "rev-parse", "HEAD") and (co.context_dir / "v.txt").read_text() == "one\n"
        assert srv.authenticated
        with pytest.raises(GitCheckoutError) as wrong:
            checkout_source(src, commit=None, ref=None, workdir=tmp_path / "w2", cache_root=tmp_path / "c2",
                            credentials=GitCredentials("bot", "wrong-" + password))
    assert password not in str(anon.value) and password not in str(wrong.value)
    for script in tmp_path.rglob("*askpass*"):
        assert password not in script.read_text()
