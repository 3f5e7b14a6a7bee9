"""A new user's first open, from an empty workspace folder: one background job builds the demo cohort and
applies the shipped model, and then the Training page lists the shipped run and the Heatmaps, Atlas metrics
and Biomarkers pages show results on their first visit, with no click and no job of their own.

The demo is the test's small one ($RELEVANCE_ATLAS_DEMO) and the shipped model the fixture run trained on that
cohort ($RELEVANCE_ATLAS_MODELS), so the whole first start fits in a couple of minutes.
"""

from __future__ import annotations

import os
import time

import pytest

from lib import jobs
from lib.data.workspace import Workspace
from lib.learn.runs import MODELS_ENV, export_run
from test_browser import _no_exception, _page, _settle, _shot, _start_app, _stop_app, browser  # noqa: F401

SMALL = "subjects=16 resolution=3 visits=2 seed=1"   # conftest.SMALL_DEMO: the fixture run's cohort


@pytest.fixture(scope="module")
def first_open(demo_run, tmp_path_factory):
    models = tmp_path_factory.mktemp("models")
    export_run(demo_run, models)
    root = tmp_path_factory.mktemp("first") / "demo"
    saved = {k: os.environ.get(k) for k in ("RELEVANCE_ATLAS_DEMO", MODELS_ENV)}
    os.environ.update({"RELEVANCE_ATLAS_DEMO": SMALL, MODELS_ENV: str(models)})
    try:
        proc, url = _start_app(root)
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    yield url, root
    _stop_app(proc)


def _wait_done(root, timeout: float = 600) -> jobs.Job:
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = jobs.list_jobs(Workspace.open(root), jobs.BuildDemo.kind) if (root / "jobs").exists() else []
        if found and not found[0].active:
            return found[0]
        time.sleep(1)
    raise AssertionError("the first-start job did not end")


def test_first_open_builds_the_demo_and_every_analysis_page_has_results(browser, first_open, demo_run):
    url, root = first_open
    page = _page(browser, height=1400, timeout_ms=60_000)
    page.goto(url)
    page.get_by_text("Building the demo cohort").first.wait_for()
    _shot(page, "first_start_building")
    job = _wait_done(root)
    assert job.state == "done", job.error
    assert "shipped run fixture-run applied" in job.message
    _settle(page)
    _no_exception(page)

    page.goto(f"{url}/training")
    page.get_by_role("heading", name="Training").wait_for()
    _settle(page)
    _no_exception(page)
    assert "No training runs" not in page.inner_text("body")
    page.get_by_text(demo_run.id).first.wait_for(state="attached")   # a cell of the runs table (a canvas grid)
    _shot(page, "first_start_training")

    checks = {"heatmaps": ("Heatmaps", "MNI ("), "atlas": ("Atlas metrics", "Top 25 regions"),
              "biomarker": ("Biomarkers", "Guided backprop is read as |gradient|")}
    for path, (title, shown) in checks.items():
        page.goto(f"{url}/{path}")
        page.get_by_role("heading", name=title).first.wait_for()
        page.get_by_text(shown).first.wait_for(timeout=120_000)
        _settle(page)
        _no_exception(page)
        text = page.inner_text("body")
        assert "No heatmaps of run" not in text and "not computed yet" not in text, text[-2000:]
        _shot(page, f"first_start_{path}")
    # the pages found everything computed: the first-start job is the only job of the workspace
    assert [j.record.get("command") for j in jobs.list_jobs(Workspace.open(root))] == ["demo"]
    page.close()
