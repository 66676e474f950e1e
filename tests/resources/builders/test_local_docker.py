"""The local builder against the stack's real dockerd (embedded BuildKit) and registry."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import httpx
import pytest

from resources.builders.base import BuildError, BuildRequest
from resources.builders.local_docker import LocalDockerBuilder
from tests.conftest import DockerEngine, RunningRegistry

NASTY = "a b;$(touch /pwned)`id`|&>x<'\"\\ ${HOME} *?"


def make_context(root: Path, dockerfile: str, files: dict[str, bytes] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "Dockerfile").write_text(dockerfile)
    for name, data in (files or {}).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def builder_for(engine: DockerEngine) -> LocalDockerBuilder:
    return LocalDockerBuilder(docker_host=engine.host, docker_bin=engine.docker_bin)


def read_file_from_image(engine: DockerEngine, ref: str, path: str) -> bytes:
    cid = engine.run("create", ref, "/bin/true").stdout.strip()
    try:
        import subprocess

        out = subprocess.run(
            [engine.docker_bin, "cp", f"{cid}:{path}", "-"], env=engine.env(), capture_output=True, check=True
        ).stdout
    finally:
        engine.run("rm", "-f", cid, check=False)
    with tarfile.open(fileobj=io.BytesIO(out)) as tar:
        member = tar.getmembers()[0]
        f = tar.extractfile(member)
        assert f is not None
        return f.read()


def test_build_push_reports_digest_and_cache(
    docker_engine: DockerEngine, registry: RunningRegistry, tmp_path: Path
) -> None:
    ctx = make_context(
        tmp_path / "ctx",
        "FROM streamable/busybox:local\nCOPY data.txt /data.txt\nRUN cat /data.txt > /copy.txt\n",
        {"data.txt": b"payload\n"},
    )
    ref = f"{registry.addr}/team/app:build-1"
    lines: list[str] = []
    res = builder_for(docker_engine).build(BuildRequest(target="app", image_ref=ref, context_dir=ctx), lines.append)
    assert res.digest.startswith("sha256:") and len(res.digest) == 71
    assert res.builder == "local-dockerd"
    head = httpx.head(f"{registry.url}/v2/team/app/manifests/build-1",
                      headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"})
    assert head.headers["Docker-Content-Digest"] == res.digest
    assert any("[2/3] COPY data.txt" in ln for ln in lines), "BuildKit progress is streamed to the log"
    again = builder_for(docker_engine).build(BuildRequest(target="app", image_ref=ref, context_dir=ctx), lines.append)
    assert again.digest == res.digest
    assert again.cache_hits is not None and again.cache_hits >= 2 and again.steps_total == 3


def test_failing_step_output_surfaces_and_nothing_is_pushed(
    docker_engine: DockerEngine, registry: RunningRegistry, tmp_path: Path
) -> None:
    ctx = make_context(
        tmp_path / "ctx",
        "FROM streamable/busybox:local\n"
        "RUN echo compiling-the-thing && echo 'boom: missing header foo.h' >&2 && exit 3\n",
    )
    ref = f"{registry.addr}/team/app:build-bad"
    with pytest.raises(BuildError) as exc:
        builder_for(docker_engine).build(BuildRequest(target="app", image_ref=ref, context_dir=ctx), lambda _: None)
    err = exc.value
    assert err.target == "app"
    assert err.step is not None and "RUN echo compiling-the-thing" in err.step
    assert "boom: missing header foo.h" in err.output
    assert "exit code: 3" in err.output
    assert "boom: missing header foo.h" in str(err)
    assert httpx.get(f"{registry.url}/v2/team/app/tags/list").status_code == 404


def test_build_args_with_shell_metacharacters_arrive_verbatim(
    docker_engine: DockerEngine, registry: RunningRegistry, tmp_path: Path
) -> None:
    ctx = make_context(
        tmp_path / "ctx", 'FROM streamable/busybox:local\nARG NASTY\nRUN printf "%s" "$NASTY" > /arg.txt\n'
    )
    ref = f"{registry.addr}/team/args:build-1"
    b = builder_for(docker_engine)
    req = BuildRequest(target="args", image_ref=ref, context_dir=ctx, build_args={"NASTY": NASTY})
    argv = b.build_argv(req)
    assert ["--build-arg", f"NASTY={NASTY}"] == argv[argv.index("--build-arg"):argv.index("--build-arg") + 2]
    b.build(req, lambda _: None)
    assert read_file_from_image(docker_engine, ref, "/arg.txt").decode() == NASTY
    assert not Path("/pwned").exists()


def test_unsupported_requests_fail_clearly(docker_engine: DockerEngine, tmp_path: Path) -> None:
    b = builder_for(docker_engine)
    with pytest.raises(BuildError, match="multi-platform builds"):
        b.build_argv(
            BuildRequest(target="m", image_ref="r/x:1", context_dir=tmp_path, platforms=("linux/amd64", "linux/arm64"))
        )


def _image_metadata(engine: DockerEngine, ref: str) -> str:
    """The image's config (labels, env, build history) as docker reports it."""
    inspect = engine.run("image", "inspect", ref).stdout
    history = engine.run("history", "--no-trunc", "--format", "{{.CreatedBy}}", ref).stdout
    return inspect + history


def test_build_secret_is_mounted_never_in_argv_logs_or_image(docker_engine: DockerEngine, registry: RunningRegistry,
                                                             tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The secret's value reaches the RUN step, nothing else; independent of what the engine's cache holds.

    The context holds a fresh nonce file COPY'd before the RUN, so the RUN step has a cache key no earlier run made
    (the nonce is random, not derived from the secret). BuildKit keeps secret contents out of the cache key: a
    second build with a rotated value reuses the first one's RUN layer; only no_cache (--no-cache) rebuilds it.
    """
    import hashlib

    from resources.builders.secrets import BuildSecretError, write_build_secrets

    values = ["tok-" + os.urandom(8).hex(), "tok-" + os.urandom(8).hex()]
    ctx = make_context(tmp_path / "ctx", "FROM streamable/busybox:local\nCOPY nonce.txt /nonce.txt\n"
                       "RUN --mount=type=secret,id=npm sha256sum /run/secrets/npm | cut -d' ' -f1 > /secret.sha\n",
                       {"nonce.txt": os.urandom(16).hex().encode()})
    b = builder_for(docker_engine)
    seen: list[str] = []
    all_lines: list[str] = []
    for i, (value, no_cache) in enumerate([(values[0], False), (values[1], False), (values[1], True)]):
        monkeypatch.setenv("NPM_TOKEN_TEST", value)
        files = write_build_secrets("app", {"npm": "NPM_TOKEN_TEST"}, tmp_path / f"secrets-{i}")
        assert oct(files["npm"].stat().st_mode & 0o777) == "0o600"
        assert oct((tmp_path / f"secrets-{i}").stat().st_mode & 0o777) == "0o700"
        ref = f"{registry.addr}/team/sec:build-{i}"
        req = BuildRequest(target="app", image_ref=ref, context_dir=ctx, secrets=files, no_cache=no_cache)
        argv = b.build_argv(req)
        assert f"id=npm,src={files['npm']}" in argv and not any(v in a for a in argv for v in values)
        assert ("--no-cache" in argv) is no_cache
        lines: list[str] = []
        b.build(req, lines.append)
        all_lines += lines
        seen.append(read_file_from_image(docker_engine, ref, "/secret.sha").decode().strip())
        meta = _image_metadata(docker_engine, ref)
        for v in values:
            assert v not in meta and hashlib.sha256(v.encode()).hexdigest() not in meta, (
                "secret-derived text in image config"
            )
    hashes = [hashlib.sha256(v.encode()).hexdigest() for v in values]
    assert seen[0] == hashes[0], "the build saw the secret's value"
    assert seen[1] == hashes[0], (
        "a rotated secret reused the cached RUN layer (BuildKit: secrets are not in the cache key)"
    )
    assert seen[2] == hashes[1], "no_cache rebuilt the RUN step with the rotated secret"
    assert not any(v in ln for ln in all_lines for v in values)
    monkeypatch.delenv("NPM_TOKEN_TEST")
    with pytest.raises(BuildSecretError, match="build secret 'npm' needs environment variable NPM_TOKEN_TEST"):
        write_build_secrets("app", {"npm": "NPM_TOKEN_TEST"}, tmp_path / "s2")
