"""Canary pull verification: run the candidate image once on a SOCI node and measure how fast it started.

`CanaryVerifier.run(image_ref, command=[...], timeout_s=...)` creates a pod (restartPolicy Never,
imagePullPolicy Always, nodeSelector + tolerations for SOCI nodes) in a dedicated namespace, polls it,
and returns a CanaryResult with the kubelet's pull duration ("Successfully pulled image "X" in 313ms
(313ms including waiting). Image size: N bytes."), the time from create to container start, the exit
code and node. The pod is always deleted: on success, on image pull failure and on timeout (CanaryError).
"""

from __future__ import annotations

import math
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.exceptions import ApiException

from resources.defaults import (
    CANARY_NAMESPACE,
    SOCI_NODE_LABEL_KEY,
    SOCI_NODE_LABEL_VALUE,
    SOCI_NODE_TAINT_EFFECT,
    SOCI_NODE_TAINT_KEY,
    SOCI_NODE_TAINT_VALUE,
)
from resources.errors import StreamableError
from resources.k8s.client import api_error
from resources.log import LogFn

CONTAINER = "canary"
PULL_FAILURE_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull",
                                  "RegistryUnavailable"})
START_FAILURE_REASONS = frozenset({"CreateContainerError", "CreateContainerConfigError", "RunContainerError",
                                   "StartError"})
DEFAULT_NODE_SELECTOR = {SOCI_NODE_LABEL_KEY: SOCI_NODE_LABEL_VALUE}
DEFAULT_TOLERATIONS = ({"key": SOCI_NODE_TAINT_KEY, "operator": "Equal", "value": SOCI_NODE_TAINT_VALUE,
                        "effect": SOCI_NODE_TAINT_EFFECT},)

_PULLED_RE = re.compile(
    r'Successfully pulled image "(?P<image>[^"]+)" in (?P<pull>[0-9.a-zµμ]+)'
    r'(?: \((?P<waiting>[0-9.a-zµμ]+) including waiting\))?(?:\.? ?Image size: (?P<size>\d+) bytes)?'
)
_PRESENT_RE = re.compile(r'Container image "(?P<image>[^"]+)" already present on machine')
_GO_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|μs|ms|s|m|h)")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


class CanaryError(StreamableError, RuntimeError):
    """The canary pod could not pull or start the image, or did not finish in time; names image, pod and node."""


def parse_go_duration(text: str) -> float:
    """Seconds from a Go time.Duration string (`313ms`, `1.5s`, `2m3.5s`, `1h0m0s`)."""
    pos, total = 0, 0.0
    for m in _GO_DURATION_PART.finditer(text):
        if m.start() != pos:
            break
        total += float(m[1]) * _GO_UNITS[m[2]]
        pos = m.end()
    if pos != len(text) or not text:
        raise ValueError(f"not a Go duration: {text!r}")
    return total


@dataclass(frozen=True)
class PullInfo:
    """What the kubelet said about pulling the image."""

    pull_s: float | None = None
    pull_including_waiting_s: float | None = None
    image_size_bytes: int | None = None
    already_present: bool = False


def pull_info_from_events(messages: Sequence[str]) -> PullInfo:
    """Parse kubelet `Pulled` event messages (the last matching one wins)."""
    info = PullInfo()
    for msg in messages:
        m = _PULLED_RE.search(msg)
        if m:
            info = PullInfo(
                pull_s=parse_go_duration(m["pull"]),
                pull_including_waiting_s=parse_go_duration(m["waiting"]) if m["waiting"] else None,
                image_size_bytes=int(m["size"]) if m["size"] else None,
            )
        elif _PRESENT_RE.search(msg):
            info = PullInfo(already_present=True)
    return info


@dataclass(frozen=True)
class CanaryResult:
    """One canary run: where it ran, how fast the image pulled and started, and how it exited."""

    image_ref: str
    pod: str
    namespace: str
    node: str | None
    exit_code: int
    termination_reason: str | None
    pull: PullInfo
    time_to_running_s: float
    """Seconds from pod creation to the first poll that saw the container started (resolution: poll interval)."""
    total_s: float
    log_tail: str = ""
    events: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def metadata(self) -> dict[str, Any]:
        """Flat values for Dagster metadata (no secrets: image ref, pod, node, timings, exit code)."""
        return {
            "canary_image": self.image_ref,
            "canary_pod": f"{self.namespace}/{self.pod}",
            "canary_node": self.node or "",
            "canary_exit_code": self.exit_code,
            "canary_pull_s": self.pull.pull_s,
            "canary_pull_including_waiting_s": self.pull.pull_including_waiting_s,
            "canary_image_size_bytes": self.pull.image_size_bytes,
            "canary_image_already_present": self.pull.already_present,
            "canary_time_to_running_s": self.time_to_running_s,
            "canary_total_s": self.total_s,
        }


def _container_state(pod: Any) -> tuple[str, Any]:
    """('waiting'|'running'|'terminated'|'none', state detail) of the canary container."""
    for cs in (pod.status.container_statuses or []) if pod.status else []:
        if cs.name != CONTAINER or cs.state is None:
            continue
        if cs.state.terminated is not None:
            return "terminated", cs.state.terminated
        if cs.state.running is not None:
            return "running", cs.state.running
        if cs.state.waiting is not None:
            return "waiting", cs.state.waiting
    return "none", None


@dataclass
class CanaryVerifier:
    """Runs canary pods through the Kubernetes API (a CoreV1Api)."""

    core_api: Any
    namespace: str = CANARY_NAMESPACE
    node_selector: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_NODE_SELECTOR))
    tolerations: Sequence[Mapping[str, Any]] = field(default_factory=lambda: [dict(t) for t in DEFAULT_TOLERATIONS])
    poll_interval_s: float = 1.0
    image_pull_secrets: Sequence[str] = ()
    service_account: str | None = None
    cpu_request: str = "10m"
    memory_request: str = "32Mi"
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep

    def pod_manifest(self, name: str, image_ref: str, command: Sequence[str], args: Sequence[str],
                     timeout_s: float) -> dict[str, Any]:
        """The canary pod: one container, never restarted, always pulled, on SOCI nodes, no API token."""
        container: dict[str, Any] = {
            "name": CONTAINER,
            "image": image_ref,
            "imagePullPolicy": "Always",
            "resources": {"requests": {"cpu": self.cpu_request, "memory": self.memory_request}},
        }
        if command:
            container["command"] = list(command)
        if args:
            container["args"] = list(args)
        spec: dict[str, Any] = {
            "restartPolicy": "Never",
            "containers": [container],
            "nodeSelector": dict(self.node_selector),
            "tolerations": [dict(t) for t in self.tolerations],
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "terminationGracePeriodSeconds": 0,
            "activeDeadlineSeconds": int(math.ceil(timeout_s)) + 60,
        }
        if self.image_pull_secrets:
            spec["imagePullSecrets"] = [{"name": s} for s in self.image_pull_secrets]
        if self.service_account:
            spec["serviceAccountName"] = self.service_account
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "labels": {"app.kubernetes.io/name": "streamable-canary", "app.kubernetes.io/managed-by": "streamable"},
            },
            "spec": spec,
        }

    def run(
        self,
        image_ref: str,
        *,
        command: Sequence[str] = (),
        args: Sequence[str] = (),
        timeout_s: float = 300.0,
        log: LogFn | None = None,
    ) -> CanaryResult:
        """Run `image_ref` once on a SOCI node and measure it; the pod is deleted whatever happens.

        `command` replaces the image's entrypoint, `args` its CMD; with neither, the image's defaults run
        and must exit on their own. Raises CanaryError on pull/start failure or timeout.
        """
        say = log or (lambda _msg: None)
        name = f"streamable-canary-{uuid.uuid4().hex[:10]}"
        where = f"pod {self.namespace}/{name}"
        started = self.clock()
        say(f"canary {where}: image {image_ref} on nodes {dict(self.node_selector)}")
        try:
            try:
                self.core_api.create_namespaced_pod(
                    self.namespace, self.pod_manifest(name, image_ref, command, args, timeout_s)
                )
            except ApiException as exc:
                hint = (
                    f" (does namespace {self.namespace} exist? it is created by deploy/k8s)"
                    if exc.status == 404
                    else ""
                )
                raise CanaryError(f"canary for {image_ref}: {api_error(exc, 'create ' + where)}{hint}") from None
            result = self._wait(name, where, image_ref, started, timeout_s, say)
        except BaseException:
            self._delete(name, where, say, quiet=True)
            raise
        self._delete(name, where, say, quiet=False)
        return result

    def _wait(self, name: str, where: str, image_ref: str, started: float, timeout_s: float,
              say: LogFn) -> CanaryResult:
        deadline = started + timeout_s
        time_to_running: float | None = None
        node: str | None = None
        while True:
            pod = self._read(name, where)
            node = (pod.spec.node_name if pod.spec else None) or node
            kind, detail = _container_state(pod)
            now = self.clock()
            if kind in ("running", "terminated") and time_to_running is None:
                time_to_running = round(now - started, 3)
                say(f"canary {where}: container started on node {node} after {time_to_running}s")
            if kind == "terminated":
                return self._finish(name, where, image_ref, node, detail, started, time_to_running, deadline)
            if kind == "waiting" and detail.reason in PULL_FAILURE_REASONS | START_FAILURE_REASONS:
                events = self._event_messages(name)
                failed = [
                    e for e in events if e.startswith(("Failed:", "BackOff:", "InspectFailed:", "ErrImageNeverPull:"))
                ]
                what = "pulled" if detail.reason in PULL_FAILURE_REASONS else "started"
                raise CanaryError(
                    f"canary {where}: image {image_ref} could not be {what} on node {node or '?'}: "
                    f"{detail.reason}: {detail.message or 'no message'}"
                    + (f"; kubelet: {failed[-1]}" if failed else "")
                )
            phase = pod.status.phase if pod.status else None
            if phase == "Failed" and kind != "terminated":
                reason = pod.status.reason or "Failed"
                raise CanaryError(f"canary {where}: pod failed before its container ran: {reason}: "
                                  f"{pod.status.message or 'no message'}")
            if now >= deadline:
                events = self._event_messages(name)
                state = f"container {kind}" + (f" ({detail.reason})" if kind == "waiting" and detail.reason else "")
                last = f"; last event: {events[-1]}" if events else ""
                raise CanaryError(
                    f"canary {where}: image {image_ref} did not finish within {timeout_s:g}s "
                    f"(phase {phase or 'unknown'}, {state}, node {node or 'not scheduled'}){last}"
                )
            self.sleep(self.poll_interval_s)

    def _finish(self, name: str, where: str, image_ref: str, node: str | None, terminated: Any, started: float,
                time_to_running: float | None, deadline: float) -> CanaryResult:
        """Collect events (waiting briefly for the kubelet's Pulled event), logs and timings."""
        events = self._event_messages(name)
        for _ in range(3):
            if any(e.startswith("Pulled:") for e in events) or self.clock() >= deadline:
                break
            self.sleep(self.poll_interval_s)
            events = self._event_messages(name)
        pull = pull_info_from_events([e.split(": ", 1)[-1] for e in events if e.startswith("Pulled:")])
        return CanaryResult(
            image_ref=image_ref,
            pod=name,
            namespace=self.namespace,
            node=node,
            exit_code=int(terminated.exit_code),
            termination_reason=terminated.reason,
            pull=pull,
            time_to_running_s=time_to_running if time_to_running is not None else round(self.clock() - started, 3),
            total_s=round(self.clock() - started, 3),
            log_tail=self._logs(name),
            events=tuple(events),
        )

    def _read(self, name: str, where: str) -> Any:
        try:
            return self.core_api.read_namespaced_pod(name, self.namespace)
        except ApiException as exc:
            raise CanaryError(f"canary: {api_error(exc, 'read ' + where)}") from None

    def _event_messages(self, name: str) -> list[str]:
        """`Reason: message` of the pod's events, oldest first (empty when events cannot be listed)."""
        try:
            items = self.core_api.list_namespaced_event(
                self.namespace, field_selector=f"involvedObject.name={name},involvedObject.kind=Pod").items
        except ApiException:
            return []
        def when(e: Any) -> tuple:
            t = e.last_timestamp or e.event_time or e.first_timestamp or e.metadata.creation_timestamp
            return (t is None, t.timestamp() if t else 0.0)
        return [f"{e.reason}: {e.message}" for e in sorted(items, key=when)]

    def _logs(self, name: str) -> str:
        # Raw response: the generated client turns text/plain bodies into "b'...'" strings in recent versions.
        try:
            resp = self.core_api.read_namespaced_pod_log(name, self.namespace, container=CONTAINER, tail_lines=20,
                                                         _preload_content=False)
        except ApiException:
            return ""
        return resp.data.decode("utf-8", errors="replace")

    def _delete(self, name: str, where: str, say: LogFn, *, quiet: bool) -> None:
        """Delete the pod now (grace 0); gone already is fine. `quiet`: log a failure instead of raising
        (used while another error is on its way out, so that error is not masked)."""
        try:
            self.core_api.delete_namespaced_pod(name, self.namespace, grace_period_seconds=0)
            say(f"canary {where} deleted")
        except ApiException as exc:
            if exc.status == 404:
                return
            message = f"canary {where} could not be deleted; delete it by hand: {api_error(exc, 'delete ' + where)}"
            if quiet:
                say(message)
                return
            raise CanaryError(message) from None
