"""The `buildctl` contract over REAL buildctl v0.23.2 transcripts (tests/fakes/buildctl_transcripts/v0.23.2/).

The stand-in on PATH replays the transcript whose recorded argv equals ours (modulo paths, addresses and loopback
ports), so every expectation below is about what BuildKit really printed. It also records argv, env and the files
visible during the call, for the secret and TLS assertions.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from resources.builders.base import BuildError, BuildRequest
from resources.builders.buildctl import BuildctlBuilder, BuilderUnavailableError, _megabytes, redactor
from resources.builders.docker_auth import RegistryCredential
from resources.builders.pool import BuilderPool, PruneError, StaticEndpoints, rendezvous_order
from resources.builders.tls import TlsFromSecret
from tests.fakes.buildctl_cases import CONTEXT, argv, metadata, output, request_for, tls_files

ADDR = "tcp://buildkitd-0.buildkitd.streamable-builders.svc:1234"
AUTH_REGISTRY = "127.0.0.1:5096"
PASSWORD = "registry-pass-" + "Zx9" * 10
SECRET_VALUE = "npm_super_secret_value_42"
MB = 1_000_000


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "secrets" / "npm_token"
    path.parent.mkdir()
    path.write_text(SECRET_VALUE)
    return path


@pytest.fixture
def tls(tmp_path: Path):
    return tls_files(tmp_path / "certs")


def creds() -> list[RegistryCredential]:
    return [RegistryCredential(AUTH_REGISTRY, "pusher", PASSWORD)]


def _du_sizes(case: str) -> int:
    """Sum of `size` over the records of a recorded `du --format json` (null = empty cache)."""
    from tests.fakes.buildctl_cases import TRANSCRIPTS

    records = json.loads((TRANSCRIPTS / f"{case}.stdout").read_text()) or []
    return sum(r["size"] for r in records if r["size"] > 0)


def _du_table_total(case: str) -> float:
    """buildctl's own `Total:` line of the table rendering, in MB (an independent view of the same cache)."""
    from tests.fakes.buildctl_cases import TRANSCRIPTS

    line = next(ln for ln in (TRANSCRIPTS / f"{case}.stdout").read_text().splitlines() if ln.startswith("Total:"))
    value = line.split()[-1]
    return float(value[:-2]) if value.endswith("MB") else float(value.rstrip("B")) / MB


# -- argv ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "case", ["build-regcache-cold", "build-auth-push", "build-fail-run-cold", "build-arm64-amd64-base"]
)
def test_build_argv_is_the_recorded_argv(case, secret_file, tls):
    with tls.materialize() as files:
        ours = BuildctlBuilder("tcp://127.0.0.1:5092").build_argv(
            request_for(case, secret_file=secret_file), metadata_file=Path("/tmp/m/metadata.json"), tls=files)
    recorded = argv(case)
    swap = {str(CONTEXT): "$WORK/fx/ctx", str(secret_file): "$WORK/fx/secrets/npm_token", "/tmp/m": "$TMP",
            str(tls.ca_cert.parent): "$WORK/certs/client"}
    def norm(args):
        out = []
        for a in args:
            for k, v in swap.items():
                a = a.replace(k, v)
            out.append(a)
        return out
    assert norm(ours[1:]) == recorded[1:]


def test_exact_flags_for_a_multi_platform_request_with_every_option(secret_file, tmp_path):
    ctx = tmp_path / "src"
    (ctx / "docker").mkdir(parents=True)
    (ctx / "docker" / "Dockerfile.prod").write_text("FROM scratch\n")
    ref, cache = "127.0.0.1:5091/team/app:build-1", "127.0.0.1:5091/team/app:buildcache"
    request = BuildRequest(
        target="app", image_ref=ref, dockerfile="docker/Dockerfile.prod", context_dir=ctx,
        build_args={"PYTHON_VERSION": "3.11", "EMPTY": ""}, secrets={"npm_token": secret_file},
        target_stage="runtime", platforms=("linux/amd64", "linux/arm64"), cache_ref=cache,
        labels={"org.opencontainers.image.revision": "0123456789ab"})
    meta = tmp_path / "m.json"
    assert BuildctlBuilder(ADDR).build_argv(request, metadata_file=meta) == [
        "buildctl", "--addr", ADDR,
        "build", "--frontend", "dockerfile.v0", "--progress", "plain",
        "--local", f"context={ctx}", "--local", f"dockerfile={ctx / 'docker'}", "--opt", "filename=Dockerfile.prod",
        "--opt", "target=runtime", "--opt", "platform=linux/amd64,linux/arm64",
        "--opt", "build-arg:PYTHON_VERSION=3.11", "--opt", "build-arg:EMPTY=",
        "--opt", "label:org.opencontainers.image.revision=0123456789ab",
        "--secret", f"id=npm_token,src={secret_file}",
        "--output", f"type=image,name={ref},push=true,oci-mediatypes=true,compression=gzip,force-compression=true",
        "--export-cache", f"type=registry,ref={cache},mode=max,image-manifest=true,oci-mediatypes=true",
        "--import-cache", f"type=registry,ref={cache}",
        "--metadata-file", str(meta),
    ]


def test_no_cache_rebuilds_every_step_and_skips_the_cache_import(tmp_path):
    # No transcript was recorded with --no-cache (real buildctl flag, cmd/buildctl/build.go): argv only.
    request = request_for("build-regcache-cold", secret_file=tmp_path / "s", no_cache=True, secrets={})
    args = BuildctlBuilder(ADDR).build_argv(request, metadata_file=tmp_path / "m.json")
    assert "--no-cache" in args and "--import-cache" not in args
    assert any(a.startswith("type=registry,ref=127.0.0.1:5091/fixtures/app:buildcache,mode=max") for a in args)


def test_git_context_argv_and_file_urls_refused_up_front(fake_buildctl):
    git = "https://github.com/org/repo.git#0123456789abcdef:services/api"
    args = BuildctlBuilder(ADDR).build_argv(BuildRequest(target="api", image_ref="127.0.0.1:5091/a:1", git_context=git),
                                            metadata_file=Path("/tmp/m.json"))
    assert args[args.index("build") : args.index("build") + 9] == [
        "build",
        "--frontend",
        "dockerfile.v0",
        "--progress",
        "plain",
        "--opt",
        f"context={git}",
        "--opt",
        "filename=Dockerfile",
    ]
    for url in ("file:///srv/git/repo.git#main", "/srv/git/repo.git#main"):
        with pytest.raises(BuildError, match="is a local path: buildkitd .* refuses local git sources"):
            BuildctlBuilder(ADDR).build(BuildRequest(target="api", image_ref="127.0.0.1:5091/a:1", git_context=url),
                                        lambda _l: None)
    assert fake_buildctl.calls() == []


# -- successful builds -----------------------------------------------------------------------------------------

def test_cold_build_digest_steps_and_cache_hits(fake_buildctl, secret_file, tls):
    logs: list[str] = []
    result = BuildctlBuilder(ADDR, tls=tls).build(
        request_for("build-regcache-cold", secret_file=secret_file), logs.append
    )
    (call,) = fake_buildctl.calls()
    assert call["case"] == "build-regcache-cold"
    assert result.digest == metadata("build-regcache-cold")["containerimage.digest"]
    assert result.steps_total == 6 and result.cache_hits == 0  # [deps 1/2] .. [runtime 3/3]; #6 printed twice
    assert "#9 DONE 0.1s" in logs  # streamed line by line
    assert not Path(call["argv"][-1]).exists()  # temp work dir removed


def test_warm_build_counts_cache_hits(fake_buildctl, secret_file, tls):
    result = BuildctlBuilder(ADDR, tls=tls).build(
        request_for("build-regcache-warm", secret_file=secret_file), lambda _l: None
    )
    assert result.steps_total == 6 and result.cache_hits == 5  # every instruction but the repeated FROM: CACHED


def test_auth_sharing_credentials_is_not_a_build_step(fake_buildctl, secret_file, tls):
    result = BuildctlBuilder(ADDR, tls=tls, credentials=creds).build(
        request_for("build-auth-push", secret_file=secret_file), lambda _l: None)
    assert "[auth] sharing credentials for 127.0.0.1:5096" in output("build-auth-push")
    assert result.steps_total == 6
    assert result.digest == metadata("build-auth-push")["containerimage.digest"]


def test_platform_mismatch_fails_with_the_pushed_candidate_unless_allowed(fake_buildctl, secret_file, tls):
    builder = BuildctlBuilder(ADDR, name="bk0", tls=tls)
    request = request_for("build-arm64-amd64-base", secret_file=secret_file)
    logs: list[str] = []
    with pytest.raises(BuildError) as exc:
        builder.build(request, logs.append)
    err = exc.value
    assert err.step == "platform check"
    assert 'pulled with platform "linux/amd64", expected "linux/arm64"' in str(err)
    assert "allow_platform_mismatch" in str(err)
    digest = metadata("build-arm64-amd64-base")["containerimage.digest"]
    assert err.pushed == ((request.image_ref, digest),)
    assert len(err.warnings) == 2 and all(w.startswith("InvalidBaseImagePlatform:") for w in err.warnings)
    assert any("WARN: InvalidBaseImagePlatform" in line for line in logs)  # carried into the run's log
    result = builder.build(request_for("build-arm64-amd64-base", secret_file=secret_file, allow_platform_mismatch=True),
                           lambda _l: None)
    assert result.digest == digest and len(result.warnings) == 2


# -- failures --------------------------------------------------------------------------------------------------

def test_failing_step_is_the_run_not_the_cold_cache_import(fake_buildctl, secret_file, tls):
    request = request_for("build-fail-run-cold", secret_file=secret_file)
    with pytest.raises(BuildError) as exc:
        BuildctlBuilder(ADDR, name="bk0", tls=tls).build(request, lambda _l: None)
    err = exc.value
    assert "#4 ERROR: failed to configure registry cache importer" in output("build-fail-run-cold")
    assert err.step is not None and err.step.startswith("[2/2] RUN echo compiling 1.2.3")
    assert "make: *** No rule to make target 'all'." in err.output
    assert "did not complete successfully: exit code: 2" in err.output
    assert "cache importer" not in err.output
    assert "buildctl on bk0 exited with 1" in str(err) and not isinstance(err, BuilderUnavailableError)
    assert err.pushed == ()


def test_push_refused_401_fails_at_the_export_step(fake_buildctl, secret_file, tls):
    with pytest.raises(BuildError) as exc:
        BuildctlBuilder(ADDR, tls=tls, credentials=creds).build(
            request_for("build-auth-wrong-password", secret_file=secret_file), lambda _l: None)
    err = exc.value
    assert err.step == "exporting to image"
    assert "failed to push 127.0.0.1:5096/fixtures/auth:cand-2" in err.output and "401 Unauthorized" in err.output
    assert PASSWORD not in str(err) and err.pushed == ()


@pytest.mark.parametrize("case", ["build-killed-during-run-eof", "build-killed-during-run-connection-reset"])
def test_builder_killed_during_a_step_fails_that_step_and_is_not_retried(fake_buildctl, secret_file, tls, case):
    request = request_for(case, secret_file=secret_file)
    fake_buildctl.configure(script={ADDR: [case]})
    with pytest.raises(BuildError) as exc:
        BuildctlBuilder(ADDR, tls=tls).build(request, lambda _l: None)
    err = exc.value
    assert not isinstance(err, BuilderUnavailableError)  # steps ran: a real failure, never retried elsewhere
    assert err.step is not None and err.step.startswith("[2/2] RUN echo start slow step")
    assert "tick 3" in err.output and "error reading from server" in err.output


def test_builder_killed_after_the_push_reports_the_pushed_candidate(fake_buildctl, secret_file, tls):
    request = request_for("build-killed-after-push", secret_file=secret_file)
    with pytest.raises(BuildError) as exc:
        BuildctlBuilder(ADDR, tls=tls).build(request, lambda _l: None)
    err = exc.value
    assert err.step == "exporting cache to registry"
    assert err.pushed == ((request.image_ref,
                           "sha256:52f2621e600b7b6744e6a7c00deb3beb473569047ed4a4b48b77231fd44a40dc"),)


def test_missing_snapshotter_fails_the_first_step(fake_buildctl, secret_file, tls):
    with pytest.raises(BuildError) as exc:
        BuildctlBuilder(ADDR, tls=tls).build(request_for("build-soci-snapshotter-missing", secret_file=secret_file),
                                             lambda _l: None)
    assert exc.value.step == "[internal] load build definition from Dockerfile"
    assert "snapshotter not loaded: soci" in exc.value.output


@pytest.mark.parametrize("case", [
    "build-tls-client-cert-other-ca-broken-pipe", "build-tls-client-cert-other-ca-unknown-authority",
    "build-tls-server-ca-other", "build-no-tls-against-tls", "build-builder-stopped"])
def test_tls_and_transport_failures_are_builder_unavailable(fake_buildctl, secret_file, tls, case):
    fake_buildctl.configure(script={ADDR: [case]})
    no_tls = case == "build-no-tls-against-tls"
    with pytest.raises(BuilderUnavailableError, match="builder bk0 is unavailable") as exc:
        BuildctlBuilder(ADDR, name="bk0", tls=None if no_tls else tls).build(
            request_for(case, secret_file=secret_file), lambda _l: None)
    assert exc.value.output.strip().splitlines()[-1] == output(case).strip().splitlines()[-1]


def test_pool_fails_over_a_broken_pipe_before_any_build_starts(fake_buildctl, secret_file, tls):
    # The transcripts hold the same argv failing two ways (a client certificate from another CA): the first
    # builder's broken pipe must send the build to the second, whose handshake fails too; both reasons are named.
    a, b = "tcp://127.0.0.1:5092", "tcp://127.0.0.1:5094"
    key = next(k for k in (f"key-{i}" for i in range(100))
               if rendezvous_order(k, ["127.0.0.1:5092", "127.0.0.1:5094"])[0] == "127.0.0.1:5092")
    fake_buildctl.configure(script={a: ["build-tls-client-cert-other-ca-broken-pipe"],
                                    b: ["build-tls-client-cert-other-ca-unknown-authority"]})
    pool = BuilderPool(StaticEndpoints((a, b)), tls=tls, probe_timeout_s=None)
    request = request_for("build-tls-client-cert-other-ca-broken-pipe", secret_file=secret_file, routing_key=key)
    with pytest.raises(BuildError) as exc:
        pool.build(request, lambda _l: None)
    text = str(exc.value)
    assert "no builder in static list of 2 builder(s) could take the build" in text
    assert "127.0.0.1:5092: buildctl could not connect" in text and "write: broken pipe" in text
    assert "127.0.0.1:5094: buildctl could not connect" in text and "unknown certificate authority" in text
    assert [c["addr"] for c in fake_buildctl.calls()] == [a, b]


def test_a_call_that_matches_no_transcript_fails_loudly(fake_buildctl, secret_file, tls):
    request = request_for(
        "build-fail-run-cold", secret_file=secret_file, image_ref="127.0.0.1:5091/fixtures/failing:other-tag"
    )
    with pytest.raises(BuildError) as exc:
        BuildctlBuilder(ADDR, tls=tls).build(request, lambda _l: None)
    assert "no transcript matches argv" in str(exc.value) and "nearest 'build-fail-run-cold'" in str(exc.value)


# -- secrets, credentials, TLS ---------------------------------------------------------------------------------

def test_secrets_never_reach_argv_env_or_logs(fake_buildctl, secret_file, tls):
    logs: list[str] = []
    BuildctlBuilder(ADDR, tls=tls, credentials=creds).build(
        request_for("build-auth-push", secret_file=secret_file), logs.append
    )
    call = fake_buildctl.calls()[0]
    assert call["secrets"]["npm_token"]["exists"] is True
    for value in (SECRET_VALUE, PASSWORD):
        assert not any(value in a for a in call["argv"])
        assert not any(value in v for k, v in call["env"].items() if k != "FAKE_BUILDCTL_RECORD")
        assert not any(value in line for line in logs)
    assert not any("build-arg:npm_token" in a for a in call["argv"])


def test_docker_config_exists_during_the_call_and_is_gone_after(fake_buildctl, secret_file, tls):
    BuildctlBuilder(ADDR, tls=tls, credentials=creds).build(
        request_for("build-auth-push", secret_file=secret_file), lambda _l: None
    )
    call = fake_buildctl.calls()[0]
    cfg = call["docker_config_json"]
    assert call["docker_config"] and cfg["exists"]
    assert call["docker_config_dir_mode"] == "0o700" and cfg["mode"] == "0o600"
    auths = json.loads(cfg["content"])["auths"]
    assert list(auths) == [AUTH_REGISTRY]
    assert base64.b64decode(auths[AUTH_REGISTRY]["auth"]).decode() == f"pusher:{PASSWORD}"
    assert not Path(call["docker_config"]).exists()


def test_docker_config_removed_after_a_failed_build(fake_buildctl, secret_file, tls):
    with pytest.raises(BuildError):
        BuildctlBuilder(ADDR, tls=tls, credentials=creds).build(
            request_for("build-auth-wrong-password", secret_file=secret_file), lambda _l: None)
    call = fake_buildctl.calls()[0]
    assert call["docker_config_json"]["exists"] and not Path(call["docker_config"]).exists()


def test_credentials_are_fetched_for_every_build(fake_buildctl, secret_file, tls):
    tokens = iter(["token-one-aaaa", "token-two-bbbb"])
    builder = BuildctlBuilder(
        ADDR, tls=tls, credentials=lambda: [RegistryCredential(AUTH_REGISTRY, "pusher", next(tokens))]
    )
    fake_buildctl.configure(script={ADDR: ["build-auth-push", "build-auth-push"]})
    for _ in range(2):
        builder.build(request_for("build-auth-push", secret_file=secret_file), lambda _l: None)
    auths = [
        json.loads(c["docker_config_json"]["content"])["auths"][AUTH_REGISTRY]["auth"] for c in fake_buildctl.calls()
    ]
    assert [base64.b64decode(a).decode() for a in auths] == ["pusher:token-one-aaaa", "pusher:token-two-bbbb"]


def test_tls_flags_from_files(fake_buildctl, secret_file, tls):
    BuildctlBuilder(ADDR, tls=tls).build(request_for("build-regcache-cold", secret_file=secret_file), lambda _l: None)
    args = fake_buildctl.calls()[0]["argv"]
    assert args[:10] == ["--addr", ADDR, "--tlscacert", str(tls.ca_cert), "--tlscert", str(tls.cert),
                         "--tlskey", str(tls.key), "--tlsservername", "buildkitd"]
    assert tls.key.exists()  # files given by the user are left in place


def test_tls_flags_from_kubernetes_secret_exist_only_during_the_call(fake_buildctl, fake_k8s, core_api, secret_file):
    fake_k8s.add_secret("streamable-builders", "buildkit-client-certs",
                        {"ca.pem": b"CA-PEM", "cert.pem": b"CERT-PEM", "key.pem": b"KEY-PEM-secret"})
    logs: list[str] = []
    BuildctlBuilder(ADDR, tls=TlsFromSecret(core_api=core_api)).build(
        request_for("build-regcache-cold", secret_file=secret_file), logs.append)
    call = fake_buildctl.calls()[0]
    assert {f: (v["exists"], v["mode"]) for f, v in call["tls"].items()} == {
        "--tlscacert": (True, "0o600"), "--tlscert": (True, "0o600"), "--tlskey": (True, "0o600")}
    assert call["tls"]["--tlskey"]["content"] == "KEY-PEM-secret"
    key_path = call["argv"][call["argv"].index("--tlskey") + 1]
    assert not Path(key_path).exists() and not Path(key_path).parent.exists()
    assert not any("KEY-PEM-secret" in a for a in call["argv"]) and not any("KEY-PEM-secret" in line for line in logs)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"git_context": "https://user:ghp_TOKENVALUE@github.com/org/repo.git#main", "context_dir": None},
         "embeds credentials"),
        ({"image_ref": "127.0.0.1:5091/app:x,push=false"}, "must not contain commas"),
        ({"dockerfile": "missing/Dockerfile"}, "does not exist"),
        ({"secrets": {"tok": Path("/nonexistent/secret")}}, "file for build secret 'tok' does not exist"),
        ({"secrets": {"bad id": Path("/etc/hostname")}}, "secret id 'bad id'"),
        ({"git_context": "https://github.com/org/repo.git"}, "exactly one of context_dir and git_context"),
        ({"build_args": {"A=B": "c"}}, "build arg name 'A=B'"),
    ],
)
def test_bad_requests_are_rejected_before_buildctl_runs(fake_buildctl, changes, message):
    fields = {"target": "app", "image_ref": "127.0.0.1:5091/app:1", "context_dir": CONTEXT, **changes}
    with pytest.raises(BuildError, match=message) as exc:
        BuildctlBuilder(ADDR).build(BuildRequest(**fields), lambda _l: None)
    assert "ghp_TOKENVALUE" not in str(exc.value)
    assert fake_buildctl.calls() == []


def test_credential_and_tls_failures_are_build_errors_and_buildctl_never_runs(fake_buildctl, tmp_path):
    from resources.aws.ecr import EcrError
    from resources.builders.tls import TlsFromFiles

    def failing() -> list[RegistryCredential]:
        raise EcrError("ECR GetAuthorizationToken failed: AccessDeniedException: not authorized")

    request = BuildRequest(target="app", image_ref="127.0.0.1:5091/app:1", context_dir=CONTEXT)
    with pytest.raises(BuildError, match="push credentials could not be obtained: ECR GetAuthorizationToken failed"):
        BuildctlBuilder(ADDR, credentials=failing).build(request, lambda _l: None)
    missing = tmp_path / "nope.pem"
    with pytest.raises(
        BuildError, match=r"TLS material for builder b0: buildkit TLS CA certificate .*nope.pem does not exist"
    ):
        BuildctlBuilder(ADDR, name="b0", tls=TlsFromFiles(missing, missing, missing)).build(request, lambda _l: None)
    assert fake_buildctl.calls() == []


def test_redactor_and_credential_repr():
    scrub = redactor(["s3cr3t-value", "", "abc"])
    assert scrub("token s3cr3t-value and abc") == "token *** and abc"
    assert PASSWORD not in repr(RegistryCredential(AUTH_REGISTRY, "pusher", PASSWORD))


# -- du / prune ------------------------------------------------------------------------------------------------

def test_disk_usage_reads_the_real_lowercase_keys(fake_buildctl, tls):
    fake_buildctl.configure(script={ADDR: ["du-json", "du-json-empty"]})
    builder = BuildctlBuilder(ADDR, tls=tls)
    used = builder.disk_usage()
    assert used == _du_sizes("du-json") and used > 60 * MB
    assert round(used / MB, 2) == _du_table_total("du-table")  # buildctl's own table says the same
    assert builder.disk_usage() == 0  # `null` on an empty cache


def test_prune_reports_before_freed_and_after(fake_buildctl, tls):
    fake_buildctl.configure(script={ADDR: ["du-json-after-partial-prune", "prune-json", "du-json-after-prune"]})
    logs: list[str] = []
    (result,) = BuildctlBuilder(ADDR, name="bk0", tls=tls).prune(log=logs.append)
    freed = sum(json.loads(ln)["size"] for ln in output("prune-json").splitlines() if ln.strip())
    assert freed > 50 * MB
    assert (result.builder, result.bytes_before, result.freed_bytes, result.bytes_after) == (
        "bk0", _du_sizes("du-json-after-partial-prune"), freed, 0)
    assert [c["argv"][c["argv"].index("buildkitd") + 1:] for c in fake_buildctl.calls()] == [
        ["du", "--format", "json"], ["prune", "--format", "json"], ["du", "--format", "json"]]


def test_prune_that_frees_nothing_and_prune_of_an_empty_cache(fake_buildctl, tls):
    fake_buildctl.configure(script={ADDR: ["du-json", "prune-json-keep-storage-high", "du-json",
                                           "du-json-empty", "prune-json-all-empty", "du-json-empty"]})
    builder = BuildctlBuilder(ADDR, tls=tls)
    (nothing,) = builder.prune(keep_storage_bytes=10**15, log=lambda _l: None)
    assert (nothing.freed_bytes, nothing.bytes_before, nothing.bytes_after) == (
        0,
        _du_sizes("du-json"),
        _du_sizes("du-json"),
    )
    builder.prune_all = True
    (empty,) = builder.prune(keep_storage_bytes=0, log=lambda _l: None)
    assert (empty.bytes_before, empty.freed_bytes, empty.bytes_after) == (0, 0, 0)


def test_prune_limits_are_the_recorded_flags(fake_buildctl, tls):
    fake_buildctl.configure(
        script={
            ADDR: [
                "du-json",
                "prune-json-keep-duration-storage",
                "du-json",
                "du-json",
                "prune-json-free-storage-high",
                "du-json-after-free-storage-high",
            ]
        }
    )
    builder = BuildctlBuilder(ADDR, tls=tls)
    (kept,) = builder.prune(keep_duration_s=3600, keep_storage_bytes=20 * MB, log=lambda _l: None)
    assert kept.freed_bytes == 0  # the recorded prune freed nothing under these limits
    (free,) = builder.prune(free_storage_bytes=10**15, log=lambda _l: None)
    assert free.freed_bytes == sum(
        json.loads(ln)["size"] for ln in output("prune-json-free-storage-high").splitlines() if ln.strip()
    )
    assert [c["case"] for c in fake_buildctl.calls()][1::3] == [
        "prune-json-keep-duration-storage",
        "prune-json-free-storage-high",
    ]


def test_megabyte_conversion_is_exact():
    assert [_megabytes(b) for b in (0, 1, 1_500_000, 10**12, 123_456_789)] == [
        "0",
        "0.000001",
        "1.5",
        "1000000",
        "123.456789",
    ]


def test_pool_prune_continues_past_a_stopped_builder(fake_buildctl, tls):
    a, b = "tcp://127.0.0.1:5092", "tcp://127.0.0.1:5094"
    fake_buildctl.configure(script={a: ["du-json-after-partial-prune", "prune-json", "du-json-after-prune"],
                                    b: ["du-json-builder-stopped"]})
    with pytest.raises(PruneError) as exc:
        BuilderPool(StaticEndpoints((a, b)), tls=tls, probe_timeout_s=None).prune(log=lambda _l: None)
    err = exc.value
    assert [(r.builder, r.bytes_after) for r in err.results] == [("127.0.0.1:5092", 0)]
    assert list(err.failures) == ["127.0.0.1:5094"] and "connection refused" in err.failures["127.0.0.1:5094"]


# -- endpoint names --------------------------------------------------------------------------------------------

def test_static_endpoint_names_do_not_change_when_a_builder_is_added():
    lone = StaticEndpoints(("tcp://127.0.0.1:5092",)).endpoints()
    two = StaticEndpoints(("tcp://127.0.0.1:5092", "tcp://127.0.0.1:5094")).endpoints()
    assert [e.name for e in lone] == ["127.0.0.1:5092"]
    assert [e.name for e in two] == ["127.0.0.1:5092", "127.0.0.1:5094"]
    with pytest.raises(ValueError, match="names 127.0.0.1:5092 more than once"):
        StaticEndpoints(("tcp://127.0.0.1:5092", "tcp://127.0.0.1:5092")).endpoints()
