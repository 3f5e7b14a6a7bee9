"""Job and role widgets shared by the pages: buttons drawn for the role acting now, job submission as that
person, a job's live progress and its cancel button."""

from __future__ import annotations

import time

import streamlit as st

from lib import jobs
from lib.data.workspace import Workspace
from lib.reviews import auth
from pages.login import current_actor


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


def submit_job(ws: Workspace, request: jobs.Request):
    """``jobs.submit`` of ``request`` as the person clicking now; the running job of the same work if there is
    one; None (with the reason shown) when their role may not."""
    try:
        return jobs.submit(ws, request, who=current_actor())
    except auth.PermissionDenied as exc:
        denied(exc)
        return None


def automatic_job(ws: Workspace, request: jobs.Request, missing: str):
    """The job of work a page starts by itself when opened: the running one of the same key, else a new one.
    A role that may not start it does not (viewers start no heavy work); the page says what is ``missing``
    (a phrase ending "is"/"are") and who may compute it, and None is returned."""
    job = jobs.for_request(ws, request, active=True)
    action = request.required_action(ws)   # None: a system action (the default demo's first start)
    if job is None and action and not allowed(action):
        missing_for(action, missing)
        return None
    return job or submit_job(ws, request)


def submit_explain(ws: Workspace, run, method: str, beta: float | None = None, params: dict | None = None) -> bool:
    """Start the heatmaps of every scan of ``run`` with ``method`` (LRP: ``beta``; any method: ``params``, the
    values of its catalogue controls); whether a job runs now."""
    request = jobs.Explain(run_id=run.id, method=method, beta=beta, params=dict(params or {}))
    return submit_job(ws, request) is not None


def missing_for(action: str, what: str) -> None:
    """Tell a role that may not start the work what is missing and who can (``what`` ends "is"/"are")."""
    st.info(f"{what} not computed yet. {auth.who_may(action)} It is computed when one of them opens this page.",
            icon=":material/lock:")


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


def since(ts: float | None) -> str:
    if not ts:
        return ""
    d = time.time() - ts
    return f"{d:.0f} s ago" if d < 90 else f"{d / 60:.0f} min ago" if d < 5400 else f"{d / 3600:.1f} h ago"
