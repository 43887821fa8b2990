"""Browser tests: Debian's Chromium driven by Playwright's sync API, headless.

Nothing is downloaded: Chromium is the system one at /usr/bin/chromium (`apt install
chromium`), never `playwright install`. Without it, or without the playwright package,
every test here skips and says which is missing. Screenshots go to the test's tmp folder;
with WORKBENCH_README_IMAGES=1 also to docs/images/ (the README shows them).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI containers run as root, where the sandbox cannot start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1400, "height": 900}
REPO = Path(__file__).resolve().parents[2]
IMAGES = REPO / "docs" / "images"


def pytest_configure(config: pytest.Config) -> None:
    # also belongs in pyproject's markers; registered here so --strict-markers accepts it
    config.addinivalue_line("markers", "browser: drives Chromium through Playwright (headless)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """A headless Chromium for the whole session."""
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (Debian: apt install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright package is not installed (pip install playwright)")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


class Page:
    """A Playwright page that records console errors and uncaught page errors."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.errors: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))

    def _console(self, msg: Any) -> None:
        if msg.type == "error":
            self.errors.append(f"console: {msg.text}")

    def click_center(self, selector: str) -> dict[str, float]:
        """A real mouse click in the middle of the first element matching `selector` that
        lies in the viewport (plotly listens to mouse events on its drag layer, so a DOM
        `click()` on the point would not reach it); returns the element's box."""
        loc = self.page.locator(selector)
        for i in range(loc.count()):
            box = loc.nth(i).bounding_box()
            if box and box["width"] > 0 and 0 <= box["y"] < VIEWPORT["height"] - box["height"]:
                x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
                self.page.mouse.move(x, y)
                self.page.mouse.click(x, y)
                return box
        raise AssertionError(f"no element in the viewport matches {selector!r}")

    def screenshot(self, name: str, tmp_path: Path, **kwargs: Any) -> Path:
        """Save a PNG in `tmp_path`; with WORKBENCH_README_IMAGES=1 also as docs/images/<name>
        (the README's screenshots: refreshed on purpose, not by every test run)."""
        tmp_copy = tmp_path / name
        self.page.screenshot(path=str(tmp_copy), **kwargs)
        if os.environ.get("WORKBENCH_README_IMAGES") != "1":
            return tmp_copy
        IMAGES.mkdir(parents=True, exist_ok=True)
        out = IMAGES / name
        shutil.copyfile(tmp_copy, out)
        return out


@pytest.fixture
def page(browser: Any) -> Iterator[Page]:
    """A fresh page (its own context) at a 1400x900 viewport."""
    context = browser.new_context(viewport=VIEWPORT)
    try:
        yield Page(context.new_page())
    finally:
        context.close()
