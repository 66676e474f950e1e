"""Platform strings (`os/arch[/variant]`): parse, normalize and match like containerd/platforms."""

from __future__ import annotations

import platform as _host
from collections.abc import Iterable

from resources.errors import StreamableError
from resources.oci.manifest import Platform


class PlatformError(StreamableError, ValueError):
    """A platform string that cannot be parsed."""


def _normalize_os(os_name: str) -> str:
    os_name = os_name.lower()
    return "darwin" if os_name == "macos" else os_name


def _normalize_arch(arch: str, variant: str) -> tuple[str, str]:
    arch, variant = arch.lower(), variant.lower()
    if arch == "i386":
        return "386", ""
    if arch in ("x86_64", "x86-64", "amd64"):
        return "amd64", "" if variant == "v1" else variant
    if arch in ("aarch64", "arm64"):
        return "arm64", "" if variant in ("8", "v8") else variant
    if arch == "armhf":
        return "arm", "v7"
    if arch == "armel":
        return "arm", "v6"
    if arch == "arm":
        if variant in ("", "7"):
            return "arm", "v7"
        if variant in ("5", "6", "8"):
            return "arm", "v" + variant
    return arch, variant


def normalize(p: Platform) -> Platform:
    """containerd platforms.Normalize: lower-case, aliases resolved, implied variants dropped."""
    arch, variant = _normalize_arch(p.architecture, p.variant)
    return Platform(
        architecture=arch,
        os=_normalize_os(p.os),
        os_version=p.os_version,
        os_features=list(p.os_features) if p.os_features else None,
        variant=variant,
    )


def parse(spec: str) -> Platform:
    """Parse `os/arch[/variant]` (or `arch` alone, meaning linux) into a normalized Platform."""
    parts = [part.strip() for part in spec.strip().split("/")]
    if not spec.strip() or any(not part for part in parts) or len(parts) > 3:
        raise PlatformError(f"invalid platform {spec!r}: expected os/arch[/variant], e.g. linux/amd64")
    if len(parts) == 1:
        parts = ["linux", parts[0]]
    variant = parts[2] if len(parts) == 3 else ""
    return normalize(Platform(os=parts[0], architecture=parts[1], variant=variant))


def matches(wanted: Platform, candidate: Platform) -> bool:
    """containerd OnlyStrict match: same normalized os, architecture and variant."""
    a, b = normalize(wanted), normalize(candidate)
    return (a.os, a.architecture, a.variant) == (b.os, b.architecture, b.variant)


def host_default() -> Platform:
    """The platform of this machine (what `soci convert` indexes when none is given)."""
    return parse(f"linux/{_host.machine() or 'amd64'}")


def is_unknown(p: Platform | None) -> bool:
    """BuildKit attestation manifests carry `unknown/unknown`; they are not runnable images."""
    return p is None or p.os in ("", "unknown") or p.architecture in ("", "unknown")


def dedupe(platforms: Iterable[Platform]) -> list[Platform]:
    """Drop repeated platforms (after normalization), keeping the first occurrence."""
    seen: set[tuple[str, str, str]] = set()
    out: list[Platform] = []
    for p in platforms:
        n = normalize(p)
        key = (n.os, n.architecture, n.variant)
        if key not in seen:
            seen.add(key)
            out.append(n)
    return out
