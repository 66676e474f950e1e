"""The cost of a start (issue 16) for the browser test: a target that records its start, and the facts to expect.

Expected values come from the registry (the stored profile, the released image's documents and zTOCs) and are
cross-checked against the run's metadata read through GraphQL; the pages must then show them as a person reads.
"""

from __future__ import annotations

import json
import re

import httpx

from pipelines.metadata import human_size
from resources.oci import media_types as mt
from resources.oci.refs import ImageRef
from resources.registry import RegistryClient
from resources.startup.cost import MB
from resources.startup.cost_inputs import start_cost_for_image
from resources.startup.store import find_image_profile
from tests.pipelines.conftest import APP_DOCKERFILE, Project
from tests.ui.page_text import hex12, labelled, table_row

# The image's own entrypoint starts the "service": it reads the model's config, a library file and the first page
# of the 11 MiB model, then says it is ready (the recorder stops on that line, `ready: {log: ...}`).
START_SCRIPT = ("#!/bin/sh\ncat /models/config.json /app/lib.txt > /dev/null\n"
                "head -c 4096 /models/weights.bin > /dev/null\necho started\nsleep 30\n")
STARTUP_FILES = {"svc/Dockerfile": APP_DOCKERFILE + 'ENTRYPOINT ["/bin/sh", "/app/start.sh"]\n',
                 "svc/app/start.sh": START_SCRIPT}
PROFILED = ("/app/start.sh", "/models/config.json", "/app/lib.txt", "/models/weights.bin")
COST_MODES = ("lazy", "lazy + prefetch (files)", "lazy + prefetch (ranges)", "full pull")
REPO = "team/svc"
SERVED = "lazy"  # node_compat defaults to v0.12: no prefetch artifacts, so the index serves a plain lazy start
METADATA_QUERY = """query ($key: AssetKeyInput!) { assetOrError(assetKey: $key) { ... on Asset {
  assetMaterializations(limit: 1) { runId partition metadataEntries { label __typename
    ... on IntMetadataEntry { intValue } ... on TextMetadataEntry { text } } } } } }"""


def enable_startup(project: Project) -> None:
    """The project's one target (as tests/pipelines/conftest.py writes it) with `startup.enabled` and readiness."""
    project.write_targets()
    text = project.targets_file.read_text()
    assert text.endswith("\n") and "startup:" not in text, text
    project.targets_file.write_text(
        text + "    startup: {enabled: true, ready: {log: '^started$'}, timeout_s: 60}\n")


def latest_metadata(port: int, asset: str, run_id: str) -> dict[str, object]:
    """The metadata of `asset`'s latest materialization (which must be from `run_id`), label -> int or text."""
    resp = httpx.post(f"http://127.0.0.1:{port}/graphql", timeout=30,
                      json={"query": METADATA_QUERY, "variables": {"key": {"path": [asset]}}})
    mats = resp.json()["data"]["assetOrError"]["assetMaterializations"]
    assert mats and mats[0]["runId"] == run_id, f"{asset}: latest materialization is not from run {run_id}: {mats}"
    return {e["label"]: e.get("intValue", e.get("text")) for e in mats[0]["metadataEntries"]}


def _mb(nbytes: int) -> str:
    """Bytes as the cost table and the `to start:` line write them (decimal MB, one decimal)."""
    return f"{nbytes / MB:.1f} MB"


def registry_sizes(client: RegistryClient, repo: str, index_digest: str) -> tuple[int, int]:
    """(full pull bytes, bytes a lazy start fetches before any span) of a released image, from its documents in the
    registry: index + manifest + config + layers, against index + manifest + config + SOCI index + zTOCs + the layers
    without a zTOC (fetched whole)."""
    index = client.get_manifest(repo, index_digest)
    # the image's platform manifest (annotated with its SOCI index), not the SOCI index's own entry beside it
    platforms = [e for e in json.loads(index.data)["manifests"]
                 if mt.ANNOTATION_INDEX_DIGEST in (e.get("annotations") or {})]
    assert len(platforms) == 1, platforms
    manifest = client.get_manifest(repo, platforms[0]["digest"])
    doc = json.loads(manifest.data)
    soci = client.get_manifest(repo, platforms[0]["annotations"][mt.ANNOTATION_INDEX_DIGEST])
    ztocs = [d for d in json.loads(soci.data)["layers"] if d["mediaType"] == "application/octet-stream"]
    indexed = {d["annotations"][mt.ANNOTATION_LAYER_DIGEST] for d in ztocs}
    docs = len(index.data) + len(manifest.data) + doc["config"]["size"]
    full = docs + sum(layer["size"] for layer in doc["layers"])
    floor = docs + len(soci.data) + sum(d["size"] for d in ztocs) + sum(
        layer["size"] for layer in doc["layers"] if layer["digest"] not in indexed)
    return full, floor


def startup_cost_pages(project: Project, port: int, run_id: str, image_digest: str, index_digest: str,
                       ) -> list[tuple[str, str, str, dict[str, str | re.Pattern[str]]]]:
    """(name, path, ready text, expected facts) of the pages that show the cost of a start of `run_id`'s image."""
    with RegistryClient(project.registry.addr) as client:
        stored = find_image_profile(client, REPO, image_digest)
        assert stored is not None, f"no startup profile next to {image_digest}"
        profile = stored.profile
        ref = ImageRef(registry=project.registry.addr, repository=REPO, digest=index_digest)
        costs = start_cost_for_image(client, ref, profile)  # bytes do not depend on the network estimates
        full, floor = registry_sizes(client, REPO, index_digest)
    assert [m.mode for m in costs.modes] == list(COST_MODES)
    paths = [f.path for f in profile.files]
    assert set(PROFILED) <= set(paths), paths
    weights = next(f for f in profile.files if f.path == "/models/weights.bin")
    assert 0 < weights.bytes_read < weights.size  # page level: 4 KiB of 11 MiB

    meta = latest_metadata(port, "soci_index", run_id)
    lazy = costs.lazy.bytes_to_start
    # The three sources agree: the registry's sizes, the cost of the stored profile, the run's own metadata.
    assert costs.full_pull.bytes_to_start == full == meta["image_bytes"], (costs.full_pull, full, meta["image_bytes"])
    assert floor < lazy < full / 2 and meta["bytes_to_start"] == lazy, (floor, lazy, full, meta["bytes_to_start"])
    to_start = f"to start: {_mb(lazy)} of {_mb(full)} ({100 * lazy / full:.1f}%) ({SERVED}, as this index serves it)"
    meta_line = str(meta["to_start"])
    assert meta_line.startswith(to_start), meta_line
    profile_meta = latest_metadata(port, "startup_profile", run_id)
    assert profile_meta["stopped_by"] == profile.stopped_by == "ready_log", profile_meta

    return [
        ("startup_profile", "/assets/startup_profile", "startup_profile", {
            "stopped_by": labelled("stopped_by", profile.stopped_by),
            "files_read": labelled("files_read", str(len(profile.files))),
            "command": labelled("command", " ".join(profile.command)),
            "profile artifact": hex12(stored.manifest_digest),
            # the files table, first-access order: path, the layer that provides it, its size, page-level bytes read
            **{f"file {f.path}": table_row(f.path, f"sha256:{hex12(f.layer_digest)}", human_size(f.size),
                                           str(f.bytes_read)) for f in profile.files},
        }),
        ("soci_index-cost", "/assets/soci_index", "soci_index", {
            "to start line": meta_line,  # (a plain text is also what the page is waited for)
            "to start": labelled("to_start", meta_line),
            # the cost table: mode, bytes, size in MB, in the order lazy .. full pull
            **{f"cost of {m.mode}": table_row(m.mode, str(m.bytes_to_start), _mb(m.bytes_to_start))
               for m in costs.modes},
        }),
        ("check-cost", "/assets/soci_index?view=checks", "lazy_pull_verifies", {
            "to start line": meta_line, "to start": labelled("to_start", meta_line)}),
    ]
