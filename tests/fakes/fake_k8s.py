"""A small fake of the Kubernetes HTTP API for tests, driven by the real `kubernetes` Python client.

It serves exactly the endpoints streamable calls, as JSON over HTTP on 127.0.0.1:
- GET  /apis/apps/v1/namespaces/{ns}/statefulsets/{name}
- GET  /api/v1/namespaces/{ns}/pods?labelSelector=k=v,...          (equality selectors only)
- POST /api/v1/namespaces/{ns}/pods
- GET  /api/v1/namespaces/{ns}/pods/{name}
- GET  /api/v1/namespaces/{ns}/pods/{name}/log                     (text/plain)
- DELETE /api/v1/namespaces/{ns}/pods/{name}
- GET  /api/v1/namespaces/{ns}/events?fieldSelector=involvedObject.name=X,...
- GET  /api/v1/namespaces/{ns}/secrets/{name}
Every request must carry the bearer token from the kubeconfig it writes. State is scriptable from the test
(pods ready or not, timed pod lifecycles for created pods, events, logs) and every request is recorded.
"""

from __future__ import annotations

import base64
import itertools
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

Step = tuple[float, Callable[["FakeKubernetes", dict], None]]


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status(code: int, reason: str, message: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any = None


@dataclass
class _ScriptedPod:
    created: float
    steps: list[Step]
    applied: int = 0


@dataclass
class FakeKubernetes:
    """The fake API server; use as a context manager or call start()/stop()."""

    token: str = field(default_factory=lambda: "fake-token-" + uuid.uuid4().hex[:8])
    namespaces: set[str] = field(default_factory=set)
    statefulsets: dict[tuple[str, str], dict] = field(default_factory=dict)
    pods: dict[tuple[str, str], dict] = field(default_factory=dict)
    events: dict[str, list[dict]] = field(default_factory=dict)
    secrets: dict[tuple[str, str], dict] = field(default_factory=dict)
    logs: dict[tuple[str, str], str] = field(default_factory=dict)
    requests: list[RecordedRequest] = field(default_factory=list)
    pod_script: list[Step] | None = None
    """Lifecycle applied to every pod created through the API, as (seconds after creation, step)."""
    fail: dict[tuple[str, str], tuple[int, str]] = field(default_factory=dict)
    """(METHOD, path) -> (HTTP status, message): make that request fail."""

    def __post_init__(self) -> None:
        self._lock = threading.RLock()
        self._scripted: dict[tuple[str, str], _ScriptedPod] = {}
        self._server: ThreadingHTTPServer | None = None
        self._counter = itertools.count(1)

    # -- lifecycle --------------------------------------------------------------------------------------

    def start(self) -> FakeKubernetes:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out as separate writes; avoid 40 ms delayed ACKs

            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def _dispatch(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                code, body, ctype = fake._handle(self.command, self.path, raw, self.headers.get("Authorization"))
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _dispatch

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeKubernetes:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "fake not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def write_kubeconfig(self, path: Path) -> Path:
        """A kubeconfig pointing at this fake with its bearer token."""
        path.write_text(
            "apiVersion: v1\nkind: Config\n"
            f"clusters:\n- name: fake\n  cluster:\n    server: {self.url}\n"
            f"users:\n- name: fake\n  user:\n    token: {self.token}\n"
            "contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n"
            "current-context: fake\n"
        )
        return path

    # -- scripting the state ------------------------------------------------------------------------------

    def add_namespace(self, ns: str) -> None:
        with self._lock:
            self.namespaces.add(ns)

    def add_statefulset(
        self, ns: str, name: str, *, replicas: int, service: str | None, labels: dict[str, str]
    ) -> None:
        self.add_namespace(ns)
        spec: dict[str, Any] = {
            "replicas": replicas,
            "selector": {"matchLabels": dict(labels)},
            "template": {"metadata": {"labels": dict(labels)},
                         "spec": {"containers": [{"name": "buildkitd", "image": "moby/buildkit:rootless"}]}},
        }
        if service is not None:
            spec["serviceName"] = service
        with self._lock:
            self.statefulsets[(ns, name)] = {
                "apiVersion": "apps/v1", "kind": "StatefulSet",
                "metadata": {"name": name, "namespace": ns, "uid": str(uuid.uuid4())},
                "spec": spec, "status": {"replicas": replicas},
            }

    def set_replicas(self, ns: str, name: str, replicas: int) -> None:
        with self._lock:
            self.statefulsets[(ns, name)]["spec"]["replicas"] = replicas
            self.statefulsets[(ns, name)]["status"]["replicas"] = replicas

    def add_pod(
        self, ns: str, name: str, *, labels: dict[str, str], ready: bool = True, phase: str = "Running"
    ) -> None:
        """A pod as the kubelet would report it (no lifecycle script)."""
        self.add_namespace(ns)
        pod = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": dict(labels), "uid": str(uuid.uuid4()),
                         "creationTimestamp": _now_iso()},
            "spec": {"containers": [{"name": "buildkitd", "image": "moby/buildkit:rootless"}], "nodeName": "node-a"},
            "status": {"phase": phase, "conditions": []},
        }
        with self._lock:
            self.pods[(ns, name)] = pod
        self.set_pod_ready(ns, name, ready)

    def set_pod_ready(self, ns: str, name: str, ready: bool, message: str | None = None) -> None:
        with self._lock:
            pod = self.pods[(ns, name)]
            cond = {"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": _now_iso()}
            if not ready:
                cond["reason"] = "ContainersNotReady"
                cond["message"] = message or "containers with unready status: [buildkitd]"
            pod["status"]["conditions"] = [c for c in pod["status"]["conditions"] if c["type"] != "Ready"] + [cond]

    def mark_terminating(self, ns: str, name: str) -> None:
        with self._lock:
            self.pods[(ns, name)]["metadata"]["deletionTimestamp"] = _now_iso()

    def add_secret(self, ns: str, name: str, data: dict[str, bytes]) -> None:
        self.add_namespace(ns)
        with self._lock:
            self.secrets[(ns, name)] = {
                "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {"name": name, "namespace": ns},
                "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
            }

    def add_event(self, ns: str, pod_name: str, reason: str, message: str, type_: str = "Normal") -> None:
        with self._lock:
            n = next(self._counter)
            ts = datetime.now(UTC)
            self.events.setdefault(ns, []).append({
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"name": f"{pod_name}.{n:08x}", "namespace": ns},
                "involvedObject": {"kind": "Pod", "name": pod_name, "namespace": ns, "apiVersion": "v1"},
                "reason": reason, "message": message, "type": type_, "count": 1,
                "source": {"component": "kubelet"},
                "firstTimestamp": ts.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "lastTimestamp": ts.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "eventTime": ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            })

    # -- recorded requests ------------------------------------------------------------------------------

    def calls(self, method: str | None = None, contains: str = "") -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if (method is None or r.method == method) and contains in r.path]

    # -- request handling -----------------------------------------------------------------------------------

    def _advance(self) -> None:
        """Apply every due lifecycle step of scripted pods (lazily, on each request)."""
        now = time.monotonic()
        for (ns, name), sp in list(self._scripted.items()):
            pod = self.pods.get((ns, name))
            if pod is None:
                del self._scripted[(ns, name)]
                continue
            while sp.applied < len(sp.steps) and now - sp.created >= sp.steps[sp.applied][0]:
                sp.steps[sp.applied][1](self, pod)
                sp.applied += 1

    def _handle(self, method: str, raw_path: str, raw_body: bytes, auth: str | None) -> tuple[int, Any, str]:
        parts = urlsplit(raw_path)
        query = parse_qs(parts.query)
        body = None
        if raw_body:
            try:
                body = json.loads(raw_body)
            except ValueError:
                return 400, _status(400, "BadRequest", "body is not JSON"), "application/json"
        with self._lock:
            self.requests.append(RecordedRequest(method, parts.path, query, body))
            if auth != f"Bearer {self.token}":
                return 401, _status(401, "Unauthorized", "Unauthorized"), "application/json"
            if (method, parts.path) in self.fail:
                code, msg = self.fail[(method, parts.path)]
                return code, _status(code, "Forbidden" if code == 403 else "InternalError", msg), "application/json"
            self._advance()
            return self._route(method, parts.path.strip("/").split("/"), query, body)

    def _route(self, method: str, seg: list[str], query: dict, body: Any) -> tuple[int, Any, str]:
        j = "application/json"
        if (
            seg[:4] == ["apis", "apps", "v1", "namespaces"]
            and len(seg) == 7
            and seg[5] == "statefulsets"
            and method == "GET"
        ):
            sts = self.statefulsets.get((seg[4], seg[6]))
            if sts is None:
                return 404, _status(404, "NotFound", f'statefulsets.apps "{seg[6]}" not found'), j
            return 200, sts, j
        if seg[:3] != ["api", "v1", "namespaces"] or len(seg) < 5:
            return 404, _status(404, "NotFound", f"the fake does not serve /{'/'.join(seg)}"), j
        ns, kind, rest = seg[3], seg[4], seg[5:]
        if kind == "pods":
            return self._pods(method, ns, rest, query, body)
        if kind == "events" and method == "GET" and not rest:
            return self._events(ns, query)
        if kind == "secrets" and method == "GET" and len(rest) == 1:
            secret = self.secrets.get((ns, rest[0]))
            if secret is None:
                return 404, _status(404, "NotFound", f'secrets "{rest[0]}" not found'), j
            return 200, secret, j
        return 404, _status(404, "NotFound", f"the fake does not serve {method} /{'/'.join(seg)}"), j

    def _pods(self, method: str, ns: str, rest: list[str], query: dict, body: Any) -> tuple[int, Any, str]:
        j = "application/json"
        if not rest and method == "GET":
            selector = query.get("labelSelector", [""])[0]
            try:
                wanted = _parse_equality_selector(selector)
            except ValueError as exc:
                return 400, _status(400, "BadRequest", str(exc)), j
            items = [p for (pns, _), p in sorted(self.pods.items())
                     if pns == ns and all(p["metadata"].get("labels", {}).get(k) == v for k, v in wanted.items())]
            return 200, {"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items}, j
        if not rest and method == "POST":
            if ns not in self.namespaces:
                return 404, _status(404, "NotFound", f'namespaces "{ns}" not found'), j
            name = (body or {}).get("metadata", {}).get("name")
            containers = (body or {}).get("spec", {}).get("containers") or []
            if not name or not containers or not all(c.get("name") and c.get("image") for c in containers):
                return 422, _status(422, "Invalid", "pod needs metadata.name and containers with name and image"), j
            if (ns, name) in self.pods:
                return 409, _status(409, "AlreadyExists", f'pods "{name}" already exists'), j
            pod = json.loads(json.dumps(body))
            pod["metadata"].update({"namespace": ns, "uid": str(uuid.uuid4()), "creationTimestamp": _now_iso()})
            pod["status"] = {"phase": "Pending", "conditions": []}
            self.pods[(ns, name)] = pod
            if self.pod_script is not None:
                self._scripted[(ns, name)] = _ScriptedPod(time.monotonic(), sorted(self.pod_script, key=lambda s: s[0]))
                self._advance()
            return 201, pod, j
        if len(rest) >= 1:
            pod = self.pods.get((ns, rest[0]))
            if pod is None:
                return 404, _status(404, "NotFound", f'pods "{rest[0]}" not found'), j
            if len(rest) == 1 and method == "GET":
                return 200, pod, j
            if len(rest) == 1 and method == "DELETE":
                del self.pods[(ns, rest[0])]
                return 200, pod, j
            if rest[1:] == ["log"] and method == "GET":
                return 200, self.logs.get((ns, rest[0]), "").encode(), "text/plain"
        return 404, _status(404, "NotFound", f"the fake does not serve {method} pods/{'/'.join(rest)}"), j

    def _events(self, ns: str, query: dict) -> tuple[int, Any, str]:
        selector = query.get("fieldSelector", [""])[0]
        try:
            wanted = _parse_equality_selector(selector)
        except ValueError as exc:
            return 400, _status(400, "BadRequest", str(exc)), "application/json"
        def matches(ev: dict) -> bool:
            for key, value in wanted.items():
                obj, _, attr = key.partition(".")
                if obj != "involvedObject" or ev["involvedObject"].get(attr) != value:
                    return False
            return True
        items = [e for e in self.events.get(ns, []) if matches(e)]
        return 200, {"apiVersion": "v1", "kind": "EventList", "metadata": {}, "items": items}, "application/json"


def _parse_equality_selector(selector: str) -> dict[str, str]:
    """`k=v,k2==v2` -> dict; anything else is rejected (the code under test only sends equality selectors)."""
    out: dict[str, str] = {}
    for part in filter(None, selector.split(",")):
        if "!=" in part or "=" not in part or " " in part:
            raise ValueError(f"fake supports equality selectors only, got {part!r}")
        key, _, value = part.partition("=")
        out[key] = value.lstrip("=")
    return out


# -- lifecycle steps for created pods ---------------------------------------------------------------------

def _container_status(pod: dict, state: dict, ready: bool = False) -> None:
    c = pod["spec"]["containers"][0]
    pod["status"]["containerStatuses"] = [{
        "name": c["name"], "image": c["image"], "imageID": "", "ready": ready, "restartCount": 0, "state": state,
    }]


def scheduled(node: str) -> Callable[[FakeKubernetes, dict], None]:
    def step(fake: FakeKubernetes, pod: dict) -> None:
        pod["spec"]["nodeName"] = node
        pod["status"]["conditions"].append({"type": "PodScheduled", "status": "True"})
        _container_status(pod, {"waiting": {"reason": "ContainerCreating"}})
        fake.add_event(pod["metadata"]["namespace"], pod["metadata"]["name"], "Scheduled",
                       f"Successfully assigned {pod['metadata']['namespace']}/{pod['metadata']['name']} to {node}")
    return step


def unschedulable(message: str) -> Callable[[FakeKubernetes, dict], None]:
    def step(fake: FakeKubernetes, pod: dict) -> None:
        pod["status"]["conditions"].append({"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                            "message": message})
        fake.add_event(pod["metadata"]["namespace"], pod["metadata"]["name"], "FailedScheduling", message, "Warning")
    return step


def pulling() -> Callable[[FakeKubernetes, dict], None]:
    def step(fake: FakeKubernetes, pod: dict) -> None:
        image = pod["spec"]["containers"][0]["image"]
        fake.add_event(pod["metadata"]["namespace"], pod["metadata"]["name"], "Pulling", f'Pulling image "{image}"')
    return step


def pulled(
    duration: str, waiting: str | None = None, size: int | None = None
) -> Callable[[FakeKubernetes, dict], None]:
    """The kubelet's Pulled event, e.g. pulled("313ms", "313ms", 1234)."""
    def step(fake: FakeKubernetes, pod: dict) -> None:
        image = pod["spec"]["containers"][0]["image"]
        msg = f'Successfully pulled image "{image}" in {duration}'
        if waiting is not None:
            msg += f" ({waiting} including waiting)"
        if size is not None:
            msg += f". Image size: {size} bytes."
        fake.add_event(pod["metadata"]["namespace"], pod["metadata"]["name"], "Pulled", msg)
    return step


def running() -> Callable[[FakeKubernetes, dict], None]:
    def step(fake: FakeKubernetes, pod: dict) -> None:
        pod["status"]["phase"] = "Running"
        _container_status(pod, {"running": {"startedAt": _now_iso()}}, ready=True)
        fake.add_event(pod["metadata"]["namespace"], pod["metadata"]["name"], "Started", "Started container canary")
    return step


def terminated(exit_code: int, logs: str = "") -> Callable[[FakeKubernetes, dict], None]:
    def step(fake: FakeKubernetes, pod: dict) -> None:
        pod["status"]["phase"] = "Succeeded" if exit_code == 0 else "Failed"
        _container_status(
            pod,
            {
                "terminated": {
                    "exitCode": exit_code,
                    "reason": "Completed" if exit_code == 0 else "Error",
                    "startedAt": _now_iso(),
                    "finishedAt": _now_iso(),
                }
            },
        )
        fake.logs[(pod["metadata"]["namespace"], pod["metadata"]["name"])] = logs
    return step


def pull_failed(reason: str = "ErrImagePull", message: str = "not found") -> Callable[[FakeKubernetes, dict], None]:
    def step(fake: FakeKubernetes, pod: dict) -> None:
        image = pod["spec"]["containers"][0]["image"]
        full = f'failed to pull and unpack image "{image}": {message}'
        _container_status(pod, {"waiting": {"reason": reason, "message": full}})
        fake.add_event(pod["metadata"]["namespace"], pod["metadata"]["name"], "Failed",
                       f'Failed to pull image "{image}": {full}', "Warning")
    return step
