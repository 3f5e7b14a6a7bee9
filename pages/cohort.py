"""Cohort & validation: the workspace's validation report, and checking or importing another table."""

import hashlib
from pathlib import Path

import streamlit as st

from lib import jobs
from lib.data.classes import DEFAULT_CLASSES
from lib.data.workspace import WorkspaceError
from pages.job_widgets import job_progress, locked, submit_job
from pages.workspace_sidebar import current_workspace, require_ready_workspace

def show_report(path: Path, *, key: str) -> None:
    from lib.data.validation import ValidationReport

    report = ValidationReport.from_json(path.read_text())
    (st.success if report.ok and not report.warnings else st.warning if report.ok else st.error)(
        report.summary())
    frame = report.to_frame()
    if frame.empty:
        return
    kinds = st.multiselect("Show", ["error", "warning"], default=["error", "warning"], key=f"sev-{key}")
    frame = frame[frame["severity"].isin(kinds)]
    st.dataframe(frame, hide_index=True, width="stretch",
                 column_config={"message": st.column_config.TextColumn("message", width="large")})
    st.download_button("Download report (CSV)", frame.to_csv(index=False), file_name="validation.csv",
                       key=f"dl-{key}")


def this_workspace(ws) -> None:
    """The workspace's own validation report, and validating it again."""
    st.subheader("This workspace")
    if ws.exists and ws.cohort_csv.exists():
        st.caption(f"`{ws.cohort_csv}`")
        running = jobs.for_request(ws, jobs.Validate(), active=True)
        if ws.validation_json.exists() and running is None:
            show_report(ws.validation_json, key="ws")
        elif running is None:
            st.info("This workspace has not been validated yet.")
        if running is None and st.button("Validate again", disabled=locked("change_workspace")):
            running = submit_job(ws, jobs.Validate())
        if running is not None:
            job_progress(running.id, ws, rerun_when_done=True, key="validate")
    else:
        require_ready_workspace(ws)


def task_form() -> dict:
    """The task the new workspace's models learn: the two classes and the table labels of each."""
    with st.expander("Task: the two classes the new workspace's models tell apart"):
        c = st.columns(4)
        pos, neg = DEFAULT_CLASSES.names[::-1]
        task = {"positive": c[0].text_input("Positive class (detected)", placeholder=pos, key="task_pos"),
                "negative": c[1].text_input("Negative class (controls)", placeholder=neg, key="task_neg"),
                "positive_labels": c[2].text_input("Its table labels", placeholder="MS, RRMS", key="task_pos_l"),
                "negative_labels": c[3].text_input("Its table labels ", placeholder="control, HC", key="task_neg_l")}
        st.caption(f"Left empty: {DEFAULT_CLASSES.title(pos)} against healthy controls, with their usual spellings. "
                   "Labels of other groups are kept but not trained on; a generic label such as \"patient\" must "
                   "be listed for a class, it is never taken for a diagnosis.")
    return {k: v.strip() for k, v in task.items() if v and v.strip()}


def other_cohort(ws) -> None:
    """Validate another table or BIDS folder on the server, and create a workspace from it."""
    st.subheader("Check another cohort")
    st.markdown(
        "A CSV/TSV table with one row per scan (`subject_id`, `scan_id`, `path`, `diagnosis`, optional `session`, "
        "`age`, `sex`, `mmse`, `cdr`, `site`, `hippocampal_volume`), an ADNIMERGE-style table with a `path` column, "
        "or a BIDS folder. Relative paths are relative to the table's folder. Every problem is listed at once.")
    table = st.text_input("Table or BIDS folder on the server", placeholder="/data/study/cohort.csv")
    if table:
        try:
            # only inside this workspace's data roots or the server's workspace roots; the refusal is the same
            # whether or not the path exists, and nothing outside is ever read or shown
            table_path = ws.readable_path(table)
        except WorkspaceError as exc:
            table_path = None
            st.error(str(exc))
        if table_path is not None:
            report_path = ws.cache_dir / "validation" / (hashlib.sha256(str(table_path).encode()).hexdigest()[:16]
                                                         + ".json")
            task = task_form()
            report_path = report_path.with_name(hashlib.sha256(
                (str(table_path) + repr(sorted(task.items()))).encode()).hexdigest()[:16] + ".json")
            validate = jobs.Validate(table=str(table_path), report=str(report_path), **task)
            c1, c2 = st.columns(2)
            if not table_path.exists():
                st.error(f"{table_path} does not exist on the server.")
            else:
                running = jobs.for_request(ws, validate, active=True) if ws.jobs_dir.exists() else None
                may_not = locked("change_workspace", c1)
                if c1.button("Validate", type="primary", disabled=may_not) and running is None:
                    running = submit_job(ws, validate)
                if running is not None:
                    job_progress(running.id, ws, rerun_when_done=True, key="other")
                elif report_path.exists():
                    show_report(report_path, key="other")
                    target = table_path if table_path.is_dir() else table_path.parent
                    create = jobs.CreateWorkspace(table=str(table_path), directory=str(target), **task)
                    # the newest init of this folder stays shown, so its outcome is seen after any rerun
                    init = jobs.for_request(ws, create)
                    if (target / "workspace.json").exists() and init is None:
                        st.info(f"`{target}` already holds a workspace: open it in the sidebar.")
                    elif init is None and c2.button(f"Create a workspace in {target}", disabled=may_not):
                        init = submit_job(ws, create)
                    if init is not None:
                        job_progress(init.id, ws, key="init")
                        st.caption(f"When it finishes, open `{target}` as the workspace in the sidebar.")


def main() -> None:
    ws = current_workspace()
    st.title("Cohort & validation")
    this_workspace(ws)
    st.divider()
    other_cohort(ws)


main()
