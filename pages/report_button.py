"""The "Report" button of the analysis pages: a run's report (HTML and PDF) built in the background, then
downloaded. One call per page (``report_button(ws, run)``); everything else lives in lib.views.report."""

from __future__ import annotations

import streamlit as st

from lib.reviews import auth
from lib import jobs
from lib.views import report
from lib.learn.training import load_run
from lib.data.workspace import Workspace
from pages.job_widgets import denied, job_progress, locked
from pages.login import current_actor


@st.cache_data(ttl=15, show_spinner=False)
def _content_key(root: str, run_id: str) -> str:
    """The report's content key, recomputed at most every 15 s (it hashes the checkpoint and reads the caches)."""
    ws = Workspace.open(root)
    return report.content_key(ws, load_run(ws, run_id))


def _read(path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def report_button(ws: Workspace, run) -> None:
    """A popover with the run's report: download it when built for the current results, else build it."""
    with st.popover("Report", icon=":material/description:",
                    help="One HTML file (interactive, opens offline) and a PDF with every result of this run, "
                         "and the settings to cite"):
        key = _content_key(str(ws.root), run.id)
        files = report.cached(ws, run, key)
        job = jobs.find_active(ws, report.job_key(ws, run, key)) if ws.jobs_dir.exists() else None
        if files is not None and "pdf" in files:
            st.caption(f"Report of run **{run.id}** for the results computed so far.")
            c1, c2, c3 = st.columns(3)
            c1.download_button("HTML", data=lambda: _read(files["html"]), file_name=f"{run.id}_report.html",
                               mime="text/html", icon=":material/download:", on_click="ignore", key="report-html",
                               width="stretch")
            c2.download_button("PDF", data=lambda: _read(files["pdf"]), file_name=f"{run.id}_report.pdf",
                               mime="application/pdf", icon=":material/picture_as_pdf:", on_click="ignore",
                               key="report-pdf", width="stretch")
            c3.download_button("Figures", data=lambda: report.figures_zip(files), file_name=f"{run.id}_figures.zip",
                               mime="application/zip", icon=":material/folder_zip:", on_click="ignore",
                               key="report-figures", width="stretch",
                               help="Every chart as SVG and every slice panel as PNG, for a paper")
            return
        if job is not None:
            job_progress(job.id, ws, rerun_when_done=True, key="report")
            return
        st.caption("The report holds what is computed for this run so far; missing parts name the command that "
                   "computes them. Built in the background in about a minute, then kept until the results change.")
        if st.button("Build the report", type="primary", key="report-build", disabled=locked("compute")):
            try:  # as the person clicking now, checked again in the library
                jobs.submit(ws, jobs.Report(run_id=run.id, pdf=True), who=current_actor())
            except auth.PermissionDenied as exc:
                denied(exc)
                return
            st.rerun()
