"""No secret leaks from a real supply-chain run: the pipeline's own assets and check, production resources.

`build_supply_chain` runs for one target (canary enabled) with BuilderPoolResource (StatefulSet discovery and
client TLS from a Kubernetes secret through the fake Kubernetes API, push credentials as dg.EnvVar), a
password-protected registry, and CanaryResource on the fake API. The builder's `buildctl` is
tests/fakes/buildctl_push: it really builds with the local dockerd and pushes with the credentials from
DOCKER_CONFIG only. Afterwards every event, stored file, the run record, Python log records and console
output are scanned for the registry password (raw and in Basic/config.json form), the TLS key and the
Kubernetes bearer token; a planted leak proves the scan finds each channel.
"""

from __future__ import annotations

import base64
import datetime
import json
import logging
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pipelines.resource_defs.base import RegistryResource, TargetsResource, WorkspaceResource
from pipelines.resource_defs.eks import BuilderPoolResource, CanaryResource
from pipelines.resource_defs.startup import KubernetesStartupRecorderResource
from pipelines.supply_chain.assets import VERIFY_CHECK, build_supply_chain
from resources.builders.base import BuildError, BuildRequest
from resources.builders.buildctl import BuildctlBuilder
from resources.builders.docker_auth import RegistryCredential
from resources.defaults import (
    BUILDER_APP_LABEL,
    BUILDER_CLIENT_TLS_SECRET,
    BUILDER_NAMESPACE,
    BUILDER_STATEFULSET,
    CANARY_NAMESPACE,
)
from resources.registry import RegistryClient
from resources.release.targets import load_targets
from tests.fakes.fake_k8s import FakeKubernetes, pulled, running, scheduled, terminated
from tests.fakes.secret_scan import (
    Finding,
    KnownSecret,
    scan_events,
    scan_files,
    scan_log_records,
    scan_run,
)
from tests.pipelines.conftest import APP_DOCKERFILE, git
from tests.support.docker import DockerEngine
from tests.support.registry import RunningRegistry

FAKES = Path(__file__).resolve().parents[2] / "fakes"
PASSWORD_ENV = "STREAMABLE_TEST_REGISTRY_PASSWORD"
BUILDER_PASSWORD_ENV = "STREAMABLE_TEST_BUILDER_REGISTRY_PASSWORD"
CANARY_COMMAND = ["cat"]
CANARY_ARGS = ["/models/config.json"]


# -- TLS material --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientTls:
    """A CA and a client certificate/key pair signed by it (PEM)."""

    ca: bytes
    cert: bytes
    key: bytes


def make_client_tls() -> ClientTls:
    """Fresh EC P-256 CA and client certificate, as deploy/ would put in the buildkit client secret."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "streamable-test-ca")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now)
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "streamable-dagster")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1)).sign(ca_key, hashes.SHA256()))
    return ClientTls(
        ca=ca.public_bytes(serialization.Encoding.PEM),
        cert=cert.public_bytes(serialization.Encoding.PEM),
        key=key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()),
    )


# -- fixtures --------------------------------------------------------------------------------------------------


@pytest.fixture
def fake_k8s() -> Iterator[FakeKubernetes]:
    """The fake Kubernetes API with a long random bearer token."""
    with FakeKubernetes(token="kube-bearer-" + secrets.token_hex(16)) as fake:
        yield fake


@dataclass
class Cluster:
    """The fake cluster as the resources see it: kubeconfig, builder StatefulSet, TLS secret, canary namespace."""

    api: FakeKubernetes
    kubeconfig: Path
    tls: ClientTls


@pytest.fixture
def cluster(fake_k8s: FakeKubernetes, tmp_path: Path) -> Cluster:
    labels = {"app": BUILDER_APP_LABEL}
    fake_k8s.add_statefulset(BUILDER_NAMESPACE, BUILDER_STATEFULSET, replicas=2, service="buildkitd", labels=labels)
    for i in range(2):
        fake_k8s.add_pod(BUILDER_NAMESPACE, f"{BUILDER_STATEFULSET}-{i}", labels=labels)
    tls = make_client_tls()
    fake_k8s.add_secret(BUILDER_NAMESPACE, BUILDER_CLIENT_TLS_SECRET,
                        {"ca.pem": tls.ca, "cert.pem": tls.cert, "key.pem": tls.key})
    fake_k8s.add_namespace(CANARY_NAMESPACE)
    fake_k8s.pod_script = [(0, scheduled("soci-node-1")), (0.02, pulled("420ms", "450ms", 13_500_000)),
                           (0.03, running()), (0.06, terminated(0, logs='{"dim": 8}'))]
    return Cluster(api=fake_k8s, kubeconfig=fake_k8s.write_kubeconfig(tmp_path / "kubeconfig"), tls=tls)


@dataclass
class Service:
    """A git repository with one service and a targets file whose repository is in the auth registry."""

    repo: Path
    targets_file: Path
    state_dir: Path
    commit: str


@pytest.fixture
def service(tmp_path: Path, auth_registry: RunningRegistry) -> Service:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    for name, text in {"svc/Dockerfile": APP_DOCKERFILE, "svc/app/run.sh": "#!/bin/sh\necho run\n"}.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "init")
    targets = tmp_path / "targets.yaml"
    targets.write_text(
        "targets:\n"
        "  - name: svc\n"
        f"    source: {{git: {{repo: {repo}, ref: main, context: svc}}}}\n"
        f"    repository: {auth_registry.addr}/team/svc\n"
        # the push stand-in cannot emulate registry cache export (covered by the buildctl contract tests)
        "    cache: none\n"
        "    verify:\n"
        "      sample: 2\n"
        "      required_files: [models/config.json, app/run.sh]\n"
        f"      canary: {{enabled: true, command: {json.dumps(CANARY_COMMAND)}, "
        f"args: {json.dumps(CANARY_ARGS)}, timeout_s: 30}}\n"
    )
    return Service(repo=repo, targets_file=targets, state_dir=tmp_path / "state", commit=git(repo, "rev-parse", "HEAD"))


@pytest.fixture
def buildctl_env(docker_engine: DockerEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point tests/fakes/buildctl_push at the stack's dockerd; returns its record file."""
    record = tmp_path / "buildctl-calls.jsonl"
    monkeypatch.setenv("FAKE_BUILDCTL_DOCKER_HOST", docker_engine.host)
    monkeypatch.setenv("FAKE_BUILDCTL_DOCKER_BIN", docker_engine.docker_bin)
    monkeypatch.setenv("FAKE_BUILDCTL_RECORD", str(record))
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)
    return record


@pytest.fixture
def instance_dir(tmp_path: Path) -> Path:
    path = tmp_path / "dagster_home"
    path.mkdir()
    return path


# -- running the chain -----------------------------------------------------------------------------------------


def chain_resources(cluster: Cluster, service: Service, registry: RunningRegistry) -> dict:
    """Production resources: passwords only as dg.EnvVar (the builder's and the registry client's)."""
    return {
        "targets": TargetsResource(path=str(service.targets_file)),
        "workspace": WorkspaceResource(state_dir=str(service.state_dir)),
        "registry": RegistryResource(username=registry.username, password=dg.EnvVar(PASSWORD_ENV)),
        "builder": BuilderPoolResource(
            kubeconfig=str(cluster.kubeconfig), tls="secret",
            probe_timeout_s=None,  # pod DNS names of the fake StatefulSet do not resolve; readiness still applies
            registry_host=registry.addr, registry_username=registry.username,
            registry_password=dg.EnvVar(BUILDER_PASSWORD_ENV), buildctl_bin=str(FAKES / "buildctl_push"),
        ),
        "canary": CanaryResource(kubeconfig=str(cluster.kubeconfig), poll_interval_s=0.02),
        # startup is disabled for this target: the recorder resource is configured, never used
        "startup_recorder": KubernetesStartupRecorderResource(kubeconfig=str(cluster.kubeconfig)),
    }


def run_chain(cluster: Cluster, service: Service, registry: RunningRegistry,
              instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    assets, checks, _ = build_supply_chain(load_targets(service.targets_file))
    return dg.materialize(
        [*assets, *checks], partition_key="svc", instance=instance,
        resources=chain_resources(cluster, service, registry),
        run_config={"ops": {"image": {"config": {"commit": service.commit, "ref": "refs/heads/main"}}}},
        raise_on_error=False,
    )


def known_secrets(cluster: Cluster, registry: RunningRegistry, *extra_passwords: str) -> list[KnownSecret]:
    assert registry.password and registry.username
    out = [
        KnownSecret.password("registry password", registry.password, username=registry.username),
        KnownSecret.pem("TLS client key", cluster.tls.key),
        KnownSecret.password("kube bearer token", cluster.api.token),
    ]
    out += [KnownSecret.password(f"wrong password {i}", p, username=registry.username)
            for i, p in enumerate(extra_passwords)]
    return out


@dataclass
class Leaks:
    """Everything a run left behind, scanned."""

    findings: list[Finding]
    files: list[Path]
    event_text: str


def scan_everything(instance: dg.DagsterInstance, root: Path, run_id: str, known: list[KnownSecret],
                    log_records: list[logging.LogRecord], console: str) -> Leaks:
    """Scan the run's events, its stored run record, every file under the instance dir, Python logs, console."""
    records = instance.all_logs(run_id)
    run = instance.get_run_by_id(run_id)
    assert records and run is not None
    findings = scan_events(records, known) + scan_run(run, known) + scan_log_records(log_records, known)
    findings += [Finding(s.label, "console", "captured stdout/stderr") for s in known if s.found_in(console.encode())]
    file_findings, files = scan_files(root, known)
    text = "\n".join(r.user_message or "" for r in records)
    return Leaks(findings + file_findings, files, text)


def tag_digest(registry: RunningRegistry, tag: str) -> str | None:
    with RegistryClient(registry.addr, username=registry.username, password=registry.password) as client:
        desc = client.head_manifest("team/svc", tag)
    return desc.digest if desc else None


def check_evaluation(result: dg.ExecuteInProcessResult):
    evals = [e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    assert len(evals) == 1 and evals[0].check_name == VERIFY_CHECK
    return evals[0]


# -- tests -----------------------------------------------------------------------------------------------------


def test_scan_finds_a_planted_secret_in_every_channel(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                       capfd: pytest.CaptureFixture[str]) -> None:
    """Negative control: each channel the real test scans reports a secret that was leaked into it."""
    caplog.set_level(logging.DEBUG)
    password, token, tls = "pw-" + secrets.token_hex(12), "tok-" + secrets.token_hex(12), make_client_tls()
    user = "streamable"
    known = [KnownSecret.password("password", password, username=user), KnownSecret.pem("key", tls.key),
             KnownSecret.password("token", token)]
    basic = base64.b64encode(f"{user}:{password}".encode()).decode()
    key_line = next(ln for ln in tls.key.decode().splitlines() if not ln.startswith("-----"))

    @dg.asset
    def leaky(context) -> dg.Output[str]:
        context.log.info(f"Authorization: Basic {basic}")  # log event, stderr capture, console
        print(f"token={token}")  # stdout capture, console
        logging.getLogger("resources.registry").debug("body %s", key_line)  # Python logging only
        return dg.Output(key_line, metadata={"auth": token})  # pickled output; metadata in events

    @dg.asset
    def failing() -> None:
        raise RuntimeError(f"could not log in with {password}")  # error info of STEP_FAILURE

    root = tmp_path / "dagster_home"
    root.mkdir()
    with dg.instance_for_test(temp_dir=str(root)) as instance:
        result = dg.materialize([leaky, failing], instance=instance, raise_on_error=False, tags={"note": token})
        assert not result.success
        console = capfd.readouterr()
        leaks = scan_everything(instance, root, result.run_id, known, caplog.records, console.out + console.err)

    def where(secret: str, channel: str) -> set[str]:
        return {f.where for f in leaks.findings if f.secret == secret and f.channel == channel}

    assert any("STEP_FAILURE step=failing" in w for w in where("password", "event"))  # error info
    assert any(w.endswith(" log step=leaky") for w in where("password", "event"))  # context.log line
    assert any("compute_logs" in w and w.endswith(".err") for w in where("password", "file"))  # stderr capture
    assert where("password", "console")
    assert any("ASSET_MATERIALIZATION step=leaky" in w for w in where("token", "event"))  # metadata value
    assert any("compute_logs" in w and w.endswith(".out") for w in where("token", "file"))  # print() capture
    assert where("key", "file") >= {"storage/leaky"}  # the IO manager's pickle
    assert where("key", "python-log") == {"python log resources.registry:DEBUG"}
    assert where("token", "run") and not where("password", "run")  # the run tag, and only that


def test_buildctl_stand_in_pushes_only_with_docker_config_credentials(
        auth_registry: RunningRegistry, buildctl_env: Path, tmp_path: Path) -> None:
    """The stand-in proves the credential path: without DOCKER_CONFIG credentials nothing is pushed."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM streamable/busybox:local\nRUN echo stand-in > /probe.txt\n")
    request = BuildRequest(target="probe", image_ref=f"{auth_registry.addr}/team/probe:build-1", context_dir=ctx)
    addr = f"tcp://{BUILDER_STATEFULSET}-0.buildkitd.{BUILDER_NAMESPACE}.svc:1234"
    lines: list[str] = []
    refused = (
        r"no basic auth credentials|unauthorized"  # the docker CLI's words (real buildctl: test_buildctl_contract)
    )
    with pytest.raises(BuildError, match=refused):
        BuildctlBuilder(addr=addr, buildctl_bin=str(FAKES / "buildctl_push")).build(request, lines.append)
    assert any(line.startswith("#") and "DONE" in line for line in lines)  # the build itself ran
    cred = RegistryCredential(auth_registry.addr, auth_registry.username or "", auth_registry.password or "")
    result = BuildctlBuilder(addr=addr, buildctl_bin=str(FAKES / "buildctl_push"), credentials=lambda: [cred]).build(
        request, lines.append)
    with RegistryClient(auth_registry.addr, username=auth_registry.username, password=auth_registry.password) as client:
        pushed = client.head_manifest("team/probe", "build-1")
    assert pushed is not None and pushed.digest == result.digest


def test_full_chain_leaks_no_secret(cluster: Cluster, service: Service, auth_registry: RunningRegistry,
                                    buildctl_env: Path, instance_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv(PASSWORD_ENV, auth_registry.password)
    monkeypatch.setenv(BUILDER_PASSWORD_ENV, auth_registry.password)
    known = known_secrets(cluster, auth_registry)
    with dg.instance_for_test(temp_dir=str(instance_dir)) as instance:
        result = run_chain(cluster, service, auth_registry, instance)
        assert result.success, [e.event_specific_data.error.to_string() for e in result.all_events
                                if e.event_type_value == "STEP_FAILURE"]
        console = capfd.readouterr()
        leaks = scan_everything(instance, instance_dir, result.run_id, known, caplog.records, console.out + console.err)

    # The chain really ran: release tags point at the SOCI-enabled image that the check verified ...
    release = result.output_for_node("release")
    soci = result.output_for_node("soci_index")
    digest = release.image_index_digest
    assert release.release_tags == (f"sha-{service.commit[:7]}", "main", "latest")
    assert {t: tag_digest(auth_registry, t) for t in release.release_tags} == dict.fromkeys(release.release_tags,
                                                                                              digest)
    assert soci.platforms and all(p.soci_index_digest.startswith("sha256:") for p in soci.platforms)
    with RegistryClient(auth_registry.addr, username=auth_registry.username, password=auth_registry.password) as client:
        index = client.get_manifest("team/svc", digest).json()
    assert {m["digest"] for m in index["manifests"]} >= {p.soci_index_digest for p in soci.platforms}
    evaluation = check_evaluation(result)
    meta = {k: v.value for k, v in evaluation.metadata.items()}
    assert evaluation.passed and meta["verified_digest"] == digest
    assert meta["canary_image"] == f"{auth_registry.addr}/team/svc@{digest}"
    assert meta["canary_node"] == "soci-node-1" and meta["canary_exit_code"] == 0
    assert meta["canary_pull_s"] == pytest.approx(0.42) and meta["canary_image_size_bytes"] == 13_500_000
    created = cluster.api.calls("POST", f"/namespaces/{CANARY_NAMESPACE}/pods")
    containers = [c.body["spec"]["containers"][0] for c in created]
    assert [(c["image"], c["command"], c.get("args")) for c in containers] == [
        (meta["canary_image"], CANARY_COMMAND, CANARY_ARGS)
    ]
    # ... through the secret-bearing paths: TLS from the secret, credentials via DOCKER_CONFIG, kube API token.
    assert cluster.api.calls("GET", f"/namespaces/{BUILDER_NAMESPACE}/secrets/{BUILDER_CLIENT_TLS_SECRET}")
    calls = [json.loads(line) for line in buildctl_env.read_text().splitlines()]
    assert len(calls) == 1 and calls[0]["docker_config"] and "--tlskey" in calls[0]["argv"]
    argv = "\0".join(calls[0]["argv"]).encode()
    assert [s.label for s in known if s.found_in(argv)] == []
    assert "exporting to image" in leaks.event_text  # buildctl's progress reached the event log ...
    assert f"naming to {auth_registry.addr}/team/svc:" in leaks.event_text  # ... and was scanned

    # Nothing secret anywhere: events, run record, Python logs, console, and every file the instance stored.
    assert leaks.findings == []
    names = [str(p.relative_to(instance_dir)) for p in leaks.files]
    assert any("compute_logs" in n for n in names), names  # compute log captures were scanned
    for step in ("image", "soci_index", "release"):
        assert any(n.startswith("storage/") and f"/{step}/" in f"/{n}" for n in names), (step, names)  # pickled outputs


@pytest.mark.parametrize("wrong", ["builder_and_registry", "registry_only"])
def test_wrong_password_fails_clearly_without_leaking(wrong: str, cluster: Cluster, service: Service,
                                                      auth_registry: RunningRegistry, buildctl_env: Path,
                                                      instance_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture,
                                                      capfd: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)
    bad = "wrong-" + secrets.token_hex(12)
    monkeypatch.setenv(PASSWORD_ENV, bad)
    monkeypatch.setenv(BUILDER_PASSWORD_ENV, bad if wrong == "builder_and_registry" else auth_registry.password)
    known = known_secrets(cluster, auth_registry, bad)
    with dg.instance_for_test(temp_dir=str(instance_dir)) as instance:
        result = run_chain(cluster, service, auth_registry, instance)
        console = capfd.readouterr()
        leaks = scan_everything(instance, instance_dir, result.run_id, known, caplog.records, console.out + console.err)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert failure.step_key == "image"
    message = failure.event_specific_data.error.to_string()
    assert auth_registry.addr in message and "team/svc" in message, message  # names registry and repository
    if wrong == "builder_and_registry":  # buildctl's push was refused: the build error carries its output
        assert "BuildError" in message and "unauthorized" in message.lower()
    else:  # the push worked; reading the pushed image back with the wrong password did not
        assert "RegistryAuthError" in message and "not authorized" in message
    assert tag_digest(auth_registry, "latest") is None
    assert tag_digest(auth_registry, f"sha-{service.commit[:7]}") is None
    assert leaks.findings == []
