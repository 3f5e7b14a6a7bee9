"""Jobs: every background job of the workspace, its progress, log and a cancel button."""

import streamlit as st

from lib import jobs
from pages.job_widgets import cancel_button, since
from pages.workspace_sidebar import current_workspace

# Material icons ship with Streamlit's own font: they render where no emoji font is installed
STATE_ICONS = {"running": ":material/hourglass_top:", "queued": ":material/schedule:",
               "done": ":material/check_circle:", "failed": ":material/error:", "cancelled": ":material/cancel:"}


@st.fragment(run_every=2.0)
def job_table(ws):
    all_jobs = jobs.list_jobs(ws)
    if not all_jobs:
        st.info("No jobs have run in this workspace yet.")
        return
    for job in all_jobs[:30]:
        r = job.record
        with st.expander(f"{STATE_ICONS.get(job.state, '')} {job.description} · {job.state} · "
                         f"started {since(r.get('started') or r.get('created'))}", expanded=job.active):
            if job.active:
                st.progress(job.fraction, text=job.message)
            elif job.state == "failed":
                st.error(job.error)
            else:
                st.write(job.message)
            st.code(job.log_tail(20) or "(no output)", language=None)
            where = "in a terminal (python -m lib)" if r.get("executor") == "inprocess" else "as a background process"
            if r.get("cluster"):
                where += f", its chunks on the Ray cluster {r['cluster']}"
            st.caption(f"job {job.id} · started by {r.get('owner') or 'unknown'} {where} · pid {r.get('pid')} · "
                       f"record {job.path / 'status.json'}")


def main() -> None:
    ws = current_workspace()
    st.title("Jobs")
    st.caption("Long work (the demo cohort, training, heatmaps, region tables, …) runs in its own process: it keeps "
               "going when you reload the page or close the browser. Commands run with `python -m lib` are listed "
               "here too, and a page asking for the same result follows their job instead of starting another.")
    job_table(ws)
    # cancel buttons stay outside the live fragment so a click never races its timed reruns
    for active in [j for j in jobs.list_jobs(ws) if j.active]:
        cancel_button(ws, active, f"Cancel {active.record.get('command')} ({active.id})", key=f"cancel-{active.id}")


main()
