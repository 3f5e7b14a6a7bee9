"""Confined workspaces in a real browser: ``?workspace=`` and "Check another cohort" reach nothing outside the
server's roots, visiting an address creates nothing, a garbled default workspace.json leaves the app (sign-in
included) up, and a workspace created from the Cohort page reports its init job as finished.

Reuses the app start-up and Playwright helpers of ``test_browser.py``. The app's default workspace is a small
study made with ``python -m lib init`` in ``<tmp>/served``; that folder is thus the server's only root.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote

import pytest

from lib.reviews import auth
from lib.cli import main
from lib.reviews import ReviewStore
from lib.data.workspace import Workspace
from test_browser import _no_exception, _page, _settle, _shot, _start_app, browser  # noqa: F401
from test_cli import _good_table

PASSWORD = "a long enough password"


def _start(default: Path, **env):
    mp = pytest.MonkeyPatch()
    # no server.toml of the checkout, no roots or database from the caller's environment
    mp.setenv("RELEVANCE_ATLAS_CONFIG", str(default.parent.parent / "server.toml"))
    for name in ("RELEVANCE_ATLAS_WORKSPACE_ROOTS", "RELEVANCE_ATLAS_DB", "RELEVANCE_ATLAS_ACCOUNTS"):
        mp.delenv(name, raising=False)
    for name, value in env.items():
        mp.setenv(name, value)
    try:
        return _start_app(default)
    finally:
        mp.undo()


def _stop(proc) -> None:
    os.killpg(proc.pid, 15)
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    base = tmp_path_factory.mktemp("confine")
    study = base / "served" / "study"
    table = _good_table(study, n=6)
    assert main(["init", str(study), "--table", str(table), "--resolution", "4"]) == 0
    Workspace.create(base / "outside", name="Outside study")  # a real workspace outside the roots
    (base / "served" / "empty").mkdir()
    proc, url = _start(study)
    yield base, url
    _stop(proc)


def _tree(root: Path, skip: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if skip not in (p, *p.parents))


def _main_text(page) -> str:
    return page.locator('[data-testid="stMain"]').inner_text()


def _errors(page) -> list[str]:
    return [e.inner_text() for e in page.locator('[data-testid="stAlertContentError"]').all()]


def test_a_workspace_outside_the_roots_is_refused(browser, served):
    base, url = served
    page = _page(browser)
    for asked in ("/etc", "../..", str(base / "outside"), str(base / "served" / ".." / "outside")):
        page.goto(f"{url}/?workspace={quote(asked)}")
        page.get_by_text("refused").first.wait_for()
        _settle(page)
        _no_exception(page)
        errors = _errors(page)
        assert len(errors) == 1 and "not inside the folders this server opens workspaces from" in errors[0]
        assert "Showing the default workspace instead" in errors[0]
        # the app stays on the default workspace and the address no longer names the refused folder
        assert "study · 6 scans" in page.locator('[data-testid="stSidebar"]').inner_text()
        assert "workspace=" not in page.url
        assert "Outside study" not in page.content()
    _shot(page, "confine_refused")
    page.close()


def test_visiting_an_address_creates_nothing(browser, served):
    base, url = served
    study = base / "served" / "study"
    before = _tree(base, skip=study)
    page = _page(browser)
    for path, asked in [("", base / "served" / "new"), ("/reviews", base / "served" / "new" / "deeper"),
                        ("/cohort", base / "served" / "empty"), ("/jobs", base / "served" / "empty"),
                        ("/reviews", base / "outside" / "x")]:
        page.goto(f"{url}{path}?workspace={quote(str(asked))}")
        _settle(page)
        _no_exception(page)
        assert len(_errors(page)) == 1, _main_text(page)
    page.close()
    assert _tree(base, skip=study) == before
    assert not (base / "served" / "new").exists() and list((base / "served" / "empty").iterdir()) == []


def test_the_sidebar_lists_the_workspaces_and_opens_one(browser, served):
    base, url = served
    Workspace.create(base / "served" / "second", name="Second study")
    page = _page(browser)
    page.goto(f"{url}/?workspace={quote(str(base / 'served' / 'second'))}")
    _settle(page)
    _no_exception(page)
    assert "Second study" in page.locator('[data-testid="stSidebar"]').inner_text()
    assert "workspace=" in page.url  # a review link of this workspace keeps working
    page.get_by_test_id("stSidebar").get_by_test_id("stSelectbox").first.click()
    options = page.get_by_role("option").all_inner_texts()
    assert any("(default)" in o for o in options) and any("Second study" in o for o in options)
    assert not any("Outside study" in o for o in options)
    page.get_by_role("option").filter(has_text="(default)").click()
    _settle(page)
    assert "study · 6 scans" in page.locator('[data-testid="stSidebar"]').inner_text()
    page.close()


def test_check_another_cohort_reveals_nothing_outside_the_roots(browser, served):
    base, url = served
    secret = base / "outside" / "secret.csv"
    secret.write_text("token:s3cr3t-first-line\nmore\n")
    page = _page(browser)
    page.goto(f"{url}/cohort")
    page.get_by_role("heading", name="Check another cohort").wait_for()
    _settle(page)
    box = page.get_by_placeholder("/data/study/cohort.csv")
    said = {}
    for asked in ("/etc/passwd", "/etc/no-such-file", str(secret), str(base / "outside" / "absent.csv"),
                  "../../../../../../../../etc/shadow"):
        box.fill(asked)
        box.press("Enter")
        _settle(page)
        _no_exception(page)
        text = _main_text(page)
        assert "root:x" not in text and "s3cr3t" not in text and "does not exist" not in text
        assert page.get_by_role("button", name="Validate", exact=True).count() == 0
        errors = _errors(page)
        assert len(errors) == 1 and "refused" in errors[0]
        said[asked] = errors[0].split("refused")[1]
    assert len(set(said.values())) == 1, said
    _shot(page, "confine_check_another_refused")
    page.close()


def test_a_workspace_created_from_the_cohort_page_reports_its_init_done(browser, served):
    base, url = served
    target = base / "served" / "imported"
    table = _good_table(target, n=4)
    page = _page(browser)
    page.goto(f"{url}/cohort")
    page.get_by_role("heading", name="Check another cohort").wait_for()
    _settle(page)
    box = page.get_by_placeholder("/data/study/cohort.csv")
    box.fill(str(table))
    box.press("Enter")
    _settle(page)
    page.get_by_role("button", name="Validate", exact=True).click()
    page.get_by_role("button", name="Download report (CSV)").wait_for(timeout=90_000)
    _settle(page)
    page.get_by_role("button", name=f"Create a workspace in {target}").click()
    page.get_by_text("init finished").wait_for(timeout=90_000)
    _settle(page)
    _no_exception(page)
    assert "init failed" not in _main_text(page)
    _shot(page, "confine_init_done")
    # the outcome stays on the page after a reload, and the new workspace opens
    page.reload()
    box = page.get_by_placeholder("/data/study/cohort.csv")
    box.fill(str(table))
    box.press("Enter")
    page.get_by_text("init finished").wait_for(timeout=30_000)
    assert Workspace.open(target).config["n_scans"] == 4
    page.goto(f"{url}/?workspace={quote(str(target))}")
    _settle(page)
    assert "imported · study · 4 scans" in page.locator('[data-testid="stSidebar"]').inner_text()
    page.close()


def test_a_garbled_default_workspace_json_keeps_the_app_and_sign_in_up(browser, tmp_path):
    broken = tmp_path / "served" / "broken"
    broken.mkdir(parents=True)
    (broken / "workspace.json").write_text('{"name": "Broken", oops')
    Workspace.create(tmp_path / "served" / "other", name="Other study")
    db = f"sqlite:///{tmp_path / 'accounts.db'}"
    auth.add_user(ReviewStore(db, workspace="x"), "alice", "admin", PASSWORD)
    proc, url = _start(broken, RELEVANCE_ATLAS_DB=db)
    try:
        page = _page(browser)
        for path in ("", "/cohort", "/reviews"):
            page.goto(url + path)
            page.get_by_role("heading", name="Sign in").wait_for()
            _no_exception(page)
        page.get_by_label("User name").fill("alice")
        page.get_by_label("Password", exact=True).fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.get_by_text("not valid JSON").first.wait_for()
        _settle(page)
        _no_exception(page)
        errors = _errors(page)
        assert len(errors) == 1 and str(broken / "workspace.json") in errors[0], errors
        _shot(page, "confine_garbled_default")
        # another workspace still opens from the sidebar's list (a new address would be a new session)
        page.get_by_test_id("stSidebar").get_by_test_id("stSelectbox").first.click()
        page.get_by_role("option").filter(has_text="Other study").click()
        page.get_by_role("link", name="Cohort & validation").click()
        page.get_by_role("heading", name="Cohort & validation").wait_for()
        _settle(page)
        _no_exception(page)
        assert "Other study" in page.locator('[data-testid="stSidebar"]').inner_text()
        assert "not valid JSON" not in _main_text(page)
        page.close()
        assert sorted(p.name for p in broken.iterdir()) == ["workspace.json"]
        assert (broken / "workspace.json").read_text() == '{"name": "Broken", oops'
    finally:
        _stop(proc)
