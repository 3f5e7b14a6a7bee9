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


def require_run(ws: Workspace):
    """The run the analysis pages explain (sidebar choice, kept in ``?run=``), or None with an explanation.

    On the demo workspace the shipped demo model is installed as a run on first use (a system action, like
    building the default demo: a copy of files shipped with the app, allowed to anyone signed in) and its
    predictions are computed in the background, started only by someone who may ``compute``; a viewer is
    told they are missing and who can compute them.
    """
    from lib.learn.training import TrainingError, install_shipped_run, list_runs, shipped_models

    if ws.is_demo and not (ws.runs_dir / "demo-boehle2019").exists():
        for folder in shipped_models():
            try:
                install_shipped_run(ws, folder)
            except TrainingError:
                # a demo built with other settings (subjects, seed) is another cohort: the shipped model
                # does not apply and the user trains their own; nothing to warn about on every page
                pass
    runs = _usable_runs(ws)
    pending = [r for r in list_runs(ws) if r.best_checkpoint.exists() and r.predictions() is None and r.config.get("shipped")]
    for r in pending:
        predict = jobs.Predict(run_id=r.id)
        job = automatic_job(ws, predict, f"The shipped model **{r.id}**'s predictions for this cohort are")
        if job is None:
            return None
        st.info(f"Applying the shipped model **{r.id}** to every scan of the cohort (once, about a minute).")
        job_progress(job.id, ws, rerun_when_done=True, key="predict")
        return None
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
