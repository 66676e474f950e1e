"""Local builder: the Docker engine's embedded BuildKit (`docker build` + `docker push`), argv lists only."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass

from resources.builders.base import BuildError, BuildRequest, BuildResult, LogFn, PruneResult
from resources.builders.docker_detect import find_buildkit_docker
from resources.builders.platforms import check_platforms
from resources.builders.progress import ProgressParser

_PUSH_DIGEST_RE = re.compile(r"digest: (sha256:[0-9a-f]{64}) size: \d+")
_SIZE_UNITS = {"B": 1, "kB": 1000, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "TB": 1000**4}


def _parse_size(text: str) -> int:
    m = re.match(r"^\s*([0-9.]+)\s*([kKMGT]?B)\s*$", text)
    if not m:
        return 0
    return int(float(m[1]) * _SIZE_UNITS.get(m[2], 1))


@dataclass
class LocalDockerBuilder:
    """Builds with `docker build` (BuildKit embedded in dockerd) and pushes with `docker push`."""

    docker_host: str
    docker_bin: str | None = None
    network: str = "none"
    name: str = "local-dockerd"

    def _bin(self) -> str:
        if not self.docker_bin:
            self.docker_bin = find_buildkit_docker()
        return self.docker_bin

    def _env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": self.docker_host, "DOCKER_BUILDKIT": "1", "BUILDKIT_PROGRESS": "plain"}

    def _stream(self, argv: list[str], log: LogFn, on_line: Iterable | None = None) -> tuple[int, list[str]]:
        """Run argv, stream merged output lines into log, return (exit code, lines)."""
        lines: list[str] = []
        proc = subprocess.Popen(
            argv, env=self._env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            lines.append(line)
            log(line)
            if on_line is not None:
                for cb in on_line:
                    cb(line)
        return proc.wait(), lines

    def build_argv(self, request: BuildRequest) -> list[str]:
        """The `docker build` argv for a request (no shell; values verbatim)."""
        if request.context_dir is None:
            raise BuildError(
                request.target, "the local Docker builder needs a local context (git contexts are checked out first)"
            )
        argv = [self._bin(), "build", "--progress=plain", f"--network={self.network}",
                "--file", str(request.context_dir / request.dockerfile), "--tag", request.image_ref]
        for key, value in request.build_args.items():
            argv += ["--build-arg", f"{key}={value}"]
        if request.target_stage:
            argv += ["--target", request.target_stage]
        if request.platforms:
            if len(request.platforms) > 1:
                raise BuildError(
                    request.target,
                    f"multi-platform builds ({', '.join(request.platforms)}) need buildctl; "
                    "the local engine builds one platform",
                )
            argv += ["--platform", request.platforms[0]]
        for sid, path in request.secrets.items():
            argv += ["--secret", f"id={sid},src={path}"]  # the value stays in the file, never in argv
        for key, value in request.labels.items():
            argv += ["--label", f"{key}={value}"]
        if request.no_cache:
            argv.append("--no-cache")
        argv.append(str(request.context_dir))
        return argv

    def build(self, request: BuildRequest, log: LogFn) -> BuildResult:
        """Build and push; returns the pushed manifest digest."""
        started = time.monotonic()
        if request.cache_ref:
            log(
                f"note: the local engine keeps its own build cache; "
                f"registry cache {request.cache_ref} is used by buildctl builders"
            )
        parser = ProgressParser()
        code, lines = self._stream(self.build_argv(request), log, on_line=[parser.feed])
        if code != 0:
            step, output = parser.failing_step()
            raise BuildError(
                request.target, f"docker build exited with {code}", step=step, output=output or "\n".join(lines[-40:])
            )
        code, push_lines = self._stream([self._bin(), "push", request.image_ref], log)
        if code != 0:
            raise BuildError(
                request.target,
                f"docker push of {request.image_ref} exited with {code}",
                step="push",
                output="\n".join(push_lines[-20:]),
            )
        digest = next((m[1] for ln in push_lines if (m := _PUSH_DIGEST_RE.search(ln))), None)
        if digest is None:
            raise BuildError(
                request.target,
                "docker push did not report a manifest digest",
                step="push",
                output="\n".join(push_lines[-20:]),
            )
        check_platforms(request, parser, pushed=((request.image_ref, digest),), builder=self.name)
        return BuildResult(
            image_ref=request.image_ref,
            digest=digest,
            builder=self.name,
            duration_s=round(time.monotonic() - started, 3),
            cache_hits=parser.cache_hits,
            steps_total=len(parser.build_steps),
            log_tail="\n".join(lines[-20:]),
            warnings=tuple(parser.warnings),
        )

    def cache_usage(self) -> int:
        """Bytes of build cache the engine holds (`docker system df`)."""
        res = subprocess.run([self._bin(), "system", "df", "--format", "{{.Type}}\t{{.Size}}"],
                             env=self._env(), capture_output=True, text=True, check=True)
        for line in res.stdout.splitlines():
            kind, _, size = line.partition("\t")
            if kind.strip() == "Build Cache":
                return _parse_size(size)
        return 0

    def prune(
        self,
        *,
        keep_storage_bytes: int | None = None,
        keep_duration_s: int | None = None,
        free_storage_bytes: int | None = None,
        log: LogFn,
    ) -> list[PruneResult]:
        """`docker builder prune` with the engine's flags; usage before/after from `docker system df`."""
        before = self.cache_usage()
        argv = [self._bin(), "builder", "prune", "--force", "--all"]
        if keep_storage_bytes is not None:
            argv += ["--keep-storage", str(keep_storage_bytes)]
        if keep_duration_s is not None:
            argv += ["--filter", f"until={keep_duration_s}s"]
        if free_storage_bytes is not None:
            log("the local Docker engine has no --free-storage; using keep-storage/keep-duration only")
        code, lines = self._stream(argv, log)
        if code != 0:
            raise RuntimeError(f"builder {self.name}: prune failed: {' | '.join(lines[-5:])}")
        after = self.cache_usage()
        return [
            PruneResult(builder=self.name, bytes_before=before, bytes_after=after, freed_bytes=max(0, before - after))
        ]
