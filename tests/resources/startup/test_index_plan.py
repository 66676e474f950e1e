"""What a conversion takes from a stored startup profile: span_size auto, the node_compat gate, the shared
converter's profile for one conversion (real registry)."""

from __future__ import annotations

import pytest

from resources.oci.refs import ImageRef
from resources.registry import RegistryClient
from resources.soci.convert import SociConverter
from resources.soci.node_compat import NodeCompat
from resources.startup.index_plan import converting_with_profile, plan_index
from resources.startup.profile import ProfiledFile, StartupProfile
from resources.startup.settings import StartupSettings
from resources.startup.store import push_profile
from tests.conftest import RunningRegistry
from tests.support.images import gzip_layer, push_image, random_files

KIB = 1024


def _image_with_profile(
    client: RegistryClient, addr: str, *, profile: bool = True
) -> tuple[str, StartupProfile | None]:
    files = random_files("m", 4096 * KIB, count=2)  # two 2 MiB random files: one 2 MiB+ gzip layer
    layer = gzip_layer(files)
    digest, _ = push_image(client, "t/plan", "1", [layer])
    if not profile:
        return digest, None
    name = sorted(files)[1]
    p = StartupProfile(
        image=f"{addr}/t/plan@{digest}",
        manifest_digest=digest,
        platform="linux/amd64",
        command=("/app",),
        stopped_by="exit",
        duration_ms=1.0,
        files=(ProfiledFile("/" + name, layer.digest, len(files[name]), 0.0, ((4096, 8192),)),),
    )
    push_profile(client, "t/plan", p)
    return digest, p


def test_auto_picks_the_advice_within_the_budget(registry: RunningRegistry) -> None:
    client = RegistryClient(registry.addr)
    digest, profile = _image_with_profile(client, registry.addr)
    plan = plan_index(
        client,
        "t/plan",
        digest,
        span_size="auto",
        node_compat=NodeCompat.parse("v0.13"),
        startup=StartupSettings(enabled=True),
        min_layer_size=64 * KIB,
        ztoc_budget_percent=100,
    )
    assert plan.stored is not None and plan.stored.profile == profile
    assert plan.advice is not None and plan.span_size == plan.advice.chosen
    best = min(plan.advice.options, key=lambda o: (o.bytes_to_start, -o.span_size))
    assert plan.span_size == best.span_size == 512 * KIB  # one 4 KiB read: the smallest span costs the least
    assert "span_size auto: 524288 bytes" in "\n".join(plan.notes)
    assert ">= v0.13" in plan.prefetch_gate and plan.converter_kwargs()["prefetch_profile"] == profile
    tight = plan_index(
        client,
        "t/plan",
        digest,
        span_size="auto",
        node_compat=NodeCompat.parse("v0.12"),
        startup=StartupSettings(enabled=True),
        min_layer_size=64 * KIB,
        ztoc_budget_percent=0.01,
    )
    assert tight.advice is None and "raise the zTOC budget" in "\n".join(tight.notes)
    assert "v0.12 < v0.13" in tight.prefetch_gate


def test_without_a_profile_auto_falls_back_and_says_so(registry: RunningRegistry) -> None:
    client = RegistryClient(registry.addr)
    digest, _ = _image_with_profile(client, registry.addr, profile=False)
    plan = plan_index(
        client,
        "t/plan",
        digest,
        span_size="auto",
        node_compat=NodeCompat.parse("v0.15"),
        startup=StartupSettings(enabled=True),
        min_layer_size=64 * KIB,
        ztoc_budget_percent=2,
    )
    assert plan.stored is None and plan.span_size == 4 * 1024 * KIB
    assert (
        any("no startup profile is attached" in n for n in plan.notes) and "no prefetch artifacts" in plan.prefetch_gate
    )


def test_shared_converter_gets_the_profile_for_one_conversion(registry: RunningRegistry) -> None:
    client = RegistryClient(registry.addr)
    digest, profile = _image_with_profile(client, registry.addr)
    converter = SociConverter(client, span_size=512 * KIB, min_layer_size=64 * KIB, node_compat="v0.13")
    with converting_with_profile(converter, profile):
        result = converter.convert(
            ImageRef(registry.addr, "t/plan", digest=digest), ImageRef(registry.addr, "t/plan", tag="1-soci")
        )
    assert result.platforms[0].prefetch is not None and len(result.platforms[0].prefetch.artifacts) == 1
    assert converter.gates.options.profile is None  # restored: the next image is not converted with this profile
    with pytest.raises(RuntimeError), converting_with_profile(converter, profile):
        raise RuntimeError("conversion failed")
    assert converter.gates.options.profile is None
