"""The layout rules of the code base: Dagster only in pipelines/, small modules and classes, one error base."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_MODULE_LINES = 600
MAX_CLASS_LINES = 400
BEING_SPLIT: dict[str, str] = {}
"""Modules or classes over the limits while a split is under way (none now): `path` or `path: class Name`."""


def _modules(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def _imports(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_resources_never_import_dagster() -> None:
    """resources/ is plain Python: no module imports dagster (or a dagster_* library), not even lazily."""
    offenders = [f"{p.relative_to(ROOT)}: {name}"
                 for p in _modules("resources")
                 for name in sorted(_imports(ast.parse(p.read_text(), str(p))))
                 if name.split(".")[0] == "dagster" or name.startswith("dagster_")]
    assert offenders == []


def test_the_scan_sees_an_import_of_dagster() -> None:
    """The scan above catches plain, dotted and lazy (function-level) imports."""
    tree = ast.parse("def f():\n    import dagster as dg\nfrom dagster_aws.s3 import S3Resource\nimport os\n")
    assert {n for n in _imports(tree) if n.split(".")[0] == "dagster" or n.startswith("dagster_")} == {
        "dagster", "dagster_aws.s3"}


@pytest.mark.parametrize("folder", ["resources", "pipelines"])
def test_modules_and_classes_stay_small(folder: str) -> None:
    """No module over 600 lines, no class over 400 lines."""
    too_long = []
    for path in _modules(folder):
        text = path.read_text()
        lines = text.count("\n") + (0 if text.endswith("\n") else 1)
        name = str(path.relative_to(ROOT))
        if lines > MAX_MODULE_LINES and name not in BEING_SPLIT:
            too_long.append(f"{name}: {lines} lines")
        for node in ast.walk(ast.parse(text, str(path))):
            if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
                size = node.end_lineno - node.lineno + 1
                if size > MAX_CLASS_LINES and f"{name}: class {node.name}" not in BEING_SPLIT:
                    too_long.append(f"{name}: class {node.name} {size} lines")
    assert too_long == []


def test_every_error_class_derives_from_streamable_error() -> None:
    """Every exception class defined in resources/ or pipelines/ is a StreamableError (the CLI catches that)."""
    import importlib

    from resources.errors import StreamableError

    missing = []
    for folder in ("resources", "pipelines"):
        for path in _modules(folder):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            tree = ast.parse(path.read_text(), str(path))
            names = [n.name for n in tree.body if isinstance(n, ast.ClassDef)]
            if not names:
                continue
            mod = importlib.import_module(module)
            for name in names:
                cls = getattr(mod, name)
                if isinstance(cls, type) and issubclass(cls, BaseException) and not issubclass(cls, StreamableError):
                    missing.append(f"{module}.{name}")
    assert missing == []
