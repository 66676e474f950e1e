"""Watch git remotes: `ls-remote` polling, cached partial clones, changed paths, and which targets to rebuild."""

from __future__ import annotations

from resources.errors import StreamableError
import fcntl
import hashlib
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from urllib.parse import urlsplit

from resources.release.targets import Target

CURSOR_VERSION = 1
SEMVER_TAG_PATTERN = r"^v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$"
_USERINFO_RE = re.compile(r"([a-z][a-z0-9+.-]*://)[^/@\s]+@", re.IGNORECASE)
_SHA_RE = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
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


# --------------------------------------------------------------------------------------------- running git


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


# --------------------------------------------------------------------------------------------- ls-remote


def parse_ls_remote(output: str) -> dict[str, str]:
    """`git ls-remote` output -> {ref: commit}; annotated tags resolve to the commit they point at."""
    refs: dict[str, str] = {}
    peeled: dict[str, str] = {}
    for line in output.splitlines():
        if not line.strip():
            continue
        sha, _, ref = line.partition("\t")
        if not _SHA_RE.match(sha) or not ref:
            raise ValueError(f"unexpected ls-remote line {line!r}")
        if ref.endswith("^{}"):
            peeled[ref[:-3]] = sha
        else:
            refs[ref] = sha
    refs.update({ref: sha for ref, sha in peeled.items() if ref in refs})
    return refs


def ls_remote(runner: GitRunner, url: str, *, timeout_s: float | None = None) -> dict[str, str]:
    """Branches and tags of one remote as {ref: commit}."""
    check_remote_url(url)
    out = runner.run(["ls-remote", "--heads", "--tags", url], what=f"remote {redact(url)}", timeout_s=timeout_s)
    return parse_ls_remote(out)


def ls_remotes(runner: GitRunner, urls: Sequence[str], *, max_parallel: int = 8, deadline: float | None = None,
               clock: Callable[[], float] = time.monotonic) -> dict[str, dict[str, str] | GitRemoteError]:
    """`ls_remote` for many remotes at once, all done by `deadline`; a failing remote yields its error."""

    def one(url: str) -> dict[str, str] | GitRemoteError:
        timeout = runner.timeout_s
        if deadline is not None:
            timeout = min(timeout, deadline - clock())
            if timeout <= 0.5:
                return GitRemoteError(f"remote {redact(url)}: not polled, the tick's time budget ran out")
        try:
            return ls_remote(runner, url, timeout_s=timeout)
        except GitRemoteError as exc:
            return exc
        except ValueError as exc:
            return GitRemoteError(f"remote {redact(url)}: {exc}")

    if not urls:
        return {}
    with ThreadPoolExecutor(max_workers=max(1, min(max_parallel, len(urls)))) as pool:
        return dict(zip(urls, pool.map(one, urls)))


# --------------------------------------------------------------------------------------------- clones


class RemoteClones:
    """Cached bare partial clones (`blob:none`), one per remote URL, used to diff commits."""

    WATCH_NAMESPACE = "refs/streamable-watch/"

    def __init__(self, root: Path, runner: GitRunner) -> None:
        self.root = root
        self.runner = runner

    def path(self, url: str) -> Path:
        """Directory of the cached clone for `url`."""
        return self.root / (hashlib.sha256(url.encode()).hexdigest()[:20] + ".git")

    @contextmanager
    def locked(self, url: str) -> Iterator[Path]:
        """The clone for `url`, created if missing, under an exclusive file lock."""
        self.root.mkdir(parents=True, exist_ok=True)
        gdir = self.path(url)
        with open(gdir.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if not (gdir / "HEAD").exists():
                    self._init(gdir, url)
                yield gdir
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _init(self, gdir: Path, url: str) -> None:
        what = f"remote {redact(url)}"
        tmp = gdir.with_suffix(f".init-{os.getpid()}")
        self.runner.run(["init", "--bare", "--quiet", str(tmp)], what=what)
        for key, value in (
            ("core.repositoryformatversion", "1"),
            ("remote.origin.url", url),
            ("remote.origin.promisor", "true"),
            ("remote.origin.partialclonefilter", "blob:none"),
            ("extensions.partialClone", "origin"),
            ("gc.auto", "0"),
        ):
            self.runner.run(["--git-dir", str(tmp), "config", key, value], what=what)
        tmp.rename(gdir)

    def fetch(self, gdir: Path, url: str, refs: Sequence[str], *, timeout_s: float | None = None) -> dict[str, str]:
        """Fetch `refs` (commits and trees only) into the watch namespace; returns {ref: fetched commit}."""
        what = f"remote {redact(url)}"
        specs = [f"+{ref}:{self.WATCH_NAMESPACE}{ref.removeprefix('refs/')}" for ref in refs]
        self.runner.run(["--git-dir", str(gdir), "fetch", "--quiet", "--no-tags", "--no-write-fetch-head",
                         "--filter=blob:none", "origin", *specs], what=what, timeout_s=timeout_s)
        out = self.runner.run(
            ["--git-dir", str(gdir), "rev-parse", *(f"{self.WATCH_NAMESPACE}{r.removeprefix('refs/')}^{{commit}}" for r in refs)],
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


def context_changed(context: str, paths: Iterable[str]) -> bool:
    """True when any of `paths` lies inside the build context directory (`.` = whole repository)."""
    ctx = context.strip("/")
    if ctx in ("", "."):
        return any(True for _ in paths)
    ctx = os.path.normpath(ctx)
    return any(p == ctx or p.startswith(ctx + "/") for p in paths)


# --------------------------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class WatchRules:
    """Which refs of a remote trigger builds: branch name globs and a tag name regex (semver by default)."""

    branches: tuple[str, ...] = ("*",)
    tag_pattern: str = SEMVER_TAG_PATTERN

    def watches(self, ref: str) -> bool:
        """True when `ref` (e.g. refs/heads/main, refs/tags/v1.2.3) is watched."""
        if ref.startswith("refs/heads/"):
            name = ref.removeprefix("refs/heads/")
            return any(fnmatchcase(name, g) for g in self.branches)
        if ref.startswith("refs/tags/"):
            return bool(self.tag_pattern) and re.match(self.tag_pattern, ref.removeprefix("refs/tags/")) is not None
        return False


@dataclass(frozen=True)
class BuildTrigger:
    """One build to request: a target at a commit, for a ref, and why."""

    target: str
    commit: str
    ref: str
    remote: str
    reason: str
    default_ref: str = "refs/heads/main"

    @property
    def run_key(self) -> str:
        """`<target>@<sha>` on the target's default branch; other refs append `@<ref>` (their tags differ)."""
        key = f"{self.target}@{self.commit}"
        return key if self.ref == self.default_ref else f"{key}@{self.ref}"


@dataclass(frozen=True)
class RemoteFailure:
    """A remote that could not be polled or fetched this tick (it keeps its old cursor)."""

    remote: str
    error: str


@dataclass
class PollResult:
    """The outcome of one poll: builds to request, the new cursor, failed and deferred remotes."""

    triggers: list[BuildTrigger]
    cursor: str
    failures: list[RemoteFailure]
    deferred: list[str]
    remotes_polled: int

    def summary(self) -> str:
        """One line for the tick log / skip reason."""
        parts = [f"{self.remotes_polled} remote(s) polled", f"{len(self.triggers)} build(s) requested"]
        if self.failures:
            parts.append(f"{len(self.failures)} failed: " + "; ".join(f.error for f in self.failures))
        if self.deferred:
            parts.append(f"{len(self.deferred)} deferred to the next tick (time budget)")
        return ", ".join(parts)


def load_cursor(cursor: str | None) -> dict[str, dict[str, str]]:
    """Cursor JSON -> {remote: {ref: commit}}; an empty or foreign cursor starts fresh."""
    if not cursor:
        return {}
    try:
        data = json.loads(cursor)
    except json.JSONDecodeError:
        return {}
    if not isinstance(data, dict) or data.get("v") != CURSOR_VERSION or not isinstance(data.get("remotes"), dict):
        return {}
    return {str(r): {str(k): str(v) for k, v in refs.items()} for r, refs in data["remotes"].items() if isinstance(refs, dict)}


def dump_cursor(state: Mapping[str, Mapping[str, str]]) -> str:
    """{remote: {ref: commit}} -> compact, stable cursor JSON (never holds credentials: URLs are checked)."""
    return json.dumps({"v": CURSOR_VERSION, "remotes": state}, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class _Remote:
    url: str
    targets: tuple[Target, ...]


def _remotes_of(targets: Iterable[Target]) -> list[_Remote]:
    by_url: dict[str, list[Target]] = {}
    for t in targets:
        if t.source.git is not None:
            by_url.setdefault(t.source.git.repo, []).append(t)
    return [_Remote(url, tuple(ts)) for url, ts in by_url.items()]


def _default_ref(target: Target) -> str:
    assert target.source.git is not None
    ref = target.source.git.ref
    return ref if ref.startswith("refs/") else f"refs/heads/{ref}"


class GitPushPoller:
    """Turns remote ref changes into build triggers for exactly the targets whose context changed."""

    def __init__(self, clones: RemoteClones, *, rules: WatchRules = WatchRules(), max_parallel: int = 8,
                 fetch_timeout_s: float = 45.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.clones = clones
        self.rules = rules
        self.max_parallel = max_parallel
        self.fetch_timeout_s = fetch_timeout_s
        self.clock = clock

    def poll(self, targets: Sequence[Target], cursor: str | None, *, budget_s: float = 40.0) -> PollResult:
        """Poll every remote of `targets` once, within `budget_s` seconds, and plan the builds."""
        deadline = self.clock() + budget_s
        old = load_cursor(cursor)
        remotes = _remotes_of(targets)
        failures: list[RemoteFailure] = []
        valid: list[_Remote] = []
        for r in remotes:
            try:
                check_remote_url(r.url)
                valid.append(r)
            except GitRemoteError as exc:
                failures.append(RemoteFailure(redact(r.url), str(exc)))
        listed = ls_remotes(self.clones.runner, [r.url for r in valid], max_parallel=self.max_parallel,
                            deadline=deadline - min(5.0, budget_s / 4), clock=self.clock)
        new_state: dict[str, dict[str, str]] = {}
        work: list[tuple[_Remote, dict[str, str], dict[str, str]]] = []
        for r in valid:
            refs = listed[r.url]
            if isinstance(refs, GitRemoteError):
                failures.append(RemoteFailure(redact(r.url), str(refs)))
                if r.url in old:
                    new_state[r.url] = old[r.url]
                continue
            watched = {ref: sha for ref, sha in refs.items() if self.rules.watches(ref)}
            work.append((r, old.get(r.url, {}), watched))

        triggers: list[BuildTrigger] = []
        deferred: list[str] = []

        def plan(item: tuple[_Remote, dict[str, str], dict[str, str]]) -> tuple[str, dict[str, str], list[BuildTrigger] | None, RemoteFailure | None]:
            remote, before, now = item
            try:
                planned = self._plan_remote(remote, before, now, deadline)
            except GitRemoteError as exc:
                return remote.url, before, None, RemoteFailure(redact(remote.url), str(exc))
            if planned is None:
                return remote.url, before, None, None
            return remote.url, now, planned, None

        with ThreadPoolExecutor(max_workers=max(1, min(self.max_parallel, len(work) or 1))) as pool:
            for url, state, planned, failure in pool.map(plan, work):
                if state or url in old:
                    new_state[url] = state
                if failure is not None:
                    failures.append(failure)
                elif planned is None:
                    deferred.append(redact(url))
                else:
                    triggers.extend(planned)
        return PollResult(_dedupe(triggers), dump_cursor(new_state), failures, deferred, len(remotes))

    def _plan_remote(self, remote: _Remote, before: dict[str, str], now: dict[str, str],
                     deadline: float) -> list[BuildTrigger] | None:
        """Triggers for one remote, or None when there is no time left to fetch (try again next tick)."""
        remaining_s = deadline - self.clock()
        first_sight = not before
        changed = {ref: sha for ref, sha in now.items() if before.get(ref) != sha}
        if first_sight:
            defaults = {_default_ref(t) for t in remote.targets}
            changed = {ref: sha for ref, sha in changed.items() if ref in defaults}
        if not changed:
            return []
        if first_sight:
            return [self._trigger(t, sha, ref, remote, "first poll of this remote")
                    for ref, sha in sorted(changed.items()) for t in remote.targets if _default_ref(t) == ref]
        needs_diff = {ref: sha for ref, sha in changed.items() if ref in before}
        if not needs_diff:
            return [self._trigger(t, sha, ref, remote, "new ref") for ref, sha in sorted(changed.items()) for t in remote.targets]
        if remaining_s < 2.0:
            return None
        out: list[BuildTrigger] = []
        with self.clones.locked(remote.url) as gdir:
            fetched = self.clones.fetch(gdir, remote.url, sorted(needs_diff),
                                        timeout_s=max(1.0, min(self.fetch_timeout_s, remaining_s - 1.0)))
            for ref, sha in sorted(changed.items()):
                if ref not in needs_diff:
                    out += [self._trigger(t, sha, ref, remote, "new ref") for t in remote.targets]
                    continue
                new_sha = fetched.get(ref, sha)
                old_sha = before[ref]
                left = deadline - self.clock()
                if not self.clones.has_commit(gdir, old_sha, fetch=left > 3.0, timeout_s=max(1.0, left - 2.0)):
                    out += [self._trigger(t, new_sha, ref, remote, f"previous commit {old_sha[:12]} is unknown")
                            for t in remote.targets]
                    continue
                paths = self.clones.changed_paths(gdir, old_sha, new_sha)
                for t in remote.targets:
                    assert t.source.git is not None
                    if context_changed(t.source.git.context, paths):
                        out.append(self._trigger(t, new_sha, ref, remote, f"{t.source.git.context} changed since {old_sha[:12]}"))
                now[ref] = new_sha
        return out

    @staticmethod
    def _trigger(target: Target, sha: str, ref: str, remote: _Remote, reason: str) -> BuildTrigger:
        return BuildTrigger(target=target.name, commit=sha, ref=ref, remote=redact(remote.url), reason=reason,
                            default_ref=_default_ref(target))


def _dedupe(triggers: Iterable[BuildTrigger]) -> list[BuildTrigger]:
    seen: set[str] = set()
    out: list[BuildTrigger] = []
    for t in triggers:
        if t.run_key not in seen:
            seen.add(t.run_key)
            out.append(t)
    return out
