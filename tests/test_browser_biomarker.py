"""The Biomarkers page in a real browser: the paper's Fig 9 (LRP and guided backprop side by side), the r-by-β
table and the region × measure table render for the demo run, and clicking a point opens that scan in the
heatmap viewer.

Starts ``streamlit run app.py`` on the small demo workspace and drives Debian's Chromium with Playwright, like
``test_browser.py``. The 3-epoch fixture model calls every scan HC (all AD scores just under 0.5), which
leaves Fig 9 without true or false positives; the page is therefore shown for a copy of the run (same
checkpoint, so the same heatmap stores) whose predictions are thresholded at the median AD score. Screenshots
go to ``tests/artifacts/``.
"""

from __future__ import annotations

import functools

import shutil
import time

import numpy as np
import pandas as pd
import pytest

from test_browser import _no_exception, _settle, _shot, _start_app, _stop_app, browser  # noqa: F401
from test_browser import _page as new_page

RUN_COPY = "fixture-run-median"


@pytest.fixture(scope="module")
def median_run(demo_ws, demo_run):
    """A copy of the fixture run with predictions thresholded at the median AD score, and the heatmap stores
    the page reads (LRP β = 0 and 1, guided backprop) computed for its checkpoint."""
    from lib.core import cache
    from lib.explain import heatmaps
    from lib.learn.metrics import outcome
    from lib.learn.training import load_run

    for method, params in (("lrp", {"beta": 0.0}), ("lrp", {"beta": 1.0}), ("guided_backprop", {})):
        heatmaps.compute_store(demo_ws, demo_run, method, **params)
    dest = demo_ws.runs_dir / RUN_COPY
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(demo_run.dir, dest)
    preds = pd.read_csv(dest / "predictions.csv", dtype={"scan_id": str, "subject_id": str})
    pred_ad = preds["ad_score"].to_numpy() >= np.median(preds["ad_score"])
    preds["predicted"] = np.where(pred_ad, "AD", "HC")
    preds["outcome"] = outcome(preds["diagnosis"].to_numpy() == "AD", pred_ad)
    preds.to_csv(dest / "predictions.csv", index=False)
    cache.seal(dest / "predictions.csv")  # as the predict job does (the copied marker is of the old file)
    run = load_run(demo_ws, RUN_COPY)
    yield run
    shutil.rmtree(dest, ignore_errors=True)


@pytest.fixture(scope="module")
def app_url(demo_ws, median_run):
    proc, url = _start_app(demo_ws.root)
    yield url
    _stop_app(proc)


# tall enough that a whole view fits in one screenshot
_page = functools.partial(new_page, height=1500, timeout_ms=30_000)


def _choose(page, label: str, option: str) -> None:
    """Pick ``option`` in the first select box whose label is ``label``."""
    page.get_by_test_id("stSelectbox").filter(has_text=label).first.click()
    page.get_by_role("option", name=option).click()
    _settle(page)


def _click_point(page, chart, trace: int = 0, point: int = 0) -> None:
    """Click one marker of a plotly chart where it is drawn (plotly reads clicks from its drag layer on top)."""
    marker = chart.locator(".scatterlayer .trace").nth(trace).locator("path.point").nth(point)
    marker.wait_for(state="attached")
    box = marker.bounding_box()
    assert box is not None, "the marker is not drawn"
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    time.sleep(0.3)
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)


def test_biomarker_page_fig9_beta_table_regions_and_link_to_viewer(browser, app_url, demo_ws, median_run):
    from lib.analysis import biomarker
    from lib.explain import heatmaps
    from lib.data.scans import load_cohort

    # the page computes the region tables itself (small cohort): start without them
    shutil.rmtree(demo_ws.cache_dir / "regions", ignore_errors=True)
    preds = median_run.predictions()
    page = _page(browser)
    page.goto(f"{app_url}/biomarker?run={RUN_COPY}")
    page.get_by_role("heading", name="Biomarkers").wait_for()
    _settle(page)
    _no_exception(page)
    page.get_by_text("Guided backprop is read as |gradient|").wait_for(timeout=60_000)
    _settle(page)
    _no_exception(page)
    _shot(page, "biomarker_test_split")
    # the small cohort's test split has few true positives: every scan of the run
    _choose(page, "Scans", f"all scans ({len(preds)})")
    _no_exception(page)
    _shot(page, "biomarker_fig9")
    charts = page.get_by_test_id("stPlotlyChart").filter(visible=True)
    assert charts.count() == 2    # LRP and guided backprop (the other tabs' charts are hidden)
    # what the figure reports is what the library computes for the test split's true positives
    store = next(s for s in heatmaps.list_stores(demo_ws, median_run)
                 if s.params.get("method") == "lrp" and s.params.get("beta") == 0.0)
    volume = biomarker.hippocampal_volumes(demo_ws, load_cohort(demo_ws))
    _, st = biomarker.hippocampus_analysis(demo_ws, store, preds, volume, split="all", n_permutations=10_000,
                                           n_boot=10_000)
    n_tp = int((preds["outcome"] == "TP").sum())
    assert st.loc["TP", "n"] == n_tp >= 3
    title = charts.first.locator(".gtitle").text_content()
    assert title.startswith("LRP β=0 · TP: r = ") and biomarker.format_r(st.loc["TP", "r"]) in title
    assert charts.first.locator(".legendtext").first.text_content() == f"TP (n = {n_tp})"

    # a click on a true positive opens that scan in the heatmap viewer (a new tab)
    tp_ids = set(preds.loc[preds["outcome"] == "TP", "scan_id"])
    _click_point(page, charts.first, trace=0, point=0)
    link = page.get_by_role("link", name="Open in the heatmap viewer")
    link.wait_for(timeout=30_000)
    _settle(page)
    _no_exception(page)
    href = link.get_attribute("href")
    assert href.startswith("heatmaps?") and "view=Individual" in href and f"store={store.folder.name}" in href
    scan = next(s for s in tp_ids if f"scan={s}" in href)
    assert page.get_by_text(f"{scan} · TP").count() >= 1
    _shot(page, "biomarker_point_clicked")
    with page.context.expect_page() as new_tab:
        link.click()
    viewer = new_tab.value
    viewer.set_default_timeout(60_000)
    viewer.get_by_role("heading", name="Heatmaps").wait_for()
    _settle(viewer)
    _no_exception(viewer)
    viewer.get_by_text("Scan (highest AD score first)").wait_for()
    _settle(viewer)
    _shot(viewer, "biomarker_opened_in_viewer")
    chosen = viewer.get_by_role("combobox", name="Scan (highest AD score first)").input_value()
    assert chosen.startswith(f"{scan} · AD score")      # the scan shown in the Individual view
    viewer.close()

    # r across β: one row per LRP store, and a button for the paper's missing β values
    page.get_by_role("tab", name="r across β").click()
    page.get_by_text("The paper: the correlation weakens as β grows").wait_for()
    _settle(page)
    _no_exception(page)
    assert page.get_by_role("button", name="Compute LRP β = 0.25, 0.5, 0.75").count() == 1
    _shot(page, "biomarker_beta")

    # any region × any measure: MMSE against every region, partial correlation, FDR across regions
    page.get_by_role("tab", name="Any region × any measure").click()
    page.get_by_text("Every region").wait_for()
    _settle(page)
    _no_exception(page)
    assert page.get_by_text("Partial correlation controlling for age and intracranial volume").count() == 1
    page.get_by_text("Merge left and right").click()
    _settle(page)
    _no_exception(page)
    from playwright.sync_api import expect

    expect(page.get_by_role("combobox", name="Region", exact=True)).to_have_value("Hippocampus", timeout=30_000)
    _settle(page)
    _shot(page, "biomarker_any_region")
    page.close()
