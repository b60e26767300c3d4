"""A real browser drives the page: headless Debian Chromium through Playwright, click Compare, two images render.

Set GDL_SCREENSHOT=path.png to keep a screenshot of the page after the comparison (for the README).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"Debian's chromium is not installed at {CHROMIUM}")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


@pytest.fixture(autouse=True, scope="module")
def _isolated_runs(isolated_runs):
    """The Distill tab's job store stays out of the repository (conftest.isolated_runs)."""


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    from conftest import serve_app
    from test_app import make_model_root, settings_for

    tmp = tmp_path_factory.mktemp("browser")
    root = make_model_root(tmp / "models")
    shutil.rmtree(root / "run-kd")
    with serve_app(settings_for(root, tmp)) as served_url:
        yield served_url


def test_click_compare_renders_two_images(url):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1100})
            page.goto(url, wait_until="domcontentloaded")
            page.get_by_text("Guided Distillation Lab").first.wait_for(timeout=90_000)
            page.locator("#compare-button").click()
            page.get_by_text("Speedup").wait_for(timeout=120_000)
            for elem in ("#teacher-image", "#student-image"):
                img = page.locator(f"{elem} img").first
                img.wait_for(state="visible", timeout=60_000)
                # The <img> can be visible before its bytes arrive: wait (bounded) until it has decoded pixels.
                page.wait_for_function(
                    "sel => { const i = document.querySelector(sel); return !!i && i.complete && i.naturalWidth >= 28; }",
                    arg=f"{elem} img",
                    timeout=60_000,
                )
                assert img.evaluate("i => i.naturalWidth") >= 28
            if os.environ.get("GDL_SCREENSHOT"):
                page.screenshot(path=os.environ["GDL_SCREENSHOT"], full_page=False)
        finally:
            browser.close()
