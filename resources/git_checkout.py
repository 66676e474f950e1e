"""Materialize a build context at an exact commit from a git repository (argv only, no shell)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from resources.targets import GitSource, Source


class GitCheckoutError(RuntimeError):
    """A git operation for a target's source failed; names the repository and the ref."""


@dataclass(frozen=True)
class Checkout:
    """A build context on disk and the commit it came from."""

    context_dir: Path
    commit: str
    ref: str | None
    dirty: bool = False


def _git(args: list[str], *, cwd: Path | None = None, what: str) -> str:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
    try:
        res = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)
    except subprocess.TimeoutExpired:
        raise GitCheckoutError(f"{what}: git {args[0]} timed out") from None
    if res.returncode != 0:
        raise GitCheckoutError(f"{what}: git {args[0]} failed: {_redact(res.stderr.strip())}")
    return res.stdout.strip()


def _redact(text: str) -> str:
    """Drop credentials embedded in URLs (https://user:pass@host) from git output."""
    import re  # noqa: PLC0415

    return re.sub(r"(https?://)[^/@\s]+@", r"\1***@", text)


def _cache_dir(cache_root: Path, repo: str) -> Path:
    return cache_root / hashlib.sha256(repo.encode()).hexdigest()[:16]


def resolve_and_fetch(git: GitSource, *, commit: str | None, ref: str | None, cache_root: Path) -> tuple[Path, str, str]:
    """Update a cached bare clone and return (git dir, resolved commit, ref used)."""
    what = f"repository {_redact(git.repo)}"
    gdir = _cache_dir(cache_root, git.repo)
    if not (gdir / "HEAD").exists():
        gdir.parent.mkdir(parents=True, exist_ok=True)
        _git(["init", "--bare", "--quiet", str(gdir)], what=what)
    ref_used = ref or f"refs/heads/{git.ref}"
    refspecs = ["+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*"]
    _git(["--git-dir", str(gdir), "fetch", "--quiet", "--prune", "--no-write-fetch-head", git.repo, *refspecs], what=what)
    if commit:
        try:
            resolved = _git(["--git-dir", str(gdir), "rev-parse", "--verify", f"{commit}^{{commit}}"], what=what)
        except GitCheckoutError:
            _git(["--git-dir", str(gdir), "fetch", "--quiet", git.repo, commit], what=f"{what} commit {commit}")
            resolved = _git(["--git-dir", str(gdir), "rev-parse", "--verify", f"{commit}^{{commit}}"], what=what)
        return gdir, resolved, ref_used
    local_ref = ref_used.replace("refs/heads/", "refs/remotes/origin/", 1)
    resolved = _git(["--git-dir", str(gdir), "rev-parse", "--verify", f"{local_ref}^{{commit}}"], what=f"{what} ref {ref_used}")
    return gdir, resolved, ref_used


def export_tree(git_dir: Path, commit: str, subdir: str, dest: Path, *, what: str) -> None:
    """Write the tree of `commit:subdir` into `dest` (no .git), via `git archive`."""
    dest.mkdir(parents=True, exist_ok=True)
    treeish = commit if subdir in ("", ".") else f"{commit}:{subdir.strip('/')}"
    proc = subprocess.Popen(
        ["git", "--git-dir", str(git_dir), "archive", "--format=tar", treeish],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "LC_ALL": "C"},
    )
    assert proc.stdout is not None
    with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
        tar.extractall(dest, filter="tar")
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.wait() != 0:
        raise GitCheckoutError(f"{what}: git archive of {treeish} failed: {err.strip()}")


def checkout_source(
    source: Source, *, commit: str | None, ref: str | None, workdir: Path, cache_root: Path
) -> Checkout:
    """Produce the build context for a target at the requested commit (or the branch head)."""
    if source.git is not None:
        git = source.git
        gdir, resolved, ref_used = resolve_and_fetch(git, commit=commit, ref=ref, cache_root=cache_root)
        ctx = workdir / "context"
        export_tree(gdir, resolved, git.context, ctx, what=f"repository {_redact(git.repo)}")
        return Checkout(context_dir=ctx, commit=resolved, ref=ref_used)
    assert source.local is not None
    local = source.local
    if not local.is_dir():
        raise GitCheckoutError(f"local context {local} does not exist or is not a directory")
    try:
        top = Path(_git(["rev-parse", "--show-toplevel"], cwd=local, what=f"local context {local}"))
    except GitCheckoutError:
        if commit:
            raise GitCheckoutError(f"local context {local} is not in a git repository; cannot build commit {commit}") from None
        return Checkout(context_dir=local, commit="0" * 40, ref=ref, dirty=True)
    head = _git(["rev-parse", "HEAD"], cwd=top, what=f"local context {local}")
    if commit and not head.startswith(commit):
        resolved = _git(["rev-parse", "--verify", f"{commit}^{{commit}}"], cwd=top, what=f"local context {local}")
        ctx = workdir / "context"
        sub = str(local.resolve().relative_to(top.resolve()))
        export_tree(top / ".git", resolved, sub, ctx, what=f"local repository {top}")
        return Checkout(context_dir=ctx, commit=resolved, ref=ref)
    dirty = bool(_git(["status", "--porcelain", "--", str(local)], cwd=top, what=f"local context {local}"))
    branch = _git(["rev-parse", "--abbrev-ref", "HEAD"], cwd=top, what=f"local context {local}")
    return Checkout(context_dir=local, commit=head, ref=ref or (f"refs/heads/{branch}" if branch != "HEAD" else None), dirty=dirty)
