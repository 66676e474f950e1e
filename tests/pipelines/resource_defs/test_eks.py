"""The Dagster wrappers: settings errors that name the setting, hidden secrets, and a full materialization
through builder pool + ECR + canary whose every event, log line and stored file is scanned for the secrets."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import dagster as dg
import pytest

from pipelines.resource_defs.eks import BuilderPoolResource, CanaryResource, EcrResource, eks_resources
from pipelines.settings import SettingError
from resources.builders.pool import rendezvous_order
from resources.defaults import BUILDER_APP_LABEL, BUILDER_NAMESPACE, CANARY_NAMESPACE
from tests.fakes.buildctl_cases import output, request_for, tls_files
from tests.fakes.fake_k8s import pulled, running, scheduled, terminated
from tests.support.cloud import MOTO_ACCOUNT, MOTO_REGION

REGISTRY = f"{MOTO_ACCOUNT}.dkr.ecr.{MOTO_REGION}.amazonaws.com"
ECR_TOKEN = f"{MOTO_ACCOUNT}-auth-token"  # what moto grants
TLS_KEY = "-----BEGIN EC PRIVATE KEY-----\nTLS-KEY-do-not-leak-7f3a\n-----END EC PRIVATE KEY-----\n"


@pytest.fixture
def clean_env(monkeypatch):
    for name in (
        "STREAMABLE_ECR_REGION",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "STREAMABLE_BUILDER_DISCOVERY",
        "STREAMABLE_BUILDER_ADDRS",
        "STREAMABLE_BUILDER_TLS",
        "STREAMABLE_BUILDER_TLS_CA",
        "STREAMABLE_BUILDER_TLS_CERT",
        "STREAMABLE_BUILDER_TLS_KEY",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "STREAMABLE_IO_BUCKET",
    ):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_eks_resources_name_each_missing_setting(clean_env):
    with pytest.raises(SettingError, match=r"STREAMABLE_ECR_REGION is not set"):
        eks_resources()
    clean_env.setenv("AWS_REGION", "eu-west-1")
    clean_env.setenv("STREAMABLE_BUILDER_DISCOVERY", "static")
    with pytest.raises(SettingError, match=r"STREAMABLE_BUILDER_ADDRS is not set"):
        eks_resources()
    clean_env.setenv("STREAMABLE_BUILDER_ADDRS", "tcp://127.0.0.11:1234, tcp://127.0.0.12:1234")
    clean_env.setenv("STREAMABLE_BUILDER_TLS", "files")
    clean_env.setenv("STREAMABLE_BUILDER_TLS_CA", "/certs/ca.pem")
    with pytest.raises(SettingError, match=r"STREAMABLE_BUILDER_TLS_CERT is not set"):
        eks_resources()
    clean_env.setenv("STREAMABLE_BUILDER_TLS", "mtls")
    with pytest.raises(SettingError, match=r"STREAMABLE_BUILDER_TLS must be 'secret', 'files' or 'none', got 'mtls'"):
        eks_resources()
    clean_env.setenv("STREAMABLE_BUILDER_TLS", "none")
    with pytest.raises(SettingError, match=r"STREAMABLE_IO_BUCKET is not set"):
        eks_resources()
    clean_env.setenv("STREAMABLE_IO_BUCKET", "streamable-io")
    res = eks_resources()
    assert set(res) == {"builder", "ecr", "canary", "registry", "io_manager"}
    assert res["io_manager"].s3_bucket == "streamable-io"
    assert res["builder"].static_addrs == ["tcp://127.0.0.11:1234", "tcp://127.0.0.12:1234"]
    assert res["ecr"].region_name == "eu-west-1"


def test_resource_settings_errors_name_the_field():
    with pytest.raises(SettingError, match=r"BuilderPoolResource.static_addrs is not set"):
        BuilderPoolResource(discovery="static").get_pool()
    with pytest.raises(SettingError, match=r"BuilderPoolResource.tls_ca_file is not set"):
        BuilderPoolResource(discovery="static", static_addrs=["tcp://h:1"], tls="files").get_pool()
    with pytest.raises(SettingError, match=r"BuilderPoolResource.registry_host is not set"):
        BuilderPoolResource(discovery="static", static_addrs=["tcp://h:1"], tls="none",
                            registry_username="u", registry_password="p").get_pool()
    with pytest.raises(SettingError, match=r"EcrResource.region_name is not set"):
        EcrResource().get_registry()


def test_secret_fields_are_hidden_from_repr(clean_env):
    clean_env.setenv("REG_PASSWORD", "hunter2-registry-password")
    builder = BuilderPoolResource(registry_password="hunter2-registry-password", registry_username="u")
    ecr = EcrResource(region_name="us-east-1", aws_secret_access_key="aws-secret-value-123")
    assert "hunter2" not in repr(builder) and "aws-secret-value-123" not in repr(ecr)


def test_static_pool_with_plain_credentials_from_envvar(clean_env, fake_buildctl, tmp_path):
    clean_env.setenv("REG_PASSWORD", "plain-registry-password-991")
    tls = tls_files(tmp_path / "certs")
    resource = BuilderPoolResource(discovery="static", static_addrs=["tcp://127.0.0.1:5092"], tls="files",
                                   tls_ca_file=str(tls.ca_cert), tls_cert_file=str(tls.cert), tls_key_file=str(tls.key),
                                   probe_timeout_s=0.0, registry_host="127.0.0.1:5096", registry_username="ci",
                                   registry_password=dg.EnvVar("REG_PASSWORD"))
    secret = tmp_path / "npm_token"
    secret.write_text("dummy")

    @dg.asset
    def image(builder: BuilderPoolResource) -> dg.MaterializeResult:
        pool = builder.get_pool()
        pool.probe_timeout_s = None
        result = pool.build(request_for("build-auth-push", secret_file=secret), lambda _l: None)
        return dg.MaterializeResult(metadata={"builder": result.builder})

    (tmp_path / "instance").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "instance")) as instance:
        assert dg.materialize([image], resources={"builder": resource}, instance=instance).success
    auth = fake_buildctl.calls()[0]["docker_config_json"]["content"]
    assert base64.b64encode(b"ci:plain-registry-password-991").decode() in auth
    assert_no_secret_in(tmp_path / "instance", ["plain-registry-password-991"])


def assert_no_secret_in(root: Path, secrets: list[str]) -> int:
    """Fail if a secret (raw or in a base64 `user:secret` auth) is in any file under root; return files scanned."""
    needles = {s.encode() for s in secrets}
    for s in secrets:
        needles.add(base64.b64encode(f"AWS:{s}".encode()))
        needles.add(base64.b64encode(s.encode()))
    scanned = 0
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            scanned += 1
            for needle in needles:
                assert needle not in data, f"secret found in {path}"
    return scanned


def test_full_materialization_leaks_no_secret(fake_k8s, kubeconfig, fake_buildctl, moto_endpoint, ecr_client,
                                              aws_creds, clean_env, tmp_path):
    clean_env.setenv("STREAMABLE_TEST_AWS_SECRET", aws_creds.secret_key)
    # The builder StatefulSet, its client TLS secret, and the canary namespace live in the fake cluster.
    labels = {"app": BUILDER_APP_LABEL}
    fake_k8s.add_statefulset(BUILDER_NAMESPACE, "buildkitd", replicas=2, service="buildkitd", labels=labels)
    for i in range(2):
        fake_k8s.add_pod(BUILDER_NAMESPACE, f"buildkitd-{i}", labels=labels)
    fake_k8s.add_secret(BUILDER_NAMESPACE, "buildkit-client-certs",
                        {"ca.pem": b"CA", "cert.pem": b"CERT", "key.pem": TLS_KEY.encode()})
    fake_k8s.add_namespace(CANARY_NAMESPACE)
    fake_k8s.pod_script = [(0, scheduled("soci-node-1")), (0.02, pulled("420ms", "450ms", 7_340_032)),
                           (0.03, running()), (0.06, terminated(0, logs="app 1.0\n"))]
    # Replayed real transcripts: the build goes to the key's first choice, then both builders are pruned.
    first, other = rendezvous_order("github.com/org/app:.", ["buildkitd-0", "buildkitd-1"])
    addr = {n: f"tcp://{n}.buildkitd.{BUILDER_NAMESPACE}.svc:1234" for n in (first, other)}
    fake_buildctl.configure(script={
        addr[first]: ["build-auth-push", "du-json-after-partial-prune", "prune-json", "du-json-after-prune"],
        addr[other]: ["du-json-empty", "prune-json-empty", "du-json-empty"]})
    freed = sum(json.loads(ln)["size"] for ln in output("prune-json").splitlines() if ln.strip())
    secret = tmp_path / "npm_token"
    secret.write_text("dummy")

    ecr = EcrResource(region_name=MOTO_REGION, endpoint_url=moto_endpoint, aws_access_key_id=aws_creds.access_key,
                      aws_secret_access_key=dg.EnvVar("STREAMABLE_TEST_AWS_SECRET"), tag_mutability="IMMUTABLE")
    builder = BuilderPoolResource(kubeconfig=str(kubeconfig), tls="secret", probe_timeout_s=0.5, ecr=ecr)
    canary = CanaryResource(kubeconfig=str(kubeconfig), poll_interval_s=0.02)

    @dg.asset
    def image(context, builder: BuilderPoolResource, ecr: EcrResource) -> dg.MaterializeResult:
        registry = ecr.get_registry()
        repo = registry.ensure_repository("team/app", ecr.repository_settings())
        soci = registry.soci_tag_for("team/app", "build-1")
        context.log.info(soci.message)
        pool = builder.get_pool()
        pool.probe_timeout_s = None  # fake pod DNS names do not resolve; discovery readiness still applies
        # The transcript pushed to 127.0.0.1:5096; the credentials handed to buildctl are ECR's (checked below).
        assert repo.uri == f"{REGISTRY}/team/app"
        result = pool.build(request_for("build-auth-push", secret_file=secret, routing_key="github.com/org/app:."),
                            context.log.info)
        return dg.MaterializeResult(metadata={"digest": result.digest, "builder": result.builder,
                                              "rank": result.rank, "soci_tag": soci.tag})

    @dg.asset(deps=[image])
    def canary_check(context, canary: CanaryResource) -> dg.MaterializeResult:
        res = canary.get_verifier().run(f"{REGISTRY}/team/app:build-1", command=["app", "--version"], timeout_s=10,
                                        log=context.log.info)
        return dg.MaterializeResult(metadata=res.metadata())

    @dg.asset(deps=[image])
    def cache_gc(context, builder: BuilderPoolResource) -> dg.MaterializeResult:
        results = builder.get_pool().prune(log=context.log.info)
        return dg.MaterializeResult(metadata={r.builder: r.freed_bytes for r in results})

    (tmp_path / "instance").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "instance")) as instance:
        run = dg.materialize([image, canary_check, cache_gc], instance=instance,
                             resources={"builder": builder, "ecr": ecr, "canary": canary})
        assert run.success
        mats = {e.asset_key.path[-1]: e.step_materialization_data.materialization.metadata
                for e in run.get_asset_materialization_events()}
        records = instance.all_logs(run.run_id)
        text = "\n".join(str(r) for r in records)

    # The secrets were really used ...
    build_call = next(c for c in fake_buildctl.calls() if c["subcommand"] == "build")
    assert ECR_TOKEN in base64.b64decode(
        json.loads(build_call["docker_config_json"]["content"])["auths"][REGISTRY]["auth"]).decode()
    assert build_call["tls"]["--tlskey"]["content"] == TLS_KEY
    assert mats["image"]["soci_tag"].value == "build-1-soci"
    assert mats["canary_check"]["canary_pull_s"].value == pytest.approx(0.42)
    assert mats["canary_check"]["canary_node"].value == "soci-node-1"
    assert {k: v.value for k, v in mats["cache_gc"].items()} == {first: freed, other: 0}
    assert "#6 [auth] sharing credentials for 127.0.0.1:5096" in text  # build output reached the event log
    # ... and appear nowhere: not in events, not in any file the instance stored (event log DB, compute logs).
    secrets = [ECR_TOKEN, aws_creds.secret_key, "TLS-KEY-do-not-leak-7f3a", fake_k8s.token]
    for secret in secrets:
        assert secret not in text
    assert assert_no_secret_in(tmp_path / "instance", secrets) > 0
