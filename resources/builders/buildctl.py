"""One remote BuildKit daemon driven through `buildctl` (argv lists only): build+push, disk usage and prune.

Secrets reach BuildKit only as `--secret id=NAME,src=FILE` (never build args, never argv values); push
credentials only through a temporary DOCKER_CONFIG in the subprocess env; TLS material only as file paths.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from resources.builders.base import BuildError, BuildRequest, BuildResult, LogFn, PruneResult
from resources.builders.docker_auth import CredentialsProvider, RegistryCredential, temporary_docker_config
from resources.builders.platforms import check_platforms
from resources.builders.progress import ProgressParser
from resources.builders.tls import TlsError, TlsFiles, TlsSource
from resources.errors import StreamableError

# buildctl's own messages when it cannot use the daemon before any build step started (real v0.23.2 transcripts:
# build-builder-stopped, build-tls-*, build-no-tls-against-tls): gRPC dial errors, DNS, TLS handshake failures
# (a client certificate from another CA ends in `write: broken pipe` or `tls: unknown certificate authority`,
# an untrusted server certificate in `x509: ...`, no TLS against TLS in `error reading server preface: EOF`).
CONNECTION_ERROR_RE = re.compile(
    r"connection refused|code = Unavailable|Unavailable: |error while dialing|failed to dial|failed to list workers"
    r"|no such host|no route to host|network is unreachable|i/o timeout|connection reset by peer|broken pipe"
    r"|authentication handshake failed|x509: |tls: |error reading server preface",
    re.IGNORECASE,
)
_SECRET_ID_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
_CSV_UNSAFE = re.compile(r"[,\"\n\r]")
LOG_TAIL_LINES = 20


class BuilderUnavailableError(BuildError):
    """The builder could not be reached before any build step started; retrying on another builder is safe."""

    def __init__(self, target: str, builder: str, message: str, *, output: str = "") -> None:
        self.builder = builder
        super().__init__(target, f"builder {builder} is unavailable: {message}", step=None, output=output)


class BuildctlError(StreamableError):
    """A non-build buildctl call (du, prune) failed; names the builder and carries buildctl's last lines."""


def redactor(secrets: Iterable[str]) -> Callable[[str], str]:
    """A function that replaces every given secret value (len >= 4) in a line with `***`."""
    values = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)
    if not values:
        return lambda line: line
    pattern = re.compile("|".join(re.escape(v) for v in values))
    return lambda line: pattern.sub("***", line)


def _csv_value(field: str, value: str, target: str) -> str:
    """`value` unchanged when it is safe inside buildctl's comma-separated attributes, else a BuildError."""
    if _CSV_UNSAFE.search(value):
        raise BuildError(
            target, f"{field} {value!r} must not contain commas, quotes or newlines (buildctl CSV attribute)"
        )
    return value


def _check_git_context(url: str, target: str) -> str:
    """Reject git context URLs BuildKit cannot or must not use: local paths and embedded credentials."""
    parts = urlsplit(url.split("#", 1)[0])
    if parts.scheme == "file" or url.startswith("/"):
        raise BuildError(
            target,
            f"git context {url.split('#', 1)[0]!r} is a local path: buildkitd runs on another machine and refuses "
            "local git sources ('no local sources enabled'); give an https:// or ssh:// git URL, or build from a "
            "checked-out context_dir",
        )
    if parts.password or (parts.username and parts.scheme in ("http", "https")):
        raise BuildError(
            target,
            "git context URL embeds credentials; give BuildKit a GIT_AUTH_TOKEN build secret instead "
            f"(host {parts.hostname})",
        )
    return url


def endpoint_name(addr: str) -> str:
    """Stable builder name for an address: `host:port` (or the unix socket path), whatever else is configured."""
    parts = urlsplit(addr)
    if parts.scheme == "unix":
        return parts.path or addr
    return parts.netloc or addr


@dataclass
class BuildctlBuilder:
    """Builds, pushes and garbage-collects on one buildkitd reachable at `addr` (e.g. `tcp://buildkitd-0.buildkitd.ns.svc:1234`)."""

    addr: str
    name: str = ""
    tls: TlsSource | None = None
    credentials: CredentialsProvider | None = None
    buildctl_bin: str = "buildctl"
    prune_all: bool = False
    """Pass `--all` to prune (also remove internal/frontend references)."""
    temp_dir: str | None = None
    """Parent directory for the temporary DOCKER_CONFIG and metadata files (default: the system temp dir)."""

    def __post_init__(self) -> None:
        if not self.name:
            self.name = endpoint_name(self.addr)

    # -- argv ---------------------------------------------------------------------------------------------

    def global_argv(self, tls: TlsFiles | None) -> list[str]:
        """`buildctl --addr ADDR [TLS flags]`."""
        return [self.buildctl_bin, "--addr", self.addr, *(tls.argv() if tls else [])]

    def build_argv(self, request: BuildRequest, *, metadata_file: Path, tls: TlsFiles | None = None) -> list[str]:
        """The full `buildctl build` argv for a request (values verbatim; no shell)."""
        target = request.target
        if (request.context_dir is None) == (request.git_context is None):
            raise BuildError(target, "exactly one of context_dir and git_context must be set")
        argv = [*self.global_argv(tls), "build", "--frontend", "dockerfile.v0", "--progress", "plain"]
        if request.context_dir is not None:
            context = Path(request.context_dir)
            dockerfile = context / request.dockerfile
            if not dockerfile.is_file():
                raise BuildError(target, f"Dockerfile {dockerfile} does not exist")
            argv += ["--local", f"context={context}", "--local", f"dockerfile={dockerfile.parent}",
                     "--opt", f"filename={dockerfile.name}"]
        else:
            git = _check_git_context(str(request.git_context), target)
            argv += ["--opt", f"context={git}", "--opt", f"filename={request.dockerfile}"]
        if request.target_stage:
            argv += ["--opt", f"target={request.target_stage}"]
        if request.platforms:
            argv += ["--opt", f"platform={','.join(request.platforms)}"]
        for key, value in request.build_args.items():
            if not key or "=" in key:
                raise BuildError(target, f"build arg name {key!r} must be non-empty and contain no '='")
            argv += ["--opt", f"build-arg:{key}={value}"]
        for key, value in request.labels.items():
            argv += ["--opt", f"label:{key}={value}"]
        for secret_id, path in request.secrets.items():
            if not _SECRET_ID_RE.match(secret_id):
                raise BuildError(target, f"secret id {secret_id!r} must match [A-Za-z0-9_.-]+")
            if not Path(path).is_file():
                raise BuildError(target, f"file for build secret {secret_id!r} does not exist: {path}")
            argv += ["--secret", f"id={secret_id},src={_csv_value(f'secret {secret_id} path', str(path), target)}"]
        ref = _csv_value("image reference", request.image_ref, target)
        argv += ["--output",
                 f"type=image,name={ref},push=true,oci-mediatypes=true,compression=gzip,force-compression=true"]
        if request.cache_ref:
            cache = _csv_value("cache reference", request.cache_ref, target)
            argv += ["--export-cache", f"type=registry,ref={cache},mode=max,image-manifest=true,oci-mediatypes=true"]
            if not request.no_cache:  # importing a cache no step may use is wasted work
                argv += ["--import-cache", f"type=registry,ref={cache}"]
        if request.no_cache:
            argv.append("--no-cache")
        argv += ["--metadata-file", str(metadata_file)]
        return argv

    def prune_argv(
        self,
        *,
        keep_storage_bytes: int | None,
        keep_duration_s: int | None,
        free_storage_bytes: int | None,
        tls: TlsFiles | None = None,
    ) -> list[str]:
        """`buildctl prune --format json` with keep/free limits (buildctl takes storage in MB = 1e6 bytes)."""
        argv = [*self.global_argv(tls), "prune", "--format", "json"]
        if keep_duration_s is not None:
            argv += ["--keep-duration", f"{int(keep_duration_s)}s"]
        if keep_storage_bytes is not None:
            argv += ["--keep-storage", _megabytes(keep_storage_bytes)]
        if free_storage_bytes is not None:
            argv += ["--free-storage", _megabytes(free_storage_bytes)]
        if self.prune_all:
            argv.append("--all")
        return argv

    # -- running ------------------------------------------------------------------------------------------

    def _env(self, docker_config: Path | None) -> dict[str, str]:
        env = dict(os.environ)
        if docker_config is not None:
            env["DOCKER_CONFIG"] = str(docker_config)
        return env

    def _run(self, argv: list[str], env: dict[str, str], on_line: Callable[[str], None]) -> int:
        """Run argv with stdout+stderr merged; feed every line to on_line; return the exit code."""
        try:
            proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, text=True, bufsize=1, errors="replace")
        except FileNotFoundError:
            raise BuildctlError(
                f"buildctl executable {self.buildctl_bin!r} was not found (install it or set buildctl_bin)"
            ) from None
        assert proc.stdout is not None
        with proc.stdout:
            try:
                for line in proc.stdout:
                    on_line(line.rstrip("\n"))
            except BaseException:  # run cancelled or the log callback failed: do not leave buildctl running
                proc.kill()
                proc.wait()
                raise
        return proc.wait()

    def build(self, request: BuildRequest, log: LogFn) -> BuildResult:
        """Build and push `request.image_ref`; returns the pushed digest from the metadata file."""
        started = time.monotonic()
        parser = ProgressParser()
        tail: deque[str] = deque(maxlen=200)
        with ExitStack() as stack:
            try:
                tls = stack.enter_context(self.tls.materialize()) if self.tls else None
            except TlsError as exc:
                raise BuildError(request.target, f"TLS material for builder {self.name}: {exc}") from None
            try:
                creds: list[RegistryCredential] = list(self.credentials()) if self.credentials else []
            except Exception as exc:  # noqa: BLE001 - e.g. EcrError; its message names the registry, never a token
                raise BuildError(request.target, f"push credentials could not be obtained: {exc}") from None
            scrub = redactor([*(c.password for c in creds), *(c.auth_field() for c in creds)])  # raw and Basic form
            docker_config = stack.enter_context(temporary_docker_config(creds, self.temp_dir)) if creds else None
            work = Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="streamable-buildctl-", dir=self.temp_dir))
            )
            metadata_file = work / "metadata.json"
            argv = self.build_argv(request, metadata_file=metadata_file, tls=tls)
            log(f"buildctl build on {self.name} ({self.addr}): {request.target} -> {request.image_ref}")

            def on_line(raw: str) -> None:
                line = scrub(raw)
                tail.append(line)
                parser.feed(line)
                log(line)

            try:
                code = self._run(argv, self._env(docker_config), on_line)
            except BuildctlError as exc:
                raise BuildError(request.target, str(exc)) from None
            if code != 0:
                self._raise_failure(request, code, parser, list(tail))
            digest = self._read_digest(request.target, metadata_file)
        check_platforms(request, parser, pushed=((request.image_ref, digest),), builder=self.name)
        return BuildResult(
            image_ref=request.image_ref,
            digest=digest,
            builder=self.name,
            duration_s=round(time.monotonic() - started, 3),
            cache_hits=parser.cache_hits,
            steps_total=len(parser.build_steps),
            log_tail="\n".join(list(tail)[-LOG_TAIL_LINES:]),
            warnings=tuple(parser.warnings),
        )

    def _raise_failure(self, request: BuildRequest, code: int, parser: ProgressParser, tail: list[str]) -> None:
        """BuilderUnavailableError when nothing started and buildctl could not connect, else BuildError.

        The BuildError names what BuildKit already pushed under the request's own reference (a failure after the
        image export, e.g. during the cache export), so the caller can discard that candidate.
        """
        target = request.target
        text = "\n".join(tail)
        if not parser.started and CONNECTION_ERROR_RE.search(text):
            raise BuilderUnavailableError(target, self.name, f"buildctl exited with {code} before any step started",
                                          output="\n".join(tail[-10:]))
        step, output = parser.failing_step()
        raise BuildError(target, f"buildctl on {self.name} exited with {code}", step=step,
                         output=output or "\n".join(tail[-40:]),
                         pushed=tuple(p for p in parser.pushed if p[0] == request.image_ref),
                         warnings=tuple(parser.warnings))

    def _read_digest(self, target: str, metadata_file: Path) -> str:
        """`containerimage.digest` from buildctl's --metadata-file."""
        try:
            meta = json.loads(metadata_file.read_text())
        except (OSError, ValueError) as exc:
            raise BuildError(
                target, f"buildctl on {self.name} succeeded but its metadata file is unreadable ({type(exc).__name__})"
            ) from None
        digest = meta.get("containerimage.digest") if isinstance(meta, dict) else None
        if not isinstance(digest, str) or not digest.startswith("sha256:"):
            raise BuildError(target, f"buildctl on {self.name} succeeded but its metadata has no containerimage.digest")
        return digest

    def _capture(self, argv: list[str], what: str) -> list[str]:
        """Run a short buildctl command and return its lines; BuildctlError naming the builder on failure."""
        lines: list[str] = []
        code = self._run(argv, self._env(None), lines.append)
        if code != 0:
            raise BuildctlError(f"buildctl {what} on builder {self.name} ({self.addr}) exited with {code}: "
                                + " | ".join(lines[-5:]))
        return lines

    def disk_usage(self) -> int:
        """Bytes of build cache the daemon holds (`buildctl du --format json`, sum of record sizes)."""
        with ExitStack() as stack:
            tls = stack.enter_context(self.tls.materialize()) if self.tls else None
            lines = self._capture([*self.global_argv(tls), "du", "--format", "json"], "du")
        return sum(_record_size(r) for r in _du_records(lines, self.name))

    def prune(
        self,
        *,
        keep_storage_bytes: int | None = None,
        keep_duration_s: int | None = None,
        free_storage_bytes: int | None = None,
        log: LogFn,
    ) -> list[PruneResult]:
        """Prune this daemon's cache; usage before/after from `du`, freed bytes from prune's own records."""
        before = self.disk_usage()
        with ExitStack() as stack:
            tls = stack.enter_context(self.tls.materialize()) if self.tls else None
            argv = self.prune_argv(keep_storage_bytes=keep_storage_bytes, keep_duration_s=keep_duration_s,
                                   free_storage_bytes=free_storage_bytes, tls=tls)
            log(f"buildctl prune on {self.name}: " + " ".join(argv[argv.index("prune") + 1:]))
            lines = self._capture(argv, "prune")
        freed = sum(_record_size(r) for r in _json_values(lines) if isinstance(r, dict))
        after = self.disk_usage()
        log(f"builder {self.name}: cache {before} -> {after} bytes, prune removed {freed} bytes")
        return [PruneResult(builder=self.name, bytes_before=before, bytes_after=after, freed_bytes=freed)]


def _megabytes(num_bytes: int) -> str:
    """Bytes as buildctl's MB float (1 MB = 1e6 bytes), without exponent notation."""
    if num_bytes < 0:
        raise ValueError(f"storage limit must be >= 0 bytes, got {num_bytes}")
    whole, rest = divmod(int(num_bytes), 1_000_000)
    return f"{whole}.{rest:06d}".rstrip("0").rstrip(".")


def _record_size(record: object) -> int:
    """A cache record's `size` (buildctl's JSON keys are lowercase); negative or missing sizes count 0."""
    size = record.get("size") if isinstance(record, dict) else None
    return size if isinstance(size, int) and size > 0 else 0


def _du_records(lines: list[str], builder: str) -> list[dict]:
    """The records of `buildctl du --format json`: one JSON array line, or `null` for an empty cache."""
    if any(line.strip() == "null" for line in lines):
        return []
    arrays = [v for v in _json_values(lines) if isinstance(v, list)]
    if not arrays:
        raise BuildctlError(f"buildctl du on builder {builder} printed no JSON array: " + " | ".join(lines[-3:]))
    return [r for r in arrays[-1] if isinstance(r, dict)]


def _json_values(lines: list[str]) -> list:
    """Every line that parses as JSON (buildctl may print warnings around the JSON)."""
    out = []
    for line in lines:
        line = line.strip()
        if line[:1] in ("{", "["):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out
