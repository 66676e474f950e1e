"""Dagster resources for STREAMABLE_ENV=eks: thin ConfigurableResource wrappers over the production modules.

- BuilderPoolResource -> resources.builders.pool.BuilderPool (buildkitd StatefulSet or static list, mTLS)
- EcrResource         -> resources.aws.ecr.EcrRegistry (boto3; region/retries/endpoint from dagster-aws)
- CanaryResource      -> resources.k8s.canary.CanaryVerifier (canary pods on SOCI nodes)
Secrets (registry password, AWS keys) are meant to be passed as dg.EnvVar and are hidden from repr().
`eks_resources()` builds them from the settings model (pipelines/settings.py), which names any missing variable.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from typing import Any, Literal, cast

import boto3
from dagster_aws.s3 import S3PickleIOManager, S3Resource
from dagster_aws.utils import ResourceWithBoto3Configuration, construct_boto_client_retry_config
from kubernetes import client as k8s_client
from pydantic import Field, PrivateAttr

from pipelines.resource_defs.base import BuilderResource, CanaryBase, RegistryResource, secret_env
from pipelines.settings import SettingError, Settings, load_settings
from resources.aws.ecr import EcrRegistry, RepositorySettings, TagMutability
from resources.builders.docker_auth import CredentialsProvider, RegistryCredential
from resources.builders.pool import BuilderPool, StatefulSetEndpoints, StaticEndpoints
from resources.builders.tls import TlsFromFiles, TlsFromSecret, TlsSource
from resources.defaults import (
    BUILDER_CLIENT_TLS_SECRET,
    BUILDER_NAMESPACE,
    BUILDER_PORT,
    BUILDER_STATEFULSET,
    BUILDER_TLS_SERVER_NAME,
    CANARY_NAMESPACE,
)
from resources.k8s.canary import DEFAULT_NODE_SELECTOR, DEFAULT_TOLERATIONS, CanaryVerifier
from resources.k8s.client import api_client
from resources.registry import RegistryClient


def _missing(setting: str, hint: str) -> SettingError:
    return SettingError(f"{setting} is not set: {hint}")


class EcrResource(ResourceWithBoto3Configuration):
    """Amazon ECR for pushes, tokens and repository settings (region, retries, endpoint_url from dagster-aws)."""

    aws_secret_access_key: str | None = Field(default=None, repr=False, description="pass as dg.EnvVar")
    aws_session_token: str | None = Field(default=None, repr=False, description="pass as dg.EnvVar")
    registry_id: str | None = Field(default=None, description="AWS account id of the registry (default: caller's)")
    token_refresh_margin_s: int = Field(default=3600, description="refetch the 12 h ECR token this long before expiry")
    scan_on_push: bool = True
    tag_mutability: str = Field(default="MUTABLE", description="MUTABLE | IMMUTABLE | *_WITH_EXCLUSION")
    mutability_exclusions: list[str] = Field(default_factory=list)
    encryption: str = Field(default="AES256", description="AES256 | KMS")
    kms_key: str | None = None
    lifecycle_policy_json: str | None = Field(default=None, description="ECR lifecycle policy; None leaves it alone")
    allow_untagged_expiry: bool = Field(
        default=False, description="permit untagged/any rules (they can delete SOCI indexes)"
    )

    _registry: EcrRegistry | None = PrivateAttr(default=None)

    def ecr_client(self):
        """A boto3 ECR client from the dagster-aws fields."""
        session = boto3.session.Session(profile_name=self.profile_name)
        return session.client(
            "ecr",
            region_name=self.region_name,
            use_ssl=self.use_ssl,
            verify=self.verify,
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.aws_access_key_id,
            aws_secret_access_key=self.aws_secret_access_key,
            aws_session_token=self.aws_session_token,
            config=construct_boto_client_retry_config(self.max_attempts),
        )

    def get_registry(self) -> EcrRegistry:
        """The EcrRegistry (one per resource instance, so the token cache is shared within a run)."""
        if self._registry is None:
            if not (self.region_name or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")):
                raise _missing("EcrResource.region_name", "set it (or AWS_REGION) to the registry's region")
            self._registry = EcrRegistry(self.ecr_client(), registry_id=self.registry_id,
                                         refresh_margin=timedelta(seconds=self.token_refresh_margin_s))
        return self._registry

    def repository_settings(self) -> RepositorySettings:
        """The repository settings this resource applies in ensure_repository."""
        policy = json.loads(self.lifecycle_policy_json) if self.lifecycle_policy_json else None
        mutability = cast(TagMutability, self.tag_mutability)  # validated by RepositorySettings
        return RepositorySettings(
            scan_on_push=self.scan_on_push, tag_mutability=mutability,
            mutability_exclusions=tuple(self.mutability_exclusions),
            encryption=cast(Literal["AES256", "KMS"], self.encryption),
            kms_key=self.kms_key, lifecycle_policy=policy, allow_untagged_expiry=self.allow_untagged_expiry,
        )


class BuilderPoolResource(BuilderResource):
    """Remote BuildKit daemons driven by buildctl: a StatefulSet found through the Kubernetes API, or a static list."""

    discovery: Literal["statefulset", "static"] = "statefulset"
    static_addrs: list[str] = Field(default_factory=list, description="tcp://host:1234 addresses for discovery=static")
    namespace: str = BUILDER_NAMESPACE
    statefulset: str = BUILDER_STATEFULSET
    service: str | None = Field(default=None, description="headless service; default: the StatefulSet's serviceName")
    port: int = BUILDER_PORT
    kubeconfig: str | None = Field(
        default=None, description="kubeconfig path; default: in-cluster, then ~/.kube/config"
    )
    kube_context: str | None = None
    tls: Literal["secret", "files", "none"] = "secret"
    tls_secret: str = BUILDER_CLIENT_TLS_SECRET
    tls_secret_namespace: str | None = Field(default=None, description="default: namespace")
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_server_name: str | None = BUILDER_TLS_SERVER_NAME
    buildctl_bin: str = "buildctl"
    probe_timeout_s: float | None = Field(
        default=2.0, description="seconds for the TCP probe before each build attempt; None skips the probe")
    max_parallel_per_builder: int = Field(default=2, description="size the Dagster pool 'buildkit' as this x replicas")
    prune_all: bool = False
    ecr: EcrResource | None = Field(default=None, description="push credentials from ECR tokens")
    registry_host: str | None = Field(default=None, description="push registry for username/password credentials")
    registry_username: str | None = None
    registry_password: str | None = Field(default=None, repr=False, description="pass as dg.EnvVar")

    def _credentials(self) -> CredentialsProvider | None:
        if self.ecr is not None:
            return self.ecr.get_registry().docker_credentials
        if self.registry_password is not None or self.registry_username is not None:
            for name, hint in (("registry_host", "the registry the credentials are for"),
                               ("registry_username", "set it with the password"),
                               ("registry_password", "pass it as dg.EnvVar")):
                if not getattr(self, name):
                    raise _missing(f"BuilderPoolResource.{name}", hint)
            cred = RegistryCredential(str(self.registry_host), str(self.registry_username), str(self.registry_password))
            return lambda: [cred]
        return None

    def _tls(self, core_api: object | None) -> TlsSource | None:
        if self.tls == "none":
            return None
        if self.tls == "files":
            for name in ("tls_ca_file", "tls_cert_file", "tls_key_file"):
                if not getattr(self, name):
                    raise _missing(f"BuilderPoolResource.{name}", "tls='files' needs CA, cert and key paths")
            return TlsFromFiles(self.tls_ca_file, self.tls_cert_file, self.tls_key_file, self.tls_server_name)  # type: ignore[arg-type]
        core = core_api or k8s_client.CoreV1Api(api_client(self.kubeconfig, self.kube_context))
        return TlsFromSecret(core_api=core, secret_name=self.tls_secret,
                             namespace=self.tls_secret_namespace or self.namespace, server_name=self.tls_server_name)

    def get_pool(self) -> BuilderPool:
        """The BuilderPool described by this configuration."""
        core = None
        source: StaticEndpoints | StatefulSetEndpoints
        if self.discovery == "static":
            if not self.static_addrs:
                raise _missing("BuilderPoolResource.static_addrs",
                               "discovery='static' needs tcp://host:port addresses (STREAMABLE_BUILDER_ADDRS)")
            source = StaticEndpoints(tuple(self.static_addrs))
        else:
            api = api_client(self.kubeconfig, self.kube_context)
            core = k8s_client.CoreV1Api(api)
            source = StatefulSetEndpoints(apps_api=k8s_client.AppsV1Api(api), core_api=core, namespace=self.namespace,
                                          statefulset=self.statefulset, service=self.service, port=self.port)
        return BuilderPool(source=source, tls=self._tls(core), credentials=self._credentials(),
                           buildctl_bin=self.buildctl_bin, probe_timeout_s=self.probe_timeout_s,
                           max_parallel_per_builder=self.max_parallel_per_builder, prune_all=self.prune_all)

    def get_builder(self) -> BuilderPool:
        """Same as get_pool(): the pool implements the ImageBuilder contract (build, prune)."""
        return self.get_pool()


class CanaryResource(CanaryBase):
    """Canary pods on SOCI nodes that prove the image starts (and how fast it pulls)."""

    kubeconfig: str | None = None
    kube_context: str | None = None
    namespace: str = CANARY_NAMESPACE
    node_selector: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_NODE_SELECTOR))
    tolerations: list[dict[str, str]] = Field(default_factory=lambda: [dict(t) for t in DEFAULT_TOLERATIONS])
    image_pull_secrets: list[str] = Field(default_factory=list)
    poll_interval_s: float = 1.0

    def get_verifier(self) -> CanaryVerifier:
        """A CanaryVerifier for this cluster and namespace."""
        core = k8s_client.CoreV1Api(api_client(self.kubeconfig, self.kube_context))
        return CanaryVerifier(core_api=core, namespace=self.namespace, node_selector=dict(self.node_selector),
                              tolerations=[dict(t) for t in self.tolerations],
                              image_pull_secrets=tuple(self.image_pull_secrets), poll_interval_s=self.poll_interval_s)

    def run_canary(self, image_ref: str, *, command: list[str], args: list[str], timeout_s: int) -> dict:
        """Run the canary pod; its metadata when the container exited 0, else a CanaryError-like failure."""
        result = self.get_verifier().run(image_ref, command=tuple(command), args=tuple(args), timeout_s=timeout_s)
        meta = result.metadata()
        if not result.ok:
            raise RuntimeError(f"canary pod for {image_ref} exited with {result.exit_code}: {result.log_tail[-500:]}")
        return meta


class EcrRegistryResource(RegistryResource):
    """The OCI registry API of ECR: credentials from ECR tokens, repositories created on demand."""

    ecr: EcrResource

    def client(self, registry: str) -> RegistryClient:
        reg = self.ecr.get_registry()
        if registry != reg.registry_host:
            return super().client(registry)
        return reg.registry_client(timeout=self.timeout_s)

    def ui_url(self, repository: str) -> str | None:
        """The repository's page in the AWS console."""
        host = self.ecr.get_registry().registry_host  # <account>.dkr.ecr.<region>.amazonaws.com
        parts = host.split(".")
        if len(parts) < 6 or parts[1:3] != ["dkr", "ecr"]:
            return None
        account, region = parts[0], parts[3]
        return (f"https://{region}.console.aws.amazon.com/ecr/repositories/private/{account}/{repository}"
                f"?region={region}")

    def prepare_repository(self, repository: str) -> list[str]:
        state = self.ecr.get_registry().ensure_repository(repository, self.ecr.repository_settings())
        if state.created:
            return [f"created ECR repository {repository}"]
        return [f"ECR repository {repository}: updated {', '.join(state.changed)}"] if state.changed else []

    def release_tag(self, repository: str, tag: str) -> tuple[str, str | None, bool]:
        choice = self.ecr.get_registry().soci_tag_for(repository, tag)
        return choice.tag, (choice.message if choice.suffixed else None), choice.suffixed


def eks_resources(settings: Settings | None = None) -> dict[str, Any]:
    """`builder`, `ecr`, `canary`, `registry` and `io_manager` from the settings; SettingError names a gap.

    Required: STREAMABLE_ECR_REGION (or AWS_REGION) and STREAMABLE_IO_BUCKET (S3 bucket for step outputs). With
    STREAMABLE_BUILDER_DISCOVERY=static: STREAMABLE_BUILDER_ADDRS (comma-separated). With STREAMABLE_BUILDER_TLS=files:
    STREAMABLE_BUILDER_TLS_CA, _CERT and _KEY. Secrets are read at launch through dg.EnvVar (AWS_SECRET_ACCESS_KEY,
    AWS_SESSION_TOKEN).
    """
    s = settings or load_settings()
    if not s.region:
        raise _missing("STREAMABLE_ECR_REGION", "set it (or AWS_REGION) to the ECR registry's region")
    ecr = EcrResource(
        region_name=s.region,
        registry_id=s.ecr_registry_id,
        endpoint_url=s.ecr_endpoint_url,
        aws_access_key_id=s.aws_access_key_id,
        aws_secret_access_key=secret_env("AWS_SECRET_ACCESS_KEY", s.aws_secret_access_key_set),
        aws_session_token=secret_env("AWS_SESSION_TOKEN", s.aws_session_token_set),
        tag_mutability=s.ecr_tag_mutability,
    )
    if s.builder_discovery == "static":
        s.require("builder_addrs", "discovery 'static' needs comma-separated tcp://host:port addresses")
    if s.builder_tls == "files":
        for field in ("builder_tls_ca", "builder_tls_cert", "builder_tls_key"):
            s.require(field, "STREAMABLE_BUILDER_TLS=files needs CA, cert and key paths")
    builder = BuilderPoolResource(
        discovery=cast(Literal["statefulset", "static"], s.builder_discovery),  # validated by Settings
        static_addrs=s.builder_addr_list,
        namespace=s.builder_namespace or BUILDER_NAMESPACE,
        statefulset=s.builder_statefulset or BUILDER_STATEFULSET,
        kubeconfig=s.kubeconfig,
        tls=cast(Literal["secret", "files", "none"], s.builder_tls),  # validated by Settings
        tls_ca_file=s.builder_tls_ca, tls_cert_file=s.builder_tls_cert, tls_key_file=s.builder_tls_key,
        buildctl_bin=s.buildctl,
        max_parallel_per_builder=s.builder_max_parallel,
        ecr=ecr,
    )
    canary = CanaryResource(kubeconfig=s.kubeconfig, namespace=s.canary_namespace or CANARY_NAMESPACE)
    # Steps run in separate pods (K8sRunLauncher, run retries, release re-run alone): outputs live in S3.
    bucket = s.require("io_bucket", "an S3 bucket for step outputs (steps run in separate pods)")
    io_manager = S3PickleIOManager(
        s3_resource=S3Resource(region_name=s.region, endpoint_url=s.s3_endpoint_url),
        s3_bucket=bucket, s3_prefix=s.io_prefix,
    )
    return {"builder": builder, "ecr": ecr, "canary": canary, "registry": EcrRegistryResource(ecr=ecr),
            "io_manager": io_manager}
