"""A pool of buildkitd endpoints: discovery (StatefulSet or static list), rendezvous routing and failover.

Routing: each build has a stable key (repo + context path). Every builder gets the score
`blake2b(builder name + key)`; builders are tried from the highest score down (rendezvous /
highest-random-weight hashing), so a target keeps hitting the same warm cache, and adding or removing a
builder moves only the keys whose top choice changed (about 1/N of them). The ranking is computed over
all StatefulSet members, ready or not, so a restarting pod sends its keys to their second choice and
gets them back when it is ready again.

Failover, decided per builder in rank order:
1. skip it when the Kubernetes API says the pod is not ready (or missing);
2. skip it when a TCP connect to its address fails within `probe_timeout_s` (refused, DNS, timeout);
   this catches a dead daemon in milliseconds instead of waiting for buildctl's gRPC dial;
3. if buildctl itself exits with a connection error before any build step started
   (BuilderUnavailableError, e.g. TLS handshake or gRPC Unavailable), try the next one.
A build that started and then failed is a real build failure and is never retried elsewhere.
"""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from typing import Any, Protocol
from urllib.parse import urlsplit

from kubernetes.client.exceptions import ApiException

from resources.builders.base import BuildError, BuildRequest, BuildResult, LogFn, PruneResult
from resources.builders.buildctl import BuildctlBuilder, BuilderUnavailableError, endpoint_name
from resources.builders.docker_auth import CredentialsProvider
from resources.builders.tls import TlsSource
from resources.defaults import BUILDER_NAMESPACE, BUILDER_PORT, BUILDER_STATEFULSET
from resources.errors import StreamableError
from resources.k8s.client import KubernetesError, api_error, label_selector, pod_readiness


@dataclass(frozen=True)
class BuilderEndpoint:
    """One buildkitd: a stable name (pod name), its buildctl address and whether it can take work."""

    name: str
    addr: str
    ready: bool = True
    reason: str = ""


class EndpointSource(Protocol):
    """Where the pool learns its builders from."""

    def endpoints(self) -> list[BuilderEndpoint]: ...

    def describe(self) -> str: ...


@dataclass(frozen=True)
class StaticEndpoints:
    """A fixed list of buildctl addresses (`tcp://host:port`); all are assumed ready.

    Each is named `host:port` (endpoint_name), never by its position in the list or by what else is listed, so
    adding a second builder on the same host does not rename the first (names drive the rendezvous ranking).
    """

    addrs: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.addrs:
            raise ValueError("the static builder list is empty; give at least one tcp://host:port address")

    def endpoints(self) -> list[BuilderEndpoint]:
        names = [endpoint_name(a) for a in self.addrs]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"the static builder list names {', '.join(duplicates)} more than once")
        return [BuilderEndpoint(name=name, addr=addr) for addr, name in zip(self.addrs, names)]

    def describe(self) -> str:
        return f"static list of {len(self.addrs)} builder(s)"


@dataclass(frozen=True)
class StatefulSetEndpoints:
    """Members `<sts>-0..replicas-1` of a StatefulSet; readiness from their pods' Ready condition.

    Address: `tcp://<pod>.<service>.<namespace>.svc:<port>` through the StatefulSet's headless service.
    """

    apps_api: Any
    """kubernetes.client.AppsV1Api"""
    core_api: Any
    """kubernetes.client.CoreV1Api"""
    namespace: str = BUILDER_NAMESPACE
    statefulset: str = BUILDER_STATEFULSET
    service: str | None = None
    """Headless service name; default: the StatefulSet's spec.serviceName."""
    port: int = BUILDER_PORT

    def describe(self) -> str:
        return f"statefulset {self.namespace}/{self.statefulset}"

    def endpoints(self) -> list[BuilderEndpoint]:
        what = self.describe()
        try:
            sts = self.apps_api.read_namespaced_stateful_set(self.statefulset, self.namespace)
        except ApiException as exc:
            raise api_error(exc, what) from None
        replicas = sts.spec.replicas if sts.spec.replicas is not None else 1
        service = self.service or sts.spec.service_name
        if not service:
            raise KubernetesError(f"{what} has no spec.serviceName; set the builder service name explicitly")
        selector = label_selector(sts.spec.selector)
        try:
            pods = self.core_api.list_namespaced_pod(self.namespace, label_selector=selector).items
        except ApiException as exc:
            raise api_error(exc, f"pods of {what} ({selector})") from None
        by_name = {p.metadata.name: p for p in pods}
        out = []
        for ordinal in range(replicas):
            name = f"{self.statefulset}-{ordinal}"
            pod = by_name.get(name)
            ready, reason = pod_readiness(pod) if pod is not None else (False, "pod does not exist")
            addr = f"tcp://{name}.{service}.{self.namespace}.svc:{self.port}"
            out.append(BuilderEndpoint(name=name, addr=addr, ready=ready, reason=reason))
        return out


def hrw_score(key: str, member: str) -> int:
    """Rendezvous weight of `member` for `key`: 64 bits of blake2b over both (stable across processes)."""
    digest = hashlib.blake2b(f"{member}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def rendezvous_order(key: str, members: Iterable[str]) -> list[str]:
    """Members from most to least preferred for `key` (highest random weight first; ties by name)."""
    return sorted(members, key=lambda m: (-hrw_score(key, m), m))


def tcp_probe(addr: str, timeout_s: float) -> str | None:
    """None when a TCP connection to a `tcp://host:port` address opens within timeout_s, else why not.

    Other schemes (unix://, kube-pod://, ...) are not probed.
    """
    parts = urlsplit(addr)
    if parts.scheme != "tcp" or not parts.hostname or not parts.port:
        return None
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=timeout_s):
            return None
    except OSError as exc:
        return f"TCP connect to {parts.hostname}:{parts.port} failed: {exc.strerror or type(exc).__name__}"


@dataclass(frozen=True)
class RoutedBuildResult(BuildResult):
    """A BuildResult plus how the pool routed it."""

    builder_addr: str = ""
    routing_key: str = ""
    rank: int = 0
    """0 = the key's first choice ran the build; >0 = failed over that many builders."""
    skipped: tuple[str, ...] = ()
    """`name: reason` for every higher-ranked builder that was passed over."""


class PruneError(StreamableError, RuntimeError):
    """Some builders could not be pruned; `.results` holds the ones that were, `.failures` name the others."""

    def __init__(self, results: list[PruneResult], failures: dict[str, str]) -> None:
        self.results = results
        self.failures = failures
        detail = "; ".join(f"{name}: {why}" for name, why in sorted(failures.items()))
        super().__init__(f"prune failed on {len(failures)} builder(s) ({detail}); {len(results)} pruned")


@dataclass
class BuilderPool:
    """Routes builds over buildkitd endpoints and prunes them all; implements the ImageBuilder contract."""

    source: EndpointSource
    tls: TlsSource | None = None
    credentials: CredentialsProvider | None = None
    buildctl_bin: str = "buildctl"
    probe_timeout_s: float | None = 2.0
    """TCP probe before each attempt; None disables it (then only buildctl's own errors trigger failover)."""
    max_parallel_per_builder: int = 2
    """Builds one daemon should run at once; size the Dagster pool `buildkit` as this x replicas."""
    prune_all: bool = False
    prune_parallelism: int = 4
    temp_dir: str | None = None

    def builder_for(self, endpoint: BuilderEndpoint) -> BuildctlBuilder:
        """The BuildctlBuilder for one endpoint, sharing the pool's TLS, credentials and binary."""
        return BuildctlBuilder(addr=endpoint.addr, name=endpoint.name, tls=self.tls, credentials=self.credentials,
                               buildctl_bin=self.buildctl_bin, prune_all=self.prune_all, temp_dir=self.temp_dir)

    def route(self, routing_key: str) -> list[BuilderEndpoint]:
        """All endpoints in the order a build with this key tries them."""
        endpoints = {e.name: e for e in self.source.endpoints()}
        return [endpoints[n] for n in rendezvous_order(routing_key, endpoints)]

    def suggested_pool_limit(self) -> int:
        """Dagster pool size that keeps every ready builder at max_parallel_per_builder."""
        return self.max_parallel_per_builder * sum(1 for e in self.source.endpoints() if e.ready)

    def build(self, request: BuildRequest, log: LogFn) -> RoutedBuildResult:
        """Build on the key's first ready, reachable builder; fail over down the ranking."""
        key = request.routing_key or request.target
        try:
            ranking = self.route(key)
        except KubernetesError as exc:
            raise BuildError(request.target, f"builder discovery failed: {exc}") from None
        if not ranking:
            raise BuildError(request.target, f"{self.source.describe()} has no builders (0 replicas?)")
        skipped: list[str] = []
        for rank, endpoint in enumerate(ranking):
            why = self._unusable(endpoint)
            if why is None:
                try:
                    result = self.builder_for(endpoint).build(request, log)
                except BuilderUnavailableError as exc:
                    why = f"buildctl could not connect ({exc.output.splitlines()[-1] if exc.output else 'no output'})"
                else:
                    if skipped:
                        log(
                            f"build of {request.target} ran on {endpoint.name} after failing over: {'; '.join(skipped)}"
                        )
                    return RoutedBuildResult(**{f.name: getattr(result, f.name) for f in fields(BuildResult)},
                                             builder_addr=endpoint.addr, routing_key=key, rank=rank,
                                             skipped=tuple(skipped))
            skipped.append(f"{endpoint.name}: {why}")
            log(f"builder {endpoint.name} skipped for {request.target}: {why}")
        raise BuildError(request.target, f"no builder in {self.source.describe()} could take the build: "
                         + "; ".join(skipped))

    def _unusable(self, endpoint: BuilderEndpoint) -> str | None:
        """Why this endpoint cannot take a build right now, or None."""
        if not endpoint.ready:
            return f"not ready ({endpoint.reason})" if endpoint.reason else "not ready"
        if self.probe_timeout_s is not None:
            return tcp_probe(endpoint.addr, self.probe_timeout_s)
        return None

    def prune(
        self,
        *,
        keep_storage_bytes: int | None = None,
        keep_duration_s: int | None = None,
        free_storage_bytes: int | None = None,
        log: LogFn,
    ) -> list[PruneResult]:
        """Prune every ready builder (in parallel); one failing does not stop the others.

        Returns one PruneResult per pruned builder; raises PruneError after all were tried if any failed.
        Builders that are not ready are skipped with a log line (their own buildkitd GC policy still runs).
        """
        endpoints = self.source.endpoints()
        for e in endpoints:
            if not e.ready:
                log(f"builder {e.name} not pruned: not ready ({e.reason})")
        ready = [e for e in endpoints if e.ready]

        def one(endpoint: BuilderEndpoint) -> PruneResult | str:
            try:
                return self.builder_for(endpoint).prune(keep_storage_bytes=keep_storage_bytes,
                                                        keep_duration_s=keep_duration_s,
                                                        free_storage_bytes=free_storage_bytes, log=log)[0]
            except Exception as exc:  # noqa: BLE001 - every builder is tried; errors are reported together
                log(f"prune on builder {endpoint.name} failed: {exc}")
                return f"{type(exc).__name__}: {exc}"

        with ThreadPoolExecutor(max_workers=max(1, min(self.prune_parallelism, len(ready) or 1))) as pool:
            outcomes = list(pool.map(one, ready))
        results = [o for o in outcomes if isinstance(o, PruneResult)]
        failures = {e.name: o for e, o in zip(ready, outcomes) if isinstance(o, str)}
        if failures:
            raise PruneError(results, failures)
        return results


def static_pool(addrs: Sequence[str], **kwargs: Any) -> BuilderPool:
    """A BuilderPool over a fixed address list."""
    return BuilderPool(source=StaticEndpoints(tuple(addrs)), **kwargs)


__all__ = [
    "BuilderEndpoint",
    "BuilderPool",
    "PruneError",
    "RoutedBuildResult",
    "StatefulSetEndpoints",
    "StaticEndpoints",
    "hrw_score",
    "rendezvous_order",
    "static_pool",
    "tcp_probe",
]
