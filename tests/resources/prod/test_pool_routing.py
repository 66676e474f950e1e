"""Rendezvous routing (stability measured over 10,000 keys) and failover through discovery and buildctl."""

from __future__ import annotations

import socket
from collections import Counter
from pathlib import Path

import pytest

from resources.builders.base import BuildError, BuildRequest
from resources.builders.pool import BuilderPool, StatefulSetEndpoints, StaticEndpoints, rendezvous_order
from resources.defaults import BUILDER_APP_LABEL, BUILDER_NAMESPACE, BUILDER_STATEFULSET
from tests.conftest import free_port
from tests.fakes.buildctl_cases import request_for, tls_files

NS = BUILDER_NAMESPACE
LABELS = {"app": BUILDER_APP_LABEL}
KEYS = [f"github.com/org/repo-{i}:services/svc-{i % 13}" for i in range(10_000)]


def moved_fraction(members: list[str], new_member: str) -> tuple[float, bool]:
    """Share of KEYS whose first choice changes when new_member joins, and whether all moved keys went to it."""
    before = [rendezvous_order(k, members)[0] for k in KEYS]
    after = [rendezvous_order(k, [*members, new_member])[0] for k in KEYS]
    moved = [(b, a) for b, a in zip(before, after) if b != a]
    return len(moved) / len(KEYS), all(a == new_member for _, a in moved)


@pytest.mark.parametrize("n", range(4, 11))
def test_adding_a_builder_moves_about_one_in_n_plus_one_keys(n):
    members = [f"buildkitd-{i}" for i in range(n)]
    fraction, only_to_new = moved_fraction(members, f"buildkitd-{n}")
    expected = 1 / (n + 1)
    # 10,000 keys: binomial standard deviation <= 0.004, so 0.015 is a ~4 sigma band.
    assert abs(fraction - expected) < 0.015, f"N={n}: moved {fraction:.4f}, expected {expected:.4f}"
    assert only_to_new, "a key moved between two old builders"


def test_removing_a_builder_moves_only_its_keys():
    members = [f"buildkitd-{i}" for i in range(6)]
    before = {k: rendezvous_order(k, members)[0] for k in KEYS}
    after = {k: rendezvous_order(k, members[:-1])[0] for k in KEYS}
    moved = [k for k in KEYS if before[k] != after[k]]
    assert all(before[k] == "buildkitd-5" for k in moved)
    assert len(moved) == sum(1 for k in KEYS if before[k] == "buildkitd-5")


def test_keys_spread_evenly_and_order_is_deterministic():
    members = [f"buildkitd-{i}" for i in range(8)]
    counts = Counter(rendezvous_order(k, members)[0] for k in KEYS)
    assert set(counts) == set(members)
    assert max(counts.values()) / min(counts.values()) < 1.25
    assert rendezvous_order("k", members) == rendezvous_order("k", list(reversed(members)))


def _statefulset(fake, replicas: int) -> None:
    fake.add_statefulset(NS, BUILDER_STATEFULSET, replicas=replicas, service="buildkitd", labels=LABELS)
    for i in range(replicas):
        fake.add_pod(NS, f"{BUILDER_STATEFULSET}-{i}", labels=LABELS)


def _request(tmp_path: Path, key: str, case: str = "build-regcache-cold") -> BuildRequest:
    """The request of a recorded buildctl transcript (tests/fakes/buildctl_transcripts), routed by `key`."""
    secret = tmp_path / "npm_token"
    secret.write_text("dummy")
    return request_for(case, secret_file=secret, routing_key=key)


def _pool(source, tmp_path: Path, **kwargs) -> BuilderPool:
    """A pool with the client TLS files the transcripts were recorded with (server name buildkitd)."""
    return BuilderPool(source, tls=tls_files(tmp_path / "certs"), **kwargs)


def test_discovered_pool_routes_through_the_api_and_survives_scale_up(fake_k8s, apps_api, core_api):
    _statefulset(fake_k8s, 4)
    pool = BuilderPool(StatefulSetEndpoints(apps_api, core_api), probe_timeout_s=None)
    keys = KEYS[:150]
    before = {k: pool.route(k)[0].name for k in keys}
    assert before == {k: rendezvous_order(k, [f"buildkitd-{i}" for i in range(4)])[0] for k in keys}
    fake_k8s.set_replicas(NS, BUILDER_STATEFULSET, 5)
    fake_k8s.add_pod(NS, "buildkitd-4", labels=LABELS)
    after = {k: pool.route(k)[0].name for k in keys}
    moved = [k for k in keys if before[k] != after[k]]
    assert all(after[k] == "buildkitd-4" for k in moved)
    assert 0.1 < len(moved) / len(keys) < 0.3  # about 1/5 of 150 keys (deterministic: fixed keys, fixed hash)


def test_failover_when_first_choice_pod_is_not_ready(fake_k8s, apps_api, core_api, fake_buildctl, tmp_path):
    _statefulset(fake_k8s, 3)
    key = "github.com/org/app:."
    first, second = rendezvous_order(key, [f"buildkitd-{i}" for i in range(3)])[:2]
    fake_k8s.set_pod_ready(NS, first, False)
    logs: list[str] = []
    pool = _pool(StatefulSetEndpoints(apps_api, core_api), tmp_path, probe_timeout_s=None)
    result = pool.build(_request(tmp_path, key), logs.append)
    assert result.builder == second and result.rank == 1
    assert result.builder_addr == f"tcp://{second}.buildkitd.{NS}.svc:1234"
    assert result.skipped[0].startswith(f"{first}: not ready")
    calls = fake_buildctl.calls()
    assert [c["addr"] for c in calls] == [result.builder_addr]  # never tried the unready pod
    assert any(f"builder {first} skipped" in line for line in logs)
    # Once the pod is ready again the key goes back to its warm first choice.
    fake_k8s.set_pod_ready(NS, first, True)
    assert pool.build(_request(tmp_path, key), logs.append).builder == first


def test_failover_when_buildctl_reports_connection_refused(fake_k8s, apps_api, core_api, fake_buildctl, tmp_path):
    # Real transcripts hold no "refused, then the same build succeeds elsewhere" pair (each build pushed its own
    # tag): the refused first choice must send the build to the second choice, which is refused as well.
    _statefulset(fake_k8s, 3)
    key = "github.com/org/api:cmd/api"
    first, second = rendezvous_order(key, [f"buildkitd-{i}" for i in range(3)])[:2]
    first_addr, second_addr = (f"tcp://{n}.buildkitd.{NS}.svc:1234" for n in (first, second))
    third_addr = next(f"tcp://buildkitd-{i}.buildkitd.{NS}.svc:1234" for i in range(3)
                      if f"buildkitd-{i}" not in (first, second))
    fake_buildctl.configure(script={a: ["build-builder-stopped"] for a in (first_addr, second_addr, third_addr)})
    with pytest.raises(BuildError) as exc:
        _pool(StatefulSetEndpoints(apps_api, core_api), tmp_path, probe_timeout_s=None).build(
            _request(tmp_path, key, "build-builder-stopped"), lambda _l: None)
    assert f"{first}: buildctl could not connect" in str(exc.value) and "connection refused" in str(exc.value)
    assert [c["addr"] for c in fake_buildctl.calls()] == [first_addr, second_addr, third_addr]


def test_tcp_probe_skips_a_closed_port_before_running_buildctl(fake_buildctl, tmp_path):
    listener = socket.create_server(("127.0.0.1", 0))
    open_addr = f"tcp://127.0.0.1:{listener.getsockname()[1]}"
    closed_addr = f"tcp://127.0.0.1:{free_port()}"
    source = StaticEndpoints((closed_addr, open_addr))
    names = {e.addr: e.name for e in source.endpoints()}
    key = next(k for k in KEYS if rendezvous_order(k, names.values())[0] == names[closed_addr])
    try:
        result = _pool(source, tmp_path, probe_timeout_s=1.0).build(_request(tmp_path, key), lambda _l: None)
    finally:
        listener.close()
    assert result.builder_addr == open_addr and result.rank == 1
    assert "TCP connect" in result.skipped[0] and "refused" in result.skipped[0].lower()
    assert [c["addr"] for c in fake_buildctl.calls()] == [open_addr]


def test_a_failing_build_is_not_retried_on_another_builder(fake_k8s, apps_api, core_api, fake_buildctl, tmp_path):
    _statefulset(fake_k8s, 3)
    key = "github.com/org/broken:."
    first = rendezvous_order(key, [f"buildkitd-{i}" for i in range(3)])[0]
    fake_buildctl.configure(script={f"tcp://{first}.buildkitd.{NS}.svc:1234": ["build-fail-run-cold"]})
    with pytest.raises(BuildError) as exc:
        _pool(StatefulSetEndpoints(apps_api, core_api), tmp_path, probe_timeout_s=None).build(
            _request(tmp_path, key, "build-fail-run-cold"), lambda _l: None)
    assert exc.value.step is not None and exc.value.step.startswith("[2/2] RUN echo compiling 1.2.3")
    assert len(fake_buildctl.calls()) == 1


def test_no_usable_builder_names_every_reason(fake_k8s, apps_api, core_api, fake_buildctl, tmp_path):
    _statefulset(fake_k8s, 2)
    fake_k8s.set_pod_ready(NS, "buildkitd-0", False)
    fake_buildctl.configure(script={f"tcp://buildkitd-1.buildkitd.{NS}.svc:1234": ["build-builder-stopped"]})
    with pytest.raises(
        BuildError, match=r"no builder in statefulset streamable-builders/buildkitd could take the build"
    ) as exc:
        _pool(StatefulSetEndpoints(apps_api, core_api), tmp_path, probe_timeout_s=None).build(
            _request(tmp_path, "k", "build-builder-stopped"), lambda _l: None)
    assert "buildkitd-0: not ready" in str(exc.value) and "buildkitd-1: buildctl could not connect" in str(exc.value)


def test_discovery_failure_is_a_build_error_naming_the_statefulset(fake_k8s, apps_api, core_api, tmp_path):
    fake_k8s.add_namespace(NS)
    with pytest.raises(BuildError, match=r"builder discovery failed: .*statefulset streamable-builders/buildkitd.*404"):
        BuilderPool(StatefulSetEndpoints(apps_api, core_api)).build(_request(tmp_path, "k"), lambda _l: None)


def test_suggested_pool_limit_counts_ready_builders(fake_k8s, apps_api, core_api):
    _statefulset(fake_k8s, 4)
    fake_k8s.set_pod_ready(NS, "buildkitd-3", False)
    pool = BuilderPool(StatefulSetEndpoints(apps_api, core_api), max_parallel_per_builder=3)
    assert pool.suggested_pool_limit() == 9
