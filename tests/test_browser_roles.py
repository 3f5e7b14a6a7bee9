"""Roles at the buttons, in a real browser with accounts required: a viewer cannot rewrite the workspace from
the Cohort page, start training or cancel someone's job; a user demoted or deactivated while their page is
open is refused at their next click, without a reload (the identity is re-read at the click).

Reuses the app start-up and Playwright helpers of ``test_browser.py``; accounts and reviews live in a
temporary SQLite file (``$RELEVANCE_ATLAS_DB``). Screenshots go to ``tests/artifacts/``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from lib.core import atomic
from lib.reviews import auth
from lib import jobs
from lib.reviews import ReviewStore
from test_browser import _no_exception, _page, _settle, _shot, _start_app, _stop_app, browser  # noqa: F401

PW = "a long enough password"
USERS = {"vic": "viewer", "dan": "analyst", "rae": "reviewer", "rob": "reviewer"}


@pytest.fixture(scope="module")
def roles_app(demo_ws, tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('roles') / 'accounts.db'}"
    store = ReviewStore(url, workspace=demo_ws.name)
    for name, role in USERS.items():
        auth.add_user(store, name, role, PW)
    mp = pytest.MonkeyPatch()
    mp.setenv("RELEVANCE_ATLAS_DB", url)  # read by the app process at start
    mp.setenv("RELEVANCE_ATLAS_ACCOUNTS", "required")
    try:
        proc, app_url = _start_app(demo_ws.root)
    finally:
        mp.undo()
    yield app_url, store
    _stop_app(proc)


@pytest.fixture
def someones_job(demo_ws):
    """A running job of the workspace started by the analyst ``otto`` (a ``sleep`` standing in for the work)."""
    proc = subprocess.Popen(["sleep", "300"], start_new_session=True)
    job_id = "20990101-000000-roles1"
    path = demo_ws.jobs_dir / job_id
    path.mkdir(parents=True)
    now = time.time()
    atomic.write_json(path / "status.json", {
        "id": job_id, "command": "means", "args": [], "key": "roles-test", "owner": "otto", "state": "running",
        "done": 1, "total": 10, "message": "averaging", "error": None, "pid": proc.pid, "created": now,
        "started": now, "updated": now, "finished": None})
    yield jobs.get(demo_ws, job_id), proc
    proc.kill()
    proc.wait()
    shutil.rmtree(path, ignore_errors=True)


def _sign_in(page, app_url: str, user: str, path: str = "") -> None:
    page.goto(app_url + path)
    page.get_by_role("heading", name="Sign in").wait_for()
    page.get_by_label("User name").fill(user)
    page.get_by_label("Password", exact=True).fill(PW)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_text(f"Signed in as {user}").wait_for()
    _settle(page)


def _training_form(page):
    """The Training page's "Start training" button, its expander opened if runs keep it closed."""
    page.get_by_role("heading", name="Training", exact=True).wait_for()
    main = page.locator('[data-testid="stMain"]')
    main.get_by_text("Start a training run").first.wait_for()
    _settle(page)
    _shot(page, "roles_training_form")
    start = main.get_by_role("button", name="Start training")
    if not start.is_visible():
        main.get_by_text("Start a training run").first.click()
        _settle(page)
    start.wait_for()
    return start


def _jobs_of(ws, command: str) -> list:
    return [j for j in jobs.list_jobs(ws, command) if j.record.get("key") != "roles-test"]


def test_viewer_cannot_change_the_workspace_train_or_cancel(browser, roles_app, demo_ws, someones_job):
    app_url, _ = roles_app
    job, proc = someones_job
    before = {j.id for j in jobs.list_jobs(demo_ws)}
    page = _page(browser)
    _sign_in(page, app_url, "vic")
    main = page.locator('[data-testid="stMain"]')

    page.get_by_role("link", name="Cohort & validation").click()
    page.get_by_role("heading", name="Cohort & validation").wait_for()
    _settle(page)
    assert main.get_by_role("button", name="Validate again").is_disabled()
    box = page.get_by_placeholder("/data/study/cohort.csv")
    box.fill(str(demo_ws.cohort_csv))
    box.press("Enter")
    _settle(page)
    assert main.get_by_role("button", name="Validate", exact=True).is_disabled()
    assert main.get_by_text("Only an admin may create or change workspaces").first.is_visible()
    _no_exception(page)
    _shot(page, "roles_viewer_cohort")
    main.get_by_role("tab", name="Preprocessing QC").click()   # preprocessing makes a workspace: an admin's
    _settle(page)
    assert main.get_by_role("button", name="Preprocess", exact=True).is_disabled()
    _no_exception(page)

    page.get_by_role("link", name="Training").click()
    start = _training_form(page)
    assert start.is_disabled()
    assert main.get_by_text("Only an analyst or admin may train or resume models").is_visible()
    # the duration is measured in a process of its own; the form shows it once known, without a click
    main.get_by_text("Estimated from a measured step on this machine").wait_for(timeout=180_000)
    _shot(page, "roles_viewer_training")

    page.get_by_role("link", name="Jobs").click()
    page.get_by_role("heading", name="Jobs").wait_for()
    _settle(page)
    assert main.get_by_role("button", name=f"Cancel means ({job.id})").is_disabled()
    assert main.get_by_text("Only an admin may cancel other people's jobs").is_visible()
    assert main.get_by_text("started by otto").first.is_visible()
    _no_exception(page)
    _shot(page, "roles_viewer_jobs")
    page.close()
    # nothing was started or stopped
    assert {j.id for j in jobs.list_jobs(demo_ws)} == before
    assert proc.poll() is None and jobs.get(demo_ws, job.id).active
    assert not (job.path / jobs.CANCEL_MARKER).exists()


def test_analyst_demoted_while_the_page_is_open_cannot_start_training(browser, roles_app, demo_ws):
    app_url, store = roles_app
    page = _page(browser)
    try:
        _sign_in(page, app_url, "dan")
        main = page.locator('[data-testid="stMain"]')
        page.get_by_role("link", name="Training").click()
        start = _training_form(page)
        assert start.is_enabled()
        trains = {j.id for j in _jobs_of(demo_ws, "train")}
        auth.set_role(store, "dan", "viewer")  # by an admin, while dan's page still shows the button
        start.click()
        # the click's rerun re-reads the role: the form locks (caption naming the role), nothing starts
        main.get_by_text("only an analyst or admin may train or resume models").first.wait_for()
        _settle(page)
        _no_exception(page)
        assert start.is_disabled()
        assert {j.id for j in _jobs_of(demo_ws, "train")} == trains
        assert "Signed in as dan · viewer" in page.locator('[data-testid="stSidebar"]').inner_text()
    finally:
        _shot(page, "roles_demoted_training")
        for j in _jobs_of(demo_ws, "train"):  # only if the refusal failed: do not leave training running
            if j.active and j.record.get("owner") == "dan":
                jobs.cancel(demo_ws, j.id, who=auth.Identity("test", "admin", "cli"))
        auth.set_role(store, "dan", "analyst")
        page.close()


def _open_reviews(page) -> None:
    page.get_by_role("link", name="Reviews").click()
    page.get_by_role("heading", name="Reviews", exact=True).wait_for()
    _settle(page)


def test_a_callback_uses_the_role_of_the_click_not_of_the_render(browser, roles_app, demo_ws):
    """Review buttons run as callbacks, before the app signs the request in again: a reviewer demoted to
    viewer cannot resolve, and a deactivated one cannot delete, with the buttons of the earlier role."""
    app_url, store = roles_app
    scan = {"kind": "scan", "scan_id": "roles-scan"}
    mine = store.create(auth.Identity("rae", "reviewer"), scan, {}, verdict="plausible", text="written by rae")
    page = _page(browser)
    _sign_in(page, app_url, "rae")
    _open_reviews(page)
    main = page.locator('[data-testid="stMain"]')
    main.get_by_text("written by rae").wait_for()
    resolve = main.get_by_role("button", name="Resolve")
    assert resolve.is_enabled()
    auth.set_role(store, "rae", "viewer")
    resolve.click()
    main.get_by_text("viewers can read reviews but not write them").wait_for()
    _settle(page)
    _no_exception(page)
    _shot(page, "roles_demoted_review")
    assert store.get(mine.id).status == "open" and store.get(mine.id).version == mine.version
    assert main.get_by_role("button", name="Resolve").count() == 0  # and the buttons are gone now
    page.close()

    theirs = store.create(auth.Identity("rob", "reviewer"), scan, {}, verdict="artefact", text="written by rob")
    page = _page(browser)
    _sign_in(page, app_url, "rob")
    _open_reviews(page)
    main = page.locator('[data-testid="stMain"]')
    main.get_by_text("written by rob").wait_for()
    delete = main.get_by_role("button", name="Delete")
    assert delete.count() == 1 and delete.is_enabled()
    auth.deactivate(store, "rob")
    delete.click()
    page.get_by_role("heading", name="Sign in").wait_for()
    _settle(page)
    _no_exception(page)
    assert not store.get(theirs.id).deleted
    page.close()
