"""`git ls-remote` polling: the branches and tags of many remotes at once, within a deadline."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from resources.git.runner import GitRemoteError, GitRunner, check_remote_url, redact

_SHA_RE = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")


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
