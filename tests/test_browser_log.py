"""A walk through every page of the dashboard leaves a clean server log: no traceback (Arrow's
serialisation fallback logs one) and no deprecation warning of Streamlit's API.

Reuses the app start-up and Playwright helpers of ``test_browser.py``; the server's output is read while
it runs, so a long log never blocks it.
"""

from __future__ import annotations

import threading

import pytest

from lib.explain import heatmaps
from test_browser import _no_exception, _page, _settle, _shot, _start_app, _stop_app, browser  # noqa: F401

PAGES = {"": "Dataset overview", "cohort": "Cohort & validation", "training": "Training", "heatmaps": "Heatmaps",
         "atlas": "Atlas metrics", "biomarker": "Biomarkers", "evaluation": "Evaluating explanations",
         "jobs": "Jobs", "reviews": "Reviews"}


@pytest.fixture(scope="module")
def logged_app(demo_ws, demo_run):
    heatmaps.compute_store(demo_ws, demo_run, "lrp", beta=0.0)   # the analysis pages show maps, not a button
    proc, url = _start_app(demo_ws.root)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(
        line.decode(errors="replace") for line in iter(proc.stdout.readline, b"")), daemon=True)
    reader.start()
    yield url, lines
    _stop_app(proc)
    reader.join(timeout=10)


def test_every_page_leaves_no_traceback_or_deprecation_in_the_log(browser, logged_app, demo_run):
    url, lines = logged_app
    page = _page(browser, height=1600, timeout_ms=60_000)
    for path, title in PAGES.items():
        page.goto(f"{url}/{path}?run={demo_run.id}")
        page.get_by_role("heading", name=title).wait_for()
        _settle(page)
        try:
            _no_exception(page)
        except AssertionError as exc:
            raise AssertionError(f"{path or 'overview'}: {exc}\n{''.join(lines)[-4000:]}") from None
        _shot(page, f"walk_{path or 'overview'}")
    page.close()
    log = "".join(lines)
    assert "Traceback" not in log, log[-4000:]
    deprecated = [line for line in lines if "deprecat" in line.lower()]
    assert not deprecated, "".join(deprecated[:10])
