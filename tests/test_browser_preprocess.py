"""The Cohort page's Preprocessing QC tab in a real browser, on a tiny preprocessed workspace: the QC table
with failures and flags marked, the template's edges over a picked scan, and the preprocess form."""

from __future__ import annotations

import pandas as pd
import pytest

from lib import jobs
from lib.core import atomic
from lib.data.workspace import Workspace
from preprocess_fakes import fake_preprocessed
from test_browser import _no_exception, _page, _settle, _shot, _start_app, _stop_app, browser  # noqa: F401


@pytest.fixture(scope="module")
def preprocessed(tmp_path_factory):
    ws = fake_preprocessed(tmp_path_factory.mktemp("preprocessed_ws"))
    proc, url = _start_app(ws.root)
    yield ws, url
    _stop_app(proc)


def _open_tab(page, url):
    page.goto(f"{url}/cohort")
    page.get_by_role("heading", name="Cohort & validation").wait_for()
    _settle(page)
    page.get_by_role("tab", name="Preprocessing QC").click()
    _settle(page)
    return page.locator('[data-testid="stMain"]')


def _pick(page, option: str) -> None:
    page.locator('[data-testid="stSelectbox"]').filter(has_text="Scan").first.click()
    page.get_by_role("option", name=option).click()
    _settle(page)


def test_qc_tab_marks_failures_and_shows_edges_of_a_picked_scan(browser, preprocessed):
    ws, url = preprocessed
    page = _page(browser, height=1800)
    main = _open_tab(page, url)
    main.get_by_text("4 scans: 1 failed, 1 flagged, 1 passed through, 1 ok").wait_for()
    page.locator('[data-testid="stDataFrame"]').first.wait_for()
    # the failed scan is listed first: its reason, and its missing registered file named, no traceback
    main.get_by_text("sub-03_ses-1: registration diverged (Dice brain 0.12)").wait_for()
    main.get_by_text("sub-03_ses-1/t1.nii.gz does not exist").wait_for()
    _no_exception(page)
    _shot(page, "preprocess_qc_failed_first")
    # pick the flagged scan: its reason and its slices with the template's edges
    _pick(page, "sub-02_ses-1 · ⚠ flagged")
    main.get_by_text("sub-02_ses-1: correlation with the template 0.71 < 0.90").wait_for()
    image = main.locator('[data-testid="stImage"] img').first
    image.wait_for()
    flagged = image.get_attribute("src")
    box = image.bounding_box()
    assert box["width"] > 2 * box["height"] > 100       # three slices side by side
    _no_exception(page)
    _shot(page, "preprocess_qc_flagged")
    _pick(page, "sub-01_ses-1 · ✓ ok")
    main.locator('[data-testid="stImage"] img').first.wait_for()
    assert main.locator('[data-testid="stImage"] img').first.get_attribute("src") != flagged
    _shot(page, "preprocess_qc_ok")
    page.get_by_text("left hippocampus").click()
    _settle(page)
    _no_exception(page)
    _shot(page, "preprocess_qc_flagged_hippocampus")
    page.close()


def test_preprocess_form_names_a_missing_table_and_submits_a_real_one(browser, preprocessed, tmp_path):
    ws, url = preprocessed
    page = _page(browser, height=1800)
    main = _open_tab(page, url)
    table = main.get_by_placeholder("/data/study/raw/participants.csv")
    out = main.get_by_placeholder("/data/study/preprocessed")
    table.fill(str(ws.root / "raw" / "nothing.csv"))
    out.fill(str(ws.root.parent / "out_ws"))
    main.get_by_role("button", name="Preprocess").click()
    _settle(page)
    main.get_by_text(f"{ws.root / 'raw' / 'nothing.csv'} does not exist on the server.").wait_for()
    raw = ws.root / "raw.csv"
    pd.read_csv(ws.cohort_csv).to_csv(raw, index=False)
    table.fill(str(raw))
    main.get_by_role("button", name="Preprocess").click()
    _settle(page)
    _no_exception(page)
    if "preprocess" in jobs.REGISTRY:
        submitted = jobs.list_jobs(Workspace.open(ws.root), "preprocess")
        assert submitted and submitted[0].record["request"]["table"] == str(raw)
    else:
        main.get_by_text("Preprocessing is not installed on this server").wait_for()
    _shot(page, "preprocess_form")
    page.close()


def test_training_page_shows_the_registration_study_beside_the_thesis(browser, preprocessed):
    from lib.learn import registration_study as study

    ws, url = preprocessed
    rows = [{"registration": r, "runs": 3, "balanced_accuracy": b, "balanced_accuracy_sd": 2.0, "auc": a,
             "auc_sd": 0.02, **{f"thesis_{k}": v for k, v in study.THESIS[r].items()}}
            for r, b, a in (("none", 61.0, 0.66), ("linear", 78.5, 0.85), ("nonlinear", 80.0, 0.87))]
    atomic.write_csv(study.results_csv(ws), pd.DataFrame(rows))
    atomic.write_json(study.study_dir(ws) / "results.json", {"settings": {"seeds": [0, 1, 2], "resolution": 3,
                                                                          "model": "boehle2019"}})
    page = _page(browser, height=1200)
    page.goto(f"{url}/training")
    page.get_by_role("heading", name="Training").wait_for()
    _settle(page)
    main = page.locator('[data-testid="stMain"]')
    main.get_by_text("Registration study (Eitel, study 4) on the raw demo").wait_for()
    main.get_by_text("mean ± standard error over 10 splits × 5 trainings").wait_for()
    frame = main.locator('[data-testid="stDataFrame"]').first
    frame.wait_for()
    _no_exception(page)
    _shot(page, "training_registration_study")
    page.close()
