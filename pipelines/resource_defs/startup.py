"""The startup recorder as a Dagster resource: locally in a sandbox on this host, on EKS as a pod on a builder node."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import dagster as dg
from pydantic import Field

from pipelines.settings import Settings
from resources.defaults import BUILDER_NAMESPACE
from resources.oci.refs import ImageRef
from resources.registry import RegistryClient
from resources.startup.profile import StartupProfile
from resources.startup.settings import StartupSettings

RECORDER_IMAGE_ENV = "STREAMABLE_RECORDER_IMAGE"


class StartupRecorderResource(dg.ConfigurableResource):
    """Records a startup profile on this host: rootfs from the registry layers, a sandbox without network
    (root, strace and unshare; resources/startup/recorder.py)."""

    work_dir: str | None = Field(
        default=None, description="disk directory for the rootfs (default $STREAMABLE_STARTUP_WORK_DIR or /var/tmp)"
    )

    def record(
        self, client: RegistryClient, ref: ImageRef, settings: StartupSettings, log: Callable[[str], None]
    ) -> StartupProfile:
        """Record the start of `ref` (by digest) as the target's `startup:` settings say."""
        from resources.startup.recorder import StartupRecorder  # noqa: PLC0415

        recorder = StartupRecorder(client, work_root=Path(self.work_dir) if self.work_dir else None, log_fn=log)
        return recorder.record(
            ref, command=settings.command, readiness=settings.readiness(), timeout_s=settings.timeout_s
        ).profile


class KubernetesStartupRecorderResource(StartupRecorderResource):
    """Records a startup profile in a recorder pod on a builder node (resources/startup/k8s_recorder.py; RBAC and
    NetworkPolicy in deploy/k8s/optional/startup-recorder)."""

    image: str | None = Field(default=None, description=f"recorder image (streamable CLI); ${RECORDER_IMAGE_ENV}")
    kubeconfig: str | None = None
    kube_context: str | None = None
    namespace: str = BUILDER_NAMESPACE
    volume_size: str = "80Gi"
    storage_class: str | None = None
    poll_interval_s: float = 2.0

    def record(
        self, client: RegistryClient, ref: ImageRef, settings: StartupSettings, log: Callable[[str], None]
    ) -> StartupProfile:
        from kubernetes import client as k8s_client  # noqa: PLC0415

        from resources.k8s.client import api_client  # noqa: PLC0415
        from resources.startup.errors import RecordingError  # noqa: PLC0415
        from resources.startup.k8s_recorder import KubernetesStartupRecorder  # noqa: PLC0415

        if not self.image:
            raise RecordingError(f"recording {ref} on the cluster needs the recorder image: set {RECORDER_IMAGE_ENV}")
        core = k8s_client.CoreV1Api(api_client(self.kubeconfig, self.kube_context))
        recorder = KubernetesStartupRecorder(
            core,
            image=self.image,
            namespace=self.namespace,
            volume_size=self.volume_size,
            storage_class=self.storage_class,
            poll_interval_s=self.poll_interval_s,
        )
        log(f"recording {ref} in a recorder pod in {self.namespace}")
        return recorder.record(
            str(ref), readiness=settings.readiness(), timeout_s=settings.timeout_s, command=settings.command
        )


def startup_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    """The `startup_recorder` resource for STREAMABLE_ENV (local | eks)."""
    if settings.env == "eks":
        return {
            "startup_recorder": KubernetesStartupRecorderResource(
                image=settings.recorder_image,
                kubeconfig=settings.kubeconfig,
                namespace=settings.builder_namespace or BUILDER_NAMESPACE,
            )
        }
    return {"startup_recorder": StartupRecorderResource(work_dir=settings.startup_work_dir)}
