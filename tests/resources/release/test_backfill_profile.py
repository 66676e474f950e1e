"""The backfill finds a startup profile stored next to an image and converts with it (node_compat permitting)."""

from __future__ import annotations

import json

import pytest

from resources.oci import media_types as mt
from resources.oci.refs import ImageRef
from resources.registry import RegistryClient
from resources.release.backfill import BackfillSettings, ImageStatus
from resources.release.batch import run_backfill
from resources.release.catalog import OciCatalog
from resources.soci.verify import locate_soci_indexes
from resources.startup.profile import ProfiledFile, StartupProfile
from resources.startup.store import push_profile
from tests.conftest import RunningRegistry
from tests.support.images import gzip_layer, push_image, random_files

KIB = 1024


def _prefetch_entries(client: RegistryClient, ref: ImageRef) -> list[dict]:
    (located,) = locate_soci_indexes(client, ref)
    layers = json.loads(client.get_manifest(ref.repository, located.soci_index_digest).data)["layers"]
    return [d for d in layers if d["mediaType"] == mt.SOCI_PREFETCH]


@pytest.mark.parametrize(
    ("node_compat", "with_profile", "expected"),
    [
        ("v0.13", True, 1),
        ("v0.12", True, 0),
        ("v0.13", False, 0),
    ],
)
def test_backfill_converts_with_the_stored_profile(
    registry: RunningRegistry, node_compat: str, with_profile: bool, expected: int
) -> None:
    client = RegistryClient(registry.addr)
    files = random_files("data", 512 * KIB)
    layer = gzip_layer(files)
    digest, _ = push_image(client, "team/prof", "1", [layer])
    if with_profile:
        name = next(iter(files))
        profile = StartupProfile(
            image=f"{registry.addr}/team/prof@{digest}",
            manifest_digest=digest,
            platform="linux/amd64",
            command=("/bin/app",),
            stopped_by="exit",
            duration_ms=5.0,
            files=(ProfiledFile("/" + name, layer.digest, len(files[name]), 0.0, ((0, 4096),)),),
        )
        push_profile(client, "team/prof", profile)
    settings = BackfillSettings(
        registry=registry.addr, span_size=64 * KIB, min_layer_size=64 * KIB, node_compat=node_compat, prefetch="ranges"
    )
    report = run_backfill(client, OciCatalog(client, ["team/prof"]), settings)
    (record,) = [r for r in report.records if r.key.startswith("team")]
    assert record.status is ImageStatus.INDEXED, record.reason
    entries = _prefetch_entries(client, ImageRef.parse(f"{registry.addr}/team/prof:1-soci"))
    assert len(entries) == expected
    if expected:
        assert entries[0]["annotations"][mt.ANNOTATION_LAYER_DIGEST] == layer.digest
        spans = json.loads(client.get_blob("team/prof", entries[0]["digest"]))["prefetch_spans"]
        assert spans == [{"start_span": 0, "end_span": 0}]  # 4 KiB at the start of the first file: span 0 only
