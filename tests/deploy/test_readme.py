"""deploy/README.md covers the deploy order and the lazy-load check, and names only files that exist."""

from __future__ import annotations

import re

from tests.deploy.conftest import DEPLOY, REPO

README = DEPLOY / "README.md"


def test_readme_explains_the_lazy_load_check_and_the_order():
    text = README.read_text()
    assert "findmnt --source soci" in text and "fuse.rawBridge" in text
    steps = [int(n) for n in re.findall(r"^(\d+)\. \*\*", text, re.MULTILINE)]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) >= 5


def test_every_deploy_path_the_readme_names_exists():
    text = README.read_text()
    paths = set(re.findall(r"`((?:builder|k8s|dagster|eks)/[\w./-]+?)`", text))
    assert paths, "the README should point at files"
    missing = sorted(p for p in paths if not (DEPLOY / p.rstrip("/")).exists())
    assert missing == []
    for code in re.findall(r"`((?:resources|tests)/[\w./-]+\.py)`", text):
        assert (REPO / code).exists(), code
