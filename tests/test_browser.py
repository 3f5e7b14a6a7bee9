"""The dashboard in a real browser: every page renders, without exceptions, with its content.

Starts ``streamlit run app.py`` on a free port over the small demo workspace
and drives Debian's Chromium with Playwright. Screenshots go to
``tests/artifacts/`` for a person to look at. A missing browser is a failure.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from playwright.sync_api import expect

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_app(workspace: Path):
    port = _free_port()
    env = {**os.environ, "RELEVANCE_ATLAS_WORKSPACE": str(workspace)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, f"http://127.0.0.1:{port}"
        if proc.poll() is not None:
            break
        time.sleep(0.3)
    out = proc.stdout.read().decode(errors="replace") if proc.poll() is not None else ""
    proc.kill()
    raise AssertionError(f"streamlit did not start: {out}")


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


def _stop_app(proc) -> None:
    os.killpg(proc.pid, 15)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:   # still inside a script run: stop it for good
        os.killpg(proc.pid, 9)
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def app_url(demo_ws):
    proc, url = _start_app(demo_ws.root)
    yield url
    _stop_app(proc)


def _page(browser, height: int = 1000, timeout_ms: int = 30_000):
    """A new tab; ``height`` tall enough for a whole view (the app scrolls inside its own container)."""
    page = browser.new_page(viewport={"width": 1400, "height": height})
    page.set_default_timeout(timeout_ms)
    return page


_IDLE = """() => !document.querySelector('[data-testid="stStatusWidgetRunningIcon"]')
    && !document.querySelector('[data-testid="stStatusWidgetRunningManIcon"]')
    && !document.querySelector('[data-stale="true"]')"""


def _settle(page) -> None:
    """Wait until the script has finished and no element of the previous run is left (idle twice in a row).

    Checking only the status widget is not enough: between runs the page still holds the previous run's
    elements (marked stale), and a read then sees a half-drawn page."""
    page.wait_for_selector('[data-testid="stApp"]')
    deadline = time.time() + 120
    quiet = 0
    while quiet < 2 and time.time() < deadline:
        time.sleep(0.4)
        quiet = quiet + 1 if page.evaluate(_IDLE) else 0
    assert quiet >= 2, "the page did not settle"


def _metric(page, label: str):
    """The value of the ``st.metric`` labelled ``label`` (exactly)."""
    box = page.get_by_test_id("stMetric").filter(
        has=page.get_by_test_id("stMetricLabel").get_by_text(label, exact=True))
    return box.get_by_test_id("stMetricValue")


def _no_exception(page) -> None:
    errors = page.locator('[data-testid="stException"]')
    assert errors.count() == 0, errors.first.inner_text()


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_overview_page_every_tab(browser, app_url, demo_ws):
    # this test computes the group means through the page: start without a cached result
    shutil.rmtree(demo_ws.cache_dir / "overview", ignore_errors=True)
    page = _page(browser)
    page.goto(app_url)
    page.get_by_role("heading", name="Dataset overview").wait_for()
    _settle(page)
    cohort = pd.read_csv(demo_ws.cohort_csv)
    expect(_metric(page, "Scans")).to_have_text(str(len(cohort)))
    expect(_metric(page, "AD scans")).to_have_text(str((cohort["diagnosis"] == "AD").sum()))
    _no_exception(page)
    _shot(page, "overview_counts")
    for tab, expected in [("Demographics", "MMSE"), ("Quality control", "correlate below 0.5 with the template"),
                          ("Scan viewer", "MNI"), ("Mean AD − HC", "Compute mean AD and HC images")]:
        page.get_by_role("tab", name=tab).click()
        page.get_by_text(expected).first.wait_for()
        _settle(page)
        _no_exception(page)
        _shot(page, "overview_" + tab.split()[0].lower())
    # the scan viewer: moving a slider updates the MNI coordinate and the region name
    page.get_by_role("tab", name="Scan viewer").click()
    _settle(page)
    before = page.get_by_text("MNI (").first.inner_text()
    slider = page.get_by_role("slider").nth(2)  # z (axial)
    slider.focus()
    for _ in range(4):
        page.keyboard.press("ArrowRight")
        time.sleep(0.1)
    page.wait_for_function(
        "(before) => [...document.querySelectorAll('p')].some(p => p.innerText.startsWith('MNI (')"
        " && p.innerText !== before)", arg=before, timeout=30_000)
    after = page.get_by_text("MNI (").first.inner_text()
    assert after != before and "region" in after
    page.get_by_text("Atlas outlines").click()
    _settle(page)
    _no_exception(page)
    _shot(page, "overview_viewer_outlines")
    # group means run as a background job and appear when it finishes
    page.get_by_role("tab", name="Mean AD − HC").click()
    page.get_by_role("button", name="Compute mean AD and HC images").click()
    page.get_by_text("hide |difference| below").wait_for(timeout=90_000)
    _settle(page)
    _no_exception(page)
    _shot(page, "overview_mean_difference")
    page.close()


def test_cohort_page_reports_bad_input_and_stays_up(browser, app_url, demo_ws, tmp_path):
    bad = tmp_path / "bad.csv"
    pd.DataFrame({
        "subject_id": ["a", "a", "b"], "scan_id": ["s1", "s1", "s3"],
        "path": ["missing.nii.gz", "../../etc/passwd", "missing2.nii.gz"],
        "diagnosis": ["AD", "HC", "Alzheimers"],
    }).to_csv(bad, index=False)
    page = _page(browser)
    page.goto(app_url)
    page.get_by_role("link", name="Cohort & validation").click()
    page.get_by_role("heading", name="Cohort & validation").wait_for()
    _settle(page)
    page.get_by_text("0 errors").first.wait_for()
    box = page.get_by_placeholder("/data/study/cohort.csv")
    box.fill(str(bad))
    box.press("Enter")
    _settle(page)
    page.get_by_role("button", name="Validate", exact=True).click()
    page.get_by_role("button", name="Download report (CSV)").wait_for(timeout=60_000)
    _settle(page)
    _no_exception(page)
    text = page.locator('[data-testid="stMain"]').inner_text()
    assert "error" in text.lower()
    _shot(page, "cohort_bad_table")
    # the app is still up: another page renders
    page.get_by_role("link", name="Jobs").click()
    page.get_by_role("heading", name="Jobs").wait_for()
    _settle(page)
    _no_exception(page)
    assert page.get_by_text("validate").first.is_visible()
    _shot(page, "jobs")
    page.close()


def test_jobs_page_lists_a_command_line_job_with_icons_that_need_no_emoji_font(browser, app_url, demo_ws):
    from lib import jobs

    built = jobs.list_jobs(demo_ws, "demo")[0]   # the fixture built the demo with `python -m lib demo`
    assert built.record["executor"] == "inprocess" and built.state == "done"
    page = _page(browser)
    page.goto(app_url)
    page.get_by_role("link", name="Jobs").click()
    page.get_by_role("heading", name="Jobs").wait_for()
    _settle(page)
    _no_exception(page)
    summary = page.locator('[data-testid="stExpander"] summary').filter(has_text=built.description).first
    summary.click()
    page.get_by_text(f"job {built.id} · started by {built.record['owner']} in a terminal").wait_for()
    # the state's icon is a Material icon (a ligature in Streamlit's own font), not an emoji
    assert "check_circle" in summary.inner_text()
    text = page.locator('[data-testid="stMain"]').inner_text()
    assert not any(ch in text for ch in "\u23f3\u2705\u274c\u23f9")
    _shot(page, "jobs_cli")
    page.close()


def test_first_start_builds_demo_with_progress_and_cancel(browser, tmp_path):
    """With no workspace, the app starts building the demo cohort and shows its progress."""
    empty = tmp_path / "fresh_demo"
    proc, url = _start_app(empty)
    try:
        page = _page(browser)
        page.goto(url)
        page.get_by_text("Building the demo cohort").wait_for(timeout=60_000)
        page.get_by_test_id("stProgress").wait_for(timeout=60_000)
        _no_exception(page)
        _shot(page, "first_start_building")
        page.get_by_role("button", name="Cancel").click()
        try:
            page.get_by_text("cancelled").first.wait_for(timeout=60_000)
        except Exception:
            _shot(page, "first_start_cancel_failed")
            raise
        # a reload keeps the state: the cancelled build is reported, nothing restarts by itself
        page.reload()
        page.get_by_role("button", name="Build the demo cohort").wait_for(timeout=30_000)
        _shot(page, "first_start_cancelled")
        assert not (empty / "cohort.csv").exists()
        page.close()
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=10)


def test_training_page_runs_a_short_training_with_live_curves(browser, app_url, demo_ws):
    from lib.learn.training import list_runs

    before = {r.id for r in list_runs(demo_ws)}
    page = _page(browser)
    page.goto(app_url + "/training")
    page.get_by_role("heading", name="Training").first.wait_for()
    _settle(page)
    _no_exception(page)
    if not page.get_by_label("Max epochs").is_visible():
        page.get_by_text("Start a training run").click()
    page.get_by_label("Max epochs").fill("4")
    page.get_by_label("Batch size").fill("6")
    _shot(page, "training_form")
    page.get_by_role("button", name="Start training").click()
    deadline = time.time() + 120
    while not (new := [r for r in list_runs(demo_ws) if r.id not in before]) and time.time() < deadline:
        time.sleep(0.5)
    assert len(new) == 1
    # live: the new run's curve is drawn while its job is still running
    page.get_by_text(new[0].id).first.wait_for(timeout=180_000)
    page.locator('[data-testid="stMain"] .js-plotly-plot').first.wait_for(timeout=180_000)
    _shot(page, "training_live")
    page.get_by_text("Confusion matrix").first.wait_for(timeout=240_000)
    _settle(page)
    _no_exception(page)
    run = next(r for r in list_runs(demo_ws) if r.id == new[0].id)
    assert run.status == "done" and len(run.metrics()[1]) == 4
    assert page.get_by_text(run.id).count() >= 1
    _shot(page, "training_done")
    page.close()
