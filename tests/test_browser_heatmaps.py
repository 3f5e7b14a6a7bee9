"""The Heatmaps page in a real browser: every group of LRP β=0 and guided backprop renders, the crosshair
moves every panel and the region name follows, comparisons, individual maps, the distance table and the
exports work.

The heatmap stores of the small demo run are computed first (``compute_store``, as the page's background
job would); the group means are averaged by the page itself from an empty cache. Reuses the app start-up
and Playwright helpers of ``test_browser.py``; screenshots go to ``tests/artifacts/heatmaps_*.png``.
"""

from __future__ import annotations

import functools

import gzip
import re
import shutil
import time

import nibabel as nib
import numpy as np
import pytest

from lib.explain import heatmaps
from lib.views import viewer
from lib.analysis.groups import GROUPS
from test_browser import _no_exception, _settle, _shot, app_url, browser  # noqa: F401
from test_browser import _page as new_page

METHODS = {"LRP β=0": ("lrp", {"beta": 0.0}), "Guided backprop": ("guided_backprop", {})}


@pytest.fixture(scope="module")
def stores(demo_ws, demo_run):
    out = {label: heatmaps.compute_store(demo_ws, demo_run, m, **p) for label, (m, p) in METHODS.items()}
    for s in out.values():  # the page averages the groups itself
        shutil.rmtree(s.folder / "group_means", ignore_errors=True)
    return out


# tall enough that a whole view fits in one screenshot
_page = functools.partial(new_page, height=2300, timeout_ms=60_000)


def _main(page) -> str:
    return page.locator('[data-testid="stMain"]').inner_text()


def _choose(page, label: str, option) -> None:
    """Pick ``option`` in the selectbox labelled ``label``."""
    box = page.get_by_role("combobox", name=label, exact=True)
    box.click()
    if isinstance(option, str):   # long lists only render the options in view: filter first
        box.fill(option)
    page.get_by_role("option", name=option).first.click()
    _settle(page)


def _readout(page) -> str:
    return page.get_by_text(re.compile(r"^MNI \(")).first.inner_text()


def _wait_readout_change(page, before: str) -> str:
    page.wait_for_function(
        "(before) => [...document.querySelectorAll('p')].some(p => p.innerText.startsWith('MNI (')"
        " && p.innerText !== before)", arg=before, timeout=30_000)
    return _readout(page)


def _press(page, slider: int, key: str, times: int) -> None:
    handle = page.get_by_role("slider").nth(slider)
    handle.focus()
    for _ in range(times):
        page.keyboard.press(key)
        time.sleep(0.05)


def test_every_group_of_both_methods_and_a_moving_crosshair(browser, app_url, demo_ws, demo_run, stores):
    preds = demo_run.predictions()
    counts = viewer.selection(preds, "all")
    n = {g: int(((counts["diagnosis"] == g) if g in ("AD", "HC") else (counts["outcome"] == g)).sum())
         for g in GROUPS}
    page = _page(browser)
    page.goto(f"{app_url}/heatmaps?run={demo_run.id}")
    page.get_by_role("heading", name="Heatmaps").first.wait_for()
    page.get_by_text(re.compile(r"^MNI \(")).first.wait_for(timeout=120_000)
    _settle(page)
    _no_exception(page)
    _choose(page, "Scans", f"all scans ({len(preds)})")
    for label in METHODS:
        _choose(page, "Method", label)
        for g in GROUPS:
            page.get_by_role("radio", name=f"{g} · n = {n[g]}", exact=True).click()
            _settle(page)
            _no_exception(page)
            text = _main(page)
            if n[g]:   # the map, its read-out and its colour scale
                assert "MNI (" in text and "50th percentile of the average AD map" in text, g
                assert page.get_by_test_id("stImage").count() >= 3
            else:      # explained, not an error
                assert f"{g} is empty (all scans)" in text, g
            _shot(page, f"heatmaps_{METHODS[label][0]}_{g}")
    # the gallery lists all six groups with their counts
    for g in GROUPS:
        assert f"{g} · n = {n[g]}" in _main(page)

    # the crosshair: the z slider moves the slices, the MNI coordinate and the region name
    page.get_by_role("radio", name=f"AD · n = {n['AD']}", exact=True).click()
    _settle(page)
    before = _readout(page)
    regions = {before.split("region")[-1].strip()}
    for _ in range(6):
        _press(page, 2, "ArrowUp", 3)
        after = _wait_readout_change(page, before)
        regions.add(after.split("region")[-1].strip())
        before = after
        if len(regions) > 1:
            break
    assert len(regions) > 1, f"the region name never changed: {regions}"
    _settle(page)
    # jumping to a region puts the crosshair inside it
    _choose(page, "Go to region", "Right Hippocampus")
    assert _readout(page).endswith("region Right Hippocampus")
    page.get_by_text("Atlas outlines").click()
    _settle(page)
    _no_exception(page)
    _shot(page, "heatmaps_crosshair_outlines")
    # MNI coordinates typed in are found again on the grid (3 mm voxels: within 1.5 mm)
    box = page.get_by_label("Go to MNI (x, y, z mm)")
    box.fill("-24, -21, -18")
    box.press("Enter")
    _settle(page)
    x, y, z = (float(v) for v in re.match(r"MNI \((-?\d+), (-?\d+), (-?\d+)\)", _readout(page)).groups())
    assert abs(x + 24) <= 1.5 and abs(y + 21) <= 1.5 and abs(z + 18) <= 1.5

    # exports of the current group map: a PNG and a NIfTI on the run's grid
    with page.expect_download() as dl:
        page.get_by_role("button", name="PNG of this view").click()
    assert dl.value.path().read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with page.expect_download() as dl:
        page.get_by_role("button", name="NIfTI of this map").click()
    img = nib.Nifti1Image.from_bytes(gzip.decompress(dl.value.path().read_bytes()))
    assert img.shape == demo_run.grid.shape and np.allclose(img.affine, demo_run.grid.affine)
    page.close()


def test_compare_individual_and_distances(browser, app_url, demo_ws, demo_run, stores):
    page = _page(browser)
    page.goto(f"{app_url}/heatmaps?run={demo_run.id}")
    page.get_by_text(re.compile(r"^MNI \(")).first.wait_for(timeout=120_000)
    _settle(page)
    _choose(page, "Scans", f"all scans ({len(demo_run.predictions())})")

    page.get_by_role("radio", name="Compare", exact=True).click()
    _settle(page)
    _choose(page, "A", re.compile(r"^AD · n ="))
    _choose(page, "B", re.compile(r"^HC · n ="))
    page.get_by_text("Difference AD − HC").wait_for()
    _no_exception(page)
    _shot(page, "heatmaps_compare_groups")
    page.get_by_text("two methods").click()
    page.get_by_text("Guided backprop · AD").first.wait_for(timeout=60_000)
    _settle(page)
    _no_exception(page)
    assert "LRP β=0 · AD" in _main(page) and "Guided backprop · AD" in _main(page)
    _shot(page, "heatmaps_compare_methods")

    page.get_by_role("radio", name="Individual", exact=True).click()
    _settle(page)
    _no_exception(page)
    text = _main(page)
    assert "AD score" in text and "Regions with the most relevance" in text and "Ground-truth atrophy" in text
    first = re.search(r"Scan 1 of (\d+) in AD", text)
    assert first, text[:2000]
    _shot(page, "heatmaps_individual")
    page.get_by_role("button", name="Next ▶").click()
    page.get_by_text(f"Scan 2 of {first.group(1)} in AD").wait_for()
    _settle(page)
    _no_exception(page)
    page.get_by_role("button", name="◀ Previous").click()
    page.get_by_text(f"Scan 1 of {first.group(1)} in AD").wait_for()

    page.get_by_role("radio", name="Distances", exact=True).click()
    page.get_by_text("Euclidean distance between the methods' average maps").wait_for()
    _settle(page)
    _no_exception(page)
    grid = page.get_by_test_id("stDataFrame").first
    assert grid.is_visible()
    _shot(page, "heatmaps_distances")

    # a link to one scan (as the Atlas metrics page and the review panel make them) opens that scan's map
    preds = demo_run.predictions()
    hc = preds.loc[preds["diagnosis"] == "HC", "scan_id"].iloc[-1]
    page.goto(f"{app_url}/heatmaps?run={demo_run.id}&view=Individual&split=all&scan={hc}&slices=30,40,31")
    page.get_by_text("Regions with the most relevance", exact=True).wait_for(timeout=120_000)
    _settle(page)
    _no_exception(page)
    text = _main(page)
    assert f"Reviews of scan {hc}" in text and "voxel (30, 40, 31)" in text
    assert page.get_by_role("combobox", name="Scans of group").input_value().startswith("HC")
    page.close()
