"""The run report in headless Chromium with every network request refused: it must render whole from the
one file (plotly charts drawn, slice images decoded, every section present)."""

from __future__ import annotations

import shutil
import time
import zipfile

import pytest

from lib.views import report
from test_browser import _no_exception, _settle, _start_app, _stop_app, browser  # noqa: F401
from test_report import analysed, built  # noqa: F401  (the fixture run, analysed, and its report)


def test_report_renders_offline(built, browser, tmp_path):
    _, _, out = built
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    refused = []

    def route(r):
        if r.request.url.startswith(("file://", "data:")):
            r.continue_()
        else:
            refused.append(r.request.url)
            r.abort()

    context.route("**/*", route)
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(out.resolve().as_uri(), wait_until="load")
    page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length > 0", timeout=30_000)
    sections = page.eval_on_selector_all("section[data-section]", "els => els.map(e => e.dataset.section)")
    assert sections == list(report.SECTIONS)
    charts = page.eval_on_selector_all("figure .plotly-graph-div", "els => els.length")
    drawn = page.eval_on_selector_all("figure .plotly-graph-div .main-svg", "els => els.length")
    assert charts >= 3 and drawn >= charts   # every chart drew its SVG (plotly.js ran from the file)
    traces = page.eval_on_selector_all("figure .plotly-graph-div", "els => els.map(e => e.data.length)")
    assert all(n > 0 for n in traces)
    sizes = page.eval_on_selector_all("figure img", "els => els.map(e => [e.complete, e.naturalWidth])")
    assert sizes and all(ok and w > 0 for ok, w in sizes)   # slices decoded from their data URIs
    assert page.inner_text("#methods-paragraph").startswith("We trained the")
    page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    assert not refused, refused
    assert not errors, errors
    context.close()



def test_report_button_builds_and_offers_the_report(analysed, browser, tmp_path):
    """On an analysis page: Report → Build the report runs the background job; when it is done the page
    offers the HTML and the PDF for download."""
    ws, run = analysed
    key = report.content_key(ws, run)
    shutil.rmtree(report.cache_folder(ws, key), ignore_errors=True)   # the page builds it, not an earlier test
    proc, url = _start_app(ws.root)
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1200})
        page.set_default_timeout(60_000)
        page.goto(f"{url}/evaluation?run={run.id}")
        page.get_by_role("heading", name="Evaluating explanations").wait_for()
        _settle(page)
        page.get_by_role("button", name="Report").first.click()
        page.get_by_role("button", name="Build the report").click()
        start = time.time()   # the job runs in its own process
        while (files := report.cached(ws, run, key)) is None or "pdf" not in files:
            assert time.time() - start < 300, "the report job did not finish"
            time.sleep(2)
        page.reload()
        _settle(page)
        page.get_by_role("button", name="Report").first.click()
        with page.expect_download() as dl:
            page.get_by_role("button", name="PDF").click()
        assert dl.value.path().read_bytes().startswith(b"%PDF")
        with page.expect_download() as dl:
            page.get_by_role("button", name="HTML").click()
        text = dl.value.path().read_text()
        assert f"Run report · {run.id}" in text and "data-section='reviews'" in text
        with page.expect_download() as dl:
            page.get_by_role("button", name="Figures").click()
        names = zipfile.ZipFile(dl.value.path()).namelist()
        assert "learning_curves.svg" in names and any(n.startswith("group_maps_") and n.endswith(".png") for n in names)
        _no_exception(page)
        page.screenshot(path=str(tmp_path / "button.png"))
        page.close()
    finally:
        _stop_app(proc)
