"""Resolve an image's `User` (`name`, `uid`, `name:group`, `uid:gid`) against the rootfs's passwd and group."""

from __future__ import annotations

from pathlib import Path

from resources.startup.errors import StartupError


def _table(path: Path) -> list[list[str]]:
    try:
        return [
            line.split(":")
            for line in path.read_text(errors="replace").splitlines()
            if line and not line.startswith("#")
        ]
    except OSError:
        return []


def resolve_user(root: Path, user: str) -> tuple[int, int, tuple[int, ...]]:
    """(uid, gid, supplementary gids) for `user` as runc does: numeric ids need no passwd entry; empty is root."""
    if not user:
        return 0, 0, ()
    name, _, group = user.partition(":")
    passwd, groups = _table(root / "etc/passwd"), _table(root / "etc/group")
    uid = gid = None
    username = None
    if name.isdigit():
        uid = int(name)
        entry = next((e for e in passwd if len(e) > 3 and e[2] == name), None)
    else:
        entry = next((e for e in passwd if len(e) > 3 and e[0] == name), None)
        if entry is None:
            raise StartupError(f"image user {name!r} is not in the image's /etc/passwd")
        uid = int(entry[2])
    if entry is not None:
        username, gid = entry[0], int(entry[3])
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            g = next((e for e in groups if len(e) > 2 and e[0] == group), None)
            if g is None:
                raise StartupError(f"image group {group!r} is not in the image's /etc/group")
            gid = int(g[2])
    extra = tuple(
        int(e[2]) for e in groups if len(e) > 3 and username and username in e[3].split(",") and e[2].isdigit()
    )
    return uid, gid if gid is not None else 0, extra


def home_of(root: Path, uid: int) -> str:
    """The home directory of `uid` in the rootfs's /etc/passwd, else `/` (what runc sets HOME to)."""
    entry = next((e for e in _table(root / "etc/passwd") if len(e) > 5 and e[2] == str(uid)), None)
    return entry[5] if entry is not None and entry[5] else "/"
