"""Every page on the MS demo workspace names its classes MS and HC, and none says AD.

Builds a small MS demo (``python -m lib demo --disease ms``), trains a run briefly, explains it with LRP and
sums the maps per region, then opens every page (and every tab of the Dataset overview and Atlas metrics) in
Debian's Chromium, like ``test_browser.py``. Screenshots go to ``tests/artifacts/ms_*.png``.
"""

from __future__ import annotations

import re

import pytest

from lib.cli import main
from lib.data.workspace import Workspace
from test_browser import _no_exception, _settle, _shot, _start_app, _stop_app, browser  # noqa: F401
from test_browser import _page as new_page

PAGES = {  # link → (heading, text the page shows once drawn, tabs to open)
    "Dataset overview": ("Dataset overview", "MS scans", ["Counts", "Demographics", "Quality control", "Scan viewer",
                                                         "Mean MS − HC"]),
    "Cohort & validation": ("Cohort & validation", "0 errors", []),
    "Training": ("Training", "Sensitivity (MS)", []),
    "Heatmaps": ("Heatmaps", "all MS scans", []),
    "Atlas metrics": ("Atlas metrics", "MS vs HC tests", ["Top regions", "Fingerprints", "MS vs HC tests", "Table"]),
    "Biomarkers": ("Biomarkers", "lesion_load", []),
    "Evaluation": ("Evaluating explanations", "Region perturbation", []),
    "Jobs": ("Jobs", "train", []),
}
AD = re.compile(r"\bAD\b")


@pytest.fixture(scope="module")
def ms_ws(tmp_path_factory) -> Workspace:
    root = tmp_path_factory.mktemp("ms_ws")
    ws_args = ["--workspace", str(root)]
    assert main([*ws_args, "demo", "--disease", "ms", "--subjects", "12", "--resolution", "3", "--visits", "1",
                 "--workers", "1"]) == 0
    assert main([*ws_args, "train", "--epochs", "2", "--batch-size", "6", "--lr", "1e-3", "--run-id", "ms-run"]) == 0
    assert main([*ws_args, "explain", "--run", "ms-run", "--method", "lrp", "--beta", "0"]) == 0
    assert main([*ws_args, "regions", "--run", "ms-run", "--method", "lrp", "--beta", "0"]) == 0
    return Workspace.open(root)


@pytest.fixture(scope="module")
def app_url(ms_ws):
    proc, url = _start_app(ms_ws.root)
    yield url
    _stop_app(proc)


def _main_text(page) -> str:
    return page.locator('[data-testid="stMain"]').inner_text()


def _check(page, where: str) -> str:
    _settle(page)
    _no_exception(page)
    text = _main_text(page)
    hit = AD.search(text)
    assert hit is None, f"{where} says AD: …{text[max(hit.start() - 80, 0):hit.end() + 80]}…"
    return text


def test_every_page_names_ms_and_hc_and_never_ad(browser, app_url, ms_ws):  # noqa: F811
    assert ms_ws.classes.names == ("HC", "MS")
    page = new_page(browser, height=1400, timeout_ms=90_000)
    page.goto(app_url)
    for link, (heading, shown, tabs) in PAGES.items():
        page.get_by_role("link", name=link).click()
        page.get_by_role("heading", name=heading).first.wait_for()
        page.get_by_text(shown).first.wait_for()
        text = _check(page, link)
        if link in ("Dataset overview", "Training", "Heatmaps", "Atlas metrics"):
            assert "MS" in text and "HC" in text, link
        name = "ms_" + link.split()[0].lower()
        _shot(page, name)
        for tab in tabs:
            page.get_by_role("tab", name=tab).click()
            _check(page, f"{link} · {tab}")
            _shot(page, f"{name}_{tab.split()[0].lower()}")
    page.close()
