"""Cohort page, preprocessing tab: the QC table of a preprocessed workspace, the template's edges over any
registered scan, and preprocessing a raw table into a new workspace."""

from __future__ import annotations

import streamlit as st

from lib import jobs
from lib.data.workspace import WorkspaceError
from lib.views import preprocess_qc as qc
from lib.views import render
from pages.job_widgets import job_progress, locked, submit_job

REGISTRATIONS = {"nonlinear": "non-linear (affine + SyN)", "linear": "linear (affine)",
                 "none": "none (pad/crop to the template)"}


def qc_section(ws) -> None:
    """The per-scan QC of this workspace, and a look at one registered scan."""
    try:
        frame = qc.load_qc(ws)
    except qc.QCError as exc:
        st.error(str(exc))
        return
    if frame is None:
        st.info("This workspace was not made by preprocessing (it has no `preprocessed/qc.csv`). Preprocess a "
                "table of raw scans below: the new workspace shows its QC here.")
        return
    st.caption(f"`{qc.qc_csv(ws)}`")
    attention = qc.needs_attention(frame)
    (st.warning if len(attention) else st.success)(qc.summary(frame))
    table = qc.qc_table(frame)
    st.caption(qc.measures_caption(frame))
    st.dataframe(table, hide_index=True, width="stretch", key="qc-table", column_config={
        "message": st.column_config.TextColumn("reason", width="large"),
        "corr_template": st.column_config.NumberColumn("corr. template", format="%.3f"),
        "dice_brain": st.column_config.NumberColumn("Dice brain", format="%.3f"),
        "dice_hippocampus": st.column_config.NumberColumn("Dice hippocampus", format="%.3f"),
        "jacobian_folded_share": st.column_config.NumberColumn("folded share", format="%.4f"),
        "seconds": st.column_config.NumberColumn("s", format="%.1f")})
    st.download_button("Download QC (CSV)", table.to_csv(index=False), file_name="preprocessing_qc.csv")
    edges_view(ws, table)


def edges_view(ws, table) -> None:
    st.markdown("**Registered scan with the template's edges** — the orange lines (the template's brain "
                "outline and grey–white boundary) should lie on the scan's own.")
    c1, c2 = st.columns([1, 1])
    scan_id = c1.selectbox("Scan", list(table["scan_id"]), key="qc-scan",
                           format_func=lambda s: f"{s} · {table.set_index('scan_id').loc[s, 'check']}")
    through = c2.radio("Slices through", list(qc.SLICE_POINTS), horizontal=True, key="qc-through")
    row = table.set_index("scan_id").loc[scan_id]
    if row["message"]:
        (st.error if row["status"] == "failed" else st.warning if row["status"] == "flagged" else st.info)(
            f"{scan_id}: {row['message']}")
    try:
        st.image(render.to_png(qc.edges_figure(ws, scan_id, through)), width="stretch")
    except qc.QCError as exc:
        st.error(str(exc))


def preprocess_form(ws) -> None:
    """Preprocess a table of raw scans into a new workspace (a background job)."""
    st.subheader("Preprocess a table")
    st.markdown("Raw scans (any orientation, voxel size, field of view, with skull) → reoriented, bias-corrected, "
                "registered to ICBM152 2009c with ANTs, brain-extracted and normalised, in a new workspace "
                "whose table points at the registered scans.")
    raw_demo = ws.root / "raw" / "participants.csv"   # the demo's raw copy (python -m lib demo --raw), if built
    with st.form("preprocess"):
        table = st.text_input("Table of raw scans on the server", placeholder="/data/study/raw/participants.csv",
                              value=str(raw_demo) if raw_demo.is_file() else "")
        out = st.text_input("New workspace folder", placeholder="/data/study/preprocessed")
        c1, c2 = st.columns(2)
        registration = c1.selectbox("Registration", list(REGISTRATIONS), format_func=REGISTRATIONS.get)
        resolution = c2.selectbox("Grid (mm)", [2, 1, 3])
        action = getattr(jobs.REGISTRY.get("preprocess"), "action", "compute")
        submitted = st.form_submit_button("Preprocess", type="primary", disabled=locked(action))
    key = "preprocess-job"
    if submitted:
        request = _request(ws, table, out, registration, resolution)
        if request is not None:
            job = submit_job(ws, request)
            st.session_state[key] = job.id if job is not None else None
    if st.session_state.get(key):
        job_progress(st.session_state[key], ws, key="preprocess")


def _request(ws, table: str, out: str, registration: str, resolution: int):
    """The job request of the form, or None with the reason shown."""
    if not table or not out:
        st.error("Give the table of raw scans and the folder of the new workspace.")
        return None
    try:
        table_path, out_path = ws.readable_path(table), ws.readable_path(out)
    except WorkspaceError as exc:
        st.error(str(exc))
        return None
    if not table_path.is_file():
        st.error(f"{table_path} does not exist on the server.")
        return None
    kind = jobs.REGISTRY.get("preprocess")
    if kind is None:
        st.error("Preprocessing is not installed on this server (no `preprocess` job kind).")
        return None
    return kind(table=str(table_path), registration=registration, resolution=int(resolution), out=str(out_path))


def tab(ws) -> None:
    qc_section(ws)
    st.divider()
    preprocess_form(ws)
