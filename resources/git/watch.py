"""Watch git remotes for pushes: which refs changed, which targets' contexts they touch, and the builds to run."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fnmatch import fnmatchcase

from resources.git.cache import CloneCache
from resources.git.ls_remote import ls_remotes
from resources.git.runner import GitRemoteError, check_remote_url, redact
from resources.release.targets import Target

CURSOR_VERSION = 1
SEMVER_TAG_PATTERN = r"^v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$"


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
    return {
        str(r): {str(k): str(v) for k, v in refs.items()}
        for r, refs in data["remotes"].items()
        if isinstance(refs, dict)
    }


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

    def __init__(self, clones: CloneCache, *, rules: WatchRules = WatchRules(), max_parallel: int = 8,
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

        def plan(
            item: tuple[_Remote, dict[str, str], dict[str, str]],
        ) -> tuple[str, dict[str, str], list[BuildTrigger] | None, RemoteFailure | None]:
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
            return [
                self._trigger(t, sha, ref, remote, "new ref")
                for ref, sha in sorted(changed.items())
                for t in remote.targets
            ]
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
                        out.append(
                            self._trigger(
                                t, new_sha, ref, remote, f"{t.source.git.context} changed since {old_sha[:12]}"
                            )
                        )
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
