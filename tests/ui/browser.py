"""Headless Debian Chromium driven by Playwright (never `playwright install`): open pages, read what a person sees."""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

try:
    from playwright import sync_api
except ImportError:  # a test extra (pyproject.toml); reported as a failure, not a skip
    sync_api = None

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1600, "height": 1400}
SHOW_ACTION = r"/^\[Show (Markdown|JSON|Table|Schema)\]$/"
"""Dagster puts long metadata values behind a `[Show Markdown]` / `[Show JSON]` link that opens a dialog."""


@contextmanager
def chromium_page() -> Iterator:
    """A Playwright page in Debian's chromium with a fresh profile; the profile is removed afterwards."""
    if sync_api is None:
        pytest.fail("the Python package `playwright` is missing: pip install -e '.[test]'")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `bash scripts/test-deps.sh` (installs Debian's chromium)")
    profile = tempfile.mkdtemp(prefix="streamable-chromium-")
    try:
        with sync_api.sync_playwright() as pw:
            ctx = pw.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, viewport=VIEWPORT)
            ctx.set_default_timeout(30_000)
            try:
                yield ctx.pages[0] if ctx.pages else ctx.new_page()
            finally:
                ctx.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def open_page(page, url: str, *, ready_text: str) -> None:
    """Go to `url` and wait until an element whose whole text is `ready_text` is shown."""
    page.goto(url)
    page.get_by_text(ready_text, exact=True).first.wait_for()
    page.wait_for_load_state("networkidle")


def dismiss_first_visit_dialog(page, timeout_ms: float = 10_000) -> None:
    """Click "Skip" on the "Join the Dagster community" dialog that dg dev shows once, a second after the first
    page loads (ui-core src/NUX/CommunityNux.tsx); it is remembered for the instance."""
    skip = page.get_by_role("button", name="Skip")
    skip.wait_for(timeout=timeout_ms)
    skip.click()
    skip.wait_for(state="detached")


def wait_for_texts(page, texts: list[str], timeout_s: float = 15) -> None:
    """Wait until every text is in the page (values load after the page frame); returns either way."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        body = page.inner_text("body")
        if all(t in body for t in texts):
            return
        time.sleep(0.25)


def launch_from_launchpad(page, job_url: str, *, partition: str, run_config_yaml: str, shot: Path) -> str:
    """Launch a partitioned asset job as the README says: the job's page, the menu next to "Materialize all...",
    "Open launchpad", pick the partition, replace the editor's contents with the run config, "Materialize".
    Returns the run id from the run page it lands on; `shot` is a screenshot of the filled-in launchpad."""
    open_page(page, job_url, ready_text="Materialize all…")
    page.locator("button:right-of(:text('Materialize all…'))").first.click()
    page.get_by_text("Open launchpad", exact=True).click()
    dialog = page.get_by_role("dialog").filter(has_text="Launchpad (configure assets)")
    box = dialog.get_by_placeholder("Partition")
    box.click()
    box.fill(partition)
    page.keyboard.press("Enter")
    dialog.get_by_text(f"partition: {partition}", exact=True).wait_for()
    editor = dialog.locator(".CodeMirror", has_text="resources:").first
    editor.locator(".CodeMirror-line").last.click()
    # The editor starts with the scaffolded defaults (an `ops:` block among them): replace it all, as the README says.
    page.keyboard.press("Control+A")
    page.keyboard.press("Delete")
    page.keyboard.type(run_config_yaml)
    dialog.get_by_text("No errors", exact=True).wait_for()
    screenshot(page, shot)
    page.locator("button", has_text=re.compile(r"^\s*Materialize\s*$")).last.click()
    page.wait_for_url("**/runs/*")
    return page.url.rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0]


def visible_text(page) -> str:
    """The page's text, plus the text of every metadata dialog (`[Show Markdown]`, ...) opened one at a time."""
    parts = [page.inner_text("body")]
    actions = page.get_by_text(SHOW_ACTION)
    for i in range(actions.count()):
        actions.nth(i).click()
        dialog = page.get_by_role("dialog").last
        dialog.wait_for()
        parts.append(dialog.inner_text())
        page.keyboard.press("Escape")
        dialog.wait_for(state="detached")
    return "\n".join(parts)


def toggle_is_on(page, name: str) -> bool:
    """State of the on/off switch in the row of the Automation page that names `name`."""
    return bool(page.evaluate(
        """(name) => {
            const label = [...document.querySelectorAll('a, span, div')]
                .find(e => e.children.length === 0 && e.textContent.trim() === name);
            if (!label) throw new Error('no row named ' + name);
            let row = label;
            while (row && row.querySelectorAll('input[type=checkbox]').length < 2) row = row.parentElement;
            const boxes = row.querySelectorAll('input[type=checkbox]');
            return boxes[boxes.length - 1].checked;
        }""", name))


def screenshot(page, path: Path) -> Path:
    """A full-page PNG (kept as a CI artifact)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    return path
