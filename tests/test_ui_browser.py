"""The Dagster UI as a user sees it: headless Chromium (Debian's package, driven by Playwright)
opens the asset graph and the backtest asset's page after a daily run and a research run (the
backtest is the research job's), and saves screenshots.

Skipped when ``/usr/bin/chromium`` is absent, except in CI (``$CI`` set), where it fails.
The screenshots go to the test's temporary folder and, reduced, to a temporary folder too; with
``UPDATE_SCREENSHOTS=1`` the reduced copies replace ``docs/screenshots/`` (the suite leaves the
working tree as it found it).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from pipeline.config import load_config
from pipeline.definitions import build_definitions

ALL_ASSETS = list(build_definitions(load_config()).assets)
from tests.ui_support import ROOT, launch_daily_run, launch_run, webserver

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
DOCS_SCREENSHOTS = ROOT / "docs" / "screenshots"
#: Width of the copies in docs/ (pixels): readable, a few tens of kB each.
DOCS_WIDTH = 1000
ASSETS = [key.to_user_string() for a in ALL_ASSETS for key in a.keys]
TIMEOUT_MS = 120_000

if not CHROMIUM.exists() and not os.environ.get("CI"):
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)", allow_module_level=True)


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    assert CHROMIUM.exists(), f"{CHROMIUM} is required in CI (.ci/run installs Debian's chromium)"
    with webserver(tmp_path_factory.mktemp("ui_browser")) as ws:
        run_id, status = launch_daily_run(ws)
        assert status == "SUCCESS", f"daily run {run_id} ended {status}"
        run_id, status = launch_run(ws, "research_job")
        assert status == "SUCCESS", f"research run {run_id} ended {status}"
        yield ws


@pytest.fixture(scope="module")
def page(ui):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(TIMEOUT_MS)
        yield page
        browser.close()


def _open(page, url: str) -> None:
    """Go to ``url``; dismiss the one-time community dialog of a fresh instance if it shows."""
    page.goto(url, wait_until="networkidle", timeout=TIMEOUT_MS)
    skip = page.get_by_role("button", name="Skip")
    try:
        skip.wait_for(state="visible", timeout=5_000)
    except Exception:  # playwright's TimeoutError: the dialog is not shown (already dismissed)
        return
    skip.click()
    skip.wait_for(state="hidden")


@pytest.fixture(scope="module")
def reduced(tmp_path_factory) -> Path:
    """Where the reduced copies go: docs/screenshots/ with ``UPDATE_SCREENSHOTS=1``, else a temporary folder."""
    return DOCS_SCREENSHOTS if os.environ.get("UPDATE_SCREENSHOTS") else tmp_path_factory.mktemp("reduced")


def _screenshot(page, name: str, folder: Path, reduced: Path, **kwargs) -> Path:
    """Save ``name`` in ``folder`` and a reduced copy in ``reduced``."""
    path = folder / name
    page.screenshot(path=str(path), **kwargs)
    reduced.mkdir(parents=True, exist_ok=True)
    with Image.open(path) as img:
        small = img.convert("RGB").resize((DOCS_WIDTH, round(img.height * DOCS_WIDTH / img.width)), Image.LANCZOS)
        small.quantize(colors=128).save(reduced / name, optimize=True)
    return path


def _metadata_row(page, key: str):
    """The row of the metadata table whose key cell is ``key``."""
    return page.locator("tr").filter(has=page.locator("td:first-child").get_by_text(key, exact=True)).first


def test_asset_graph_shows_every_asset(ui, page, tmp_path, reduced):
    _open(page, f"{ui.url}/asset-groups")
    page.get_by_text("Global asset lineage").wait_for()
    # Groups start collapsed; the graph's context menu expands them all, as a user would.
    page.get_by_text("ingest", exact=True).last.wait_for()
    box = page.get_by_text("ingest", exact=True).last.bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] - 120, button="right")
    page.get_by_role("menuitem", name="Expand all groups").click()
    # More room for the graph: hide the main navigation (the choice persists; a reload re-fits the graph).
    page.get_by_text("Hide navigation", exact=True).click()
    page.reload(wait_until="networkidle")
    for asset in ASSETS:
        page.get_by_text(asset, exact=True).first.wait_for(state="visible")
    page.wait_for_timeout(1_000)  # let the zoom-to-fit animation settle
    shot = _screenshot(page, "asset_graph.png", tmp_path, reduced)
    assert shot.stat().st_size > 20_000  # a rendered graph, not a blank page


def test_backtest_page_renders_tables_markdown_and_the_png_plot(ui, page, tmp_path, reduced):
    _open(page, f"{ui.url}/assets/backtest")
    metadata = page.get_by_text("Metadata", exact=True).first
    metadata.wait_for()
    # A TableMetadataValue (metrics) renders as a table with its rows.
    metrics = _metadata_row(page, "metrics")
    metrics.locator("table").first.wait_for(state="visible")
    for cell in ["sharpe", "max_drawdown"]:
        assert metrics.get_by_text(cell, exact=True).count() >= 1, cell
    # Markdown tables render as HTML tables: P&L by asset class has the config's classes as rows.
    by_class = _metadata_row(page, "pnl_by_asset_class").locator("table").first
    by_class.wait_for(state="visible")
    for asset_class in ["equity_tech", "equity_financials", "equity_energy", "equity_staples", "equity_factor"]:
        assert by_class.get_by_text(asset_class, exact=True).count() == 1, asset_class
    assert _metadata_row(page, "pnl_by_instrument").locator("table").get_by_text("AAPL", exact=True).count() == 1
    metadata.evaluate("e => e.scrollIntoView({block: 'start'})")
    _screenshot(page, "backtest_asset.png", tmp_path, reduced)

    # The equity/drawdown plot is a PNG inside Markdown: the UI shows it in a dialog.
    _metadata_row(page, "equity_curve").get_by_text("[Show Markdown]").click()
    plot = page.locator("img[src^='data:image/png;base64,']").first
    plot.wait_for(state="visible")
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=plot.element_handle())
    width, height = plot.evaluate("img => [img.naturalWidth, img.naturalHeight]")
    assert width >= 400 and height >= 200, (width, height)  # a real plot, decoded by the browser
    _screenshot(page, "backtest_equity_curve.png", tmp_path, reduced)
    page.keyboard.press("Escape")


def test_screenshots_are_saved_for_the_docs(ui, page, reduced):
    # Runs after the two tests above (file order): their reduced copies are in ``reduced``.
    for name in ["asset_graph.png", "backtest_asset.png", "backtest_equity_curve.png"]:
        path = reduced / name
        assert path.exists() and 10_000 < path.stat().st_size < 400_000, name
        with Image.open(path) as img:
            assert img.width == DOCS_WIDTH
