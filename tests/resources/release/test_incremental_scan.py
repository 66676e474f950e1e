"""Backfill at registry scale on a real registry: the incremental scan and the registry-wide zTOC catalog."""

from __future__ import annotations

from collections import Counter
from typing import Any

from resources.oci import media_types as mt
from resources.oci.refs import ImageRef
from resources.registry import Manifest, RegistryClient
from resources.release.backfill import BackfillSettings, ImageStatus, index_image
from resources.release.catalog import OciCatalog, image_key
from resources.release.scan import scan_registry
from resources.release.scan_state import ScanStateStore, TickStats, incremental_scan
from resources.soci.ztoc.builder import ZtocBuilder
from resources.soci.ztoc_catalog import ZtocCatalog
from tests.conftest import RunningRegistry
from tests.support.images import gzip_layer, push_image, random_files

KIB = 1024
SETTINGS = {"span_size": 64 * KIB, "min_layer_size": 64 * KIB}


class CountingClient(RegistryClient):
    """A real client that counts manifest reads per (repository, reference)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reads: Counter[tuple[str, str]] = Counter()

    def get_manifest(self, repository: str, reference: str, *args: Any, **kwargs: Any) -> Manifest:
        self.reads[(repository, reference)] += 1
        return super().get_manifest(repository, reference, *args, **kwargs)


def _keys(scan: Any) -> set[tuple[str, bool]]:
    return {(i.key, i.pending) for i in scan.images}


def _convert(client: RegistryClient, settings: BackfillSettings, repo: str, tag: str) -> None:
    addr = settings.registry
    settings.converter(client).convert(
        ImageRef.parse(f"{addr}/{repo}:{tag}"), ImageRef.parse(f"{addr}/{repo}:{tag}-soci")
    )


def test_incremental_scan_matches_the_full_scan_and_then_reads_only_new_tags(registry: RunningRegistry) -> None:
    client = CountingClient(registry.addr)
    settings = BackfillSettings(registry=registry.addr, **SETTINGS)
    base = gzip_layer(random_files("base", 128 * KIB))
    for r in ("team/a", "team/b", "team/c"):
        for t in ("v1", "v2"):
            push_image(client, r, t, [base, gzip_layer(random_files(f"{r}-{t}", 80 * KIB))])
    _convert(client, settings, "team/a", "v1")  # team/a:v1 is indexed already
    full = scan_registry(client, OciCatalog(client), settings)
    store = ScanStateStore(client)
    first = incremental_scan(client, OciCatalog(client), settings, store)
    assert _keys(first) == _keys(full) and len(first.images) == 6 and len(first.pending) == 5
    assert first.complete and first.resume_after is None

    client.reads.clear()
    stats = TickStats()
    steady = incremental_scan(client, OciCatalog(client), settings, ScanStateStore(client), stats=stats)  # another pod
    assert _keys(steady) == _keys(full)
    assert [k for k in client.reads if k[0] != "streamable/catalog"] == []  # no image manifest read at all
    assert stats.repositories_listed == 3 and stats.manifests_checked == 0

    new_digest, _ = push_image(client, "team/b", "v3", [base, gzip_layer(random_files("b3", 80 * KIB))])
    _convert(client, settings, "team/c", "v2")  # c:v2 gets its -soci tag: c:v2 is rechecked and now done
    client.reads.clear()
    tick = incremental_scan(client, OciCatalog(client), settings, store)
    image_reads = {k for k in client.reads if k[0] != "streamable/catalog"}
    assert ("team/b", "v3") in image_reads and ("team/c", "v2") in image_reads
    assert not {("team/a", "v1"), ("team/a", "v2"), ("team/b", "v1"), ("team/b", "v2"), ("team/c", "v1")} & image_reads
    pending = {i.key for i in tick.pending}
    assert image_key("team/b", "v3", new_digest) in pending
    assert _keys(tick) == _keys(scan_registry(client, OciCatalog(client), settings))


def test_scan_state_is_dropped_when_the_settings_change(registry: RunningRegistry) -> None:
    client = CountingClient(registry.addr)
    push_image(client, "x/app", "1", [gzip_layer(random_files("x", 80 * KIB))])
    store = ScanStateStore(client)
    incremental_scan(client, OciCatalog(client), BackfillSettings(registry=registry.addr, **SETTINGS), store)
    client.reads.clear()
    v1 = BackfillSettings(registry=registry.addr, format="v1", **SETTINGS)
    scan = incremental_scan(client, OciCatalog(client), v1, store)
    assert ("x/app", "1") in client.reads and len(scan.pending) == 1


def test_catalog_reuses_ztocs_across_repositories_and_processes_and_drops_bad_entries(
    registry: RunningRegistry,
) -> None:
    client = RegistryClient(registry.addr)
    settings = BackfillSettings(registry=registry.addr, **SETTINGS)
    base = gzip_layer(random_files("base", 256 * KIB))
    a_own, b_own = gzip_layer(random_files("a", 96 * KIB)), gzip_layer(random_files("b", 96 * KIB))
    a_digest, _ = push_image(client, "r/a", "1", [base, a_own])
    b_digest, _ = push_image(client, "r/b", "1", [base, b_own])

    rec_a = index_image(client, settings.converter(client), image_key("r/a", "1", a_digest), settings,
                        ztoc_catalog=ZtocCatalog.in_registry(client))
    assert rec_a.status is ImageStatus.INDEXED and rec_a.layers_built == 2
    # A new process: fresh catalog object and converter; r/b was never scanned: base's zTOC comes from the catalog.
    fresh = ZtocCatalog.in_registry(client)
    assert len(fresh.candidates(base.digest, settings.span_size)) == 1
    rec_b = index_image(
        client, settings.converter(client), image_key("r/b", "1", b_digest), settings, ztoc_catalog=fresh
    )
    assert rec_b.status is ImageStatus.INDEXED and (rec_b.layers_built, rec_b.layers_reused) == (1, 1)
    assert {e.repository for e in ZtocCatalog.in_registry(client).candidates(base.digest, settings.span_size)} == {
        "r/a",
        "r/b",
    }

    # A lying entry: the zTOC of another layer of the same repository, filed under `c_own`. It fails today's checks
    # (layer size, span digests against the layer's bytes), is dropped, and the layer is built.
    c_own = gzip_layer(random_files("c", 96 * KIB))
    c_digest, _ = push_image(client, "r/c", "1", [c_own])
    other = ZtocBuilder(span_size=settings.span_size).build([a_own.blob], a_own.media_type)
    client.push_blob("r/c", other.data, digest=other.digest)
    liar = ZtocCatalog.in_registry(client)
    liar.add("r/c", c_own.digest, settings.span_size, other.digest, other.size)
    liar.flush()
    rec_c = index_image(client, settings.converter(client), image_key("r/c", "1", c_digest), settings,
                        ztoc_catalog=ZtocCatalog.in_registry(client))
    assert rec_c.status is ImageStatus.INDEXED and (rec_c.layers_built, rec_c.layers_reused) == (1, 0)
    left = {e.digest for e in ZtocCatalog.in_registry(client).candidates(c_own.digest, settings.span_size)}
    assert other.digest not in left and len(left) == 1


def test_concurrent_catalog_writers_both_land(registry: RunningRegistry) -> None:
    client = RegistryClient(registry.addr)
    one, two = ZtocCatalog.in_registry(client), ZtocCatalog.in_registry(client)
    assert len(one) == len(two) == 0  # both read the (empty) catalog before either writes
    one.add("r/1", "sha256:" + "1" * 64, 4096, "sha256:" + "a" * 64, 10)
    two.add("r/2", "sha256:" + "2" * 64, 4096, "sha256:" + "b" * 64, 20)
    two.mark_covered("r/2")
    assert one.flush() and two.flush()
    again = ZtocCatalog.in_registry(client)
    assert len(again) == 2 and again.covers("r/2") and not again.covers("r/1")
    manifest = client.get_manifest("streamable/catalog", "ztoc-catalog")
    assert (
        manifest.media_type == mt.OCI_MANIFEST and b"application/vnd.streamable.ztoc-catalog.v1+json" in manifest.data
    )


def test_scan_folds_soci_indexes_into_the_catalog_and_marks_repositories_covered(registry: RunningRegistry) -> None:
    client = RegistryClient(registry.addr)
    settings = BackfillSettings(registry=registry.addr, **SETTINGS)
    base = gzip_layer(random_files("base", 256 * KIB))
    push_image(client, "s/old", "1", [base])
    _convert(client, settings, "s/old", "1")  # indexed outside the backfill (say, by the build pipeline)
    d, _ = push_image(client, "s/new", "1", [base, gzip_layer(random_files("n", 96 * KIB))])
    cat = ZtocCatalog.in_registry(client)
    incremental_scan(client, OciCatalog(client), settings, ScanStateStore(client), ztoc_catalog=cat)
    fresh = ZtocCatalog.in_registry(client)
    assert fresh.covers("s/old") and fresh.covers("s/new")
    assert [e.repository for e in fresh.candidates(base.digest, settings.span_size)] == ["s/old"]
    rec = index_image(client, settings.converter(client), image_key("s/new", "1", d), settings, ztoc_catalog=fresh)
    assert (rec.layers_built, rec.layers_reused) == (1, 1)
