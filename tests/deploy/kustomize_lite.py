"""A small kustomize-compatible renderer for the subset deploy/k8s uses, so the tests run without kubectl.

Supported kustomization fields (anything else raises KustomizeError naming the field):
- `resources`: YAML files, or directories holding a kustomization.yaml (rendered recursively);
- `labels`: `pairs` with `includeSelectors: false` and `includeTemplates: false` (metadata.labels only);
- `images`: `name` -> `newName` / `newTag` / `digest`, applied to containers and initContainers;
- `patches`: `path` to a strategic-merge patch, matched to one resource by kind + name (+ namespace).
Strategic merge: maps merge recursively, `null` deletes a key, lists of maps merge by key for
containers/initContainers/volumes/env/imagePullSecrets (name), volumeMounts (mountPath) and ports
(containerPort, or port for Services); every other list is replaced, as kustomize does for lists
without a patchMergeKey (e.g. volumeClaimTemplates). `$patch` directives are not supported.
tests/deploy/test_kustomize.py checks the output equals `kubectl kustomize` when kubectl is installed.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
SUPPORTED_FIELDS = {"apiVersion", "kind", "resources", "labels", "images", "patches"}
LIST_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "volumes": "name",
    "env": "name",
    "imagePullSecrets": "name",
    "volumeMounts": "mountPath",
}
POD_SPEC_PATHS = (("spec", "template", "spec"), ("spec", "jobTemplate", "spec", "template", "spec"), ("spec",))


class KustomizeError(ValueError):
    """The kustomization uses something outside the supported subset, or is inconsistent; names file and field."""


def render(directory: str | Path) -> list[dict[str, Any]]:
    """The resources a kustomization directory renders to (order: resources in listed order)."""
    root = Path(directory)
    kfile = next((root / n for n in KUSTOMIZATION_FILES if (root / n).is_file()), None)
    if kfile is None:
        raise KustomizeError(f"{root} has no kustomization.yaml")
    spec = yaml.safe_load(kfile.read_text()) or {}
    unsupported = sorted(set(spec) - SUPPORTED_FIELDS)
    if unsupported:
        raise KustomizeError(f"{kfile}: unsupported field(s) {unsupported} (supported: {sorted(SUPPORTED_FIELDS)})")
    objects: list[dict[str, Any]] = []
    for entry in spec.get("resources") or []:
        path = (root / entry).resolve()
        if path.is_dir():
            objects.extend(render(path))
        elif path.is_file():
            objects.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
        else:
            raise KustomizeError(f"{kfile}: resource {entry!r} does not exist")
    _check_unique(objects, kfile)
    for patch in spec.get("patches") or []:
        _apply_patch(objects, root, patch, kfile)
    for label_set in spec.get("labels") or []:
        _apply_labels(objects, label_set, kfile)
    for image in spec.get("images") or []:
        _apply_image(objects, image, kfile)
    return objects


def _key(obj: dict[str, Any]) -> tuple[str, str, str]:
    meta = obj.get("metadata") or {}
    return obj.get("kind", ""), meta.get("namespace", ""), meta.get("name", "")


def _check_unique(objects: list[dict[str, Any]], kfile: Path) -> None:
    seen: set[tuple[str, str, str]] = set()
    for obj in objects:
        k = _key(obj)
        if k in seen:
            raise KustomizeError(f"{kfile}: resource {k} is listed twice")
        seen.add(k)


def _apply_patch(objects: list[dict[str, Any]], root: Path, patch: dict[str, Any], kfile: Path) -> None:
    if set(patch) != {"path"}:
        raise KustomizeError(f"{kfile}: only `patches: - path: FILE` is supported, got keys {sorted(patch)}")
    doc = yaml.safe_load((root / patch["path"]).read_text())
    kind, ns, name = _key(doc)
    matches = [o for o in objects if _key(o)[0] == kind and _key(o)[2] == name and (not ns or _key(o)[1] == ns)]
    if len(matches) != 1:
        raise KustomizeError(f"{kfile}: patch {patch['path']} matches {len(matches)} resources ({kind} {ns}/{name})")
    target = matches[0]
    merged = strategic_merge(target, doc)
    target.clear()
    target.update(merged)


def strategic_merge(base: Any, patch: Any, field: str = "") -> Any:
    """`patch` merged into a copy of `base` with the strategic-merge subset described in the module docstring."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = copy.deepcopy(base)
        for k, v in patch.items():
            if k.startswith("$"):
                raise KustomizeError(f"strategic-merge directive {k!r} is not supported")
            if v is None:
                out.pop(k, None)
            elif k in out:
                out[k] = strategic_merge(out[k], v, k)
            else:
                out[k] = copy.deepcopy(v)
        return out
    if isinstance(base, list) and isinstance(patch, list):
        key = LIST_MERGE_KEYS.get(field)
        if field == "ports":
            key = "containerPort" if all("containerPort" in p for p in patch + base) else "port"
        if key is None or not all(isinstance(i, dict) and key in i for i in base + patch):
            return copy.deepcopy(patch)
        out = [copy.deepcopy(i) for i in base]
        for item in patch:
            idx = next((n for n, b in enumerate(out) if b[key] == item[key]), None)
            if idx is None:
                out.append(copy.deepcopy(item))
            else:
                out[idx] = strategic_merge(out[idx], item, "")
        return out
    return copy.deepcopy(patch)


def _apply_labels(objects: list[dict[str, Any]], label_set: dict[str, Any], kfile: Path) -> None:
    extra = sorted(set(label_set) - {"pairs", "includeSelectors", "includeTemplates"})
    if extra or label_set.get("includeSelectors") or label_set.get("includeTemplates"):
        raise KustomizeError(f"{kfile}: labels support only `pairs` with includeSelectors/includeTemplates false")
    for obj in objects:
        obj.setdefault("metadata", {}).setdefault("labels", {}).update(label_set.get("pairs") or {})


def _split_image(image: str) -> tuple[str, str]:
    """(name, tag-or-digest suffix including its separator) of an image reference."""
    if "@" in image:
        name, digest = image.split("@", 1)
        return name, "@" + digest
    slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > slash:
        return image[:colon], image[colon:]
    return image, ""


def _apply_image(objects: list[dict[str, Any]], image: dict[str, Any], kfile: Path) -> None:
    extra = sorted(set(image) - {"name", "newName", "newTag", "digest"})
    if extra:
        raise KustomizeError(f"{kfile}: images entry {image.get('name')!r} has unsupported keys {extra}")
    for obj in objects:
        for containers in _containers(obj):
            for c in containers:
                name, suffix = _split_image(c.get("image", ""))
                if name != image["name"]:
                    continue
                new_name = image.get("newName", name)
                if "digest" in image:
                    suffix = "@" + image["digest"]
                elif "newTag" in image:
                    suffix = ":" + str(image["newTag"])
                c["image"] = new_name + suffix


def _containers(obj: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """The containers and initContainers lists of the object's pod spec, if it has one."""
    for path in POD_SPEC_PATHS:
        node: Any = obj
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and ("containers" in node or "initContainers" in node):
            return [node.get(k) or [] for k in ("containers", "initContainers")]
    return []
