"""Assemble an image's root filesystem from its registry layers, and remember which layer provides each path.

Layers are applied bottom to top as containerd's `archive.Apply` does (containerd `pkg/archive/tar.go`):
a `.wh.<name>` entry deletes `<name>` from the layers below, a `.wh..wh..opq` entry empties its directory of
what the layers below put there (entries of the same layer stay), and every other entry replaces what was
at its path. Paths resolve inside the root (symlinks never lead out of it).
"""

from __future__ import annotations

import gzip
import os
import shutil
import stat
import subprocess
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import zstandard

from resources.oci import media_types as mt
from resources.registry import RegistryClient
from resources.startup.errors import RootfsError, SandboxUnavailableError
from resources.startup.image import LayerRef, ResolvedImage

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
MAX_SYMLINKS = 40
_GZIP_TYPES = {mt.OCI_LAYER_GZIP, mt.DOCKER_LAYER_GZIP, mt.DOCKER_FOREIGN_LAYER_GZIP}
_ZSTD_TYPES = {mt.OCI_LAYER_ZSTD, mt.DOCKER_LAYER_ZSTD}
_TAR_TYPES = {mt.OCI_LAYER_TAR, mt.DOCKER_LAYER, mt.DOCKER_FOREIGN_LAYER}
_MEMORY_FILESYSTEMS = {"tmpfs", "ramfs"}


@dataclass
class Rootfs:
    """An unpacked root filesystem and, per absolute path, the digest of the topmost layer that provides it."""

    root: Path
    provenance: dict[str, str] = field(default_factory=dict)

    def host_path(self, path: str) -> Path:
        """The host path of an absolute path inside the root (no symlink resolution)."""
        return self.root / path.lstrip("/")

    def resolve(self, path: str, cwd: str = "/") -> str | None:
        """Resolve `path` (relative to `cwd`) inside the root, following symlinks as the chrooted program would."""
        try:
            return resolve_in_root(self.root, path if path.startswith("/") else cwd.rstrip("/") + "/" + path)
        except RootfsError:
            return None

    def regular_files(self) -> Iterator[Path]:
        """Host paths of every regular file in the root."""
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                p = Path(dirpath) / name
                if stat.S_ISREG(p.lstat().st_mode):
                    yield p


def filesystem_type(path: Path) -> str:
    """The filesystem type of `path` as `stat -f` names it (GNU coreutils)."""
    out = subprocess.run(["stat", "-f", "-c", "%T", str(path)], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def require_disk_filesystem(path: Path) -> None:
    """Refuse tmpfs/ramfs: their pages cannot be evicted, so a cold start cannot be measured there."""
    kind = filesystem_type(path)
    if kind in _MEMORY_FILESYSTEMS:
        raise SandboxUnavailableError(
            f"{path} is on {kind}: page-cache residency cannot be measured from a cold cache there; use a "
            "disk directory"
        )


def resolve_in_root(root: Path, path: str, *, follow_last: bool = True) -> str:
    """Resolve an absolute in-root path component by component, symlinks scoped to `root` (like chroot)."""
    parts = [p for p in path.split("/") if p and p != "."]
    done: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if done:
                done.pop()
            continue
        candidate = root.joinpath(*done, part)
        if candidate.is_symlink() and (parts or follow_last):
            hops += 1
            if hops > MAX_SYMLINKS:
                raise RootfsError(f"too many symlinks resolving {path} in {root}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                done = []
            parts = [p for p in target.split("/") if p and p != "."] + parts
            continue
        done.append(part)
    return "/" + "/".join(done)


def _remove(host: Path) -> None:
    if host.is_symlink() or not host.is_dir():
        host.unlink(missing_ok=True)
    else:
        shutil.rmtree(host)


@contextmanager
def _layer_stream(client: RegistryClient, repository: str, layer: LayerRef) -> Iterator[IO[bytes]]:
    """The layer's uncompressed tar stream."""
    with client.open_blob(repository, layer.digest) as blob:
        if layer.media_type in _GZIP_TYPES:
            with gzip.GzipFile(fileobj=blob, mode="rb") as raw:
                yield raw  # type: ignore[misc]
        elif layer.media_type in _ZSTD_TYPES:
            with zstandard.ZstdDecompressor().stream_reader(blob) as raw:
                yield raw
        elif layer.media_type in _TAR_TYPES:
            yield blob
        else:
            raise RootfsError(f"layer {layer.digest}: media type {layer.media_type!r} is not a tar layer")


class _LayerApplier:
    """Applies one layer's tar entries onto a Rootfs."""

    def __init__(self, rootfs: Rootfs, layer: LayerRef) -> None:
        self.rootfs = rootfs
        self.layer = layer
        self.created: set[str] = set()

    def _drop_provenance(self, path: str, keep_own: bool) -> None:
        prefix = path.rstrip("/") + "/"
        for p in [p for p in self.rootfs.provenance if p == path or p.startswith(prefix)]:
            if not (keep_own and p in self.created):
                del self.rootfs.provenance[p]

    def _opaque(self, directory: str) -> None:
        """Empty `directory` of entries from lower layers (keep what this layer already put there)."""
        host = self.rootfs.host_path(directory)
        if not host.is_dir() or host.is_symlink():
            return
        for child in host.iterdir():
            inner = directory.rstrip("/") + "/" + child.name
            if inner not in self.created:
                _remove(child)
        prefix = directory.rstrip("/") + "/"
        for p in [p for p in self.rootfs.provenance if p.startswith(prefix)]:
            if p not in self.created:
                del self.rootfs.provenance[p]

    def apply(self, tar: tarfile.TarFile) -> None:
        for member in tar:
            self._entry(tar, member)

    def _entry(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        name = "/" + "/".join(p for p in member.name.split("/") if p and p != ".")
        if name == "/":
            return
        if any(p == ".." for p in name.split("/")):
            raise RootfsError(f"layer {self.layer.digest}: entry {member.name!r} leaves the root")
        parent_in, base = name.rsplit("/", 1)
        parent = resolve_in_root(self.rootfs.root, parent_in or "/")
        if base == OPAQUE_MARKER:
            self._opaque(parent)
            return
        if base.startswith(WHITEOUT_PREFIX):
            gone = parent.rstrip("/") + "/" + base[len(WHITEOUT_PREFIX) :]
            host = self.rootfs.host_path(gone)
            if host.is_symlink() or host.exists():
                _remove(host)
            self._drop_provenance(gone, keep_own=False)
            return
        path = parent.rstrip("/") + "/" + base
        host = self.rootfs.host_path(path)
        host.parent.mkdir(parents=True, exist_ok=True)
        if member.isdir():
            if host.is_symlink() or (host.exists() and not host.is_dir()):
                _remove(host)
            host.mkdir(exist_ok=True)
        else:
            if host.is_symlink() or host.exists():
                _remove(host)
                self._drop_provenance(path, keep_own=True)
            self._write(tar, member, host, path)
        self._metadata(member, host)
        self.created.add(path)
        if member.isreg() or member.islnk():
            self.rootfs.provenance[path] = self.layer.digest

    def _write(self, tar: tarfile.TarFile, member: tarfile.TarInfo, host: Path, path: str) -> None:
        if member.isreg():
            src = tar.extractfile(member)
            assert src is not None
            with src, open(host, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
        elif member.issym():
            os.symlink(member.linkname, host)
        elif member.islnk():
            target = resolve_in_root(self.rootfs.root, "/" + member.linkname.lstrip("/"), follow_last=False)
            os.link(self.rootfs.host_path(target), host)
        elif member.isfifo():
            os.mkfifo(host)
        else:
            # Device nodes are not created in the rootfs: the sandbox gets its own /dev.
            return

    def _metadata(self, member: tarfile.TarInfo, host: Path) -> None:
        if member.ischr() or member.isblk() or not (host.exists() or host.is_symlink()):
            return
        os.lchown(host, member.uid, member.gid)
        if not member.issym():
            os.chmod(host, member.mode & 0o7777)


def assemble_rootfs(client: RegistryClient, image: ResolvedImage, root: Path) -> Rootfs:
    """Unpack every layer of `image` into the empty directory `root` (on a disk filesystem)."""
    root.mkdir(parents=True, exist_ok=True)
    if any(root.iterdir()):
        raise RootfsError(f"{root} is not empty: a rootfs is assembled into an empty directory")
    require_disk_filesystem(root)
    rootfs = Rootfs(root=root)
    for layer in image.layers:
        try:
            with (
                _layer_stream(client, image.ref.repository, layer) as stream,
                tarfile.open(fileobj=stream, mode="r|") as tar,
            ):
                _LayerApplier(rootfs, layer).apply(tar)
        except (tarfile.TarError, OSError, EOFError, zstandard.ZstdError) as exc:
            raise RootfsError(f"image {image.ref}: layer {layer.digest} cannot be unpacked: {exc}") from None
    return rootfs
