"""The Atlas metrics page in a real browser: the region table is computed by the page's background job, and every
plot renders — top regions with density estimates, gain with the identity line, fingerprints with the two most
different patients and their links to the heatmap viewer, overlap across β values (a missing β computed from the
page) and across the runs of a group, each method's top regions, the AD vs HC tests — and the CSV downloads.

The LRP β=0 and guided-backprop stores of the small demo run are computed first (``compute_store``, as the
Heatmaps page's job would); the region tables are not: the page computes them. Two copies of the demo run with a
group id stand in for retrainings (same checkpoint, so their top regions must overlap 100 %). Reuses the app
fixtures of ``test_browser.py``; screenshots go to ``tests/artifacts/atlas_*.png``.
"""

from __future__ import annotations

import functools

import io
import json
import shutil
import time
from urllib.parse import parse_qs, urlparse

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from lib.explain import heatmaps
from lib.data.templates import Grid
from test_browser import app_url, browser  # noqa: F401
from test_browser import _no_exception, _page as new_page, _settle as settle_script, _shot as shot

GROUP = "atlas-test-group"
COPIES = ("atlas-rep-1", "atlas-rep-2")


@pytest.fixture(scope="module")
def prepared(demo_ws, demo_run):
    """LRP β=0 and guided backprop stores, no cached region table, and a group of two copies of the run."""
    stores = {m: heatmaps.compute_store(demo_ws, demo_run, m, **p)
              for m, p in (("lrp", {"beta": 0.0}), ("guided_backprop", {}))}
    shutil.rmtree(demo_ws.cache_dir / "regions", ignore_errors=True)
    created = demo_run.config["created"]
    for i, rid in enumerate(COPIES):
        d = demo_ws.runs_dir / rid
        shutil.copytree(demo_run.dir, d)
        cfg = json.loads((d / "config.json").read_text())
        # older than the demo run, so that other pages still open the demo run by default
        cfg.update(id=rid, group=GROUP, created=created - 100 - i)
        (d / "config.json").write_text(json.dumps(cfg))
    yield stores
    for rid in COPIES:
        shutil.rmtree(demo_ws.runs_dir / rid, ignore_errors=True)


# --------------------------------------------------------------------------- small helpers (as in test_browser.py)
# tall enough that a whole view fits in one screenshot
_page = functools.partial(new_page, height=2400, timeout_ms=60_000)


def _settle(page) -> None:
    """Wait until the script has finished, nothing of the previous run is left and plotly has drawn."""
    settle_script(page)
    page.wait_for_function("() => [...document.querySelectorAll('[data-testid=stMain] .stPlotlyChart')]"
                           ".every(e => e.querySelector('.main-svg'))", timeout=30_000)


def _shot(page, name: str) -> None:
    shot(page, f"atlas_{name}")


def _main(page) -> str:
    return page.locator('[data-testid="stMain"]').inner_text()


def _tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()
    _settle(page)
    _no_exception(page)


def _plots(page) -> int:
    """Plotly charts drawn on the page."""
    return page.locator('[data-testid="stMain"] .stPlotlyChart:has(.main-svg)').count()


# --------------------------------------------------------------------------- the test
def test_atlas_page_every_plot(browser, app_url, demo_ws, demo_run, prepared, tmp_path):  # noqa: F811
    page = _page(browser)
    page.goto(f"{app_url}/atlas?run={demo_run.id}&betas=0,1")
    page.get_by_role("heading", name="Atlas metrics").wait_for()
    # no table yet: the page starts the region job and shows its progress, then the tabs
    page.get_by_role("tab", name="Top regions").wait_for(timeout=180_000)
    _settle(page)
    _no_exception(page)
    assert list((demo_ws.cache_dir / "regions").glob("*.parquet")), "the job wrote no table"
    page.get_by_text("Top 25 regions by AD mean relevance density").wait_for(timeout=30_000)
    text = _main(page)
    assert "★" in text, text[-3000:]   # the demo's ground truth marked
    assert "Ground truth:" in text
    assert _plots(page) == 1
    _shot(page, "top_density")

    # gain for true positives vs true negatives, with the identity line
    page.get_by_role("radio", name="Gain", exact=True).click()
    _settle(page)
    _no_exception(page)
    assert "gain 1" in _main(page) and _plots(page) == 1
    _shot(page, "gain")

    # fingerprints: the button picks the two most different confident patients (threshold lowered for the demo run)
    _tab(page, "Fingerprints")
    slider = page.get_by_role("slider").last
    slider.focus()
    page.keyboard.press("Home")
    _settle(page)
    page.get_by_role("button", name="Two most different confident AD patients").click()
    _settle(page)
    _no_exception(page)
    picked = page.get_by_text("cosine distance").first.inner_text()
    preds = demo_run.predictions()
    test_ad = preds[(preds["split"] == "test") & (preds["diagnosis"] == "AD")]["scan_id"].tolist()
    named = [s for s in test_ad if s in picked]
    assert len(named) == 2, picked
    links = page.locator('[data-testid="stMarkdownContainer"] a[href*="heatmaps?"]')
    page.mouse.move(5, 5)   # no tooltip over the figure
    time.sleep(0.5)
    _shot(page, "fingerprints")
    hrefs = [links.nth(i).get_attribute("href") for i in range(links.count())]
    assert len(hrefs) == 2, hrefs
    for href in hrefs:
        q = {k: v[0] for k, v in parse_qs(urlparse(href).query).items()}
        assert urlparse(href).path.endswith("heatmaps") and q["run"] == demo_run.id and q["view"] == "Individual"
        assert q["scan"] in named and q["store"] == prepared["lrp"].folder.name
    assert _plots(page) == 1
    # following a link opens that scan in the heatmap viewer's individual view
    viewer_page = _page(browser)
    viewer_page.goto(f"{app_url}/{hrefs[0]}")
    viewer_page.get_by_role("heading", name="Heatmaps").wait_for()
    viewer_page.get_by_text("Scan (highest AD score first)").wait_for(timeout=120_000)
    _settle(viewer_page)
    _no_exception(viewer_page)
    shown = viewer_page.get_by_role("combobox", name="Scan (highest AD score first)").input_value() or \
        viewer_page.locator('[data-testid="stSelectbox"]', has_text="Scan (highest AD score first)").inner_text()
    first = parse_qs(urlparse(hrefs[0]).query)["scan"][0]
    assert first in shown, shown
    _shot(viewer_page, "link_to_heatmap_viewer")
    viewer_page.close()

    # robustness across β: β = 1 is missing, computed from the page (heatmaps and region metrics)
    _tab(page, "Robustness")
    assert "Missing: β = 1" in _main(page)
    page.get_by_role("button", name="Compute the missing β values (1)").click()
    page.get_by_text("Overlap of the top 10 regions between β values").wait_for(timeout=300_000)
    _settle(page)
    _no_exception(page)
    assert heatmaps.find_store(demo_ws, demo_run, "lrp", beta=1.0) is not None
    assert "was trained alone" in _main(page)
    _shot(page, "robustness_beta")

    # each method's top regions (Rieke et al. Table 1): guided backprop's table is computed from the page
    _tab(page, "Methods")
    page.get_by_role("button", name="Compute region metrics of the other").click()
    # static tables that wrap: every method's column is on screen at 1400 px, none hidden to the right
    gb = page.locator('[data-testid="stTable"] th:has-text("Guided backprop")').first
    gb.wait_for(timeout=180_000)
    _settle(page)
    _no_exception(page)
    headers = [h.strip() for h in page.locator('[data-testid="stTable"] th').all_text_contents()]
    cells = [c.strip() for c in page.locator('[data-testid="stTable"] td').all_text_contents()]
    assert headers.count("LRP β=0") == 2 and headers.count("Guided backprop |·|") == 2, headers
    assert sum(c.endswith("%)") for c in cells) >= 4 * 2 * 2, cells
    box = gb.bounding_box()
    assert gb.is_visible() and box["x"] + box["width"] <= 1400, box
    _shot(page, "methods")

    # AD vs HC per region with FDR
    _tab(page, "AD vs HC tests")
    assert "regions" in _main(page) and "false discovery rate" in _main(page) and _plots(page) == 1
    _shot(page, "tests")

    # the tidy table as CSV
    _tab(page, "Table")
    with page.expect_download() as dl:
        page.get_by_role("button", name="Download CSV").click()
    csv = pd.read_csv(io.BytesIO(open(dl.value.path(), "rb").read()), dtype={"scan_id": str})
    n_test = int((preds["split"] == "test").sum())
    assert csv["scan_id"].nunique() == n_test and len(csv) == n_test * csv["region"].nunique()
    assert {"sum", "density", "fraction", "gain", "diagnosis", "outcome", "ad_score"} <= set(csv.columns)
    _shot(page, "table")

    # your own atlas: uploaded, checked, kept in the workspace and used
    grid = Grid(demo_run.grid.resolution)
    labels = np.zeros(grid.shape, np.int16)
    labels[18:30, 30:45, 20:35] = 1
    labels[35:47, 30:45, 20:35] = 2
    nib.save(nib.Nifti1Image(labels, grid.affine), tmp_path / "boxes.nii.gz")
    pd.DataFrame({"index": [1, 2], "name": ["Right_Box", "Left_Box"]}).to_csv(tmp_path / "boxes.csv", index=False)
    page.get_by_text("Add your own atlas").click()
    inputs = page.locator('[data-testid="stFileUploader"] input[type="file"]')
    inputs.nth(0).set_input_files(str(tmp_path / "boxes.nii.gz"))
    inputs.nth(1).set_input_files(str(tmp_path / "boxes.csv"))
    name = page.get_by_label("Atlas name")
    name.fill("boxes")
    name.press("Enter")
    _settle(page)
    page.get_by_role("button", name="Check and add").click()
    page.get_by_text("Atlas boxes added: 2 regions").wait_for()
    assert (demo_ws.root / "atlases" / "boxes" / "labels.nii.gz").exists()
    # selected at once: its region table is computed by the page's job
    page.get_by_role("tab", name="Top regions").wait_for(timeout=180_000)
    page.get_by_text("boxes, 2 regions").first.wait_for(timeout=180_000)  # the job finished and the page reran
    _settle(page)
    assert page.get_by_role("combobox", name="Atlas", exact=True).input_value() in ("", "boxes (yours)") and \
        "boxes, 2 regions" in _main(page)
    _tab(page, "Top regions")
    page.get_by_text("Top 2 regions by AD mean").wait_for(timeout=30_000)
    assert "Left_Box" in _main(page) and _plots(page) == 1
    _shot(page, "own_atlas")
    page.close()

    # a run of a group: the mean pairwise overlap across its runs (copies: identical rankings, 100 %)
    page = _page(browser)
    page.goto(f"{app_url}/atlas?run={COPIES[0]}&tab=Robustness&betas=0,1")
    page.get_by_text("Across retrainings").wait_for(timeout=120_000)
    page.get_by_text(f"between runs of group {GROUP}").wait_for(timeout=60_000)
    _settle(page)
    _no_exception(page)
    values = page.get_by_test_id("stMetricValue").all_inner_texts()
    assert values == ["100 %", "100 %", "100 %"], values
    assert _plots(page) == 2
    _shot(page, "robustness_runs")
    page.close()
