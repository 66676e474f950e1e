"""Write deploy/dagster/constraints.txt: exact versions of streamable's runtime dependency closure.

Versions come from the environment this runs in (the project's tested venv), not from a fresh resolve:
    .venv/bin/python deploy/dagster/update-constraints.py
Extra packages the user-code image needs that are not project dependencies are listed in EXTRA_PINS.
"""

from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(__file__).resolve().parent / "constraints.txt"
# The run worker loads the Dagster instance (Postgres storage) in the user-code image.
EXTRA_PINS = {"dagster-postgres": "0.29.27", "psycopg2-binary": "2.9.13"}
TARGET_ENV = {**default_environment(), "sys_platform": "linux", "platform_system": "Linux",
              "python_version": "3.11", "python_full_version": "3.11.0", "implementation_name": "cpython"}


def runtime_closure(requirements: list[str]) -> dict[str, str]:
    """{canonical name: installed version} for the requirements and everything they need on Linux/CPython 3.11."""
    pins: dict[str, str] = {}
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate({**TARGET_ENV, "extra": ""}):
            continue
        name = canonicalize_name(req.name)
        if name in pins:
            continue
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            sys.exit(f"{req.name} is required but not installed in {sys.prefix}; install the project first")
        pins[name] = dist.version
        for sub in dist.requires or []:
            sub_req = Requirement(sub)
            for extra in sorted(req.extras) or [""]:
                if sub_req.marker is None or sub_req.marker.evaluate({**TARGET_ENV, "extra": extra}):
                    todo.append(sub_req)
                    break
    return pins


def main() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = runtime_closure(list(project["dependencies"]))
    pins.pop(canonicalize_name(project["name"]), None)
    pins.update(EXTRA_PINS)
    lines = [f"{name}=={version}" for name, version in sorted(pins.items())]
    header = (
        "# Exact versions for the user-code image (deploy/dagster/Dockerfile): streamable's runtime dependencies\n"
        "# as tested, plus the Postgres instance storage. "
        "Regenerate: .venv/bin/python deploy/dagster/update-constraints.py\n"
    )
    OUT.write_text(header + "\n".join(lines) + "\n")
    print(f"wrote {len(lines)} pins to {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    if not re.match(r"3\.11", sys.version):
        print(f"note: running on Python {sys.version.split()[0]}; the image uses 3.11", file=sys.stderr)
    main()
