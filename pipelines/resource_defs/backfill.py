"""Which registry images the SOCI backfill indexes, and how (the push-event sensor uses the same filters)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import dagster as dg
from pydantic import Field

from pipelines.resource_defs.base import RegistryResource
from pipelines.resource_defs.eks import EcrResource
from resources import defaults
from resources.aws.push_events import ImageFilter
from resources.oci.refs import ImageRef
from resources.registry import RegistryClient
from resources.release.backfill import BackfillSettings, VerifyFn
from resources.release.catalog import EcrCatalog, ImageCatalog, OciCatalog
from resources.release.scan import ScanResult, scan_registry
from resources.release.scan_state import ScanStateStore, incremental_scan
from resources.soci.verify import verify_image
from resources.soci.ztoc_catalog import ZtocCatalog


class SociBackfillResource(dg.ConfigurableResource):
    """Which registry images the backfill indexes, and how (the same filters serve the push-event sensor)."""

    registry: str | None = Field(default=None, description="registry host; default: default_registry or the ECR one")
    default_registry: str = Field(default="127.0.0.1:5055", description="registry when neither is set "
                                  "(STREAMABLE_REGISTRY)")
    filters: list[str] = Field(default_factory=lambda: ["*:*"], description="'repository-glob:tag-glob' patterns")
    format: Literal["v2", "v1"] = "v2"
    span_size: int = Field(default=defaults.SOCI_SPAN_SIZE, gt=0)
    min_layer_size: int = Field(default=defaults.SOCI_MIN_LAYER_SIZE, ge=0)
    catalog: Literal["registry", "ecr"] = Field(default="registry",
                                                description="list images via the registry API or ECR")
    ecr: EcrResource | None = Field(default=None, description="the ECR resource when catalog='ecr'")
    scan_budget_s: float = Field(default=40.0, gt=0, le=55, description="time one scan sensor tick may spend")
    max_runs_per_tick: int = Field(default=200, ge=1, description="cap on runs one sensor tick or schedule requests")
    verify_sample: int = Field(default=4, ge=0, description="files read lazily to verify each result (0 = no check)")
    node_compat: str = Field(default="v0.12", description="v0.13+: prefetch artifacts from stored startup profiles")
    prefetch: Literal["files", "ranges"] = Field(default="files", description="prefetch granularity from a profile")
    catalog_repository: str | None = Field(default="streamable/catalog", description="repository holding the zTOC "
                                           "catalog and the incremental scan state (None = full scans, per-repo reuse)")

    def registry_host(self) -> str:
        """The registry the backfill scans and writes to."""
        if self.registry:
            return self.registry
        if self.catalog == "ecr" and self.ecr is not None:
            return self.ecr.get_registry().registry_host
        return self.default_registry

    def settings(self) -> BackfillSettings:
        """The plain backfill settings this resource describes."""
        return BackfillSettings(registry=self.registry_host(), filters=ImageFilter.parse(self.filters),
                                format=self.format, span_size=self.span_size, min_layer_size=self.min_layer_size,
                                node_compat=self.node_compat, prefetch=self.prefetch)

    def client(self, registry: RegistryResource) -> RegistryClient:
        """A registry client (ECR: with a fresh token from the ecr resource)."""
        if self.catalog == "ecr" and self.ecr is not None:
            return self.ecr.get_registry().registry_client()
        return registry.client(self.registry_host())

    def image_catalog(self, client: RegistryClient) -> ImageCatalog:
        """Where the images to scan are listed: the registry API or ECR."""
        if self.catalog == "ecr":
            if self.ecr is None:
                raise ValueError("SociBackfillResource: catalog='ecr' needs the ecr resource "
                                 "(set SociBackfillResource.ecr)")
            return EcrCatalog(self.ecr.get_registry())
        return OciCatalog(client)

    def ztoc_catalog(self, client: RegistryClient, log: Callable[[str], None] | None = None) -> ZtocCatalog | None:
        """The registry-wide zTOC catalog (resources/soci/ztoc_catalog.py), or None when switched off."""
        return ZtocCatalog.in_registry(client, self.catalog_repository, log_fn=log) if self.catalog_repository else None

    def scan(self, client: RegistryClient, settings: BackfillSettings, **kw: Any) -> ScanResult:
        """Incremental scan (O(new tags), resources/release/scan_state.py) when a catalog repository is set."""
        catalog = self.image_catalog(client)
        if not self.catalog_repository:
            return scan_registry(client, catalog, settings, **kw)
        return incremental_scan(client, catalog, settings, ScanStateStore(client, self.catalog_repository),
                                ztoc_catalog=self.ztoc_catalog(client), **kw)

    def verifier(self, client: RegistryClient) -> VerifyFn | None:
        """Lazy-read check of each result, or None when verify_sample is 0."""
        if self.verify_sample <= 0:
            return None

        def verify(ref: ImageRef) -> tuple[bool, str]:
            report = verify_image(client, ref, sample=self.verify_sample)
            return report.passed, report.failure or f"{report.files_checked} file(s) read lazily and matched"

        return verify
