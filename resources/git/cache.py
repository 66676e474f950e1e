"""The one git clone cache: bare clones keyed by remote URL, each behind one exclusive file lock."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from resources.git.lock import exclusive_lock
from resources.git.runner import GitRemoteError, GitRunner, redact


class CloneCache:
    """Cached bare clones, one per remote URL, each used under an exclusive lock.

    `partial=True` (the push watcher): `blob:none` partial clones, enough to diff commits. `partial=False` (build
    checkouts): full bare clones that `git archive` can export.
    """

    WATCH_NAMESPACE = "refs/streamable-watch/"

    def __init__(self, root: Path, runner: GitRunner, *, partial: bool = True) -> None:
        self.root = root
        self.runner = runner
        self.partial = partial

    def path(self, url: str) -> Path:
        """Directory of the cached clone for `url`."""
        return self.root / (hashlib.sha256(url.encode()).hexdigest()[:20] + ".git")

    @contextmanager
    def locked(self, url: str) -> Iterator[Path]:
        """The clone for `url`, created if missing, under an exclusive file lock."""
        gdir = self.path(url)
        with exclusive_lock(gdir.with_suffix(".lock")):
            if not (gdir / "HEAD").exists():
                self._init(gdir, url)
            yield gdir

    def _init(self, gdir: Path, url: str) -> None:
        what = f"remote {redact(url)}"
        tmp = gdir.with_suffix(f".init-{os.getpid()}")
        self.runner.run(["init", "--bare", "--quiet", str(tmp)], what=what)
        settings = [("remote.origin.url", url), ("gc.auto", "0")]
        if self.partial:
            settings = [("core.repositoryformatversion", "1"), ("remote.origin.url", url),
                        ("remote.origin.promisor", "true"), ("remote.origin.partialclonefilter", "blob:none"),
                        ("extensions.partialClone", "origin"), ("gc.auto", "0")]
        for key, value in settings:
            self.runner.run(["--git-dir", str(tmp), "config", key, value], what=what)
        tmp.rename(gdir)

    def fetch(self, gdir: Path, url: str, refs: Sequence[str], *, timeout_s: float | None = None) -> dict[str, str]:
        """Fetch `refs` (commits and trees only) into the watch namespace; returns {ref: fetched commit}."""
        what = f"remote {redact(url)}"
        specs = [f"+{ref}:{self.WATCH_NAMESPACE}{ref.removeprefix('refs/')}" for ref in refs]
        self.runner.run(["--git-dir", str(gdir), "fetch", "--quiet", "--no-tags", "--no-write-fetch-head",
                         "--filter=blob:none", "origin", *specs], what=what, timeout_s=timeout_s)
        out = self.runner.run(
            [
                "--git-dir",
                str(gdir),
                "rev-parse",
                *(f"{self.WATCH_NAMESPACE}{r.removeprefix('refs/')}^{{commit}}" for r in refs),
            ],
            what=what,
        )
        return dict(zip(refs, out.split()))

    def has_commit(self, gdir: Path, sha: str, *, fetch: bool = False, timeout_s: float | None = None) -> bool:
        """True when `sha` is a commit in the clone; with `fetch`, first try to fetch it by id (best effort)."""
        try:
            self.runner.run(["--git-dir", str(gdir), "cat-file", "-e", f"{sha}^{{commit}}"], what="cat-file")
            return True
        except GitRemoteError:
            if not fetch:
                return False
        try:
            self.runner.run(["--git-dir", str(gdir), "fetch", "--quiet", "--no-tags", "--no-write-fetch-head",
                             "--filter=blob:none", "origin", sha], what="fetch by id", timeout_s=timeout_s)
        except GitRemoteError:
            return False
        return self.has_commit(gdir, sha)

    def changed_paths(self, gdir: Path, old: str, new: str) -> list[str]:
        """Paths that differ between the trees of two commits (tree diff, no rename detection, no blobs)."""
        out = self.runner.run(["--git-dir", str(gdir), "diff", "--name-only", "--no-renames", "-z", old, new],
                              what=f"diff {old[:12]}..{new[:12]}")
        return [p for p in out.split("\0") if p]
