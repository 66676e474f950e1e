"""A backfill pass: scan the registry, then index the pending images one after the other with one converter."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from resources.log import LogFn
from resources.registry import RegistryClient
from resources.release.backfill import BackfillSettings, SharedZtocs, StatusRecord, VerifyFn, index_image
from resources.release.catalog import ImageCatalog
from resources.release.scan import ScannedImage, ScanResult, scan_registry
from resources.soci.convert import SociConverter
from resources.soci.ztoc_catalog import ZtocCatalog


@dataclass
class BackfillReport:
    """A whole backfill pass."""

    scan: ScanResult
    records: list[StatusRecord]

    @property
    def layers_built(self) -> int:
        return sum(r.layers_built for r in self.records)

    def by_status(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.records:
            out[r.status.value] = out.get(r.status.value, 0) + 1
        return out


def iter_backfill(
    client: RegistryClient,
    catalog: ImageCatalog,
    settings: BackfillSettings,
    images: Sequence[ScannedImage],
    *,
    converter: SociConverter | None = None,
    verify: VerifyFn | None = None,
    log: LogFn | None = None,
    indexed_repositories: Iterable[str] = (),
    ztoc_catalog: ZtocCatalog | None = None,
) -> Iterator[StatusRecord]:
    """Index `images` one after the other with ONE converter (shared zTOC cache), yielding each outcome.

    `indexed_repositories`: repositories known to hold SOCI indexes (see `ScanResult.indexed_repositories`),
    whose zTOCs other repositories may reuse.
    """
    conv = converter or settings.converter(client, log)
    shared = SharedZtocs(indexed_repositories)
    verified: set[str] = set()
    for img in images:
        yield index_image(client, conv, img.key, settings, catalog=catalog, expected_digest=img.digest, shared=shared,
                          verify=verify, verified_ztocs=verified, log=log, ztoc_catalog=ztoc_catalog)


def run_backfill(client: RegistryClient, catalog: ImageCatalog, settings: BackfillSettings, *,
                 skip_keys: set[str] | frozenset[str] = frozenset(), verify: VerifyFn | None = None,
                 log: LogFn | None = None, max_images: int | None = None,
                 on_planned: Callable[[ScanResult, list[ScannedImage]], None] | None = None,
                 on_record: Callable[[StatusRecord], None] | None = None,
                 scan: Callable[[], ScanResult] | None = None,
                 ztoc_catalog: ZtocCatalog | None = None) -> BackfillReport:
    """Scan the whole registry and index every pending image whose key is not in `skip_keys` (already done).

    `on_planned(scan, todo)` runs once the work is known, `on_record(record)` as each image finishes; `scan` replaces
    the full registry scan (e.g. the incremental one), `ztoc_catalog` is the registry-wide zTOC map.
    """
    result = scan() if scan is not None else scan_registry(client, catalog, settings)
    todo = [i for i in result.pending if i.key not in skip_keys][:max_images]
    if on_planned is not None:
        on_planned(result, todo)
    records: list[StatusRecord] = []
    for rec in iter_backfill(client, catalog, settings, todo, verify=verify, log=log,
                             indexed_repositories=result.indexed_repositories, ztoc_catalog=ztoc_catalog):
        records.append(rec)
        if on_record is not None:
            on_record(rec)
    return BackfillReport(result, records)
