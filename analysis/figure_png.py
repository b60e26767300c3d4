"""Plotly figure → PNG without kaleido: render the figure's self-contained HTML in headless Chromium (Playwright,
the browser the test suite already uses) and screenshot the plot.

`write_png` returns None after printing one sentence when no browser is available; the HTML next to the PNG
always holds the interactive chart.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

CHROMIUM_CANDIDATES = (
    os.environ.get("GDL_CHROMIUM", ""),
    "/usr/bin/chromium",
    "/usr/bin/chromium-browser",
    "/usr/bin/google-chrome",
)


def chromium_path() -> str | None:
    for c in CHROMIUM_CANDIDATES:
        if c and Path(c).is_file():
            return c
    return shutil.which("chromium") or shutil.which("chromium-browser")


def write_png(fig, path, width: int = 1100, height: int | None = None, scale: float = 2.0) -> Path | None:
    """Write `fig` to `path` as a PNG of `width` x `height` CSS pixels (height: the figure's own) at `scale`."""
    path = Path(path)
    height = int(height or fig.layout.height or 450)
    browser_path = chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        browser_path = None
    if browser_path is None:
        print(f"note: {path.name} skipped: PNG export needs Chromium and the playwright package; the HTML has the chart.")
        return None
    html = fig.to_html(
        include_plotlyjs=True,
        full_html=True,
        default_width=f"{width}px",
        default_height=f"{height}px",
        config={"staticPlot": True},
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, args=["--headless", "--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": width + 20, "height": height + 20}, device_scale_factor=scale)
            page.set_content(html, wait_until="domcontentloaded", timeout=120_000)
            page.wait_for_selector(".main-svg", timeout=120_000)
            page.locator(".plotly-graph-div").first.screenshot(path=str(path))
        finally:
            browser.close()
    return path


def write_html(fig, path) -> Path:
    """`fig` as an interactive HTML page at `path`. Inside the repository's `assets/` (committed files) the page loads
    plotly.js from its CDN, so the repository does not carry a 4.6 MB copy per folder; anywhere else plotly.min.js is
    written beside it, so a report can be read offline."""
    from demo.core.paths import ASSETS_DIR

    path = Path(path)
    committed = path.resolve().is_relative_to(ASSETS_DIR.resolve())
    fig.write_html(path, include_plotlyjs="cdn" if committed else "directory")
    return path


def write_report(
    out, stem: str, payload: dict, markdown: str, fig, figure_stem: str, width: int, height: int, png: bool = True
) -> list[Path]:
    """A report's files in `out`: STEM.json (payload), STEM.md, FIGURE_STEM.html and, with `png`, FIGURE_STEM.png."""
    import json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(payload, indent=2) + "\n")
    (out / f"{stem}.md").write_text(markdown)
    write_html(fig, out / f"{figure_stem}.html")
    written = [out / f"{stem}.md", out / f"{stem}.json", out / f"{figure_stem}.html"]
    if png and write_png(fig, out / f"{figure_stem}.png", width=width, height=height) is not None:
        written.append(out / f"{figure_stem}.png")
    return written
