"""Jobs: every background job of the workspace, its progress, log and a cancel button."""

import streamlit as st

from lib import jobs
from pages.job_widgets import cancel_button, since
from pages.workspace_sidebar import current_workspace


@st.fragment(run_every=2.0)
def job_table(ws):
    all_jobs = jobs.list_jobs(ws)
    if not all_jobs:
        st.info("No jobs have run in this workspace yet.")
        return
    for job in all_jobs[:30]:
        r = job.record
        icon = {"running": "⏳", "queued": "⏳", "done": "✅", "failed": "❌", "cancelled": "⏹"}.get(job.state, "")
        with st.expander(f"{icon} {job.description} · {job.state} · "
                         f"started {since(r.get('started') or r.get('created'))}", expanded=job.active):
            if job.active:
                st.progress(job.fraction, text=job.message)
            elif job.state == "failed":
                st.error(job.error)
            else:
                st.write(job.message)
            st.code(job.log_tail(20) or "(no output)", language=None)
            st.caption(f"job {job.id} · started by {r.get('owner') or 'unknown'} · pid {r.get('pid')} · "
                       f"record {job.path / 'status.json'}")


def main() -> None:
    ws = current_workspace()
    st.title("Jobs")
    st.caption("Long work (building the demo cohort, validation, group means; later training and heatmaps) runs "
               "in its own process: it keeps going when you reload the page or close the browser.")
    job_table(ws)
    # cancel buttons stay outside the live fragment so a click never races its timed reruns
    for active in [j for j in jobs.list_jobs(ws) if j.active]:
        cancel_button(ws, active, f"Cancel {active.record.get('command')} ({active.id})", key=f"cancel-{active.id}")


main()
