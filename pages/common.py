"""Widgets shared by the pages: the workspace picker, job progress, cached loaders.

Loaders are cached by file path and modification time (never by hashing
arrays); the computations themselves live in ``lib``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import streamlit as st

from lib.reviews import auth
from lib.data import demo
from lib import jobs
from lib.data.templates import DataFilesMissing
from lib.data.workspace import (DEFAULT_WORKSPACE, Workspace, WorkspaceError, allowed_roots, default_workspace_path,
                           discover, open_confined)
from pages.login import current_actor


@st.cache_data(ttl=30, show_spinner=False)
def _workspace_choices(roots: tuple[str, ...]) -> dict[str, str]:
    """Workspace folders under the server's roots and their labels (looked for at most every 30 s)."""
    choices = {}
    for path in discover([Path(r) for r in roots]):
        try:
            name = Workspace.open(path).name
        except WorkspaceError:
            name = f"{path.name} (unreadable workspace.json)"
        choices[str(path)] = f"{name} · {path}"
    return choices


def _open_request(requested: str | None) -> tuple[Workspace | None, str | None]:
    """The workspace asked for (address, picker or typed folder), or None and why it is not opened."""
    if not requested:
        return None, None
    try:
        return open_confined(requested), None
    except WorkspaceError as exc:
        return None, str(exc)


def _request(widget_key: str) -> None:
    st.session_state["workspace_request"] = st.session_state.get(widget_key) or ""


def sidebar_workspace() -> Workspace:
    """Workspace picker in the sidebar; the choice is kept in the URL (``?workspace=``).

    Only workspaces inside the server's roots open (:func:`lib.data.workspace.open_confined`); anything else is
    refused with one message and the previous (or the default) workspace stays. Nothing is created here.
    """
    default = default_workspace_path()
    # a widget's request first, then the address, then this tab's last choice
    requested = (st.session_state.pop("workspace_request", None) or st.query_params.get("workspace")
                 or st.session_state.get("workspace_path"))
    ws, refused = _open_request(requested)
    if ws is None and requested and st.session_state.get("workspace_path") not in (None, requested):
        ws, _ = _open_request(st.session_state["workspace_path"])
    if ws is None:
        try:
            ws = Workspace.open(default)
        except WorkspaceError as exc:
            # the default workspace's file is garbled: say so and offer nothing that would write there
            ws = Workspace(root=default, problem=str(exc))
    st.session_state["workspace_path"] = str(ws.root)
    if ws.root != default:
        st.query_params["workspace"] = str(ws.root)
    elif "workspace" in st.query_params:
        del st.query_params["workspace"]
    st.session_state["ws"] = ws

    choices = dict(_workspace_choices(tuple(str(r) for r in allowed_roots())))
    choices.setdefault(str(ws.root), f"{ws.name} · {ws.root}")
    choices[str(default)] = f"{choices.get(str(default), str(default)).split(' · ')[0]} · {default} (default)"
    st.session_state["ws_pick"] = str(ws.root)
    with st.sidebar:
        st.markdown("### relevance-atlas")
        st.selectbox("Workspace", list(choices), format_func=lambda p: choices.get(p, p), key="ws_pick",
                     on_change=_request, args=("ws_pick",),
                     help="The workspaces in the folders this server serves (its workspace_roots and the "
                          "default workspace's folder). The default is the demo cohort.")
        with st.expander("Open a folder by path"):
            st.text_input("Workspace folder", key="ws_typed", on_change=_request, args=("ws_typed",),
                          placeholder=str(default.parent / "my-study"),
                          help="A folder with workspace.json inside the server's workspace roots, created by "
                               "`python -m lib init` or the Cohort & validation page.")
        if ws.problem:
            st.caption(f"`{ws.root}`: its workspace.json cannot be read (see the message); pick another.")
        elif ws.exists:
            st.caption(f"**{ws.name}** · {ws.kind} · {ws.config.get('n_scans', '?')} scans · "
                       f"{ws.grid.resolution:g} mm grid {ws.grid.shape}")
            if ws.ignored_data_roots:
                st.warning("Ignored data_roots outside the server's workspace roots: "
                           + ", ".join(f"`{p}`" for p in ws.ignored_data_roots))
        else:
            st.caption("No workspace in this folder yet.")
    if refused:
        st.error(f"{refused} " + ("Showing the default workspace instead." if ws.root == default
                                   else "The workspace shown is unchanged."))
    return ws


# --------------------------------------------------------------------------- roles at the buttons
# A button the current role cannot use is drawn disabled with a caption naming the role it needs; the
# action itself is checked again in lib with the identity re-read at the click (current_actor), so a
# click on a button drawn before a demotion is refused too, as an st.error, never a traceback.
def allowed(action: str) -> bool:
    """May the person acting now do ``action`` (a key of ``auth.ACTIONS``)? For drawing buttons."""
    return auth.allowed(current_actor(), action)


def locked(action: str, where=None) -> bool:
    """True (and a caption naming the role needed, in ``where`` or the page) when ``action`` is not allowed.

    Use as ``st.button(..., disabled=locked("compute"))``; keep the button's key and help the same for
    every role, so a click made before a role change still reaches the handler and is refused there.
    """
    if allowed(action):
        return False
    (where or st).caption(f":material/lock: {auth.who_may(action)}")
    return True


def denied(exc: auth.PermissionDenied) -> None:
    st.error(str(exc), icon=":material/lock:")


def submit_job(ws: Workspace, command: str, args: list[str] | None = None, *, key: str | None = None):
    """``jobs.submit`` as the person clicking now; None (with the reason shown) when their role may not."""
    try:
        return jobs.submit(ws, command, args, key=key, who=current_actor())
    except auth.PermissionDenied as exc:
        denied(exc)
        return None


def missing_for(action: str, what: str) -> None:
    """Tell a role that may not start the work what is missing and who can (``what`` ends "is"/"are")."""
    st.info(f"{what} not computed yet. {auth.who_may(action)} It is computed when one of them opens this page.",
            icon=":material/lock:")


def current_workspace() -> Workspace:
    if "ws" not in st.session_state:
        # A server's first request, if it is a deep link (/training), runs the page without app.py:
        # Streamlit stays in its pages-folder mode until st.navigation is first called. Route it
        # through app.py once, which renders the requested page, then end this run.
        import runpy

        runpy.run_path(str(Path(__file__).resolve().parent.parent / "app.py"), run_name="__main__")
        st.stop()
    return st.session_state["ws"]


def is_default_demo(ws: Workspace) -> bool:
    return ws.root == Path(DEFAULT_WORKSPACE).resolve() or ws.root == default_workspace_path()


def require_ready_workspace(ws: Workspace) -> bool:
    """True when the workspace has a cohort. Otherwise explains why (and builds the demo if it is the default)."""
    if ws.problem:
        st.error(f"The workspace cannot be opened: {ws.problem}")
        return False
    if ws.is_demo:
        if demo.is_complete(ws):
            return True
    elif ws.exists and ws.cohort_csv.exists() and ws.config.get("complete", True):
        return True
    if is_default_demo(ws) or ws.is_demo:
        job = jobs.find_active(ws, "demo") if ws.jobs_dir.exists() else None
        if job is None:
            previous = jobs.list_jobs(ws, "demo")
            if previous and previous[0].state in ("failed", "cancelled") and not st.session_state.get("retry_demo"):
                if previous[0].state == "failed":
                    st.error(f"Building the demo cohort failed: {previous[0].error}")
                    with st.expander("Log"):
                        st.code(previous[0].log_tail(40))
                else:
                    st.warning("Building the demo cohort was cancelled.")
                if st.button("Build the demo cohort"):
                    st.session_state["retry_demo"] = True
                    st.rerun()
                return False
            try:
                from lib.data.templates import data_dir

                data_dir()
            except DataFilesMissing as exc:
                st.error(str(exc))
                return False
            # the default demo is a system action any signed-in identity may start; a demo elsewhere
            # changes that folder and needs an admin (jobs.action_of)
            job = submit_job(ws, "demo", [], key="demo")
            if job is None:
                return False
        if ws.cohort_csv.exists():
            st.caption("The demo generator has changed since this demo cohort was built; it is rebuilt.")
        st.info("**Building the demo cohort** — synthetic scans made from the ICBM152 template and the "
                "Neuromorphometrics atlas, with known atrophy. This happens once and takes about a minute; "
                "you can reload the page or switch pages meanwhile.")
        job_progress(job.id, ws, rerun_when_done=True)
        return False
    st.warning(f"`{ws.root}` is not a workspace yet. Create one from a cohort table on the "
               "**Cohort & validation** page, or `python -m lib init --table TABLE`.")
    return False


def _fmt_eta(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return f" · about {seconds:.0f} s left" if seconds < 120 else f" · about {seconds / 60:.0f} min left"


def job_progress(job_id: str, ws: Workspace, *, rerun_when_done: bool = False, key: str = "") -> None:
    """Live progress of one job, refreshed every second while it runs."""

    @st.fragment(run_every=1.0)
    def _view():
        job = jobs.get(ws, job_id)
        if job is None:
            st.warning(f"job {job_id} not found")
            return
        label = f"{job.record.get('command')}: {job.message}{_fmt_eta(job.eta_seconds)}"
        if job.active:
            st.progress(job.fraction, text=label)
        elif job.state == "done":
            st.success(f"{job.record.get('command')} finished: {job.message}")
            if rerun_when_done and not st.session_state.get(f"reran-{job_id}"):
                st.session_state[f"reran-{job_id}"] = True
                st.rerun(scope="app")
        elif job.state == "cancelled":
            st.warning(f"{job.record.get('command')} was cancelled")
        else:
            st.error(f"{job.record.get('command')} failed: {job.error}")
            with st.expander("Log"):
                st.code(job.log_tail(40) or "(empty)")

    _view()
    # outside the fragment: a click must not race the fragment's timed reruns
    job = jobs.get(ws, job_id)
    if job is not None and job.active:
        cancel_button(ws, job, "Cancel", key=f"cancel-{job_id}-{key}")


def cancel_button(ws: Workspace, job, label: str, *, key: str) -> None:
    """A job's cancel button: disabled, with the role needed, for someone who may not cancel it."""
    who = current_actor()
    disabled = not jobs.may_cancel(who, job)
    if disabled:
        st.caption(f":material/lock: {auth.who_may(jobs.cancel_action(who, job))}")
    if st.button(label, key=key, disabled=disabled):
        try:
            jobs.cancel(ws, job.id, who=current_actor())  # re-read at the click
        except auth.PermissionDenied as exc:
            denied(exc)
            return
        time.sleep(0.5)
        st.rerun()


# --------------------------------------------------------------------------- cached loaders
@st.cache_data(max_entries=16, show_spinner=False)
def _volume(path: str, mtime_ns: int, resolution: float) -> np.ndarray:
    from lib.data.templates import Grid
    from lib.data.validation import load_on_grid

    img, _ = load_on_grid(path, Grid(resolution))
    return np.asarray(img.dataobj, dtype=np.float32)


def volume(ws: Workspace, path: str) -> np.ndarray:
    """A scan on the workspace grid, cached by its path and modification time."""
    p = ws.resolve(path)
    return _volume(str(p), p.stat().st_mtime_ns, ws.grid.resolution)


@st.cache_data(max_entries=2, show_spinner=False)
def group_means(path: str) -> dict[str, np.ndarray]:
    """Group means by file path (the name carries the cohort's content key, so it never goes stale)."""
    from lib.data.cohort_means import read_group_means

    return read_group_means(path)


@st.cache_resource(show_spinner=False)
def atlas_labels(name: str, resolution: float):
    from lib.data.templates import atlas

    img, table = atlas(name, resolution)
    return np.asarray(img.dataobj), table


@st.cache_resource(show_spinner=False)
def template_volume(resolution: float) -> np.ndarray:
    from lib.data.templates import template

    return np.asarray(template(resolution).dataobj, dtype=np.float32)


def since(ts: float | None) -> str:
    if not ts:
        return ""
    d = time.time() - ts
    return f"{d:.0f} s ago" if d < 90 else f"{d / 60:.0f} min ago" if d < 5400 else f"{d / 3600:.1f} h ago"


# --------------------------------------------------------------------------- the run analysed
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
        job = jobs.find_active(ws, f"predict:{r.id}")
        if job is None and not allowed("compute"):
            # a viewer does not start heavy work: applying the model waits for someone who may compute
            missing_for("compute", f"The shipped model **{r.id}**'s predictions for this cohort are")
            return None
        job = job or submit_job(ws, "predict", ["--run", r.id], key=f"predict:{r.id}")
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


# --------------------------------------------------------------------------- loaders of the analysis pages
@st.cache_data(max_entries=8, show_spinner=False)
def checkpoint_sha(path: str, mtime_ns: int) -> str:
    """SHA-256 of a checkpoint, hashed once per file version."""
    from lib.learn.training import file_hash

    return file_hash(path)


@st.cache_data(max_entries=8, show_spinner=False)
def predictions_csv(path: str, mtime_ns: int):
    import pandas as pd

    return pd.read_csv(path, dtype={"scan_id": str, "subject_id": str})


@st.cache_data(max_entries=4, show_spinner=False)
def cohort_table(cohort_csv: str, mtime_ns: int):
    """The cohort of the workspace that holds ``cohort_csv`` (keyed by that file, so never another's)."""
    from lib.data.scans import load_cohort

    return load_cohort(Workspace.open(Path(cohort_csv).parent))


@st.cache_resource(max_entries=32, show_spinner=False)
def _heatmap_store(folder: str, sealed: int):
    from lib.explain.heatmaps import HeatmapStore

    return HeatmapStore(folder)


def heatmap_store(folder: str):
    """The store of ``folder``, shared by sessions; keyed by its completeness marker's stamp so that a store
    removed and rebuilt (``cache verify --repair``, a recomputation) is opened afresh, never served stale."""
    from lib.core import cache

    try:
        sealed = (Path(folder) / cache.MARKER).stat().st_mtime_ns
    except FileNotFoundError:
        sealed = 0
    return _heatmap_store(folder, sealed)
