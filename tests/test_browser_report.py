"""The run report in headless Chromium with every network request refused: it must render whole from the
one file (plotly charts drawn, slice images decoded, every section present)."""

from __future__ import annotations

import shutil

import pytest

from lib import report
from test_report import analysed, built  # noqa: F401  (the fixture run, analysed, and its report)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    exe = shutil.which("chromium")
    assert exe, "Debian's chromium is not installed: run the README's test command (it installs it)"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        yield b
        b.close()


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
