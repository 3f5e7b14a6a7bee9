"""The sign-in gate in a real browser: a server configured for accounts stays closed with every account
deactivated, names no internal module to the first visitor, throttles guessing, and opens again once the
administrator is reactivated with the CLI.

Reuses the app start-up and Playwright helpers of ``test_browser.py``; the app runs over an empty
workspace with its own settings file and account database, so it computes nothing.
"""

from __future__ import annotations

import io
import sys
import time

import pytest

from lib.reviews import signin
from lib.cli import main
from lib.data.workspace import Workspace
from test_browser import _no_exception, _page, _settle, _shot, _start_app, _stop_app, browser  # noqa: F401

ROOT_PW = "root's long password"
INTERNAL = ("common", "login", "review panel", "review_panel", "workspace sidebar", "job widgets", "loaders",
            "run picker", "heatmaps panels", "atlas tabs", "biomarker tabs")


@pytest.fixture(scope="module")
def closed_app(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("signin")
    ws = Workspace.create(tmp / "ws")
    db = f"sqlite:///{tmp / 'accounts.db'}"
    env = {"RELEVANCE_ATLAS_CONFIG": str(tmp / "server.toml"), "RELEVANCE_ATLAS_DB": db}
    mp = pytest.MonkeyPatch()
    for k, v in env.items():
        mp.setenv(k, v)
    mp.delenv("RELEVANCE_ATLAS_ACCOUNTS", raising=False)
    old = sys.stdin
    sys.stdin = io.StringIO(ROOT_PW + "\n")
    try:
        assert main(["--workspace", str(ws.root), "users", "add", "root", "--role", "admin", "--password-stdin"]) == 0
    finally:
        sys.stdin = old
    assert 'accounts = "required"' in (tmp / "server.toml").read_text()
    assert main(["--workspace", str(ws.root), "users", "deactivate", "root"]) == 0
    try:
        proc, url = _start_app(ws.root)
    except BaseException:
        mp.undo()
        raise
    yield url, ws
    _stop_app(proc)
    mp.undo()


def _visible_text(page) -> str:
    return page.locator('[data-testid="stApp"]').inner_text()


def _try(page, user: str, password: str) -> None:
    page.get_by_label("User name").fill(user)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Sign in").click()
    _settle(page)


def test_every_account_deactivated_keeps_the_server_closed_and_the_cli_reopens_it(browser, closed_app):
    url, ws = closed_app
    page = _page(browser)
    # the first visitor after the start: no list of the modules of pages/ at any moment while it loads
    page.goto(url)
    seen = []
    deadline = time.time() + 60
    while time.time() < deadline:
        seen.append(_visible_text(page))
        if page.get_by_role("heading", name="Sign in").count():
            break
        time.sleep(0.05)
    _settle(page)
    for text in seen + [_visible_text(page)]:
        lines = {line.strip().lower() for line in text.splitlines()}
        assert not lines & set(INTERNAL), text
    assert page.locator('[data-testid="stSidebarNav"]').count() == 0
    for path in ("", "/reviews", "/jobs"):
        page.goto(url + path)
        page.get_by_role("heading", name="Sign in").wait_for()
        _settle(page)
        _no_exception(page)
        text = _visible_text(page)
        assert "Workspace folder" not in text and "Dataset overview" not in text
        assert "No active administrator" in text and "users activate NAME" in text
    _shot(page, "signin_no_admin")
    # the deactivated admin's right password does not open it
    _try(page, "root", ROOT_PW)
    page.get_by_text(signin.REFUSED).wait_for()
    assert "Workspace folder" not in _visible_text(page)
    page.close()

    # recovery on the server: reactivate, then sign in
    assert main(["--workspace", str(ws.root), "users", "activate", "root"]) == 0
    time.sleep(10.5)  # the gate counts accounts at most every 10 s
    page = _page(browser)
    page.goto(url + "/jobs")
    page.get_by_role("heading", name="Sign in").wait_for()
    _settle(page)
    assert "No active administrator" not in _visible_text(page)
    _try(page, "root", ROOT_PW)
    page.get_by_text("Signed in as").wait_for()
    _no_exception(page)
    assert page.get_by_role("link", name="Reviews").count() == 1  # the app's own page list
    assert not any(page.get_by_role("link", name=n, exact=True).count() for n in INTERNAL)
    page.close()


def test_guessing_is_throttled_with_a_message_saying_how_long(browser, closed_app):
    url, _ = closed_app
    page = _page(browser)
    page.goto(url)
    page.get_by_role("heading", name="Sign in").wait_for()
    _settle(page)
    for _ in range(signin.FAILURES_ALLOWED):
        _try(page, "guessed-name", "not the password")
    page.get_by_text("Too many failed sign-ins").wait_for()
    # now even the right password of another account from this address waits
    _try(page, "root", ROOT_PW)
    text = _visible_text(page)
    assert "Too many failed sign-ins for your address" in text and "try again in" in text
    assert "Signed in as" not in text
    _shot(page, "signin_throttled")
    page.close()
