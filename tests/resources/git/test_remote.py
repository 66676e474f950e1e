"""Plain git watching: ls-remote parsing, path matching, ref rules, failures, timeouts and credentials (real git)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from resources.git.cache import CloneCache
from resources.git.ls_remote import ls_remote, parse_ls_remote
from resources.git.runner import GitCredentials, GitRemoteError, GitRunner, check_remote_url, redact
from resources.git.watch import GitPushPoller, WatchRules, context_changed, load_cursor
from resources.release.targets import load_targets
from tests.support.git import Repo, git, write_targets
from tests.support.gitserver import GitHttpServer
from tests.support.net import free_port

A = "a" * 40
B = "b" * 40
C = "c" * 40


def test_parse_ls_remote_peels_annotated_tags() -> None:
    out = f"{A}\trefs/heads/main\n{B}\trefs/tags/v1.0.0\n{C}\trefs/tags/v1.0.0^{{}}\n{A}\trefs/tags/light\n"
    assert parse_ls_remote(out) == {"refs/heads/main": A, "refs/tags/v1.0.0": C, "refs/tags/light": A}


def test_parse_ls_remote_rejects_garbage_naming_the_line() -> None:
    with pytest.raises(ValueError, match="not-a-sha"):
        parse_ls_remote("not-a-sha\trefs/heads/main\n")


@pytest.mark.parametrize(("context", "paths", "expected"), [
    (".", ["README.md"], True),
    (".", [], False),
    ("apps/a", ["apps/a/Dockerfile"], True),
    ("apps/a", ["apps/ab/Dockerfile"], False),
    ("apps/a/", ["apps/a"], True),
    ("apps/a", ["apps/b/x", "lib/y"], False),
    ("./apps/a", ["apps/a/x"], True),
])
def test_context_changed(context: str, paths: list[str], expected: bool) -> None:
    assert context_changed(context, paths) is expected


def test_watch_rules_branches_and_semver_tags() -> None:
    rules = WatchRules(branches=("main", "release/*"))
    assert rules.watches("refs/heads/main")
    assert rules.watches("refs/heads/release/1.x")
    assert not rules.watches("refs/heads/feature")
    assert rules.watches("refs/tags/v1.2.3")
    assert rules.watches("refs/tags/1.2.3-rc.1")
    assert not rules.watches("refs/tags/nightly")
    assert not rules.watches("refs/tags/v1.2")
    assert not rules.watches("refs/pull/1/head")


def test_credentials_in_urls_are_refused_and_redacted() -> None:
    url = "https://bot:s3cr3t-token@git.example.com/team/repo.git"
    with pytest.raises(GitRemoteError) as exc:
        check_remote_url(url)
    assert "s3cr3t-token" not in str(exc.value)
    assert "git.example.com/team/repo.git" in str(exc.value)
    assert redact(f"fatal: unable to access '{url}'") == "fatal: unable to access 'https://***@git.example.com/team/repo.git'"
    assert "s3cr3t" not in repr(GitCredentials("bot", "s3cr3t-token"))


def _poller(tmp_path: Path, **kw: object) -> GitPushPoller:
    runner = GitRunner(timeout_s=kw.pop("timeout_s", 10.0), **kw)  # type: ignore[arg-type]
    return GitPushPoller(CloneCache(tmp_path / "cache", runner))


def test_failing_and_hanging_remotes_do_not_block_the_others(
    tmp_path: Path, make_repo, hanging_git_server: str
) -> None:
    good = make_repo("good", {"app/Dockerfile": "FROM scratch\n"})
    refused = f"https://127.0.0.1:{free_port()}/team/repo.git"  # nothing listens: connection refused
    cfg = load_targets(write_targets(tmp_path / "targets.yaml", [
        {"name": "good", "repo": good.url, "context": "app"},
        {"name": "missing", "repo": f"file://{tmp_path}/does-not-exist.git"},
        {"name": "refused", "repo": refused},
        {"name": "stuck", "repo": hanging_git_server},
    ]))
    poller = _poller(tmp_path, timeout_s=3.0)
    started = time.monotonic()
    result = poller.poll(cfg.targets, None, budget_s=20)
    elapsed = time.monotonic() - started
    assert [(t.target, t.commit) for t in result.triggers] == [("good", good.head())]
    failed = {f.remote: f.error for f in result.failures}
    assert set(failed) == {f"file://{tmp_path}/does-not-exist.git", refused,
                           hanging_git_server}
    assert "timed out after 3s" in failed[hanging_git_server]
    assert "does-not-exist.git" in failed[f"file://{tmp_path}/does-not-exist.git"]
    assert elapsed < 10, f"a hanging remote held the poll for {elapsed:.1f}s"
    assert set(load_cursor(result.cursor)) == {good.url}


def test_poll_respects_the_tick_budget_with_many_hanging_remotes(
    tmp_path: Path, make_repo, hanging_git_server: str
) -> None:
    entries = [{"name": f"stuck{i}", "repo": f"{hanging_git_server[:-5]}{i}.git"} for i in range(12)]
    cfg = load_targets(write_targets(tmp_path / "targets.yaml", entries))
    poller = GitPushPoller(CloneCache(tmp_path / "cache", GitRunner(timeout_s=30.0)), max_parallel=4)
    started = time.monotonic()
    result = poller.poll(cfg.targets, None, budget_s=8)
    assert time.monotonic() - started < 10
    assert len(result.failures) == 12 and not result.triggers


def test_private_remote_over_https_with_askpass_credentials(tmp_path: Path, make_repo) -> None:
    password = "tok-" + "9f8e7d6c5b4a"
    repo = make_repo("private", {"svc/Dockerfile": "FROM scratch\n"})
    served = tmp_path / "served"
    served.mkdir()
    git(served, "clone", "-q", "--bare", str(repo.path), str(served / "private.git"))
    with GitHttpServer(served, username="bot", password=password) as srv:
        url = srv.url("private.git")
        cfg = load_targets(write_targets(tmp_path / "targets.yaml", [{"name": "svc", "repo": url, "context": "svc"}]))
        # Without credentials: a clear failure that names the remote.
        anon = _poller(tmp_path / "anon").poll(cfg.targets, None)
        assert not anon.triggers and len(anon.failures) == 1 and url in anon.failures[0].error
        # With credentials: polled; a later change is fetched through the same askpass path and diffed.
        creds = GitCredentials("bot", password)
        poller = _poller(tmp_path / "auth", credentials=creds, askpass_dir=tmp_path / "auth")
        first = poller.poll(cfg.targets, None)
        assert [t.target for t in first.triggers] == ["svc"] and not first.failures
        repo.commit({"svc/app.py": "print(1)\n"})
        git(repo.path, "push", "-q", str(served / "private.git"), "main")
        second = poller.poll(cfg.targets, first.cursor)
        assert [(t.target, t.commit) for t in second.triggers] == [("svc", repo.head())]
        assert srv.authenticated, "the server never saw authenticated requests"
        # A wrong password fails without echoing it.
        wrong = _poller(tmp_path / "wrong", credentials=GitCredentials("bot", "wrong-" + password),
                        askpass_dir=tmp_path / "wrong").poll(cfg.targets, None)
        assert wrong.failures and ("wrong-" + password) not in wrong.failures[0].error
    for text in (first.cursor, second.cursor, json.dumps([f.error for f in anon.failures + wrong.failures])):
        assert password not in text
    for script in (tmp_path / "auth").glob("*askpass*"):
        assert password not in script.read_text()


def test_ls_remote_of_annotated_tag_gives_the_commit(make_repo) -> None:
    repo: Repo = make_repo("tags", {"a": "1"})
    repo.tag("v1.0.0")
    refs = ls_remote(GitRunner(), repo.url)
    assert refs["refs/tags/v1.0.0"] == repo.head() == refs["refs/heads/main"]
