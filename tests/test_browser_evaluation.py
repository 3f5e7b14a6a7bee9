"""The Evaluation page in a real browser: a small evaluation submitted from the form runs as a background job,
and the ranking, AOPC curves, sanity check and localisation render from its cached results.

Starts ``streamlit run app.py`` on the small demo workspace (with its briefly trained run) and drives Debian's
Chromium with Playwright, like ``test_browser.py``. Screenshots go to ``tests/artifacts/``.
"""

from __future__ import annotations

import functools

import re
import shutil
import time

import pytest

from test_browser import _no_exception, _settle, _shot, _start_app, _stop_app, browser  # noqa: F401
from test_browser import _page as new_page


@pytest.fixture(scope="module")
def app_url(demo_ws, demo_run):
    proc, url = _start_app(demo_ws.root)
    yield url
    _stop_app(proc)


# tall enough that a whole view fits in one screenshot
_page = functools.partial(new_page, height=1900, timeout_ms=30_000)


def test_evaluation_page_runs_a_small_evaluation_and_shows_every_view(browser, app_url, demo_ws, demo_run):
    from lib import jobs

    # the page must compute through a job: start without cached results
    shutil.rmtree(demo_ws.cache_dir / "evaluation", ignore_errors=True)
    page = _page(browser)
    page.goto(f"{app_url}/evaluation?run={demo_run.id}")
    page.get_by_role("heading", name="Evaluating explanations").wait_for()
    _settle(page)
    _no_exception(page)
    page.get_by_text("No results for these settings yet").wait_for()
    _shot(page, "evaluation_empty")
    # two fast methods, two scans, three steps: a small evaluation of the trained run
    for name in ["LRP β=0.5", "LRP β=1", "guided backprop", "gradient × input", "occlusion"]:
        page.get_by_role("button", name=f"Remove {name}").click()
    page.get_by_role("spinbutton", name="Scans", exact=True).fill("2")
    page.get_by_role("spinbutton", name="Scans for the sanity check").fill("1")
    page.get_by_role("spinbutton", name="Perturbation steps L").fill("3")
    page.get_by_role("button", name="Run evaluation").click()
    page.get_by_test_id("stProgress").first.wait_for(timeout=60_000)
    page.get_by_text("Being computed in the background").wait_for()
    _shot(page, "evaluation_running")
    page.get_by_role("tab", name="Ranking").wait_for(timeout=600_000)
    _settle(page)
    _no_exception(page)
    done = [j for j in jobs.list_jobs(demo_ws, "evaluate-maps") if j.state == "done"]
    assert done and done[0].request.methods and done[0].request.run_id == demo_run.id
    table = page.get_by_test_id("stDataFrame").first
    table.wait_for()
    _shot(page, "evaluation_ranking")
    # the ranking names both methods, each with a sanity verdict
    text = page.locator('[data-testid="stMain"]').inner_text()
    assert "sanity check passes when |ρ| < 0.5" in text and "chance:" in text
    for tab, expected in [("Region perturbation (AOPC)", "random order"), ("Sanity check", "The map at every step"),
                          ("Localisation", "Ground truth per scan")]:
        page.get_by_role("tab", name=tab).click()
        page.get_by_text(expected).first.wait_for()
        _settle(page)
        _no_exception(page)
        assert page.locator('[data-testid="stMain"] .js-plotly-plot').count() >= 1
        _shot(page, "evaluation_" + tab.split()[0].lower())
    # the verdicts follow the threshold without recomputing anything
    page.get_by_role("tab", name="Sanity check").click()
    _settle(page)
    # the maps of the randomisation steps carry a review panel for their scan
    page.get_by_text(re.compile(r"Reviews of scan .+ · sanity check")).first.wait_for()

    def verdicts() -> list[str]:
        lines = page.get_by_text("with every layer randomised →").all_inner_texts()
        assert len(lines) == 2 and all("passes" in v or "fails" in v for v in lines), lines
        return lines

    strict = verdicts()
    n_jobs = len(jobs.list_jobs(demo_ws, "evaluate-maps"))
    slider = page.get_by_role("slider").first
    slider.focus()
    for _ in range(9):
        page.keyboard.press("ArrowRight")  # 0.5 → 0.95
        time.sleep(0.1)
    _settle(page)
    _no_exception(page)
    page.get_by_text("Dotted: ±0.95").first.wait_for()
    lax = verdicts()
    assert sum("fails" in v for v in lax) <= sum("fails" in v for v in strict)
    assert all("(|ρ| < 0.95 needed)" in v for v in lax)
    assert len(jobs.list_jobs(demo_ws, "evaluate-maps")) == n_jobs
    _shot(page, "evaluation_sanity_lax_threshold")
    page.close()
