"""The builder and user-code images: every input pinned, downloads verified at build time, none at start."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import re
import subprocess
import tarfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.deploy.conftest import BUILDER, DAGSTER, REPO

FETCH_SCRIPT = BUILDER / "fetch-release-binaries.sh"
COMPONENTS = ("BUILDKIT", "CONTAINERD", "RUNC", "SOCI")
DIGEST_RE = re.compile(r"@sha256:[0-9a-f]{64}$")
SHA_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass
class Stage:
    image: str
    name: str | None
    args: dict[str, str | None] = field(default_factory=dict)
    instructions: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Dockerfile:
    global_args: dict[str, str | None]
    stages: list[Stage]

    def stage(self, name: str | None) -> Stage:
        return next(s for s in self.stages if s.name == name)


def parse_dockerfile(path: Path) -> Dockerfile:
    """Instructions per stage, continuation lines joined, comments dropped; ARG defaults resolved in FROM."""
    lines, buf = [], ""
    for raw in path.read_text().splitlines():
        if not buf and (not raw.strip() or raw.lstrip().startswith("#")):
            continue
        if raw.rstrip().endswith("\\"):
            buf += raw.rstrip()[:-1] + " "
            continue
        lines.append(buf + raw)
        buf = ""
    global_args: dict[str, str | None] = {}
    stages: list[Stage] = []
    for line in lines:
        instr, _, rest = line.strip().partition(" ")
        instr, rest = instr.upper(), rest.strip()
        if instr == "ARG":
            name, _, default = rest.partition("=")
            (stages[-1].args if stages else global_args)[name] = default or None
        elif instr == "FROM":
            m = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", rest, re.IGNORECASE)
            assert m, f"{path}: cannot parse FROM {rest!r}"
            image = re.sub(r"\$\{(\w+)\}", lambda v: global_args.get(v[1]) or v[0], m[1])
            stages.append(Stage(image=image, name=m[2]))
        else:
            stages[-1].instructions.append((instr, rest))
    return Dockerfile(global_args, stages)


BUILDER_DF = parse_dockerfile(BUILDER / "Dockerfile")
USER_CODE_DF = parse_dockerfile(DAGSTER / "Dockerfile")


@pytest.mark.parametrize("df", [BUILDER_DF, USER_CODE_DF], ids=["builder", "user-code"])
def test_base_images_are_pinned_by_digest(df):
    for stage in df.stages:
        assert DIGEST_RE.search(stage.image), f"stage {stage.name or 'final'} FROM {stage.image} has no sha256 digest"
        assert not re.search(r":latest(@|$)", stage.image)


@pytest.mark.parametrize("df", [BUILDER_DF, USER_CODE_DF], ids=["builder", "user-code"])
def test_apt_packages_are_pinned_and_lists_removed(df):
    for stage in df.stages:
        for instr, rest in stage.instructions:
            if instr == "RUN" and "apt-get install" in rest:
                packages = rest.split("apt-get install", 1)[1].split("&&", 1)[0].split()
                packages = [p for p in packages if not p.startswith("-")]
                assert packages, rest
                unpinned = [p for p in packages if "=" not in p]
                assert not unpinned, f"unpinned apt packages: {unpinned}"
                assert "rm -rf /var/lib/apt/lists/*" in rest


def test_builder_pins_every_release_with_both_architecture_checksums():
    args = BUILDER_DF.stage("fetch").args
    shas = []
    for component in COMPONENTS:
        assert re.fullmatch(r"\d+\.\d+\.\d+", args[f"{component}_VERSION"] or ""), f"{component}_VERSION"
        for arch in ("AMD64", "ARM64"):
            sha = args[f"{component}_SHA256_{arch}"]
            assert sha and SHA_RE.match(sha), f"{component}_SHA256_{arch} must be a 64-hex SHA-256, got {sha!r}"
            shas.append(sha)
    assert len(set(shas)) == len(shas), "two assets cannot share a checksum"
    # The final stage's labels report the versions the fetch stage actually downloaded.
    final = BUILDER_DF.stage(None)
    for component in COMPONENTS:
        assert final.args[f"{component}_VERSION"] == args[f"{component}_VERSION"]


def test_every_build_argument_the_script_reads_is_declared():
    read = set(re.findall(r'build_arg\s+([A-Z_]+)\s', FETCH_SCRIPT.read_text()))
    read |= {f"{c}_SHA256_{a}" for c in COMPONENTS for a in ("AMD64", "ARM64")}
    declared = set(BUILDER_DF.stage("fetch").args)
    assert read <= declared | {"TARGETARCH"}, read - declared
    assert "TARGETARCH" in declared


def test_binaries_come_from_the_verified_fetch_stage_only():
    fetch, final = BUILDER_DF.stage("fetch"), BUILDER_DF.stage(None)
    runs = [rest for instr, rest in fetch.instructions if instr == "RUN" and "fetch-release-binaries" in rest]
    assert runs == ["fetch-release-binaries /out buildkit containerd runc soci"]
    assert ("COPY", "--from=fetch /out/ /usr/local/bin/") in final.instructions
    for df in (BUILDER_DF, USER_CODE_DF):
        for stage in df.stages:
            for instr, rest in stage.instructions:
                assert not (instr == "ADD" and "://" in rest), f"ADD from a URL bypasses the checksum: {rest}"
                if stage.name is None:
                    assert not re.search(r"\b(curl|wget)\b", rest), f"final stage downloads: {instr} {rest}"


def test_containers_start_without_downloading():
    final = BUILDER_DF.stage(None)
    entry = [rest for instr, rest in final.instructions if instr in ("ENTRYPOINT", "CMD")]
    assert entry == ['["/usr/bin/tini", "--"]', '["buildkitd", "--config", "/etc/buildkit/buildkitd.toml"]']
    text = (BUILDER / "containerd-entrypoint.sh").read_text()
    assert not re.search(r"\b(curl|wget|apt-get|pip)\b", text)


def test_builder_image_ships_the_configs_at_the_paths_the_daemons_read():
    final = BUILDER_DF.stage(None)
    assert ("COPY", "etc/ /etc/") in final.instructions
    for rel in ("buildkit/buildkitd.toml", "containerd/config.toml", "soci-snapshotter-grpc/config.toml"):
        assert (BUILDER / "etc" / rel).is_file(), rel


def test_user_code_image_uses_the_builder_buildkit_pin_and_runs_unprivileged():
    fetch = USER_CODE_DF.stage("fetch").args
    builder = BUILDER_DF.stage("fetch").args
    for key in ("BUILDKIT_VERSION", "BUILDKIT_SHA256_AMD64", "BUILDKIT_SHA256_ARM64", "RELEASES_BASE_URL"):
        assert fetch[key] == builder[key], key
    final = USER_CODE_DF.stage(None)
    assert ("USER", "10001") in final.instructions
    installs = [rest for instr, rest in final.instructions if instr == "RUN" and "pip install" in rest]
    assert len(installs) == 1 and "--constraint constraints.txt" in installs[0]
    for instr, rest in final.instructions:
        if instr == "COPY" and not rest.startswith("--from"):
            *sources, _dest = rest.split()
            for src in sources:
                assert (REPO / src).exists(), f"deploy/dagster/Dockerfile copies {src}, which does not exist"


# ---------------------------------------------------------------------------------- fetch script, for real


def _tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _release_tree(versions: dict[str, str], arch: str) -> dict[str, bytes]:
    """URL path -> bytes, laid out like the upstream GitHub release assets."""
    v = versions
    containerd = f"containerd-static-{v['CONTAINERD']}-linux-{arch}.tar.gz"
    soci = f"soci-snapshotter-{v['SOCI']}-linux-{arch}.tar.gz"
    return {
        f"/moby/buildkit/releases/download/v{v['BUILDKIT']}/buildkit-v{v['BUILDKIT']}.linux-{arch}.tar.gz":
            _tar({"bin/buildctl": b"#!/bin/sh\necho buildctl\n", "bin/buildkitd": b"#!/bin/sh\necho buildkitd\n"}),
        f"/containerd/containerd/releases/download/v{v['CONTAINERD']}/{containerd}":
            _tar({"bin/containerd": b"c", "bin/containerd-shim-runc-v2": b"s", "bin/ctr": b"t",
                  "bin/containerd-stress": b"x"}),
        f"/opencontainers/runc/releases/download/v{v['RUNC']}/runc.{arch}": b"#!/bin/sh\necho runc\n",
        f"/awslabs/soci-snapshotter/releases/download/v{v['SOCI']}/{soci}":
            _tar({"./soci": b"soci", "./soci-snapshotter-grpc": b"grpc", "./THIRD_PARTY_LICENSES": b"l"}),
    }


class _Mirror:
    """A local HTTP server serving a release tree and recording the paths asked for."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files, self.requested = files, []
        mirror = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                mirror.requested.append(self.path)
                body = mirror.files.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"


def _versions() -> dict[str, str]:
    args = BUILDER_DF.stage("fetch").args
    return {c: args[f"{c}_VERSION"] for c in COMPONENTS}


def _run_fetch(mirror: _Mirror, dest: Path, arch: str, components: list[str], overrides: dict[str, str | None],
               published: dict[str, bytes]):
    """Run the script against the mirror with the checksums of `published` (what upstream released)."""
    env = {"PATH": os.environ["PATH"], "TARGETARCH": arch, "RELEASES_BASE_URL": mirror.url}
    for c, v in _versions().items():
        env[f"{c}_VERSION"] = v
    for path, data in published.items():
        component = next(c for c, key in (("BUILDKIT", "/buildkit/"), ("CONTAINERD", "/containerd/"),
                                          ("RUNC", "/runc/"), ("SOCI", "/soci-snapshotter/")) if key in path)
        env[f"{component}_SHA256_{arch.upper()}"] = hashlib.sha256(data).hexdigest()
    for k, v in overrides.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return subprocess.run(["bash", str(FETCH_SCRIPT), str(dest), *components], env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_fetch_script_installs_verified_binaries_from_the_release_layout(tmp_path, arch):
    files = _release_tree(_versions(), arch)
    with _Mirror(files) as mirror:
        result = _run_fetch(mirror, tmp_path / "out", arch, ["buildkit", "containerd", "runc", "soci"], {}, files)
    assert result.returncode == 0, result.stderr
    assert sorted(mirror.requested) == sorted(files), "asset URLs must follow the upstream release naming"
    installed = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert installed == sorted(["buildctl", "buildkitd", "containerd", "containerd-shim-runc-v2", "ctr", "runc",
                                "soci", "soci-snapshotter-grpc"])
    assert all(os.access(p, os.X_OK) for p in (tmp_path / "out").iterdir())
    assert (tmp_path / "out" / "soci-snapshotter-grpc").read_bytes() == b"grpc"
    assert result.stdout.count("verified") == 4


@pytest.mark.parametrize(
    ("components", "overrides", "tamper", "message"),
    [
        (["soci"], {"SOCI_SHA256_AMD64": "0" * 64}, None, "checksum mismatch for soci-snapshotter-"),
        (["runc"], {"RUNC_SHA256_AMD64": None}, None, "build argument RUNC_SHA256_AMD64 is not set"),
        (["runc"], {"RUNC_SHA256_AMD64": "abc"}, None, "RUNC_SHA256_AMD64='abc' does not match"),
        (["buildkit"], {"BUILDKIT_VERSION": "latest"}, None, "BUILDKIT_VERSION='latest' does not match"),
        (["buildkit"], {"TARGETARCH": "s390x"}, None, "TARGETARCH must be amd64 or arm64"),
        (["buildkit"], {"RELEASES_BASE_URL": "ftp://mirror"}, None, "RELEASES_BASE_URL must start with"),
        (["buildkit"], {}, "drop-buildkitd", "holds 0 files named buildkitd"),
        (["containerd"], {}, "missing", "download of containerd from"),
        (["nerdctl"], {}, None, "unknown component 'nerdctl'"),
    ],
)
def test_fetch_script_refuses_anything_unverified(tmp_path, components, overrides, tamper, message):
    published = _release_tree(_versions(), "amd64")
    served = dict(published)
    if tamper == "drop-buildkitd":  # upstream published an archive without the daemon
        key = next(k for k in published if "/buildkit/" in k)
        published[key] = served[key] = _tar({"bin/buildctl": b"only the client"})
    if tamper == "missing":  # the mirror lacks the asset
        served = {k: v for k, v in served.items() if "/containerd/" not in k}
    with _Mirror(served) as mirror:
        result = _run_fetch(mirror, tmp_path / "out", overrides.get("TARGETARCH") or "amd64", components, overrides,
                            published)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    out = tmp_path / "out"
    if message.startswith("checksum mismatch"):
        assert not any(out.iterdir()), "nothing may be installed from an unverified download"
