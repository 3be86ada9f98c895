"""The backtest reports render in headless Chromium without a console error.

Uses Debian's Chromium at /usr/bin/chromium through playwright (no browser download). Skips when
Chromium is absent, except under CI (``$CI`` set), where a missing browser is a failure.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.research.results import write_comparison, write_results
from tests.test_backtest_results import demo_run

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]

if not CHROMIUM.exists():
    if os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} is missing; CI installs Debian's chromium (apt-get install chromium)",
                    pytrace=False)
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)", allow_module_level=True)

if os.environ.get("CI"):
    from playwright import (
        sync_api,  # CI installs the test extra: a missing package fails here
    )
else:
    sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


def render(browser, page_path: Path, screenshot: Path | None = None) -> tuple[list[str], int]:
    """Console errors and uncaught exceptions of the page, and how many plotly charts drew."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
    page.goto(page_path.as_uri())
    page.wait_for_load_state("load")
    drawn = page.evaluate("document.querySelectorAll('.js-plotly-plot .main-svg').length > 0 ? "
                          "document.querySelectorAll('.js-plotly-plot').length : 0")
    if screenshot is not None:
        page.screenshot(path=str(screenshot), full_page=True)
    page.close()
    return errors, drawn


def test_report_renders_every_chart_without_console_errors(browser, tmp_path):
    folder = write_results(demo_run(), tmp_path)
    errors, drawn = render(browser, folder / "report.html", tmp_path / "report.png")
    assert errors == []
    assert drawn == 7  # equity+drawdown, monthly, rolling Sharpe, returns, trades, exposure, attribution
    assert (tmp_path / "report.png").stat().st_size > 50_000


def test_comparison_renders_without_console_errors(browser, tmp_path):
    a, b = write_results(demo_run("a"), tmp_path), write_results(demo_run("b", seed=3), tmp_path)
    errors, drawn = render(browser, write_comparison([a, b], tmp_path))
    assert errors == [] and drawn == 3
