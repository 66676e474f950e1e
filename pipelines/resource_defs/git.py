"""How the git push sensor reaches the targets' remotes."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from pydantic import Field

from resources.git.cache import CloneCache
from resources.git.runner import GitCredentials, GitRunner
from resources.git.watch import SEMVER_TAG_PATTERN, GitPushPoller, WatchRules


class GitRemotesResource(dg.ConfigurableResource):
    """How the git push sensor reaches the targets' remotes; the password comes from a dg.EnvVar."""

    cache_dir: str = Field(
        default=".streamable/git-watch", description="where cached partial clones (one per remote) live"
    )
    username: str | None = Field(default=None, description="HTTPS user for private remotes")
    password: str | None = Field(default=None, repr=False, description="HTTPS password or token; pass as dg.EnvVar")
    max_parallel: int = Field(default=8, ge=1, description="remotes polled at the same time")
    timeout_s: float = Field(default=15.0, gt=0, description="timeout of one `git ls-remote`")
    fetch_timeout_s: float = Field(default=40.0, gt=0, description="timeout of one fetch into the cache")
    tick_budget_s: float = Field(default=40.0, gt=0, le=55,
                                 description="time a tick may spend (Dagster's limit is 60 s)")
    branches: list[str] = Field(default_factory=lambda: ["*"], description="branch name globs that trigger builds")
    tag_pattern: str = Field(default=SEMVER_TAG_PATTERN, description="regex of tag names that trigger release builds")

    def poller(self) -> GitPushPoller:
        """A poller with this configuration (credentials passed through GIT_ASKPASS and the environment)."""
        creds = GitCredentials(self.username, self.password) if self.username and self.password else None
        root = Path(self.cache_dir)
        runner = GitRunner(credentials=creds, askpass_dir=root, timeout_s=self.timeout_s)
        rules = WatchRules(branches=tuple(self.branches), tag_pattern=self.tag_pattern)
        return GitPushPoller(CloneCache(root, runner), rules=rules, max_parallel=self.max_parallel,
                             fetch_timeout_s=self.fetch_timeout_s)
