"""Release planning: which tags a verified image moves, decided before any tag is moved."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from resources.registry import RegistryClient
from resources.release.tags import release_tags
from resources.release.targets import Target

ReleaseTagFn = Callable[[str, str], tuple[str, str | None, bool]]
"""(repository, tag) -> (tag to release under, note when it differs, whether that tag is write-once)."""


def overridden_build_args(target: Target, build_args: Mapping[str, str]) -> list[str]:
    """Names of run-config build args that differ from what targets.yaml defines for the target."""
    return sorted(k for k, v in build_args.items() if target.build_args.get(k) != v)


@dataclass(frozen=True)
class ReleasePlan:
    """The tags to move, and why any tag of the target's scheme is not among them."""

    tags: list[str]
    notes: list[str] = field(default_factory=list)
    held_back: list[str] = field(default_factory=list)
    """Tags of the target's scheme left alone because the build is not the target as targets.yaml defines it."""


def wanted_tags(target: Target, *, commit: str, ref: str | None, overridden: Sequence[str],
                extra_tags: Sequence[str]) -> tuple[list[str], list[str], list[str]]:
    """(tags to release, scheme tags held back, notes). A build with overridden build args is not the target's
    definition: it keeps its candidate tag and gets only the run's explicit extra tags."""
    default_branch = target.source.git.ref if target.source.git else "main"
    scheme = release_tags(target.tags, commit=commit, ref=ref, default_branch=default_branch)
    extra = [t for t in extra_tags if t not in scheme]
    if not overridden:
        return [*scheme, *extra], [], []
    note = (f"build args {', '.join(overridden)} differ from targets.yaml: the target's tags "
            f"({', '.join(scheme)}) are not moved; released under its candidate tag"
            + (f" and the run's extra tags ({', '.join(extra_tags)})" if extra_tags else " only"))
    return list(dict.fromkeys(extra_tags)), scheme, [note]


def plan_release(client: RegistryClient, repository: str, digest: str, tags: Sequence[str],
                 release_tag: ReleaseTagFn, *, held_back: Sequence[str] = (),
                 notes: Sequence[str] = ()) -> ReleasePlan:
    """Final tag names for `tags`; a write-once tag that already points elsewhere is left alone (with a note)."""
    out_notes = list(notes)
    chosen: list[str] = []
    for tag in tags:
        final, note, write_once = release_tag(repository, tag)
        if note:
            out_notes.append(note)
        existing = client.head_manifest(repository, final) if write_once else None
        if existing is not None and existing.digest != digest:
            out_notes.append(f"{repository}:{final} is immutable and already points at {existing.digest}; "
                             "left as it is")
            continue
        chosen.append(final)
    return ReleasePlan(tags=list(dict.fromkeys(chosen)), notes=out_notes, held_back=list(held_back))
