"""The convert steps that `node_compat` gates: prefetch artifacts and member-spanning zTOCs.

`SociConverter` calls `ConvertGates` at three points: after building a zTOC (is any span across a
gzip member boundary?), after finding a reusable zTOC (same question: two span fetches prove most
layers single-member, `proves_single_member`; other layers are scanned for their members once,
since the builder's record is not at hand), and once per platform after its zTOCs
(which prefetch artifacts to push and list after them). What was left out, and why, goes into the
platform's `PrefetchReport`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from resources.oci import media_types as mt
from resources.oci.manifest import Descriptor
from resources.registry import RegistryClient
from resources.soci.node_compat import DEFAULT_NODE_COMPAT, NodeCompat
from resources.soci.prefetch import (
    Granularity,
    LayerZtoc,
    PrefetchPlan,
    plan_for_paths,
    plan_for_profile,
)
from resources.soci.ztoc.flatbuf import parse_ztoc
from resources.soci.ztoc.members import (
    MemberStart,
    crossing_spans,
    proves_single_member,
    scan_gzip_members,
)
from resources.soci.ztoc.model import Ztoc
from resources.startup.profile import StartupProfile


@dataclass(frozen=True)
class PrefetchOptions:
    """What to prefetch, and the oldest node release the index must load on."""

    profile: StartupProfile | None = None
    granularity: Granularity = Granularity.FILES
    files: tuple[str, ...] = ()
    node_compat: NodeCompat = DEFAULT_NODE_COMPAT

    def __post_init__(self) -> None:
        if self.profile is not None and self.files:
            raise ValueError("give a prefetch profile or prefetch file paths, not both")

    @property
    def wanted(self) -> bool:
        """True when a profile or paths ask for prefetch artifacts."""
        return self.profile is not None or bool(self.files)


@dataclass(frozen=True)
class PrefetchRow:
    """One prefetch artifact pushed and listed in the SOCI index."""

    layer_digest: str
    artifact_digest: str
    artifact_size: int
    spans: list[tuple[int, int]]
    span_count: int


@dataclass
class PrefetchReport:
    """Prefetch for one platform: what was written, what was left out and why."""

    node_compat: str
    source: str
    """"profile (files)", "profile (ranges)", "paths", or "none"."""
    artifacts: list[PrefetchRow] = field(default_factory=list)
    gated: str | None = None
    """Why no artifact was written although asked for (the node_compat gate), else None."""
    not_found: list[str] = field(default_factory=list)
    unindexed: list[str] = field(default_factory=list)


class ConvertGates:
    """Per-converter state: zTOCs seen per layer, and the gated prefetch/member decisions."""

    def __init__(self, client: RegistryClient, options: PrefetchOptions, log_fn: Callable[[str], None]) -> None:
        self.client = client
        self.options = options
        self._log = log_fn
        self._ztocs: dict[str, Ztoc] = {}
        self._members: dict[str, list[MemberStart]] = {}

    # ---- zTOCs whose spans cross gzip members ------------------------------------------------------

    def member_gate_for_built(self, layer: Descriptor, ztoc: Ztoc, member_starts: Sequence[MemberStart]) -> str | None:
        """The skip reason for a freshly built zTOC under node_compat, or None; remembers the zTOC."""
        self._ztocs[layer.digest] = ztoc
        self._members[layer.digest] = list(member_starts)
        return self._member_reason(ztoc, member_starts)

    def member_gate_for_reused(self, repo: str, src_repo: str, layer: Descriptor, ztoc_digest: str) -> str | None:
        """The skip reason for a reused zTOC (scans the layer's gzip members once if the gate applies)."""
        if (
            self.options.node_compat.member_spanning_ztocs
            or mt.layer_compression(layer.media_type) is not mt.LayerCompression.GZIP
        ):
            return None
        ztoc = self.ztoc(repo, layer.digest, ztoc_digest)
        members = self._members.get(layer.digest)
        if members is None and proves_single_member(
            ztoc, lambda start, end: self.client.get_blob_range(src_repo, layer.digest, start, end)
        ):
            members = self._members[layer.digest] = []
        if members is None:
            self._log(f"layer {layer.digest}: scanning its gzip members (node_compat {self.options.node_compat})")
            with self.client.stream_blob(src_repo, layer.digest) as chunks:
                members = scan_gzip_members(chunks)
            self._members[layer.digest] = members
        return self._member_reason(ztoc, members)

    def _member_reason(self, ztoc: Ztoc, member_starts: Sequence[MemberStart]) -> str | None:
        if self.options.node_compat.member_spanning_ztocs:
            return None
        crossing = crossing_spans(ztoc, member_starts)
        return self.options.node_compat.member_gate_reason(len(crossing)) if crossing else None

    def ztoc(self, repo: str, layer_digest: str, ztoc_digest: str) -> Ztoc:
        """The parsed zTOC of a layer (fetched once from `repo` when it was reused, not built)."""
        found = self._ztocs.get(layer_digest)
        if found is None:
            found = parse_ztoc(self.client.get_blob(repo, ztoc_digest))
            self._ztocs[layer_digest] = found
        return found

    # ---- prefetch artifacts ------------------------------------------------------------------------

    def prefetch(
        self, repo: str, manifest_digest: str, layers: Sequence[Descriptor], kept: dict[str, str]
    ) -> tuple[list[Descriptor], PrefetchReport]:
        """Push the artifacts for one platform; `kept` maps layer digest -> zTOC digest in its index."""
        opts = self.options
        profile = opts.profile if opts.profile is not None and opts.profile.manifest_digest == manifest_digest else None
        source = f"profile ({opts.granularity.value})" if profile is not None else "paths" if opts.files else "none"
        report = PrefetchReport(node_compat=str(opts.node_compat), source=source)
        if profile is None and not opts.files:
            return [], report
        if not opts.node_compat.prefetch_artifacts:
            report.gated = opts.node_compat.prefetch_gate_reason()
            return [], report
        with_ztocs = [
            LayerZtoc(d.digest, self.ztoc(repo, d.digest, kept[d.digest]) if d.digest in kept else None) for d in layers
        ]
        plan: PrefetchPlan
        if profile is not None:
            plan = plan_for_profile(with_ztocs, profile.files, opts.granularity)
        else:
            plan = plan_for_paths(with_ztocs, opts.files)
        for artifact in plan.artifacts:
            self.client.push_blob(repo, artifact.data, digest=artifact.descriptor.digest)
            report.artifacts.append(
                PrefetchRow(
                    artifact.layer_digest, artifact.descriptor.digest, artifact.descriptor.size,
                    [list(s) for s in artifact.spans], artifact.span_count,  # type: ignore[misc]
                )
            )
        report.not_found, report.unindexed = plan.not_found, plan.unindexed
        for name in plan.not_found:
            self._log(f"prefetch: {name} not found in any layer with a zTOC")
        return plan.descriptors, report
