"""The run an analysis page explains: picked in the sidebar (kept in ``?run=``), with the shipped demo model
installed and applied on first use."""

from __future__ import annotations

import streamlit as st

from lib import jobs
from lib.data.workspace import Workspace
from pages.job_widgets import automatic_job, job_progress
from pages.workspace_sidebar import require_ready_workspace


def _usable_runs(ws: Workspace):
    from lib.learn.training import list_runs

    return [r for r in list_runs(ws) if r.best_checkpoint.exists() and r.status == "done"]


def require_ready_run(ws: Workspace):
    """The run picked in the sidebar; otherwise the page says why (no cohort yet, no run) and stops."""
    if not require_ready_workspace(ws):
        st.stop()
    run = require_run(ws)
    if run is None:
        st.stop()
    return run


def first_start_done(ws: Workspace) -> bool:
    """On a demo workspace, whether the shipped model's default results are there; else the job computing them
    (the demo's first-start job: the one building the cohort, or a new one repairing a deleted run) is shown."""
    from lib.jobs.kinds import demo_results

    if not ws.is_demo:
        return True
    job = jobs.for_request(ws, jobs.BuildDemo(), active=True) if ws.jobs_dir.exists() else None
    if job is None and demo_results.missing(ws):
        last = jobs.list_jobs(ws, jobs.BuildDemo.kind)
        if last and last[0].state == "failed":   # not started again on every page view; the Jobs page retries
            st.error(f"Applying the shipped model failed: {last[0].error} (`python -m lib demo` tries again)")
            return True
        try:
            request = jobs.BuildDemo.configured(disease=ws.config.get("disease", "ad"))
        except jobs.RequestError as exc:
            st.error(str(exc))
            return False
        job = automatic_job(ws, request, "The shipped model's predictions and heatmaps for this cohort are")
        if job is None:
            return False
    if job is None:
        return True
    st.info("Installing the shipped model and computing its results for this cohort: predictions, LRP β = 0 and "
            "guided-backprop heatmaps, their group means and region metrics (once, for everyone; the bar's "
            "estimate is measured here). You can switch pages meanwhile.")
    job_progress(job.id, ws, rerun_when_done=True, key="first-start")
    return False


def require_run(ws: Workspace):
    """The run the analysis pages explain (sidebar choice, kept in ``?run=``), or None with an explanation.

    On the demo workspace the page waits for the shipped model's default results (:func:`first_start_done`).
    """
    if not first_start_done(ws):
        return None
    runs = _usable_runs(ws)
    runs = [r for r in runs if r.predictions() is not None]
    if not runs:
        st.info("No finished training run in this workspace yet: train one on the **Training** page.")
        return None
    ids = [r.id for r in runs]
    wanted = st.query_params.get("run") or st.session_state.get("run_id")
    default = ids.index(wanted) if wanted in ids else (ids.index("demo-boehle2019") if "demo-boehle2019" in ids
                                                        else 0)
    with st.sidebar:
        run_id = st.selectbox("Run (model explained)", ids, index=default,
                              help="A finished training run; its best checkpoint is explained.")
    st.session_state["run_id"] = run_id
    st.query_params["run"] = run_id
    return next(r for r in runs if r.id == run_id)
