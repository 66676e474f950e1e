"""What a SOCI conversion takes from a startup profile: the span size (`span_size: auto`), the prefetch options
(gated by `soci.node_compat`), span size advice, and afterwards the cost of a start on the converted image.

Used by the pipeline's `soci_index` asset and by the backfill: the profile is found in the registry next to
the image (`store.find_image_profile`), so a conversion that runs alone (a re-run, a backfill) finds it too.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from resources.defaults import SOCI_SPAN_SIZE
from resources.oci import media_types as mt
from resources.oci.manifest import parse_manifest
from resources.oci.refs import ImageRef
from resources.registry import RegistryClient
from resources.soci.convert import SociConverter
from resources.soci.node_compat import NodeCompat
from resources.startup.cost import StartCost, StartCostComparison, StartCostError
from resources.startup.cost_inputs import start_cost_for_image
from resources.startup.profile import StartupProfile
from resources.startup.settings import StartupSettings
from resources.startup.span_advice import (
    SpanAdvice,
    SpanAdviceError,
    advise_span_size,
    measure_layer,
)
from resources.startup.store import StoredProfile, find_image_profile

LogFn = Callable[[str], None]


@dataclass
class IndexPlan:
    """The inputs of one conversion that a startup profile decides, and what was noted deciding them."""

    span_size: int
    node_compat: NodeCompat
    granularity: str
    stored: StoredProfile | None = None
    advice: SpanAdvice | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def prefetch_gate(self) -> str:
        """The node_compat gate, said in one line (what it lets into the index)."""
        if self.stored is None:
            return f"node_compat {self.node_compat}: no startup profile, so no prefetch artifacts either way"
        if self.node_compat.prefetch_artifacts:
            return (
                f"node_compat {self.node_compat} >= v0.13: prefetch artifacts ({self.granularity}) from the startup "
                "profile are written after the zTOCs"
            )
        return self.node_compat.prefetch_gate_reason()

    def converter_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for SociConverter: span size, node_compat and the prefetch profile."""
        return {
            "span_size": self.span_size,
            "node_compat": self.node_compat,
            "prefetch_profile": self.stored.profile if self.stored is not None else None,
            "prefetch_granularity": self.granularity,
        }


def plan_index(
    client: RegistryClient,
    repository: str,
    image_digest: str,
    *,
    span_size: int | str,
    node_compat: NodeCompat,
    startup: StartupSettings,
    min_layer_size: int,
    ztoc_budget_percent: float,
    advise: bool = True,
    log: LogFn = lambda _m: None,
) -> IndexPlan:
    """Find the image's profile; with it, measure the layers for span size advice and resolve `auto`."""
    fixed = span_size if isinstance(span_size, int) else SOCI_SPAN_SIZE
    plan = IndexPlan(fixed, node_compat, startup.prefetch, find_image_profile(client, repository, image_digest))
    if plan.stored is None:
        plan.notes.append(f"no startup profile is attached to {image_digest} in {repository}")
        if span_size == "auto":
            plan.notes.append(f"span_size auto: no profile to pick from, using {SOCI_SPAN_SIZE} bytes")
        return plan
    if not advise and span_size != "auto":
        return plan
    profile = plan.stored.profile
    manifest = parse_manifest(client.get_manifest(repository, profile.manifest_digest).data)
    measured = []
    for layer in manifest.layers or []:
        kind = mt.layer_compression(layer.media_type)
        if layer.size < min_layer_size or kind not in (mt.LayerCompression.GZIP, mt.LayerCompression.UNCOMPRESSED):
            continue
        log(f"span advice: measuring layer {layer.digest} ({layer.size} bytes)")
        with client.stream_blob(repository, layer.digest) as chunks:
            measured.append(measure_layer(layer.digest, layer.media_type, chunks))
    if not measured:
        plan.notes.append("span advice: no layer of the profiled manifest gets a zTOC")
        return plan
    budget = int(sum(m.compressed_size for m in measured) * ztoc_budget_percent / 100)
    try:
        plan.advice = advise_span_size(measured, profile.files, ztoc_budget=budget)
    except (SpanAdviceError, StartCostError) as exc:
        plan.notes.append(f"span advice: {exc}")
        return plan
    if span_size == "auto":
        plan.span_size = plan.advice.chosen
        plan.notes.append(
            f"span_size auto: {plan.span_size} bytes (fewest bytes to start with zTOCs within "
            f"{ztoc_budget_percent:g}% = {budget} bytes)"
        )
    return plan


@dataclass(frozen=True)
class StartCostReport:
    """The cost of a start on a converted image, and which mode its index serves."""

    comparison: StartCostComparison
    served: StartCost
    """lazy, or lazy + prefetch when the index holds prefetch artifacts."""

    @property
    def lead(self) -> str:
        """'to start: X MB of Y MB (Z%)', then how."""
        c = self.comparison
        return (
            f"{self.served.summary} ({self.served.mode}, as this index serves it); est. {self.served.seconds:.2f} s "
            f"vs {c.full_pull.seconds:.2f} s for a full pull"
        )


def start_cost(
    client: RegistryClient, soci_image: ImageRef, plan: IndexPlan, startup: StartupSettings, prefetch_written: bool
) -> StartCostReport | None:
    """The cost of a start for the plan's profile on the converted image (None without a profile)."""
    if plan.stored is None:
        return None
    comparison = start_cost_for_image(client, soci_image, plan.stored.profile, startup.network())
    if not prefetch_written:
        served = comparison.lazy
    else:
        served = comparison.prefetch_ranges if plan.granularity == "ranges" else comparison.prefetch_files
    return StartCostReport(comparison, served)


@contextlib.contextmanager
def converting_with_profile(converter: SociConverter, profile: StartupProfile | None) -> Iterator[None]:
    """Let a shared converter (the backfill's) write prefetch artifacts from `profile` for one conversion."""
    if profile is None:
        yield
        return
    before = converter.gates.options
    converter.gates.options = dataclasses.replace(before, profile=profile, files=())
    try:
        yield
    finally:
        converter.gates.options = before
