"""The method catalogue on the pages: every analysis page offers SmoothGrad and Integrated Gradients by their
labels, although no page names them (they come from ``lib.explain.methods``).

The Heatmaps and Evaluation pages offer each method to compute; the Atlas metrics and Biomarkers pages offer the
heatmap stores of a run, so a small store of each method (and LRP β=0) is computed first (as the Heatmaps page's job would).
Reuses the app fixtures of ``test_browser.py``; screenshots go to ``tests/artifacts/catalogue_*.png``.
"""

from __future__ import annotations

import functools
import shutil

import pytest
from playwright.sync_api import Error as PlaywrightError

from lib.explain import METHODS, heatmaps
from test_browser import app_url, browser  # noqa: F401
from test_browser import _no_exception, _page as new_page, _settle, _shot

NEW = ("smoothgrad", "integrated_gradients")
SMALL = {"smoothgrad": {"n_samples": 2}, "integrated_gradients": {"steps": 4}}

_page = functools.partial(new_page, height=1600, timeout_ms=60_000)


@pytest.fixture(scope="module")
def new_stores(demo_ws, demo_run):
    """A small heatmap store of each new method (removed afterwards: other pages' tests count stores), and the
    LRP β=0 store the Biomarkers page needs before it shows anything (the other pages' tests compute it too)."""
    heatmaps.compute_store(demo_ws, demo_run, "lrp", beta=0.0)
    stores = [heatmaps.compute_store(demo_ws, demo_run, m, **SMALL[m]) for m in NEW]
    yield stores
    for s in stores:
        shutil.rmtree(s.folder, ignore_errors=True)


def _offered(page, label: str, text: str) -> list[str]:
    """The options of the select box (or multiselect) ``label`` that contain ``text`` (typed in to filter:
    long lists only render the options in view)."""
    box = page.get_by_role("combobox", name=label, exact=True).first
    box.click(timeout=20_000)
    box.press("ControlOrMeta+a")  # replace what an earlier look typed
    box.press_sequentially(text)  # key by key: the list opens and filters as a user types
    options = page.get_by_role("option").filter(has_text=text)
    try:
        options.first.wait_for(timeout=10_000)
    except Exception:
        _shot(page, f"catalogue_missing_{label}")
        raise
    found = options.all_inner_texts()
    page.keyboard.press("Escape")
    return found


def _check(page, label: str, name: str, prepare=lambda: None) -> None:
    for method in NEW:
        shown = METHODS[method].label
        for attempt in range(3):  # a page that reruns (a region table computed inline) redraws its widgets
            try:
                prepare()
                found = _offered(page, label, shown)
                break
            except PlaywrightError:
                if attempt == 2:
                    raise
                page.keyboard.press("Escape")
                _settle(page)
        assert any(o.startswith(shown) for o in found), (name, shown)


def test_every_analysis_page_offers_the_new_methods(browser, app_url, demo_ws, demo_run, new_stores):
    page = _page(browser)
    # Heatmaps: the methods to compute
    page.goto(f"{app_url}/heatmaps?run={demo_run.id}")
    _settle(page)
    _no_exception(page)
    page.get_by_text("Compute heatmaps of this run").click()
    page.get_by_role("combobox", name="Method to compute", exact=True).wait_for()
    _check(page, "Method to compute", "heatmaps")
    _shot(page, "catalogue_heatmaps")
    # Atlas metrics and Biomarkers: the run's heatmap stores
    page.goto(f"{app_url}/atlas?run={demo_run.id}")
    _settle(page)
    _no_exception(page)
    _check(page, "Heatmaps", "atlas")
    _shot(page, "catalogue_atlas")
    page.goto(f"{app_url}/biomarker?run={demo_run.id}")
    _settle(page)
    _no_exception(page)

    def any_tab():
        page.get_by_role("tab", name="Any region × any measure").click()
        _settle(page)

    _check(page, "Heatmaps", "biomarker", any_tab)
    _shot(page, "catalogue_biomarker")
    # Evaluation: the methods to compare
    page.goto(f"{app_url}/evaluation?run={demo_run.id}")
    page.get_by_role("heading", name="Evaluating explanations").wait_for()
    _settle(page)
    _no_exception(page)
    _check(page, "Methods", "evaluation")
    _shot(page, "catalogue_evaluation")
    page.close()
