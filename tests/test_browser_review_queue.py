"""The review queue in a real browser (no accounts): the scan's map beside the anatomy with blinding kept, the
reviewer's typed name kept across a reload, and a review's link reopening the tab and scan it was written on."""

from __future__ import annotations

import pytest

from lib.explain import heatmaps
from lib.reviews import ReviewStore
from test_browser import _no_exception, _page, _settle, _shot, _start_app, _stop_app, browser  # noqa: F401


@pytest.fixture(scope="module")
def open_app(demo_ws, demo_run, tmp_path_factory):
    heatmaps.compute_store(demo_ws, demo_run, "lrp", beta=0.0)
    url = f"sqlite:///{tmp_path_factory.mktemp('queue') / 'reviews.db'}"
    mp = pytest.MonkeyPatch()
    mp.setenv("RELEVANCE_ATLAS_DB", url)
    try:
        proc, app_url = _start_app(demo_ws.root)
    finally:
        mp.undo()
    yield app_url, ReviewStore(url, workspace=demo_ws.name)
    _stop_app(proc)


def test_queue_shows_the_map_keeps_the_name_and_links_back_to_the_scan_viewer(browser, open_app, demo_run):
    app_url, store = open_app
    page = _page(browser, height=1400, timeout_ms=60_000)
    page.goto(f"{app_url}/reviews")
    page.get_by_role("heading", name="Reviews", exact=True).wait_for()
    page.get_by_role("textbox", name="Your name").fill("erin")
    page.get_by_role("textbox", name="Your name").press("Enter")
    _settle(page)
    page.reload()   # the name survives a reload of the page (it rides in the address)
    page.get_by_role("heading", name="Reviews", exact=True).wait_for()
    _settle(page)
    assert page.get_by_role("textbox", name="Your name").input_value() == "erin"
    page.get_by_role("tab", name="Review queue").click()
    page.get_by_text("Map over the scan").first.wait_for()
    _settle(page)
    _no_exception(page)
    queue = page.locator('[role="tabpanel"]:visible')
    # other tests' runs may be newer: pick this run's map by name, as a reviewer would
    queue.get_by_test_id("stSelectbox").filter(has_text="Map over the scan").first.click()
    page.get_by_role("option", name=f"LRP β=0 of run {demo_run.id}", exact=True).click()
    _settle(page)
    queue.get_by_text(f"LRP β=0 of run {demo_run.id} over the scan").wait_for()
    assert queue.get_by_text("Blinded: diagnosis, prediction and score are hidden").is_visible()
    assert queue.locator('[data-testid="stDataFrame"]').count() == 0
    shown = queue.locator("code").filter(has_text="_ses-").first.inner_text()
    _shot(page, "reviews_queue_map")
    queue.get_by_text("plausible", exact=True).click()
    _settle(page)
    page.locator('[data-testid="stMain"]').get_by_role("button", name="Save and next").click()
    page.get_by_text(f"Rated {shown}.").wait_for()
    review = store.find(author="erin", target={"kind": "scan", "scan_id": shown})[0]
    assert review.blinded and review.settings["tab"] == "Scan viewer" and review.settings["method"] == "lrp"
    assert "run" not in review.settings   # blinded: no predictions' run recorded

    page.get_by_role("tab", name="All reviews").click()
    page.get_by_text("Open the view this was written on").first.click()
    page.get_by_role("heading", name="Dataset overview").wait_for()
    _settle(page)
    _no_exception(page)
    assert page.get_by_role("tab", name="Scan viewer").get_attribute("aria-selected") == "true"
    assert page.get_by_role("textbox", name="Your name").input_value() == "erin"
    _shot(page, "reviews_link_scan_viewer")
    page.close()
