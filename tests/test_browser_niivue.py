"""The 3D viewer (NiiVue) in headless Chromium: a demo scan opens with its map drawn over it (read from the
canvas pixels), the opacity set in the viewer hides the map, a click on a slice moves the page's crosshair
(its MNI read-out changes) and the atlas region under the cursor is shown.

Chromium draws WebGL2 in software (SwiftShader). Needs the viewer built by ``./setup.sh``. Screenshots go to
``tests/artifacts/niivue_*.png``.
"""

from __future__ import annotations

import functools
import io
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from playwright.sync_api import expect

import components.niivue as niivue
from lib.explain import heatmaps
from lib.views import overview
from test_browser import ARTIFACTS, _no_exception, _settle, _shot, app_url, browser  # noqa: F401
from test_browser import _page as new_page

pytestmark = pytest.mark.skipif(not niivue.available(), reason="the 3D viewer is not built: run ./setup.sh")

_page = functools.partial(new_page, height=1800, timeout_ms=60_000)
FRAME = 'iframe[title*="niivue_viewer"]'


def _frame(page):
    return page.frame_locator(FRAME).first


def _wait_loaded(page, with_map: bool = True) -> None:
    """Until the viewer has loaded its volumes (the map's key is non-empty when a map is shown)."""
    page.locator(FRAME).first.wait_for(timeout=120_000)
    body = _frame(page).locator("body[data-loaded]")
    body.wait_for(timeout=120_000)
    if with_map:
        keys = body.get_attribute("data-loaded").split("|")
        assert keys[1], f"no map loaded: {keys}"


def _canvas_pixels(page, name: str) -> np.ndarray:
    png = _frame(page).locator("canvas").screenshot()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / f"niivue_{name}_canvas.png").write_bytes(png)
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def _warm(rgb: np.ndarray) -> int:
    """Pixels in the map's colours (red, orange, yellow): the anatomy is grey and the background near black."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return int(((r > 150) & (r - b > 100) & (b < 0.5 * r)).sum())


def _readout(page) -> str:
    return page.get_by_text(re.compile(r"^MNI \(")).first.inner_text()


def _in_slice(page, fx: float, fy: float) -> dict:
    """A point of the canvas at fractions ``fx, fy`` of the first slice tile (not the 3D rendering)."""
    left, top, width, height = _frame(page).locator("canvas").evaluate(
        "() => { const nv = window.niivue; const s = nv.screenSlices.find(t => t.axCorSag !== 4);"
        " const d = nv.uiData.dpr || 1; const [l, t, w, h] = s.leftTopWidthHeight;"
        " return [l / d, t / d, w / d, h / d]; }")
    return {"x": left + fx * width, "y": top + fy * height}


def _set_range(page, element_id: str, value: int) -> None:
    _frame(page).locator(f"#{element_id}").evaluate(
        "(el, v) => { el.value = String(v); el.dispatchEvent(new Event('input', {bubbles: true})); }", value)


def _grey(rgb: np.ndarray) -> int:
    """Pixels of the anatomy left uncovered (grey, not the dark background)."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return int(((abs(r - g) < 12) & (abs(g - b) < 12) & (r > 70)).sum())


def _check_viewer(page, name: str, click=(0.35, 0.4)) -> tuple[str, str]:
    """The map is drawn over the anatomy, not over all of it; opacity 0 hides it; a click (at fractions
    ``click`` of the first slice) moves the page's crosshair; the hover names a region."""
    _wait_loaded(page)
    page.wait_for_timeout(1500)   # a few frames of software WebGL
    rgb = _canvas_pixels(page, f"{name}_map")
    shown = _warm(rgb)
    assert shown > 300, f"the map is not drawn over the anatomy ({shown} map-coloured pixels)"
    assert _grey(rgb) > shown / 4, "the map covers the whole anatomy (values below its scale drawn)"
    _set_range(page, "opa", 0)
    page.wait_for_timeout(800)
    hidden = _warm(_canvas_pixels(page, f"{name}_opacity0"))
    assert hidden < shown / 10, f"opacity 0 still shows the map ({hidden} of {shown} pixels)"
    _set_range(page, "opa", 80)
    before = _readout(page)
    _frame(page).locator("canvas").click(position=_in_slice(page, *click))   # off the crosshair
    page.wait_for_function(
        "(before) => [...document.querySelectorAll('p')].some(p => p.innerText.startsWith('MNI (')"
        " && p.innerText !== before)", arg=before, timeout=60_000)
    _settle(page)
    after = _readout(page)
    assert after != before and "region" in after
    # the viewer follows the page's crosshair after the rerun, and names what lies under the cursor
    _wait_loaded(page)
    _frame(page).locator("canvas").hover(position=_in_slice(page, 0.5, 0.5))
    expect(_frame(page).locator("#hover")).to_have_text(
        re.compile(r"^Under the cursor: MNI \(-?\d+, -?\d+, -?\d+\) mm · value .+ · region \S"))
    _no_exception(page)
    _shot(page, f"niivue_{name}")
    return before, after


def test_overview_scan_with_ground_truth_map(browser, app_url, demo_ws):
    cohort = pd.read_csv(demo_ws.cohort_csv)
    scan = next(s for s in cohort["scan_id"] if (overview.ground_truth(demo_ws, s) or {}).get("severity", 0) > 0.5)
    page = _page(browser)
    page.goto(f"{app_url}/?scan={scan}")   # a scan with atrophy: its ground-truth map is the overlay
    page.get_by_role("heading", name="Dataset overview").wait_for()
    _settle(page)
    page.get_by_role("tab", name="Scan viewer").click()
    _settle(page)
    before, after = _check_viewer(page, "overview")
    # the sliders moved with the click: the slice images show the same voxel when the viewer is switched off
    page.get_by_text("3D viewer (NiiVue)").click()
    _settle(page)
    assert _readout(page) == after
    assert page.locator(FRAME).count() == 0
    _shot(page, "niivue_overview_png_fallback")
    page.close()


@pytest.fixture(scope="module")
def lrp_store(demo_ws, demo_run):
    store = heatmaps.compute_store(demo_ws, demo_run, "lrp", beta=0.0)
    return store


def test_heatmaps_scan_and_group_maps(browser, app_url, demo_ws, demo_run, lrp_store):
    page = _page(browser)
    page.goto(f"{app_url}/heatmaps?run={demo_run.id}&view=Individual")
    page.get_by_role("heading", name="Heatmaps").first.wait_for()
    page.get_by_text(re.compile(r"^MNI \(")).first.wait_for(timeout=180_000)
    _settle(page)
    _no_exception(page)
    _check_viewer(page, "heatmaps_scan")
    page.get_by_role("radio", name="Groups", exact=True).click()
    _settle(page)
    _check_viewer(page, "heatmaps_group", click=(0.6, 0.55))   # the crosshair is shared: click elsewhere
    page.close()
