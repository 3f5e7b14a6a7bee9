"""Reviews in a real browser with accounts on: sign-in gate, a hostile review written by one user and read
inert by another, the Reviews page and its queue.

Reuses the app start-up and Playwright helpers of ``test_browser.py``; the app runs with its account and
review database in a temporary SQLite file (``$RELEVANCE_ATLAS_DB``), so the shared demo workspace keeps
no accounts. Screenshots go to ``tests/artifacts/``.
"""

from __future__ import annotations

import os

import pandas as pd
import pytest

from lib.reviews import auth
from lib.reviews import ReviewStore
from test_browser import _no_exception, _page, _settle, _shot, _start_app, browser  # noqa: F401

ALICE_PW = "alice's long password"
BOB_PW = "bob's long password!"
PAYLOAD = ("Left hippocampus relevance looks **plausible**. <script>window.__xss = 'script'</script> "
           "<img src=x onerror=\"window.__xss = 'img'\"> and [a link](javascript:window.__xss='link') "
           "![pixel][px] [![nested](https://tracker.invalid/n.png)](data:text/html,x)\n\n"
           "[px]: https://tracker.invalid/p.png")


@pytest.fixture(scope="module")
def team_app(demo_ws, tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('team') / 'reviews.db'}"
    store = ReviewStore(url, workspace=demo_ws.name)
    auth.add_user(store, "alice", "reviewer", ALICE_PW)
    auth.add_user(store, "bob", "viewer", BOB_PW)
    mp = pytest.MonkeyPatch()
    mp.setenv("RELEVANCE_ATLAS_DB", url)  # read by the app process at start
    try:
        proc, app_url = _start_app(demo_ws.root)
    finally:
        mp.undo()
    yield app_url, store
    os.killpg(proc.pid, 15)
    proc.wait(timeout=10)


def _sign_in(page, app_url: str, user: str, password: str) -> None:
    page.goto(app_url)
    page.get_by_role("heading", name="Sign in").wait_for()
    page.get_by_label("User name").fill(user)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Dataset overview").wait_for()
    _settle(page)


def _xss_fired(page) -> bool:
    return page.evaluate("() => window.__xss !== undefined")


def test_anonymous_visitors_get_only_the_sign_in(browser, team_app):
    app_url, _ = team_app
    page = _page(browser)
    for path in ("", "/reviews", "/jobs"):
        page.goto(app_url + path)
        page.get_by_role("heading", name="Sign in").wait_for()
        _settle(page)
        _no_exception(page)
        text = page.locator('[data-testid="stApp"]').inner_text()
        assert "Workspace folder" not in text and "Dataset overview" not in text and "Reviews" not in text
        assert page.locator('[data-testid="stSidebarNav"]').count() == 0
        _shot(page, "reviews_sign_in")
        links = page.evaluate("() => [...document.querySelectorAll('a')].map(a => a.href + ' ' + a.innerText)")
        print(links)
    page.get_by_label("User name").fill("alice")
    page.get_by_label("Password", exact=True).fill("not her password")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_text("Unknown user name or wrong password").wait_for()
    _shot(page, "reviews_sign_in_refused")
    page.close()


def test_hostile_review_is_inert_for_another_user(browser, team_app, demo_ws):
    app_url, store = team_app
    alice = _page(browser)
    _sign_in(alice, app_url, "alice", ALICE_PW)
    assert alice.get_by_text("Signed in as alice").is_visible()
    alice.get_by_role("tab", name="Scan viewer").click()
    _settle(alice)
    # review another scan than the first, so the link back has something to restore
    scan = pd.read_csv(demo_ws.cohort_csv)["scan_id"].iloc[3]
    alice.get_by_test_id("stMain").get_by_test_id("stSelectbox").first.click()  # not the sidebar's workspace picker
    alice.get_by_role("option", name=scan).click()
    alice.get_by_role("heading", name=f"Reviews of scan {scan}").wait_for()
    _settle(alice)
    alice.get_by_role("heading", name="Reviews of scan").wait_for()
    _shot(alice, "reviews_panel_empty")
    panel = alice.locator('[data-testid="stMain"]')  # the only review panel on the page
    panel.get_by_text("Write a review").click()
    panel.get_by_label("Comment (Markdown)").wait_for()
    _shot(alice, "reviews_panel_form")
    panel.get_by_text("artefact", exact=True).click()
    _settle(alice)
    panel.get_by_label("Comment (Markdown)").fill(PAYLOAD)
    panel.get_by_label("Tags").fill("hippocampus, xss-test")
    panel.get_by_label("Tags").press("Enter")
    _settle(alice)
    panel.get_by_role("button", name="Save review").click()
    alice.get_by_text("Review saved.").wait_for()
    _settle(alice)
    _no_exception(alice)
    stored = store.find()
    assert len(stored) == 1 and stored[0].text == PAYLOAD and stored[0].author == "alice"
    assert stored[0].verdict == "artefact" and stored[0].tags == ("hippocampus", "xss-test")
    assert stored[0].target == {"kind": "scan", "scan_id": scan}
    assert stored[0].settings["page"] == "pages/overview.py" and len(stored[0].settings["slices"]) == 3
    alice.get_by_text("<script>window.__xss").first.scroll_into_view_if_needed()
    _shot(alice, "reviews_panel_written")
    assert not _xss_fired(alice)
    alice.close()

    bob = _page(browser)
    _sign_in(bob, app_url, "bob", BOB_PW)
    bob.get_by_role("link", name="Reviews").click()
    bob.get_by_role("heading", name="Reviews", exact=True).wait_for()
    _settle(bob)
    _no_exception(bob)
    main = bob.locator('[data-testid="stMain"]')
    main.get_by_text("Left hippocampus relevance looks").wait_for()
    text = main.inner_text()
    # the payload is shown as the words that were typed, and none of it became markup
    assert "<script>window.__xss = 'script'</script>" in text and "<img src=x onerror=" in text
    assert main.locator("script").count() == 0 and main.locator("img[onerror]").count() == 0
    assert main.locator("a[href^='javascript']").count() == 0 and main.locator("a[href^='data:']").count() == 0
    # reference-style and nested images load nothing (a remote image is a tracking pixel)
    assert main.locator("img[src*='tracker']").count() == 0
    assert main.locator("strong", has_text="plausible").count() >= 1  # Markdown still renders
    assert not _xss_fired(bob)
    # a viewer reads but cannot write, reply or edit
    assert main.get_by_role("button", name="Reply").count() == 0
    assert main.get_by_role("button", name="Edit").count() == 0
    _shot(bob, "reviews_page_as_viewer")
    # the link back restores the scan the review was written on
    bob.get_by_role("link", name="Open the view this was written on").click()
    bob.get_by_role("heading", name="Dataset overview").wait_for()
    _settle(bob)
    assert f"scan={scan}" in bob.url
    bob.get_by_role("tab", name="Scan viewer").click()
    _settle(bob)
    bob.get_by_role("heading", name=f"Reviews of scan {scan}").wait_for()
    assert bob.get_by_text(scan).first.is_visible()
    _shot(bob, "reviews_link_restores_view")
    bob.close()


def test_blinded_queue_and_agreement(browser, team_app, demo_ws):
    app_url, store = team_app
    cohort = pd.read_csv(demo_ws.cohort_csv)
    # two other raters have judged the same three scans
    for name, verdicts in (("carl", ["plausible", "artefact", "plausible"]), ("dora", ["plausible", "artefact", "unsure"])):
        who = auth.Identity(name, "reviewer")
        for scan, verdict in zip(cohort["scan_id"].iloc[:3], verdicts):
            store.create(who, {"kind": "scan", "scan_id": scan}, {}, verdict=verdict, text="", blinded=True)
    page = _page(browser)
    _sign_in(page, app_url, "alice", ALICE_PW)
    page.get_by_role("link", name="Reviews").click()
    page.get_by_role("heading", name="Reviews", exact=True).wait_for()
    page.get_by_role("tab", name="Review queue").click()
    page.get_by_text("scans rated").first.wait_for()
    _settle(page)
    _no_exception(page)
    rated_before = len(store.reviewed_targets("alice"))
    main = page.locator('[data-testid="stMain"]')
    assert main.get_by_text("Blinded: diagnosis, prediction and score are hidden").is_visible()
    queue = page.locator('[role="tabpanel"]:visible')
    shown = queue.locator("code").filter(has_text="_ses-").first.inner_text()
    assert shown in set(cohort["scan_id"])
    assert queue.locator('[data-testid="stDataFrame"]').count() == 0  # no diagnosis, prediction or score
    _shot(page, "reviews_queue_blinded")
    queue.get_by_text("implausible", exact=True).click()
    _settle(page)
    main.get_by_role("button", name="Save and next").click()
    page.get_by_text(f"Rated {shown}.").wait_for()
    _settle(page)
    assert len(store.reviewed_targets("alice")) == rated_before + 1
    assert store.find(author="alice", target={"kind": "scan", "scan_id": shown})[0].blinded
    assert queue.locator("code").filter(has_text="_ses-").first.inner_text() != shown  # the next scan
    page.get_by_role("tab", name="Agreement").click()
    page.get_by_text("Fleiss' κ").first.wait_for()
    _settle(page)
    _no_exception(page)
    assert page.get_by_text("Cohen's κ for each pair of raters").is_visible()
    _shot(page, "reviews_agreement")
    page.close()
