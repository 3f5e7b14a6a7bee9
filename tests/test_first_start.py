"""The first start: after the demo cohort, the same job installs and applies the shipped model and computes its
default results (LRP β = 0 and guided-backprop heatmaps, test-split group means, region tables), so every
analysis page shows results on its first visit; ``python -m lib demo`` repairs a workspace that lost them."""

from __future__ import annotations

import shutil

import pytest

from conftest import SMALL_DEMO
from lib import jobs
from lib.analysis import biomarker
from lib.cli import main
from lib.data.workspace import Workspace
from lib.explain import heatmaps
from lib.jobs.kinds import demo_results
from lib.learn.runs import MODELS_ENV, export_run, load_run
from lib.views import viewer


@pytest.fixture(scope="module")
def shipped(demo_run, tmp_path_factory):
    """A models folder shipping the fixture run, trained on the small demo's cohort."""
    folder = tmp_path_factory.mktemp("models")
    export_run(demo_run, folder)
    return folder


def _cohort_only(demo_ws, root) -> Workspace:
    """A copy of the small demo's cohort with no run, cache or job: what a deleted ``runs/`` leaves."""
    shutil.copytree(demo_ws.root, root, ignore=shutil.ignore_patterns("runs", "cache", "jobs", "reviews.db*"))
    return Workspace.open(root)


def _default_results(ws: Workspace, run_id: str) -> dict:
    run = load_run(ws, run_id)
    out = {"predictions": run.predictions() is not None}
    for method, params, _ in demo_results.METHODS:
        store = heatmaps.find_store(ws, run, method, **params)
        out[method] = store is not None
        if store is None:
            continue
        table = viewer.selection(run.predictions(), "test")
        out[f"{method} means"] = (store.folder / "group_means" / viewer.grouping_key(store, table, None) / "index.json"
                                  ).exists()
        out[f"{method} regions"] = biomarker.find_region_table(ws, store) is not None
    return out


def test_demo_repairs_a_cohort_without_runs_with_the_shipped_models_results(demo_ws, demo_run, shipped, tmp_path,
                                                                            monkeypatch, capsys):
    monkeypatch.setenv(MODELS_ENV, str(shipped))
    ws = _cohort_only(demo_ws, tmp_path / "ws")
    scan = ws.resolve(__import__("pandas").read_csv(ws.cohort_csv)["path"].iat[0])
    built = scan.stat().st_mtime_ns
    assert demo_results.missing(ws)
    assert main(["--workspace", str(ws.root), "demo", *SMALL_DEMO]) == 0
    ws = Workspace.open(ws.root)
    results = _default_results(ws, demo_run.id)
    assert all(results.values()), results
    assert load_run(ws, demo_run.id).config.get("shipped") and not demo_results.missing(ws)
    assert scan.stat().st_mtime_ns == built, "the complete cohort was rebuilt"
    out = capsys.readouterr().out
    assert "already complete" in out and "shipped run fixture-run applied" in out
    # one job, one bar: the record of the terminal's job names every stage's work in its last message
    job = jobs.list_jobs(ws, jobs.BuildDemo.kind)[0]
    assert job.state == "done" and job.fraction == 1.0 and "shipped run fixture-run" in job.message

    # the heatmaps (and with them means and region tables) deleted: the next demo run brings them back
    shutil.rmtree(ws.cache_dir / "heatmaps")
    assert not any(_default_results(ws, demo_run.id)[m] for m, _, _ in demo_results.METHODS)
    assert main(["--workspace", str(ws.root), "demo", *SMALL_DEMO]) == 0
    assert all(_default_results(ws, demo_run.id).values())


def test_no_results_builds_the_cohort_only_and_another_cohort_gets_no_shipped_model(demo_ws, shipped, tmp_path,
                                                                                   monkeypatch):
    monkeypatch.setenv(MODELS_ENV, str(shipped))
    ws = _cohort_only(demo_ws, tmp_path / "ws")
    assert main(["--workspace", str(ws.root), "demo", "--no-results", *SMALL_DEMO]) == 0
    assert not ws.runs_dir.exists() or not any(ws.runs_dir.iterdir())
    monkeypatch.setenv(MODELS_ENV, str(tmp_path / "none"))
    assert demo_results.applicable_models(ws) == [] and not demo_results.missing(ws)


def test_the_dashboards_demo_settings_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("RELEVANCE_ATLAS_DEMO", "subjects=16 resolution=3 visits=2 seed=1")
    assert jobs.BuildDemo.configured() == jobs.BuildDemo(subjects=16, resolution=3.0, visits=2, seed=1)
    monkeypatch.setenv("RELEVANCE_ATLAS_DEMO", "subjects")
    with pytest.raises(jobs.RequestError, match="RELEVANCE_ATLAS_DEMO"):
        jobs.BuildDemo.configured()
    monkeypatch.delenv("RELEVANCE_ATLAS_DEMO")
    assert jobs.BuildDemo.configured() == jobs.BuildDemo()
