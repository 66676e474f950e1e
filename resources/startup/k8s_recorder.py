"""The startup recorder on a cluster: a privileged pod on a builder node runs `streamable soci profile`.

`KubernetesStartupRecorder.record(ref, ...)` creates the pod (namespace streamable-builders, service
account without API access, next to a buildkitd pod, a disk volume for the rootfs), polls it, reads the
profile JSON from its log and always deletes the pod. The RBAC it needs (pods create/get/delete,
pods/log get) and the pod's egress-only NetworkPolicy are in deploy/k8s/optional/startup-recorder.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException

from resources.defaults import BUILDER_APP_LABEL, BUILDER_NAMESPACE
from resources.k8s.client import api_error
from resources.startup.errors import RecordingError
from resources.startup.profile import StartupProfile
from resources.startup.sandbox import Readiness

CONTAINER = "recorder"
SERVICE_ACCOUNT = "streamable-startup-recorder"
POD_LABELS = {"app": "startup-recorder", "app.kubernetes.io/managed-by": "streamable"}
WORK_DIR = "/work"
START_GRACE_S = 600  # scheduling, pulling the recorder image, fetching and unpacking the layers
_ERROR_PREFIX = "streamable: error: "
_WAITING_FAILURES = frozenset(
    {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerError", "CreateContainerConfigError"}
)


def profile_args(ref: str, readiness: Readiness, timeout_s: float, command: Sequence[str] | None) -> list[str]:
    """Arguments of `streamable soci profile` for one recording in the pod."""
    args = [ref, "--work-dir", WORK_DIR, "--timeout", f"{timeout_s:g}"]
    if readiness.log is not None:
        args += ["--ready-log", readiness.log]
    elif readiness.tcp_port is not None:
        args += ["--ready-tcp-port", str(readiness.tcp_port)]
    elif readiness.exit:
        args += ["--ready-exit"]
    if command:
        args += ["--", *command]
    return args


def parse_pod_log(log: str) -> StartupProfile:
    """The profile JSON the CLI printed (indented, starting at a line `{`), whatever else the log holds."""
    decoder = json.JSONDecoder()
    offset = 0
    for line in log.splitlines(keepends=True):
        if line.rstrip("\n") == "{":
            try:
                doc = decoder.raw_decode(log, offset)[0]
            except json.JSONDecodeError:
                doc = None
            if doc is not None:
                return StartupProfile.from_dict(doc)  # a bad profile is a ProfileFormatError naming the field
        offset += len(line)
    raise RecordingError("the recorder pod's log holds no profile JSON", log.splitlines()[-10:])


@dataclass
class KubernetesStartupRecorder:
    """Runs recorder pods through a CoreV1Api."""

    core_api: Any
    image: str
    namespace: str = BUILDER_NAMESPACE
    volume_size: str = "80Gi"
    storage_class: str | None = None
    poll_interval_s: float = 2.0
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep

    def pod_manifest(self, name: str, args: Sequence[str], timeout_s: float) -> dict[str, Any]:
        """A privileged, never restarted recorder pod beside a buildkitd pod, without an API token."""
        claim: dict[str, Any] = {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": self.volume_size}},
        }
        if self.storage_class:
            claim["storageClassName"] = self.storage_class
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": self.namespace, "labels": dict(POD_LABELS)},
            "spec": {
                "serviceAccountName": SERVICE_ACCOUNT,
                "automountServiceAccountToken": False,
                "enableServiceLinks": False,
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": 5,
                "activeDeadlineSeconds": math.ceil(timeout_s) + START_GRACE_S,
                "affinity": {
                    "podAffinity": {
                        "preferredDuringSchedulingIgnoredDuringExecution": [
                            {
                                "weight": 100,
                                "podAffinityTerm": {
                                    "topologyKey": "kubernetes.io/hostname",
                                    "labelSelector": {"matchLabels": {"app": BUILDER_APP_LABEL}},
                                },
                            }
                        ]
                    }
                },
                "containers": [
                    {
                        "name": CONTAINER,
                        "image": self.image,
                        "command": ["streamable", "soci", "profile"],
                        "args": list(args),
                        # unshare, chroot, mknod, ptrace and a loop device with readahead 0:
                        # privileged, like the builders
                        "securityContext": {"privileged": True, "runAsUser": 0},
                        "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "8Gi"}},
                        "volumeMounts": [{"name": "work", "mountPath": WORK_DIR}],
                    }
                ],
                # a disk volume: the rootfs must not be on tmpfs (page-cache residency from a cold start)
                "volumes": [{"name": "work", "ephemeral": {"volumeClaimTemplate": {"spec": claim}}}],
            },
        }

    def record(
        self,
        ref: str,
        *,
        readiness: Readiness | None = None,
        timeout_s: float = 120,
        command: Sequence[str] | None = None,
    ) -> StartupProfile:
        """Record `ref` (by digest) in a pod; the pod is deleted whatever happens."""
        name = f"startup-{uuid.uuid4().hex[:10]}"
        args = profile_args(ref, readiness or Readiness(), timeout_s, command)
        try:
            self.core_api.create_namespaced_pod(self.namespace, self.pod_manifest(name, args, timeout_s))
        except ApiException as exc:
            raise RecordingError(
                f"for {ref}: {api_error(exc, f'creating recorder pod {self.namespace}/{name}')}"
            ) from None
        try:
            exit_code = self._wait(name, ref, timeout_s + START_GRACE_S)
            log = self._log(name, ref)
        finally:
            try:
                self.core_api.delete_namespaced_pod(name, self.namespace, grace_period_seconds=0)
            except ApiException:
                pass
        if exit_code != 0:
            errors = [line[len(_ERROR_PREFIX) :] for line in log.splitlines() if line.startswith(_ERROR_PREFIX)]
            why = errors[-1] if errors else f"exit code {exit_code}"
            raise RecordingError(
                f"recorder pod {self.namespace}/{name} for {ref} failed: {why}", log.splitlines()[-10:]
            )
        return parse_pod_log(log)

    def _log(self, name: str, ref: str) -> str:
        """The container's log verbatim: with content preloaded the client json-decodes a log that looks like
        JSON and returns the repr of a dict (seen with the real client in
        tests/resources/startup/test_k8s_recorder.py)."""
        try:
            response = self.core_api.read_namespaced_pod_log(
                name, self.namespace, container=CONTAINER, _preload_content=False
            )
        except ApiException as exc:
            raise RecordingError(
                f"for {ref}: {api_error(exc, f'log of recorder pod {self.namespace}/{name}')}"
            ) from None
        return bytes(response.data).decode("utf-8", "replace")

    def _wait(self, name: str, ref: str, deadline_s: float) -> int:
        """Poll until the recorder container terminates; its exit code."""
        deadline = self.clock() + deadline_s
        while True:
            try:
                pod = self.core_api.read_namespaced_pod(name, self.namespace)
            except ApiException as exc:
                raise RecordingError(f"for {ref}: {api_error(exc, f'recorder pod {self.namespace}/{name}')}") from None
            for cs in (pod.status.container_statuses or []) if pod.status else []:
                state = cs.state
                if cs.name != CONTAINER or state is None:
                    continue
                if state.terminated is not None:
                    return int(state.terminated.exit_code)
                if state.waiting is not None and state.waiting.reason in _WAITING_FAILURES:
                    raise RecordingError(
                        f"recorder pod {self.namespace}/{name} for {ref} cannot start: "
                        f"{state.waiting.reason}: {state.waiting.message or ''}".rstrip(": ")
                    )
            if self.clock() >= deadline:
                raise RecordingError(
                    f"recorder pod {self.namespace}/{name} for {ref} did not finish in {deadline_s:g}s"
                )
            self.sleep(self.poll_interval_s)
