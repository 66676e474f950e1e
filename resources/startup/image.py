"""The image to record: its manifest for one platform, its layers and its run config (Entrypoint, Cmd, Env, ...)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from resources.oci import media_types as mt
from resources.oci import platforms as plat
from resources.oci.manifest import Platform
from resources.oci.refs import ImageRef
from resources.registry import Manifest, RegistryClient
from resources.startup.errors import RootfsError

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class LayerRef:
    """One layer of the image manifest (bottom first)."""

    digest: str
    media_type: str
    size: int


@dataclass(frozen=True)
class RunConfig:
    """What the image config says about running it (OCI image-spec config.md: `config`)."""

    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    working_dir: str = "/"
    user: str = ""

    def command(self, override: tuple[str, ...] | None = None) -> tuple[str, ...]:
        """Entrypoint + Cmd, or an explicit command that replaces both."""
        return tuple(override) if override else self.entrypoint + self.cmd

    def environment(self) -> dict[str, str]:
        """Env as a dict, with PATH defaulted like runc/containerd do when the image sets none."""
        out: dict[str, str] = {}
        for item in self.env:
            key, _, value = item.partition("=")
            if key:
                out[key] = value
        out.setdefault("PATH", DEFAULT_PATH)
        return out


@dataclass(frozen=True)
class ResolvedImage:
    """An image manifest for one platform, with its layers and run config."""

    ref: ImageRef
    manifest_digest: str
    platform: str
    layers: tuple[LayerRef, ...]
    config: RunConfig


def _strings(value: Any, what: str, ref: ImageRef) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RootfsError(f"image {ref}: config field {what!r} is not a list of strings")
    return tuple(value)


def _platform_of(entry: dict[str, Any]) -> Platform | None:
    p = entry.get("platform")
    if not isinstance(p, dict):
        return None
    return Platform(
        architecture=str(p.get("architecture", "")), os=str(p.get("os", "")), variant=str(p.get("variant", ""))
    )


def _select(client: RegistryClient, ref: ImageRef, top: Manifest, wanted: Platform) -> Manifest:
    """The image manifest for `wanted` from an index (containerd's strict match)."""
    for entry in top.json().get("manifests") or []:
        p = _platform_of(entry)
        if (
            entry.get("mediaType") in mt.IMAGE_MANIFEST_TYPES
            and not plat.is_unknown(p)
            and p
            and plat.matches(wanted, p)
        ):
            return client.get_manifest(ref.repository, entry["digest"])
    raise RootfsError(f"image {ref}: index {top.digest} has no manifest for platform {wanted}")


def resolve_image(client: RegistryClient, ref: ImageRef, platform: str | None = None) -> ResolvedImage:
    """Fetch the manifest (choosing `platform`, default the host's, from an index) and the image config."""
    wanted = plat.parse(platform) if platform else plat.host_default()
    top = client.get_manifest(ref.repository, ref.reference)
    manifest = _select(client, ref, top, wanted) if top.is_index else top
    doc = manifest.json()
    config_desc = doc.get("config") or {}
    if config_desc.get("mediaType") not in mt.IMAGE_CONFIG_TYPES:
        raise RootfsError(
            f"image {ref}: manifest {manifest.digest} has config type {config_desc.get('mediaType')!r}, not "
            "an image config"
        )
    try:
        config = json.loads(client.get_blob(ref.repository, config_desc["digest"]))
    except ValueError as exc:
        raise RootfsError(f"image {ref}: config blob {config_desc.get('digest')} is not JSON: {exc}") from None
    found = plat.normalize(
        Platform(
            architecture=str(config.get("architecture", "")),
            os=str(config.get("os", "")),
            variant=str(config.get("variant", "")),
        )
    )
    if not top.is_index and not plat.is_unknown(found) and not plat.matches(wanted, found):
        raise RootfsError(f"image {ref} is for {found}, not {wanted}: it cannot run here")
    run = config.get("config") or {}
    layers = tuple(
        LayerRef(str(layer["digest"]), str(layer["mediaType"]), int(layer["size"])) for layer in doc.get("layers") or []
    )
    return ResolvedImage(
        ref=ref,
        manifest_digest=manifest.digest,
        platform=str(wanted),
        layers=layers,
        config=RunConfig(
            entrypoint=_strings(run.get("Entrypoint"), "Entrypoint", ref),
            cmd=_strings(run.get("Cmd"), "Cmd", ref),
            env=_strings(run.get("Env"), "Env", ref),
            working_dir=str(run.get("WorkingDir") or "/"),
            user=str(run.get("User") or ""),
        ),
    )
