"""Training monitor: runs with status and ETA, live learning curves, evaluation, and a form to start a run."""

import time

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from lib import jobs
from lib.views import model_comparison, monitor
from lib.learn.training import list_runs
from pages.job_widgets import job_progress, locked, submit_job
from pages.workspace_sidebar import current_workspace, require_ready_workspace
from pages.report_button import report_button
from pages.training_start import start_form
from pages.training_study import panel as registration_study_panel

PALETTE = ["#1f77b4", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"]


def runs_table(ws, runs: list) -> list[str]:
    """The runs with status and scores, the runs chosen to show, and a resume button for a stopped one."""
    table = monitor.runs_table(runs)
    st.subheader("Runs")
    formats = {"val bal. acc": "{:.3f}", "test bal. acc": "{:.3f}", "test AUC": "{:.3f}", "lr": "{:.0e}",
               "weight decay": "{:.0e}", "best epoch": "{:.0f}", "grid mm": "{:g}"}
    # a static table wraps its headers: every column fits a 1400 px page (a data grid hides the last ones)
    st.table(table.style.format({k: f for k, f in formats.items() if k in table}, na_rep="—").hide(axis="index"))
    ids = [r.id for r in runs]
    default = [r.id for r in runs if r.status == "running"] or ids[:1]
    chosen = st.multiselect("Runs to show", ids, default=default, help="Several runs are overlaid.")
    for r in (r for r in runs if r.id in chosen):
        resume = jobs.Train(resume=r.id)
        if r.status in ("interrupted", "cancelled", "failed") and not jobs.for_request(ws, resume, active=True):
            cols = st.columns([3, 1])
            cols[0].warning(f"Run **{r.id}** is {r.status} at epoch {r.state.get('epoch', -1) + 1}"
                            f"{': ' + r.state['error'] if r.state.get('error') else ''}.")
            if cols[1].button("Resume", key=f"resume-{r.id}", disabled=locked("train", cols[1])) and \
                    submit_job(ws, resume):
                time.sleep(1.0)
                st.rerun()
    return chosen


def _curves(by_id: dict, chosen: list[str], metric: str, x_axis: str, smoothing: float) -> None:
    selected = [by_id[i] for i in chosen]
    data = monitor.curves(selected, metric, x_axis, smoothing)
    if data.empty:
        st.info("No epoch has finished yet; the curves appear after the first one.")
        return
    fig = go.Figure()
    styles = {"train": dict(dash="dash", width=2), "validation": dict(dash="solid", width=2.5),
              "train (batches)": dict(dash="dot", width=1)}
    for i, run_id in enumerate(chosen):
        colour = PALETTE[i % len(PALETTE)]
        for series, g in data[data["run"] == run_id].groupby("series", sort=False):
            fig.add_trace(go.Scatter(x=g["x"], y=g["value"], mode="lines+markers" if series != "train (batches)"
                                     else "lines", name=f"{run_id} · {series}",
                                     line=dict(color=colour, **styles[series]),
                                     marker=dict(size=5), opacity=0.5 if series == "train (batches)" else 1))
            best = g[g["best"]]
            if series == "validation" and len(best):
                fig.add_trace(go.Scatter(x=best["x"], y=best["value"], mode="markers", showlegend=False,
                                         marker=dict(symbol="star", size=16, color=colour,
                                                     line=dict(color="black", width=1)),
                                         hovertemplate="best epoch<br>%{y:.3f}<extra>" + run_id + "</extra>"))
    fig.update_layout(height=420, margin=dict(l=10, r=10, t=30, b=10),
                      xaxis_title={"epoch": "epoch", "step": "optimiser step", "wall time": "seconds"}[x_axis],
                      yaxis_title=metric.replace("_", " "), legend=dict(orientation="h", y=-0.2),
                      title=dict(text="dashed: training · solid: validation · ★ best epoch (kept checkpoint)",
                                 font=dict(size=13)))
    if x_axis == "epoch":
        fig.update_xaxes(dtick=max(1, int(data["x"].max() // 10)))
    st.plotly_chart(fig, width="stretch")
    running = [by_id[i] for i in chosen if by_id[i].status == "running"]
    for r in running:
        st.caption(f"{r.id}: epoch {r.state.get('epoch', -1) + 1} of at most {r.state.get('max_epochs')} finished "
                   f"· {r.state.get('bad_epochs', 0)} without improvement (stops at {r.train_config.patience})")


def learning_curves(by_id: dict, chosen: list[str]) -> None:
    """Learning curves of the chosen runs, refreshed every 2 s while one of them is training."""
    st.subheader("Learning curves")
    c1, c2, c3 = st.columns([2, 2, 2])
    metric = c1.selectbox("Metric", monitor.METRICS, format_func=lambda m: m.replace("_", " "))
    x_axis = c2.radio("x axis", list(monitor.X_AXES), horizontal=True)
    smoothing = c3.slider("Smoothing", 0.0, 0.95, 0.0, 0.05,
                          help="Exponential moving average (as in TensorBoard); 0 shows raw values.")
    live = any(by_id[i].status == "running" for i in chosen)
    st.fragment(_curves, run_every=2.0 if live else None)(by_id, chosen, metric, x_axis, smoothing)


def model_comparison_section(ws, by_id: dict, chosen: list[str]) -> None:
    """Several architectures among the finished chosen runs: their scores and region overlap."""
    if len({by_id[i].train_config.model for i in chosen if by_id[i].status == "done"}) >= 2:
        st.subheader("Model comparison")
        per_run, per_model, overlap = model_comparison.comparison(ws, [by_id[i] for i in chosen])
        st.caption("Finished runs among those shown, by model: test scores, best epoch (1-based) and training wall "
                   "time to it (mean ± sd over the runs; times depend on the machine and its load).")
        st.markdown(model_comparison.markdown(per_model, overlap))
        if overlap.empty:
            st.caption("Top-10 region overlap of the models' LRP maps appears once the runs' default LRP region "
                       "tables exist: `python -m lib regions --run " + " ".join(per_run["run"]) + "`.")
        with st.expander("Per run"):
            st.dataframe(per_run, hide_index=True, width="stretch")
        st.caption("Eitel's thesis (study 5) on the patch-individual filter network: “"
                   + model_comparison.THESIS_FINDING + "”")


def evaluation_section(ws, by_id: dict, chosen: list[str]):
    """Scores, confusion matrix and ROC of one chosen run on one split; the run."""
    st.subheader("Evaluation")
    c1, c2 = st.columns([2, 1])
    focus_id = c1.selectbox("Run", chosen, key="eval_run")
    split = c2.radio("Split", ["test", "validation", "train"], horizontal=True)
    focus = by_id[focus_id]
    report_button(ws, focus)
    if monitor.origin_text(focus):
        st.caption(monitor.origin_text(focus))
    _scores(focus, split)
    return focus


def _scores(focus, split: str) -> None:
    """The run's scores, confusion matrix and ROC curve on ``split``."""
    ev = monitor.evaluation(focus, split)
    if ev is None:
        st.info("Predictions appear when the run finishes (the best checkpoint is applied to every scan).")
    elif ev["n"] == 0:
        st.info(f"The {split} split of this run has no scans.")
    else:
        m, (N, P) = ev["metrics"], focus.classes.names
        cols = st.columns(5)
        for col, (name, key) in zip(cols, [("Balanced accuracy", "balanced_accuracy"), ("Accuracy", "accuracy"),
                                           ("AUC", "auc"), (f"Sensitivity ({P})", "sensitivity"),
                                           (f"Specificity ({N})", "specificity")]):
            col.metric(name, f"{m[key]:.3f}" if m[key] == m[key] else "—")
        c1, c2 = st.columns(2)
        cm = ev["confusion"]
        labels = np.array([["TN", "FP"], ["FN", "TP"]])
        fig = go.Figure(go.Heatmap(z=cm, x=[f"predicted {N}", f"predicted {P}"], y=[f"true {N}", f"true {P}"],
                                   colorscale="Blues", showscale=False,
                                   text=[[f"{labels[i, j]}<br>{cm[i, j]}" for j in range(2)] for i in range(2)],
                                   texttemplate="%{text}", textfont=dict(size=18)))
        fig.update_layout(height=320, margin=dict(l=10, r=10, t=40, b=10),
                          title=f"Confusion matrix · {split} · {ev['n']} scans", yaxis=dict(autorange="reversed"))
        c1.plotly_chart(fig, width="stretch")
        roc = ev["roc"]
        fig = go.Figure([go.Scatter(x=roc["fpr"], y=roc["tpr"], mode="lines", line=dict(shape="hv", width=2.5),
                                    name=f"AUC {m['auc']:.3f}"),
                         go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dot", color="grey"),
                                    showlegend=False)])
        fig.update_layout(height=320, margin=dict(l=10, r=10, t=40, b=10), title=f"ROC · {split} ({P} positive)",
                          xaxis_title="false positive rate", yaxis_title="true positive rate",
                          legend=dict(x=0.6, y=0.1))
        c2.plotly_chart(fig, width="stretch")


def log_section(ws, focus) -> None:
    """The training job's log (open when the run failed)."""
    job_id = focus.config.get("job_id")
    job = jobs.get(ws, job_id) if job_id else None
    with st.expander("Log" + (" · failed" if focus.status == "failed" else ""), expanded=focus.status == "failed"):
        if focus.state.get("error"):
            st.error(focus.state["error"])
        st.code((job.log_tail(40) if job else "") or "(no log: the run was started outside the job runner)",
                language=None)
        st.caption(f"run folder: {focus.dir}")


def main() -> None:
    ws = current_workspace()
    st.title("Training")
    if not require_ready_workspace(ws):
        st.stop()
    runs = list_runs(ws)
    start_form(ws, runs)
    registration_study_panel(ws)
    active_jobs = [j for j in jobs.list_jobs(ws, jobs.Train.kind) if j.active]
    for job in active_jobs:
        job_progress(job.id, ws, key="training", rerun_when_done=True)
    if not runs:
        if not active_jobs:
            st.info("No training runs in this workspace yet. Start one above, or from a terminal: "
                    "`python -m lib train`.")
        st.stop()
    chosen = runs_table(ws, runs)
    if not chosen:
        st.stop()
    by_id = {r.id: r for r in runs}
    learning_curves(by_id, chosen)
    model_comparison_section(ws, by_id, chosen)
    focus = evaluation_section(ws, by_id, chosen)
    log_section(ws, focus)


main()
