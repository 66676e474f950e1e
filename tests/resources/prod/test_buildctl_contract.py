"""The `buildctl` contract, checked with the stand-in on PATH that records argv, env and files seen during the call.

Real buildkitd is not exercised here: these tests pin the exact command lines streamable runs.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest

from resources.builders.base import BuildError, BuildRequest
from resources.builders.buildctl import BuildctlBuilder, BuilderUnavailableError, _megabytes, redactor
from resources.builders.docker_auth import RegistryCredential
from resources.builders.pool import BuilderPool, PruneError, StaticEndpoints
from resources.builders.tls import TlsFromFiles, TlsFromSecret

ADDR = "tcp://buildkitd-0.buildkitd.streamable-builders.svc:1234"
REGISTRY = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
REF = f"{REGISTRY}/team/app:build-0123456789ab-deadbeef"
CACHE = f"{REGISTRY}/team/app:buildcache"
PASSWORD = "ecr-token-" + "Zx9" * 10
SECRET_VALUE = "npm_super_secret_value_42"


@pytest.fixture
def context(tmp_path: Path) -> Path:
    ctx = tmp_path / "src"
    (ctx / "docker").mkdir(parents=True)
    (ctx / "docker" / "Dockerfile.prod").write_text("FROM busybox AS runtime\nRUN echo hi\n")
    (ctx / "Dockerfile").write_text("FROM busybox\n")
    return ctx


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "secrets" / "npm_token"
    path.parent.mkdir()
    path.write_text(SECRET_VALUE)
    return path


def creds() -> list[RegistryCredential]:
    return [RegistryCredential(REGISTRY, "AWS", PASSWORD)]


def full_request(context: Path, secret_file: Path) -> BuildRequest:
    return BuildRequest(
        target="app", image_ref=REF, dockerfile="docker/Dockerfile.prod", context_dir=context,
        build_args={"PYTHON_VERSION": "3.11", "EMPTY": ""}, secrets={"npm_token": secret_file},
        target_stage="runtime", platforms=("linux/amd64", "linux/arm64"), cache_ref=CACHE,
        routing_key="github.com/org/app:.", labels={"org.opencontainers.image.revision": "0123456789ab"},
    )


def test_local_context_build_has_exact_flags(fake_buildctl, context, secret_file):
    logs: list[str] = []
    result = BuildctlBuilder(ADDR, credentials=creds).build(full_request(context, secret_file), logs.append)
    (call,) = fake_buildctl.calls()
    argv = call["argv"]
    metadata_file = argv[-1]
    assert argv == [
        "--addr", ADDR,
        "build", "--frontend", "dockerfile.v0", "--progress", "plain",
        "--local", f"context={context}", "--local", f"dockerfile={context / 'docker'}", "--opt", "filename=Dockerfile.prod",
        "--opt", "target=runtime",
        "--opt", "platform=linux/amd64,linux/arm64",
        "--opt", "build-arg:PYTHON_VERSION=3.11", "--opt", "build-arg:EMPTY=",
        "--opt", "label:org.opencontainers.image.revision=0123456789ab",
        "--secret", f"id=npm_token,src={secret_file}",
        "--output", f"type=image,name={REF},push=true,oci-mediatypes=true,compression=gzip,force-compression=true",
        "--export-cache", f"type=registry,ref={CACHE},mode=max,image-manifest=true,oci-mediatypes=true",
        "--import-cache", f"type=registry,ref={CACHE}",
        "--metadata-file", metadata_file,
    ]
    assert call["secrets"]["npm_token"]["exists"] is True
    assert not Path(metadata_file).exists()  # temp work dir removed
    assert result.digest == "sha256:" + hashlib.sha256(REF.encode()).hexdigest()
    assert result.builder == "buildkitd-0.buildkitd.streamable-builders.svc"
    assert result.steps_total == 2 and result.cache_hits == 1
    assert "#4 [2/2] RUN echo building runtime" in logs  # streamed line by line


def test_git_context_and_minimal_request(fake_buildctl):
    git = "https://github.com/org/repo.git#0123456789abcdef:services/api"
    BuildctlBuilder(ADDR).build(BuildRequest(target="api", image_ref=REF, git_context=git), lambda _l: None)
    argv = fake_buildctl.calls()[0]["argv"]
    assert argv[:13] == ["--addr", ADDR, "build", "--frontend", "dockerfile.v0", "--progress", "plain",
                         "--opt", f"context={git}", "--opt", "filename=Dockerfile",
                         "--output", f"type=image,name={REF},push=true,oci-mediatypes=true,compression=gzip,force-compression=true"]
    assert argv[13] == "--metadata-file" and len(argv) == 15
    for absent in ("--local", "--secret", "--export-cache", "--import-cache", "--tlscacert"):
        assert absent not in argv


def test_secrets_never_reach_argv_env_or_logs(fake_buildctl, context, secret_file):
    logs: list[str] = []
    BuildctlBuilder(ADDR, credentials=creds).build(full_request(context, secret_file), logs.append)
    call = fake_buildctl.calls()[0]
    for value in (SECRET_VALUE, PASSWORD):
        assert not any(value in a for a in call["argv"])
        assert not any(value in v for k, v in call["env"].items() if k != "FAKE_BUILDCTL_RECORD")
        assert not any(value in line for line in logs)
    assert not any("build-arg:npm_token" in a for a in call["argv"])


def test_docker_config_exists_during_the_call_and_is_gone_after(fake_buildctl, context, secret_file):
    BuildctlBuilder(ADDR, credentials=creds).build(full_request(context, secret_file), lambda _l: None)
    call = fake_buildctl.calls()[0]
    cfg = call["docker_config_json"]
    assert call["docker_config"] and cfg["exists"]
    assert call["docker_config_dir_mode"] == "0o700" and cfg["mode"] == "0o600"
    auths = json.loads(cfg["content"])["auths"]
    assert list(auths) == [REGISTRY]
    assert base64.b64decode(auths[REGISTRY]["auth"]).decode() == f"AWS:{PASSWORD}"
    assert not Path(call["docker_config"]).exists()


def test_docker_config_removed_after_a_failed_build(fake_buildctl, context, secret_file):
    fake_buildctl.configure(fail_build=[ADDR])
    with pytest.raises(BuildError):
        BuildctlBuilder(ADDR, credentials=creds).build(full_request(context, secret_file), lambda _l: None)
    call = fake_buildctl.calls()[0]
    assert call["docker_config_json"]["exists"]
    assert not Path(call["docker_config"]).exists()


def test_credentials_are_fetched_for_every_build(fake_buildctl, context, secret_file):
    tokens = iter(["token-one-aaaa", "token-two-bbbb"])
    builder = BuildctlBuilder(ADDR, credentials=lambda: [RegistryCredential(REGISTRY, "AWS", next(tokens))])
    builder.build(full_request(context, secret_file), lambda _l: None)
    builder.build(full_request(context, secret_file), lambda _l: None)
    auths = [json.loads(c["docker_config_json"]["content"])["auths"][REGISTRY]["auth"] for c in fake_buildctl.calls()]
    assert [base64.b64decode(a).decode() for a in auths] == ["AWS:token-one-aaaa", "AWS:token-two-bbbb"]


def test_tls_flags_from_files(fake_buildctl, context, tmp_path):
    certs = tmp_path / "certs"
    certs.mkdir()
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (certs / name).write_text(name.upper())
    tls = TlsFromFiles(certs / "ca.pem", certs / "cert.pem", certs / "key.pem", server_name="buildkitd")
    BuildctlBuilder(ADDR, tls=tls).build(BuildRequest(target="app", image_ref=REF, context_dir=context), lambda _l: None)
    argv = fake_buildctl.calls()[0]["argv"]
    assert argv[:11] == ["--addr", ADDR, "--tlscacert", str(certs / "ca.pem"), "--tlscert", str(certs / "cert.pem"),
                         "--tlskey", str(certs / "key.pem"), "--tlsservername", "buildkitd", "build"]
    assert (certs / "key.pem").exists()  # files given by the user are left in place


def test_tls_flags_from_kubernetes_secret_exist_only_during_the_call(fake_buildctl, fake_k8s, core_api, context):
    fake_k8s.add_secret("streamable-builders", "buildkit-client-certs",
                        {"ca.pem": b"CA-PEM", "cert.pem": b"CERT-PEM", "key.pem": b"KEY-PEM-secret"})
    logs: list[str] = []
    BuildctlBuilder(ADDR, tls=TlsFromSecret(core_api=core_api)).build(
        BuildRequest(target="app", image_ref=REF, context_dir=context), logs.append)
    call = fake_buildctl.calls()[0]
    tls = call["tls"]
    assert {f: (v["exists"], v["mode"]) for f, v in tls.items()} == {
        "--tlscacert": (True, "0o600"), "--tlscert": (True, "0o600"), "--tlskey": (True, "0o600")}
    assert tls["--tlskey"]["content"] == "KEY-PEM-secret"
    key_path = call["argv"][call["argv"].index("--tlskey") + 1]
    assert call["argv"][call["argv"].index("--tlsservername") + 1] == "buildkitd"
    assert not Path(key_path).exists() and not Path(key_path).parent.exists()
    assert not any("KEY-PEM-secret" in a for a in call["argv"]) and not any("KEY-PEM-secret" in line for line in logs)


def test_failure_surfaces_the_failing_step_and_its_output(fake_buildctl, context):
    fake_buildctl.configure(fail_build=[ADDR])
    logs: list[str] = []
    with pytest.raises(BuildError) as exc:
        BuildctlBuilder(ADDR, name="buildkitd-0").build(BuildRequest(target="app", image_ref=REF, context_dir=context), logs.append)
    err = exc.value
    assert err.step == "[2/2] RUN make all"
    assert "No rule to make target 'all'" in err.output
    assert 'did not complete successfully: exit code: 2' in err.output
    assert "buildctl on buildkitd-0 exited with 1" in str(err) and "build of target 'app' failed" in str(err)
    assert not isinstance(err, BuilderUnavailableError)
    assert "#4 0.112 compiling..." in logs


def test_connection_refused_is_builder_unavailable(fake_buildctl, context):
    fake_buildctl.configure(refuse=[ADDR])
    with pytest.raises(BuilderUnavailableError, match="builder buildkitd-0 is unavailable") as exc:
        BuildctlBuilder(ADDR, name="buildkitd-0").build(BuildRequest(target="app", image_ref=REF, context_dir=context), lambda _l: None)
    assert "connection refused" in exc.value.output


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"git_context": "https://user:ghp_TOKENVALUE@github.com/org/repo.git#main", "context_dir": None},
         "embeds credentials"),
        ({"image_ref": "reg.example/app:x,push=false"}, "must not contain commas"),
        ({"dockerfile": "missing/Dockerfile"}, "does not exist"),
        ({"secrets": {"tok": Path("/nonexistent/secret")}}, "file for build secret 'tok' does not exist"),
        ({"secrets": {"bad id": Path("/etc/hostname")}}, "secret id 'bad id'"),
        ({"git_context": "https://github.com/org/repo.git"}, "exactly one of context_dir and git_context"),
        ({"build_args": {"A=B": "c"}}, "build arg name 'A=B'"),
    ],
)
def test_bad_requests_are_rejected_before_buildctl_runs(fake_buildctl, context, changes, message):
    fields = {"target": "app", "image_ref": REF, "context_dir": context, **changes}
    with pytest.raises(BuildError, match=message) as exc:
        BuildctlBuilder(ADDR).build(BuildRequest(**fields), lambda _l: None)
    assert "ghp_TOKENVALUE" not in str(exc.value)
    assert fake_buildctl.calls() == []


def test_prune_flags_usage_and_freed_bytes(fake_buildctl):
    mb = 1_000_000
    fake_buildctl.configure(cache={ADDR: [100 * mb, 200 * mb, 300 * mb, 400 * mb]})
    logs: list[str] = []
    (result,) = BuildctlBuilder(ADDR, name="buildkitd-0").prune(
        keep_storage_bytes=700 * mb, keep_duration_s=48 * 3600, free_storage_bytes=5_000 * mb, log=logs.append)
    calls = fake_buildctl.calls()
    assert [c["subcommand"] for c in calls] == ["du", "prune", "du"]
    assert calls[0]["argv"] == ["--addr", ADDR, "du", "--format", "json"]
    assert calls[1]["argv"] == ["--addr", ADDR, "prune", "--format", "json", "--keep-duration", "172800s",
                                "--keep-storage", "700", "--free-storage", "5000"]
    assert (result.builder, result.bytes_before, result.bytes_after, result.freed_bytes) == (
        "buildkitd-0", 1000 * mb, 700 * mb, 300 * mb)


def test_megabyte_conversion_is_exact():
    assert [_megabytes(b) for b in (0, 1, 1_500_000, 10**12, 123_456_789)] == ["0", "0.000001", "1.5", "1000000", "123.456789"]


def test_pool_prune_continues_past_a_failing_builder(fake_buildctl):
    addrs = [f"tcp://bk-{i}.example:1234" for i in range(3)]
    fake_buildctl.configure(cache={a: [10, 20] for a in addrs}, fail_prune=[addrs[1]])
    logs: list[str] = []
    pool = BuilderPool(StaticEndpoints(tuple(addrs)), probe_timeout_s=None)
    with pytest.raises(PruneError) as exc:
        pool.prune(keep_storage_bytes=0, log=logs.append)
    err = exc.value
    assert sorted(r.builder for r in err.results) == ["bk-0.example", "bk-2.example"]
    assert all(r.bytes_before == 30 and r.bytes_after == 0 and r.freed_bytes == 30 for r in err.results)
    assert list(err.failures) == ["bk-1.example"] and "diskusage" in err.failures["bk-1.example"]
    assert {c["addr"] for c in fake_buildctl.calls()} == set(addrs)


def test_pool_prune_returns_every_builder_when_all_succeed(fake_buildctl):
    addrs = [f"tcp://bk-{i}.example:1234" for i in range(2)]
    fake_buildctl.configure(cache={addrs[0]: [5, 6], addrs[1]: [7]})
    results = BuilderPool(StaticEndpoints(tuple(addrs))).prune(keep_storage_bytes=6, log=lambda _l: None)
    assert sorted((r.builder, r.bytes_before, r.bytes_after, r.freed_bytes) for r in results) == [
        ("bk-0.example", 11, 6, 5), ("bk-1.example", 7, 0, 7)]


def test_redactor_and_credential_repr():
    scrub = redactor(["s3cr3t-value", "", "abc"])
    assert scrub("token s3cr3t-value and abc") == "token *** and abc"
    cred = RegistryCredential(REGISTRY, "AWS", PASSWORD)
    assert PASSWORD not in repr(cred)


def test_credential_and_tls_failures_are_build_errors_and_buildctl_never_runs(fake_buildctl, context, tmp_path):
    from resources.aws.ecr import EcrError

    def failing() -> list[RegistryCredential]:
        raise EcrError("ECR GetAuthorizationToken failed: AccessDeniedException: not authorized")

    request = BuildRequest(target="app", image_ref=REF, context_dir=context)
    with pytest.raises(BuildError, match="push credentials could not be obtained: ECR GetAuthorizationToken failed"):
        BuildctlBuilder(ADDR, credentials=failing).build(request, lambda _l: None)
    missing = tmp_path / "nope.pem"
    with pytest.raises(BuildError, match=r"TLS material for builder b0: buildkit TLS CA certificate .*nope.pem does not exist"):
        BuildctlBuilder(ADDR, name="b0", tls=TlsFromFiles(missing, missing, missing)).build(request, lambda _l: None)
    assert fake_buildctl.calls() == []
