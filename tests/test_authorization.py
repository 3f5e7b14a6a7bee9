"""Roles on every state-changing action, checked in the library at the action (jobs, atlases), and an
identity re-read from the account database at the moment of the action (a demotion counts at once)."""

from __future__ import annotations

import dataclasses
import subprocess

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from lib.reviews import auth
from lib import jobs
from lib.jobs import executor
from lib.analysis import region_tables as rt
from lib.cli import main
from lib.reviews import ReviewStore
from lib.data.templates import Grid
from lib.data.workspace import Workspace

VIEWER = auth.Identity("vera", "viewer")
REVIEWER = auth.Identity("rita", "reviewer")
ANALYST = auth.Identity("anna", "analyst")
OTHER_ANALYST = auth.Identity("otto", "analyst")
ADMIN = auth.Identity("adam", "admin")
OPEN = auth.Identity("local user", "reviewer", "open")
PASSWORD = "correct horse battery"

# one request of each kind, with the action it needs
REQUESTS = {"train": jobs.Train(), "explain": jobs.Explain(run_id="r1"), "regions": jobs.RegionTables(run_ids=("r1",)),
            "group-means": jobs.GroupMeans(run_id="r1"), "means": jobs.CohortMeans(), "predict": jobs.Predict(run_id="r1"),
            "biomarker": jobs.Biomarker(run_id="r1"), "evaluate-maps": jobs.EvaluateMaps(run_id="r1"),
            "report": jobs.Report(run_id="r1"), "init": jobs.CreateWorkspace(table="t.csv"),
            "validate": jobs.Validate(), "demo": jobs.BuildDemo(),
            "preprocess": jobs.Preprocess(table="raw.csv", out="new-ws"),
            "registration-study": jobs.RegistrationStudy()}
COMMANDS = {"train": "train", "explain": "compute", "regions": "compute", "group-means": "compute",
            "means": "compute", "predict": "compute", "biomarker": "compute", "evaluate-maps": "compute",
            "report": "compute", "init": "change_workspace", "validate": "change_workspace",
            "demo": "change_workspace", "preprocess": "change_workspace", "registration-study": "train"}
ROLES = {"viewer": VIEWER, "reviewer": REVIEWER, "analyst": ANALYST, "admin": ADMIN}
MAY = {"viewer": set(), "reviewer": set(), "analyst": {"compute", "train"},
       "admin": {"compute", "train", "change_workspace"}}


@pytest.fixture
def ws(tmp_path, monkeypatch):
    """A workspace whose jobs start a harmless ``sleep`` instead of the worker (nothing computed)."""
    started = []

    class Sleeper(executor.LocalProcessExecutor):
        def start(self, ws, job_id, request):
            proc = subprocess.Popen(["sleep", "60"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    start_new_session=True)
            started.append(proc)
            return {"pid": proc.pid}

    monkeypatch.setitem(executor.EXECUTORS, "local", Sleeper())
    monkeypatch.setenv("RELEVANCE_ATLAS_WORKSPACE", str(tmp_path / "default"))
    monkeypatch.delenv("RELEVANCE_ATLAS_DB", raising=False)
    yield Workspace.create(tmp_path / "ws")
    for proc in started:
        proc.kill()
        proc.wait()


def _job_dirs(ws) -> list:
    return [p for p in ws.jobs_dir.iterdir() if p.is_dir()] if ws.jobs_dir.exists() else []


@pytest.mark.parametrize("role", list(ROLES))
@pytest.mark.parametrize("command", list(COMMANDS))
def test_starting_a_job_needs_the_role_of_its_action(ws, role, command):
    who = ROLES[role]
    assert REQUESTS[command].kind == command and REQUESTS[command].action == COMMANDS[command]
    if COMMANDS[command] in MAY[role]:
        job = jobs.submit(ws, REQUESTS[command], who=who)
        assert job.record["owner"] == who.username and job.active
        assert jobs.get(ws, job.id).record["owner"] == who.username
    else:
        with pytest.raises(auth.PermissionDenied, match=f"{who.username} is an? {role}: only"):
            jobs.submit(ws, REQUESTS[command], who=who)
        assert _job_dirs(ws) == []  # refused before anything is written


def test_every_kind_of_job_is_in_the_role_table():
    assert set(REQUESTS) == set(jobs.REGISTRY)


def test_resume_is_training_and_unknown_commands_need_an_admin(ws):
    assert jobs.submit(ws, jobs.Train(resume="r1"), who=ANALYST).record["owner"] == "anna"
    with pytest.raises(auth.PermissionDenied, match="train or resume"):
        jobs.submit(ws, jobs.Train(resume="r1"), who=REVIEWER)

    @dataclasses.dataclass(frozen=True)
    class SomethingNew(jobs.Request):   # a kind that declares no action
        kind = "something-new"

    with pytest.raises(auth.PermissionDenied, match="only an admin"):
        jobs.submit(ws, SomethingNew(), who=ANALYST)


def test_who_is_required_and_nobody_may_nothing(ws):
    with pytest.raises(TypeError):
        jobs.submit(ws, jobs.CohortMeans())  # noqa: the point: no call can forget who acts
    with pytest.raises(TypeError):
        jobs.cancel(ws, "x")
    with pytest.raises(auth.PermissionDenied, match="Sign in"):
        jobs.submit(ws, jobs.CohortMeans(), who=None)
    assert _job_dirs(ws) == []


def test_the_default_demo_is_a_system_action_a_demo_elsewhere_is_not(ws, tmp_path):
    default = Workspace.create(tmp_path / "default", kind="demo")
    job = jobs.submit(default, jobs.BuildDemo(), who=VIEWER)
    assert job.record["owner"] == "vera"
    with pytest.raises(auth.PermissionDenied, match="Sign in"):
        jobs.submit(default, jobs.BuildDemo(seed=2), who=None)
    with pytest.raises(auth.PermissionDenied, match="only an admin"):
        jobs.submit(ws, jobs.BuildDemo(), who=ANALYST)
    assert jobs.submit(ws, jobs.BuildDemo(), who=ADMIN).record["owner"] == "adam"
    # a viewer cannot cancel even the demo build they started: cancelling needs an analyst
    with pytest.raises(auth.PermissionDenied, match="cancel their own jobs"):
        jobs.cancel(default, job.id, who=VIEWER)


def test_cancel_own_needs_analyst_anyone_elses_needs_admin(ws):
    mine = jobs.submit(ws, jobs.Predict(run_id="a"), who=ANALYST)
    theirs = jobs.submit(ws, jobs.Predict(run_id="b"), who=OTHER_ANALYST)
    for who in (VIEWER, REVIEWER, ANALYST):
        with pytest.raises(auth.PermissionDenied, match="cancel other people's jobs"):
            jobs.cancel(ws, theirs.id, who=who)
    assert not jobs.may_cancel(ANALYST, theirs) and jobs.may_cancel(OTHER_ANALYST, theirs)
    assert jobs.get(ws, theirs.id).active and not (theirs.path / jobs.CANCEL_MARKER).exists()
    with pytest.raises(auth.PermissionDenied, match="Sign in"):
        jobs.cancel(ws, mine.id, who=None)
    # a reviewer named like the owner still lacks the role to cancel
    with pytest.raises(auth.PermissionDenied, match="cancel their own jobs"):
        jobs.cancel(ws, mine.id, who=auth.Identity("anna", "reviewer"))
    assert jobs.cancel(ws, mine.id, who=ANALYST)
    assert jobs.cancel(ws, theirs.id, who=ADMIN)
    assert (theirs.path / jobs.CANCEL_MARKER).exists()


def test_a_job_without_owner_is_cancelled_only_by_an_admin(ws):
    job = jobs.submit(ws, jobs.CohortMeans(), who=ANALYST)
    record = dict(job.record)
    record.pop("owner")
    from lib.core import atomic

    atomic.write_json(job.path / "status.json", record)
    with pytest.raises(auth.PermissionDenied):
        jobs.cancel(ws, job.id, who=ANALYST)
    assert jobs.cancel(ws, job.id, who=ADMIN)


def test_open_app_may_do_everything_but_moderate(ws):
    for request in REQUESTS.values():
        jobs.submit(ws, request, who=OPEN)
    other = jobs.submit(ws, jobs.Predict(run_id="other"), who=ANALYST)
    assert jobs.cancel(ws, other.id, who=OPEN)
    assert all(auth.allowed(OPEN, a) for a in auth.ACTIONS if a != "moderate")
    assert not auth.allowed(OPEN, "moderate")


def test_cli_cancels_anyones_job_as_its_local_user(ws):
    job = jobs.submit(ws, jobs.CohortMeans(), who=ANALYST)
    assert main(["--workspace", str(ws.root), "cancel", job.id]) == 0
    assert (job.path / jobs.CANCEL_MARKER).exists()


def _atlas_files(tmp_path, res=6.0):
    grid = Grid(res)
    labels = np.zeros(grid.shape, np.int16)
    labels[5:10, 8:14, 5:10] = 1
    nib.save(nib.Nifti1Image(labels, grid.affine), tmp_path / "parc.nii.gz")
    pd.DataFrame({"index": [1], "name": ["Left_Box"]}).to_csv(tmp_path / "parc.csv", index=False)
    return tmp_path / "parc.nii.gz", tmp_path / "parc.csv"


def test_adding_or_replacing_an_atlas_needs_change_atlas(ws, tmp_path):
    labels, names = _atlas_files(tmp_path)
    for who in (None, VIEWER, REVIEWER, ANALYST):
        with pytest.raises(auth.PermissionDenied):
            rt.save_user_atlas(ws, "boxes", labels, names, 6.0, who=who)
        # refused before any file is read: a missing file is not even looked at
        with pytest.raises(auth.PermissionDenied):
            rt.save_user_atlas(ws, "boxes", tmp_path / "nope.nii.gz", names, 6.0, who=who)
    assert "boxes" not in rt.list_atlases(ws)
    assert rt.save_user_atlas(ws, "boxes", labels, names, 6.0, who=ADMIN).n_regions == 1
    assert rt.save_user_atlas(ws, "boxes2", labels, names, 6.0, who=OPEN).n_regions == 1
    with pytest.raises(TypeError):
        rt.save_user_atlas(ws, "boxes3", labels, names, 6.0)  # noqa: who is required


# --------------------------------------------------------------------------- identity re-read at the action
@pytest.fixture
def store(tmp_path):
    return ReviewStore(f"sqlite:///{tmp_path / 'accounts.db'}", workspace="ws")


def test_refresh_sees_a_demotion_or_deactivation_at_once(store, ws):
    auth.add_user(store, "anna", "analyst", PASSWORD)
    signed_in = auth.authenticate(store, "anna", PASSWORD)
    assert auth.refresh(store, signed_in).role == "analyst"
    auth.set_role(store, "anna", "viewer")
    now = auth.refresh(store, signed_in)
    assert now == auth.Identity("anna", "viewer", "local")
    # the identity of the render would still start a job; the re-read one is refused
    with pytest.raises(auth.PermissionDenied, match="anna is a viewer"):
        jobs.submit(ws, jobs.CohortMeans(), who=now)
    auth.deactivate(store, "anna")
    assert auth.refresh(store, signed_in) is None
    assert auth.refresh(store, auth.Identity("ghost", "admin", "local")) is None


def test_refresh_of_oidc_open_and_cli_identities(store):
    auth.add_user(store, "olga@lab.org", "admin")  # a role mapping for an identity provider's user
    olga = auth.identity_from_oidc(store, {"email": "Olga@lab.org", "name": "Olga"})
    assert olga.role == "admin"
    auth.set_role(store, "olga@lab.org", "reviewer")
    assert auth.refresh(store, olga) == auth.Identity("Olga@lab.org", "reviewer", "oidc", "Olga")
    auth.deactivate(store, "olga@lab.org")
    assert auth.refresh(store, olga) is None
    unmapped = auth.Identity("pat@lab.org", "viewer", "oidc")
    assert auth.refresh(store, unmapped) == unmapped
    cli = auth.Identity("root", "admin", "cli")
    assert auth.refresh(store, OPEN) == OPEN and auth.refresh(store, cli) == cli and auth.refresh(store, None) is None


def test_the_caption_of_a_locked_button_names_the_role_like_the_refusal():
    for action in auth.ACTIONS:
        sentence = auth.who_may(action)
        try:
            auth.require(VIEWER, action)
        except auth.PermissionDenied as exc:
            assert sentence[0].lower() + sentence[1:-1] in str(exc)
    assert auth.who_may("compute").startswith("Only an analyst or admin may start computations")
    assert auth.who_may("change_atlas") == "Only an admin may add or replace atlases."


def _actor_script():
    import os

    import streamlit as st

    from lib.reviews import auth
    from lib.reviews import ReviewStore
    from pages.login import current_actor

    store = ReviewStore(os.environ["RELEVANCE_ATLAS_DB"], workspace="ws")
    if st.session_state.get("mode") == "open":
        st.session_state["accounts_on"] = False
        first = current_actor()
        st.session_state["author_name"] = "  Ines   Roth "
        st.text(f"{first!r}|{current_actor()!r}")
    else:
        st.session_state["accounts_on"] = True
        st.session_state["identity"] = auth.Identity("anna", "analyst", "local")  # as signed in earlier
        seen = [current_actor()]
        auth.set_role(store, "anna", "viewer")
        seen.append(current_actor())
        auth.deactivate(store, "anna")
        seen.append(current_actor())
        st.text("|".join(repr(s) for s in seen))


@pytest.fixture
def app_env(tmp_path, monkeypatch, store):
    monkeypatch.setenv("RELEVANCE_ATLAS_DB", str(store.url))
    monkeypatch.setenv("RELEVANCE_ATLAS_WORKSPACE", str(Workspace.create(tmp_path / "default").root))
    monkeypatch.delenv("RELEVANCE_ATLAS_ACCOUNTS", raising=False)
    monkeypatch.setenv("RELEVANCE_ATLAS_CONFIG", str(tmp_path / "server.toml"))
    return store


def _run_actor_script(mode: str) -> str:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_function(_actor_script, default_timeout=60)
    at.session_state["mode"] = mode
    at.run()
    assert not at.exception, at.exception
    return at.text[0].value


def test_current_actor_rereads_the_account_database_on_every_call(app_env):
    auth.add_user(app_env, "anna", "analyst", PASSWORD)
    seen = _run_actor_script("accounts")
    assert seen.split("|") == [repr(auth.Identity("anna", "analyst", "local")),
                               repr(auth.Identity("anna", "viewer", "local")), "None"]


def test_current_actor_in_an_open_app_and_when_accounts_are_required(app_env, monkeypatch):
    assert _run_actor_script("open").split("|") == [repr(auth.Identity("local user", "reviewer", "open")),
                                                   repr(auth.Identity("Ines Roth", "reviewer", "open"))]
    # a page that found the app open a moment ago does not act openly once the server requires accounts
    monkeypatch.setenv("RELEVANCE_ATLAS_ACCOUNTS", "required")
    assert _run_actor_script("open") == "None|None"
