"""Materialize a build context at an exact commit from a git repository (through resources/git/runner.py)."""

from __future__ import annotations

import tarfile
from dataclasses import dataclass
from pathlib import Path

from resources.errors import StreamableError
from resources.git.cache import CloneCache
from resources.git.runner import GitCredentials, GitRemoteError, GitRunner, redact
from resources.release.targets import GitSource, Source


class GitCheckoutError(StreamableError, RuntimeError):
    """A git operation for a target's source failed; names the repository and the ref."""


@dataclass(frozen=True)
class Checkout:
    """A build context on disk and the commit it came from."""

    context_dir: Path
    commit: str
    ref: str | None
    dirty: bool = False


_LOCAL = GitRunner(timeout_s=600)
"""Runs git on local repositories (no credentials)."""


def _git(args: list[str], *, cwd: Path | None = None, what: str, runner: GitRunner = _LOCAL) -> str:
    """`git <args>` through the one runner; its error becomes a GitCheckoutError naming `what`."""
    try:
        return runner.run(args, what=what, cwd=cwd).strip()
    except GitRemoteError as exc:
        raise GitCheckoutError(str(exc)) from None


def resolve_and_fetch(git: GitSource, *, commit: str | None, ref: str | None, cache_root: Path,
                      credentials: GitCredentials | None = None) -> tuple[Path, str, str]:
    """Update the cached bare clone (under its lock) and return (git dir, resolved commit, ref used)."""
    runner = GitRunner(credentials=credentials, askpass_dir=cache_root, timeout_s=600)
    cache = CloneCache(cache_root, runner, partial=False)
    try:
        with cache.locked(git.repo) as gdir:
            return _resolve_and_fetch(git, gdir, commit=commit, ref=ref, runner=runner)
    except GitRemoteError as exc:
        raise GitCheckoutError(str(exc)) from None


def _resolve_and_fetch(git: GitSource, gdir: Path, *, commit: str | None, ref: str | None,
                       runner: GitRunner) -> tuple[Path, str, str]:
    what = f"repository {redact(git.repo)}"
    ref_used = ref or f"refs/heads/{git.ref}"
    refspecs = ["+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*"]
    fetch = ["--git-dir", str(gdir), "fetch", "--quiet"]
    _git([*fetch, "--prune", "--no-write-fetch-head", git.repo, *refspecs], what=what, runner=runner)
    verify = ["--git-dir", str(gdir), "rev-parse", "--verify"]
    if commit:
        try:
            resolved = _git([*verify, f"{commit}^{{commit}}"], what=what)
        except GitCheckoutError:
            _git([*fetch, git.repo, commit], what=f"{what} commit {commit}", runner=runner)
            resolved = _git([*verify, f"{commit}^{{commit}}"], what=what)
        return gdir, resolved, ref_used
    local_ref = ref_used.replace("refs/heads/", "refs/remotes/origin/", 1)
    resolved = _git([*verify, f"{local_ref}^{{commit}}"], what=f"{what} ref {ref_used}")
    return gdir, resolved, ref_used


def export_tree(git_dir: Path, commit: str, subdir: str, dest: Path, *, what: str) -> None:
    """Write the tree of `commit:subdir` into `dest` (no .git), via `git archive`."""
    dest.mkdir(parents=True, exist_ok=True)
    treeish = commit if subdir in ("", ".") else f"{commit}:{subdir.strip('/')}"
    try:
        proc = _LOCAL.stream(["--git-dir", str(git_dir), "archive", "--format=tar", treeish], what=what)
    except GitRemoteError as exc:
        raise GitCheckoutError(str(exc)) from None
    assert proc.stdout is not None
    with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
        tar.extractall(dest, filter="tar")
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.wait() != 0:
        raise GitCheckoutError(f"{what}: git archive of {treeish} failed: {_LOCAL.redact(err.strip())}")


def _local_repo(local: Path) -> Path | None:
    """Top of the git work tree holding `local`; None only when it is not in a git repository."""
    try:
        return Path(_LOCAL.run(["rev-parse", "--show-toplevel"], cwd=local, what=f"local context {local}").strip())
    except GitRemoteError as exc:
        if "not a git repository" in str(exc):
            return None
        raise GitCheckoutError(str(exc)) from None


def checkout_source(
    source: Source, *, commit: str | None, ref: str | None, workdir: Path, cache_root: Path,
    credentials: GitCredentials | None = None,
) -> Checkout:
    """Produce the build context for a target at the requested commit (or the branch head)."""
    if source.git is not None:
        git = source.git
        gdir, resolved, ref_used = resolve_and_fetch(git, commit=commit, ref=ref, cache_root=cache_root,
                                                     credentials=credentials)
        ctx = workdir / "context"
        export_tree(gdir, resolved, git.context, ctx, what=f"repository {redact(git.repo)}")
        return Checkout(context_dir=ctx, commit=resolved, ref=ref_used)
    assert source.local is not None
    local = source.local
    if not local.is_dir():
        raise GitCheckoutError(f"local context {local} does not exist or is not a directory")
    top = _local_repo(local)
    if top is None:
        if commit:
            raise GitCheckoutError(f"local context {local} is not in a git repository; cannot build commit {commit}")
        return Checkout(context_dir=local, commit="0" * 40, ref=ref, dirty=True)
    what = f"local repository {top}"
    resolved = _git(["rev-parse", "--verify", f"{commit or 'HEAD'}^{{commit}}"], cwd=top, what=what)
    git_dir = Path(_git(["rev-parse", "--absolute-git-dir"], cwd=top, what=what))
    sub = str(local.resolve().relative_to(top.resolve()))
    # Always build the committed tree, so `sha-<7>` means exactly that commit; uncommitted edits are reported.
    dirty = bool(_git(["status", "--porcelain", "--", str(local)], cwd=top, what=what)) if not commit else False
    ctx = workdir / "context"
    export_tree(git_dir, resolved, sub, ctx, what=what)
    if ref is None and not commit:
        branch = _git(["rev-parse", "--abbrev-ref", "HEAD"], cwd=top, what=what)
        ref = f"refs/heads/{branch}" if branch != "HEAD" else None
    return Checkout(context_dir=ctx, commit=resolved, ref=ref, dirty=dirty)
