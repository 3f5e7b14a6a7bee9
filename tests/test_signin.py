"""The sign-in gate fails closed, sign-ins are throttled and bounded, and the shipped config listens locally."""

from __future__ import annotations

import io
import sys
import threading
import time
import tomllib
from pathlib import Path

import pytest

from lib.reviews import auth, signin
from lib.core import settings
from lib.cli import main
from test_auth import _cli
from lib.reviews import ReviewStore
from lib.reviews import db as rdb
from lib.data.workspace import Workspace

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse battery"


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A default workspace whose account database is its own reviews.db, and a server settings file."""
    for var in ("RELEVANCE_ATLAS_DB", settings.ACCOUNTS_ENV, settings.ROOTS_ENV):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv(settings.CONFIG_ENV, str(tmp_path / "server.toml"))
    ws = Workspace.create(tmp_path / "ws")
    monkeypatch.setenv("RELEVANCE_ATLAS_WORKSPACE", str(ws.root))
    return ws


def _replace(root: Path, content: bytes | None) -> None:
    """Delete the account database (with its WAL) and maybe put ``content`` there, as after a restart."""
    for f in root.glob("reviews.db*"):
        f.unlink()
    if content is not None:
        (root / "reviews.db").write_bytes(content)
    rdb._migrated.clear()  # what a restart forgets


def _gate(oidc: bool = False) -> signin.Gate:
    """The gate as the sign-in page computes it (without its 10 s cache)."""
    try:
        store = ReviewStore(signin.accounts_database_url())
        state = signin.account_state(store)
    except Exception:
        return signin.decide(settings.load(), oidc, None, "unreadable")
    return signin.decide(settings.load(), oidc, state)


# --------------------------------------------------------------------------- fail closed
def test_gate_decision_table():
    S = settings.ServerSettings
    none, some_inactive = signin.AccountState(0, 0, 0), signin.AccountState(3, 0, 0)
    with_admin = signin.AccountState(2, 2, 1)
    required, unset, off = S("required", True), S(), S("off", True)
    # the setting alone asks for a sign-in, whatever the database holds or whether it can be read
    for state in (none, some_inactive, with_admin, None):
        assert signin.decide(required, False, state).required
        assert signin.decide(unset, True, state).required  # OpenID Connect configured
    assert signin.decide(required, False, none).notice == signin.NO_ADMIN
    assert signin.decide(required, False, some_inactive).notice == signin.NO_ADMIN
    assert signin.decide(required, False, with_admin).notice is None
    gate = signin.decide(required, False, None, "cannot read")
    assert not gate.passwords and gate.problem == "cannot read"
    # a server set up before the setting: any account, even all deactivated, keeps the sign-in
    assert signin.decide(unset, False, some_inactive).required
    assert signin.decide(unset, False, None).required
    assert not signin.decide(unset, False, none).required
    # written out as off: a laptop, open whatever the database holds
    assert not signin.decide(off, False, some_inactive).required and not signin.decide(off, False, None).required


def test_users_add_requires_sign_in_and_no_database_state_opens_it(server, capsys):
    assert not _gate().required  # a fresh laptop: open
    assert _cli(server, "add", "root", "--role", "admin", "--password-stdin", stdin=PASSWORD + "\n") == 0
    out = capsys.readouterr().out
    assert 'accounts = "required"' in out and str(settings.config_path()) in out
    assert settings.load().accounts_required
    assert 'accounts = "required"' in settings.config_path().read_text()
    assert _gate().required and _gate().notice is None

    # every account deactivated (a natural reaction to an incident)
    assert _cli(server, "deactivate", "root") == 0
    gate = _gate()
    assert gate.required and gate.notice == signin.NO_ADMIN
    assert auth.authenticate(ReviewStore.for_workspace(server), "root", PASSWORD) is None
    # the locked-out admin recovers with the CLI
    assert _cli(server, "list") == 0 and "no active administrator" in capsys.readouterr().out
    assert _cli(server, "activate", "root") == 0
    assert auth.authenticate(ReviewStore.for_workspace(server), "root", PASSWORD).role == "admin"
    assert _gate().notice is None

    # the database deleted while the server has it open (its WAL left behind): unreadable, stays closed
    db = server.root / "reviews.db"
    db.unlink()
    gate = _gate()
    assert gate.required and (gate.notice or gate.problem)
    # deleted for good, then the server restarted: an empty one is made, nobody can sign in, still closed
    _replace(server.root, None)
    gate = _gate()
    assert gate.required and gate.passwords and gate.notice == signin.NO_ADMIN
    # replaced by something that is not a database at all, or by an empty file
    _replace(server.root, b"not a database" * 100)
    gate = _gate()
    assert gate.required and not gate.passwords and gate.problem
    _replace(server.root, b"")
    assert _gate().required and _gate().notice == signin.NO_ADMIN
    _replace(server.root, None)
    assert _cli(server, "add", "root2", "--role", "admin", "--password-stdin", stdin=PASSWORD + "\n") == 0
    assert _gate().required and _gate().notice is None


def test_environment_setting_and_garbled_settings(server, monkeypatch):
    monkeypatch.setenv(settings.ACCOUNTS_ENV, "required")
    assert _gate().required
    monkeypatch.delenv(settings.ACCOUNTS_ENV)
    settings.config_path().write_text("accounts = [garbled")
    with pytest.raises(settings.SettingsError, match="server.toml"):
        settings.load()


def test_garbled_default_workspace_json_names_the_file_and_fails_closed(server, monkeypatch):
    (server.root / "workspace.json").write_text("{ not json")
    with pytest.raises(signin.AccountsUnavailable, match="workspace.json"):
        signin.accounts_database_url()
    (server.root / "workspace.json").write_text('{"reviews_db": 3}')
    with pytest.raises(signin.AccountsUnavailable, match="workspace.json"):
        signin.accounts_database_url()
    monkeypatch.setenv("RELEVANCE_ATLAS_DB", str(server.root / "accounts.db"))
    assert signin.accounts_database_url() == f"sqlite:///{server.root / 'accounts.db'}"  # the file is not read
    monkeypatch.delenv("RELEVANCE_ATLAS_DB")
    (server.root / "workspace.json").write_text('{"name": "x"}')
    assert signin.accounts_database_url() == f"sqlite:///{server.root / 'reviews.db'}"


# --------------------------------------------------------------------------- throttling
class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_throttle_backs_off_exponentially_per_name_and_per_address():
    clock = Clock()
    th = signin.Throttle(clock=clock)
    alice, addr = ("user", "alice"), ("client", "10.0.0.7")
    for _ in range(signin.FAILURES_ALLOWED - 1):
        th.failed(alice, addr)
    assert th.wait(alice, addr) == (0.0, None)
    th.failed(alice, addr)
    assert th.wait(alice) == (30.0, alice) and th.wait(addr)[0] == 30.0
    clock.t += 30
    assert th.wait(alice, addr)[0] == 0.0
    th.failed(alice, addr)
    assert th.wait(alice)[0] == 60.0  # doubles with every further failure
    for _ in range(10):
        clock.t += 1
        th.failed(alice, addr)
    assert th.wait(alice)[0] == signin.MAX_DELAY_S  # capped
    clock.t += signin.WINDOW_S + signin.MAX_DELAY_S + 1
    assert th.wait(alice, addr) == (0.0, None)  # forgotten after the window
    # another name from the same address waits for the address
    for _ in range(signin.FAILURES_ALLOWED):
        th.failed(("user", f"guess{_}"), addr)
    wait, key = th.wait(("user", "bob"), addr)
    assert wait == 30.0 and key == addr


def test_sign_in_is_refused_while_throttled_and_says_how_long(tmp_path):
    store = ReviewStore(f"sqlite:///{tmp_path / 'a.db'}")
    auth.add_user(store, "alice", "reviewer", PASSWORD)
    clock = Clock()
    th = signin.Throttle(clock=clock)
    for i in range(signin.FAILURES_ALLOWED):
        a = signin.sign_in(store, "alice", "wrong password!", "10.0.0.7", throttle=th)
        assert a.identity is None and a.message.startswith(signin.REFUSED)
    assert "try again in 30 s" in a.message
    # even the right password is refused, by name from another address and from this address for another name
    a = signin.sign_in(store, "alice", PASSWORD, "10.0.0.8", throttle=th)
    assert a.identity is None and "this user name" in a.message and "30 s" in a.message
    a = signin.sign_in(store, "bob", PASSWORD, "10.0.0.7", throttle=th)
    assert a.identity is None and "your address" in a.message
    clock.t += 31
    a = signin.sign_in(store, "Alice ", "still wrong!", "10.0.0.9", throttle=th)  # same name, however typed
    assert "try again in 60 s" in a.message
    clock.t += 61
    assert signin.sign_in(store, "alice", PASSWORD, "10.0.0.9", throttle=th).identity.username == "alice"
    # a success clears the name's count, not the address's
    assert th.wait(("user", "alice")) == (0.0, None)
    assert th.wait(("client", "10.0.0.7"))[0] == 0.0 and th._failures.get(("client", "10.0.0.7"))


def test_throttle_memory_is_bounded():
    th = signin.Throttle(max_tracked=100, clock=Clock())
    for i in range(1000):
        th.failed(("user", f"n{i}"))
    assert len(th._failures) <= 100


def test_concurrent_password_checks_are_bounded(monkeypatch):
    running, peak, lock = [0], [0], threading.Lock()

    def slow_authenticate(store, username, password):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.3)
        with lock:
            running[0] -= 1
        return None

    monkeypatch.setattr(auth, "authenticate", slow_authenticate)
    slots = threading.BoundedSemaphore(2)
    th = signin.Throttle(allowed=1000)
    results = []

    def attempt(i):
        results.append(signin.sign_in(None, f"u{i}", "x", f"10.0.0.{i}", throttle=th, slots=slots,
                                      slot_wait=0.05))

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] == 2
    busy = [r for r in results if r.message == signin.BUSY]
    assert len(results) == 8 and len(busy) >= 4  # turned away quickly rather than queued without bound
    assert all(r.identity is None for r in results)


# --------------------------------------------------------------------------- shipped configuration
def test_shipped_config_listens_on_this_machine_only_and_hides_the_pages_folder():
    conf = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert conf["server"]["address"] == "127.0.0.1"
    assert conf["client"]["showSidebarNavigation"] is False
