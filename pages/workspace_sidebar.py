"""The workspace picker in the sidebar, the workspace a page works on, and the gate that makes sure it has a
cohort (building the demo cohort in the background on first use)."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from lib import jobs
from lib.data import demo
from lib.data.templates import DataFilesMissing
from lib.data.workspace import (DEFAULT_WORKSPACE, Workspace, WorkspaceError, allowed_roots, default_workspace_path,
                                discover, open_confined)
from pages.job_widgets import job_progress, submit_job


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
        try:   # $RELEVANCE_ATLAS_DEMO's settings; a demo is rebuilt as its own disease
            build = jobs.BuildDemo.configured(disease=ws.config.get("disease", "ad"))
        except jobs.RequestError as exc:
            st.error(str(exc))
            return False
        job = jobs.for_request(ws, build, active=True) if ws.jobs_dir.exists() else None
        if job is None:
            previous = jobs.list_jobs(ws, jobs.BuildDemo.kind)
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
            # changes that folder and needs an admin (BuildDemo.required_action)
            job = submit_job(ws, build)
            if job is None:
                return False
        if ws.cohort_csv.exists():
            st.caption("The demo generator has changed since this demo cohort was built; it is rebuilt.")
        st.info("**Building the demo cohort** — synthetic scans made from the ICBM152 template and the "
                "Neuromorphometrics atlas, with known atrophy — then the shipped model is applied and its heatmaps "
                "computed, so every page has results. This happens once (about 6 min on 2 CPU cores; the bar's "
                "estimate is measured here); you can reload the page or switch pages meanwhile.")
        job_progress(job.id, ws, rerun_when_done=True)
        return False
    st.warning(f"`{ws.root}` is not a workspace yet. Create one from a cohort table on the "
               "**Cohort & validation** page, or `python -m lib init --table TABLE`.")
    return False
