"""The builder StatefulSet, its three daemons' configs and resources/defaults.py all agree."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from resources import defaults
from resources.builders.tls import SECRET_KEY_SETS
from tests.deploy.conftest import BUILDER, find

SOCI_SOCKET_FLAG = "--address="
SOCI_ROOT_FLAG = "--root="


def _sts(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return find(objects, "StatefulSet", defaults.BUILDER_STATEFULSET, defaults.BUILDER_NAMESPACE)


def _pod(objects):
    return _sts(objects)["spec"]["template"]["spec"]


def _containers(objects) -> dict[str, dict[str, Any]]:
    pod = _pod(objects)
    return {c["name"]: c for c in pod.get("initContainers", []) + pod["containers"]}


def _mounts(container) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in container.get("volumeMounts", [])}


def _under(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def _flag(args: list[str], prefix: str) -> str:
    values = [a[len(prefix):] for a in args if a.startswith(prefix)]
    assert len(values) == 1, f"expected one {prefix} argument in {args}"
    return values[0]


def test_names_ports_and_labels_match_defaults(base):
    sts = _sts(base)
    app = {"app": defaults.BUILDER_APP_LABEL}
    assert sts["spec"]["serviceName"] == defaults.BUILDER_SERVICE
    assert sts["spec"]["selector"] == {"matchLabels": app}
    assert app.items() <= sts["spec"]["template"]["metadata"]["labels"].items()
    svc = find(base, "Service", defaults.BUILDER_SERVICE, defaults.BUILDER_NAMESPACE)
    assert svc["spec"]["clusterIP"] == "None", "the service must be headless for per-pod DNS names"
    assert svc["spec"]["selector"] == app
    assert [(p["port"], p["targetPort"]) for p in svc["spec"]["ports"]] == [(defaults.BUILDER_PORT, "grpc")]
    buildkitd = _containers(base)["buildkitd"]
    assert [(p["name"], p["containerPort"]) for p in buildkitd["ports"]] == [("grpc", defaults.BUILDER_PORT)]
    pdb = find(base, "PodDisruptionBudget", defaults.BUILDER_STATEFULSET, defaults.BUILDER_NAMESPACE)
    assert pdb["spec"]["selector"] == {"matchLabels": app}
    anti = _pod(base)["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert [(t["podAffinityTerm"]["topologyKey"], t["podAffinityTerm"]["labelSelector"]) for t in anti] == [
        ("kubernetes.io/hostname", {"matchLabels": app})]


def test_grpc_listens_on_the_service_port_with_mtls_from_the_daemon_secret(base, buildkitd_toml):
    grpc = buildkitd_toml["grpc"]
    assert f"tcp://0.0.0.0:{defaults.BUILDER_PORT}" in grpc["address"]
    pod = _pod(base)
    certs = {v["name"]: v for v in pod["volumes"]}
    secret_volumes = [
        name for name, v in certs.items() if v.get("secret", {}).get("secretName") == defaults.BUILDER_DAEMON_TLS_SECRET
    ]
    assert len(secret_volumes) == 1, f"the pod must mount secret {defaults.BUILDER_DAEMON_TLS_SECRET} once"
    mount = _mounts(_containers(base)["buildkitd"])[secret_volumes[0]]
    assert mount.get("readOnly") is True
    ca, cert, key = SECRET_KEY_SETS[0]  # the key names make-certs.sh writes and tls.py reads first
    assert grpc["tls"] == {"ca": f"{mount['mountPath']}/{ca}", "cert": f"{mount['mountPath']}/{cert}",
                           "key": f"{mount['mountPath']}/{key}"}


def test_readiness_builds_and_liveness_asks_the_daemon_on_the_unix_socket(base, buildkitd_toml):
    unix = [a for a in buildkitd_toml["grpc"]["address"] if a.startswith("unix://")]
    assert len(unix) == 1
    buildkitd = _containers(base)["buildkitd"]
    assert buildkitd["livenessProbe"]["exec"]["command"] == ["buildctl", "--addr", unix[0], "debug", "workers"]
    assert buildkitd["readinessProbe"]["exec"]["command"] == ["buildkit-ready"]
    assert buildkitd["readinessProbe"]["timeoutSeconds"] >= 20, "a tiny build needs more than a status call"
    script = (BUILDER / "buildkit-ready.sh").read_text()
    assert f'BUILDKIT_READY_ADDR:-{unix[0]}' in script
    run_mount = _mounts(buildkitd)["run"]["mountPath"]
    assert _under(unix[0].removeprefix("unix://"), run_mount), "the probe socket must live on the shared /run volume"


def _run_probe(tmp_path: Path, exit_code: int) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run buildkit-ready with a `buildctl` on PATH that records its argv and exits with exit_code (prints nothing)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    record = tmp_path / "argv.json"
    stub = bin_dir / "buildctl"
    stub.write_text(f"#!{sys.executable}\nimport json, sys\njson.dump(sys.argv[1:], open({str(record)!r}, 'w'))\n"
                    f"sys.exit({exit_code})\n")
    stub.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "BUILDKIT_READY_CONTEXT": str(BUILDER / "etc" / "buildkit" / "ready-probe")}
    done = subprocess.run(
        ["sh", str(BUILDER / "buildkit-ready.sh")], env=env, capture_output=True, text=True, timeout=30
    )
    return done, json.loads(record.read_text())


def test_readiness_probe_is_a_real_build_and_fails_when_the_build_fails(tmp_path):
    ok, argv = _run_probe(tmp_path, 0)
    context = str(BUILDER / "etc" / "buildkit" / "ready-probe")
    assert ok.returncode == 0
    assert argv == ["--addr", "unix:///run/buildkit/buildkitd.sock", "build", "--frontend", "dockerfile.v0",
                    "--progress", "plain", "--local", f"context={context}", "--local", f"dockerfile={context}"]
    assert "--output" not in argv, "the probe's result stays in the local cache; nothing is pushed"
    failed, _ = _run_probe(tmp_path, 1)  # e.g. `snapshotter not loaded: soci` (build-soci-snapshotter-missing)
    assert failed.returncode == 1


@pytest.mark.stack
def test_the_readiness_probe_context_builds_on_real_buildkit(docker_engine, tmp_path):
    """The probe's Dockerfile really builds (FROM scratch + COPY) on the local stack's BuildKit."""
    context = BUILDER / "etc" / "buildkit" / "ready-probe"
    docker_engine.run("build", "--network=none", "--output", f"type=tar,dest={tmp_path / 'out.tar'}", str(context))
    import tarfile

    with tarfile.open(tmp_path / "out.tar") as tar:
        assert tar.getnames() == ["ready.txt"]


def test_base_runs_containerd_then_buildkitd_and_the_opt_in_adds_soci(base, soci_opt_in):
    pod = _pod(base)
    assert [c["name"] for c in pod["initContainers"]] == ["containerd"]
    assert [c["name"] for c in _pod(soci_opt_in)["initContainers"]] == ["containerd", "soci-snapshotter"]
    for objects in (base, soci_opt_in):
        pod = _pod(objects)
        assert all(c["restartPolicy"] == "Always" for c in pod["initContainers"]), "sidecars must be native sidecars"
        assert all("startupProbe" in c for c in pod["initContainers"]), "each sidecar gates the next one's start"
        assert [c["name"] for c in pod["containers"]] == ["buildkitd"]
        assert pod["terminationGracePeriodSeconds"] >= 300, "running builds need time to finish on SIGTERM"
        images = {c["image"] for c in _containers(objects).values()}
        assert len(images) == 1, f"all daemons come from one image, got {images}"


def test_daemons_share_state_through_the_pvc_and_run_volumes(soci_opt_in, buildkitd_toml, containerd_toml,
                                                             containerd_soci_toml):
    objects = soci_opt_in
    sts = _sts(objects)
    [claim] = sts["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    containers = _containers(objects)
    data_paths, run_paths = set(), set()
    for name, c in containers.items():
        mounts = _mounts(c)
        assert c["securityContext"] == {"privileged": True}, name
        for vol in (claim["metadata"]["name"], "run"):
            assert mounts[vol]["mountPropagation"] == "Bidirectional", f"{name} mount {vol}"
        data_paths.add(mounts[claim["metadata"]["name"]]["mountPath"])
        run_paths.add(mounts["run"]["mountPath"])
        assert c["resources"]["requests"].keys() >= {"cpu", "memory"}, name
        assert "memory" in c["resources"]["limits"], name
    assert len(data_paths) == 1 and len(run_paths) == 1, "every daemon must see the same paths"
    data, run = data_paths.pop(), run_paths.pop()
    run_volume = {v["name"]: v for v in _pod(objects)["volumes"]}["run"]
    assert run_volume["emptyDir"]["medium"] == "Memory"

    soci_args = containers["soci-snapshotter"]["args"]
    soci_socket, soci_root = _flag(soci_args, SOCI_SOCKET_FLAG), _flag(soci_args, SOCI_ROOT_FLAG)
    plugin = containerd_soci_toml["proxy_plugins"]["soci"]
    assert plugin == {"type": "snapshot", "address": soci_socket, "exports": {"root": soci_root}}
    worker = buildkitd_toml["worker"]["containerd"]
    assert worker["address"] == containerd_toml["grpc"]["address"]
    assert containers["containerd"]["startupProbe"]["exec"]["command"][:3] == ["ctr", "--address", worker["address"]]
    assert containers["soci-snapshotter"]["startupProbe"]["exec"]["command"] == ["test", "-S", soci_socket]
    for path in (buildkitd_toml["root"], containerd_toml["root"], soci_root):
        assert _under(path, data), f"{path} must be on the persistent volume {data}"
    for path in (containerd_toml["state"], worker["address"], soci_socket):
        assert _under(path, run), f"{path} must be on the shared in-memory volume {run}"


def test_overlayfs_is_the_default_and_soci_an_opt_in_for_the_pods_containerd(
        base, soci_opt_in, buildkitd_toml, containerd_toml, containerd_soci_toml, builder_soci_toml):
    assert buildkitd_toml["worker"]["oci"]["enabled"] is False
    worker = buildkitd_toml["worker"]["containerd"]
    assert worker["enabled"] is True
    assert worker["namespace"] == "buildkit"
    assert worker["snapshotter"] == "overlayfs" and "proxy_plugins" not in containerd_toml
    assert containerd_toml["version"] == 3 == containerd_soci_toml["version"], "containerd 2.x config"
    assert "io.containerd.grpc.v1.cri" in containerd_toml["disabled_plugins"]
    # The opt-in: containerd gets the soci proxy plugin on top of the same config, buildkitd selects it by name.
    assert containerd_soci_toml["imports"] == ["/etc/containerd/config.toml"]
    opt_in = _containers(soci_opt_in)
    assert opt_in["containerd"]["args"][-2:] == ["--config", "/etc/containerd/config-soci.toml"]
    assert "--containerd-worker-snapshotter=soci" in opt_in["buildkitd"]["args"]
    assert "soci" in containerd_soci_toml["proxy_plugins"]
    base_args = _containers(base)["buildkitd"]["args"]
    assert not any("snapshotter" in a for a in base_args)
    modes = builder_soci_toml["pull_modes"]
    assert (modes["soci_v1"]["enable"], modes["soci_v2"]["enable"], modes["parallel_pull_unpack"]["enable"]) == (
        False, True, False)
    assert builder_soci_toml["snapshotter"]["min_layer_size"] == defaults.SOCI_MIN_LAYER_SIZE


def test_builder_pods_have_no_api_access(base, rendered):
    pod = _pod(base)
    assert pod["automountServiceAccountToken"] is False
    sa = find(base, "ServiceAccount", pod["serviceAccountName"], defaults.BUILDER_NAMESPACE)
    assert sa["automountServiceAccountToken"] is False
    for objects in rendered.values():
        for binding in (o for o in objects if o["kind"] in ("RoleBinding", "ClusterRoleBinding")):
            names = {s["name"] for s in binding["subjects"]}
            assert pod["serviceAccountName"] not in names, (
                f"{binding['metadata']['name']} grants the builders API access"
            )


def test_only_dagster_pods_reach_the_builders_and_only_on_the_grpc_port(base):
    policies = [
        o for o in base if o["kind"] == "NetworkPolicy" and o["metadata"]["namespace"] == defaults.BUILDER_NAMESPACE
    ]
    assert len(policies) == 1
    spec = policies[0]["spec"]
    assert spec["podSelector"] == {"matchLabels": {"app": defaults.BUILDER_APP_LABEL}}
    assert spec["policyTypes"] == ["Ingress"]
    assert spec["ingress"] == [{
        "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": defaults.DAGSTER_NAMESPACE}},
                  "podSelector": {"matchLabels": {"app": defaults.DAGSTER_APP_LABEL}}}],
        "ports": [{"protocol": "TCP", "port": defaults.BUILDER_PORT}],
    }]


def test_only_the_builder_namespace_allows_privileged_pods(base):
    levels = {o["metadata"]["name"]: o["metadata"]["labels"]["pod-security.kubernetes.io/enforce"]
              for o in base if o["kind"] == "Namespace"}
    assert levels == {defaults.BUILDER_NAMESPACE: "privileged", defaults.DAGSTER_NAMESPACE: "baseline",
                      defaults.CANARY_NAMESPACE: "baseline"}


def test_overlay_pins_a_registry_image_and_keeps_the_pod_shape(base, overlay):
    assert {c["image"] for c in _containers(base).values()} == {"streamable-builder"}, "base keeps the placeholder"
    images = {c["image"] for c in _containers(overlay).values()}
    assert len(images) == 1
    image = images.pop()
    assert re.fullmatch(r"[a-z0-9.-]+\.[a-z]+(:\d+)?/[a-z0-9._/-]+:[A-Za-z0-9._-]+(@sha256:[0-9a-f]{64})?", image), (
        image
    )
    assert not image.split("@")[0].endswith(":latest")
    assert set(_containers(overlay)) == set(_containers(base))


# ------------------------------------------------------------------------------------------- GC policy

UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024**2, "mb": 1024**2, "mib": 1024**2,
         "g": 1024**3, "gb": 1024**3, "gib": 1024**3, "t": 1024**4, "tb": 1024**4, "tib": 1024**4}
QUANTITY_UNITS = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4, "K": 10**3, "k": 10**3, "M": 10**6,
                  "G": 10**9, "T": 10**12, "": 1}
SIZE_KEYS = ("keepBytes", "reservedSpace", "maxUsedSpace", "minFreeSpace")


def disk_bytes(value: int | str, disk: int) -> int:
    """A buildkitd.toml DiskSpace (bytes, "512MB" with binary units as BuildKit parses them, or "10%") in bytes."""
    if isinstance(value, int):
        return value
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(%|[A-Za-z]*)\s*", value)
    if not m:
        raise ValueError(f"not a disk size: {value!r}")
    number, unit = float(m[1]), m[2]
    if unit == "%":
        if not m[1].isdigit():
            raise ValueError(f"BuildKit accepts only whole percentages: {value!r}")
        return int(disk * number / 100)
    if unit.lower() not in UNITS:
        raise ValueError(f"unknown unit in {value!r}")
    return int(number * UNITS[unit.lower()])


def quantity_bytes(q: str) -> int:
    m = re.fullmatch(r"(\d+)([A-Za-z]*)", q)
    assert m and m[2] in QUANTITY_UNITS, f"unsupported storage quantity {q!r}"
    return int(m[1]) * QUANTITY_UNITS[m[2]]


def gc_problems(worker: dict[str, Any], pvc_bytes: int) -> list[str]:
    """Why this containerd worker GC config could fill (or not fit) a volume of pvc_bytes; empty when sound."""
    problems = []
    tiers = worker.get("gcpolicy") or []
    if worker.get("gc") is not True:
        problems.append("gc is not enabled")
    if not tiers:
        return problems + ["no gcpolicy tiers"]
    for key in SIZE_KEYS:
        if key in worker:
            problems.append(f"worker-level {key} is ignored once gcpolicy tiers exist; set it per tier")
    last = tiers[-1]
    if last.get("all") is not True or last.get("filters") or last.get("keepDuration"):
        problems.append(f"last tier is not a catch-all (all = true, no filters, no keepDuration): {last}")
    caps = []
    for n, tier in enumerate(tiers, 1):
        sizes = {k: disk_bytes(tier[k], pvc_bytes) for k in SIZE_KEYS if k in tier}
        cap = sizes.get("maxUsedSpace", sizes.get("keepBytes"))
        if cap is None:
            if n == len(tiers):
                problems.append("the catch-all tier sets no maxUsedSpace/keepBytes, so nothing bounds the cache")
            continue
        caps.append(cap)
        if cap > pvc_bytes:
            problems.append(f"tier {n}: cap {cap} bytes exceeds the {pvc_bytes}-byte volume")
        if sizes.get("reservedSpace", 0) > cap:
            problems.append(f"tier {n}: reservedSpace exceeds its cap")
        if cap + sizes.get("minFreeSpace", 0) > pvc_bytes:
            problems.append(f"tier {n}: cap + minFreeSpace exceed the volume")
    if caps and caps[-1] < max(caps):
        problems.append("the catch-all cap is smaller than an earlier tier's cap")
    if caps and caps[-1] > 0.8 * pvc_bytes:
        problems.append("the catch-all cap leaves less than 20% of the volume for running builds")
    return problems


@pytest.mark.parametrize("which", ["base", "overlay"])
def test_gc_policy_ends_in_a_catch_all_that_fits_the_volume(which, base, overlay, buildkitd_toml):
    objects = base if which == "base" else overlay
    [claim] = _sts(objects)["spec"]["volumeClaimTemplates"]
    pvc = quantity_bytes(claim["spec"]["resources"]["requests"]["storage"])
    assert gc_problems(buildkitd_toml["worker"]["containerd"], pvc) == []


@pytest.mark.parametrize(
    ("tiers", "problem"),
    [
        ([{"all": True, "maxUsedSpace": "150GB"}], "exceeds"),
        ([{"keepDuration": "48h", "maxUsedSpace": "10%"}], "not a catch-all"),
        ([{"all": True, "filters": ["type==source.local"], "maxUsedSpace": "10%"}], "not a catch-all"),
        ([{"all": True, "reservedSpace": "10%"}], "nothing bounds"),
        ([{"maxUsedSpace": "60%"}, {"all": True, "maxUsedSpace": "50%"}], "smaller than an earlier"),
        ([{"all": True, "maxUsedSpace": "90%"}], "less than 20%"),
        ([{"all": True, "maxUsedSpace": "70%", "minFreeSpace": "40%"}], "minFreeSpace"),
    ],
)
def test_gc_checker_catches_unsafe_policies(tiers, problem):
    problems = gc_problems({"gc": True, "gcpolicy": tiers}, quantity_bytes("100Gi"))
    assert any(problem in p for p in problems), problems


def test_disk_sizes_parse_like_buildkit():
    assert disk_bytes("512MB", 0) == 512 * 1024**2
    assert disk_bytes(1024000000, 0) == 1024000000
    assert disk_bytes("25%", 400) == 100
    for bad in ("12 parsecs", "10.5%"):
        with pytest.raises(ValueError):
            disk_bytes(bad, 0)
