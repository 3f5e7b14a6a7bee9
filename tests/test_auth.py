"""Accounts: argon2 password hashes, the `users` CLI, roles taking effect at once, OpenID Connect mapping."""

from __future__ import annotations

import io

import pytest

from lib.reviews import auth
from lib.cli import main
from lib.reviews import ReviewStore
from lib.data.workspace import Workspace

PASSWORD = "correct horse battery"


@pytest.fixture
def ws(tmp_path, monkeypatch):
    monkeypatch.delenv("RELEVANCE_ATLAS_DB", raising=False)
    monkeypatch.delenv("RELEVANCE_ATLAS_ACCOUNTS", raising=False)
    # `users` commands write the server's settings: never the repository's server.toml
    monkeypatch.setenv("RELEVANCE_ATLAS_CONFIG", str(tmp_path / "server.toml"))
    return Workspace.create(tmp_path / "ws")


def _cli(ws, *args, stdin: str = "") -> int:
    import sys

    old = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        return main(["--workspace", str(ws.root), "users", *args])
    finally:
        sys.stdin = old


def test_passwords_are_argon2id_hashes():
    h = auth.hash_password(PASSWORD)
    assert h.startswith("$argon2id$") and PASSWORD not in h
    assert auth.hash_password(PASSWORD) != h  # salted
    assert auth.check_password(h, PASSWORD) and not auth.check_password(h, PASSWORD + "!")
    assert not auth.check_password(None, PASSWORD) and not auth.check_password("not a hash", PASSWORD)
    with pytest.raises(auth.AccountError, match="at least"):
        auth.hash_password("short")


def test_users_cli_manages_accounts(ws, capsys):
    store = ReviewStore.for_workspace(ws)
    assert not auth.accounts_configured(store)
    assert _cli(ws, "list") == 0 and "no accounts" in capsys.readouterr().out
    assert _cli(ws, "add", "alice", "--role", "reviewer", "--password-stdin", stdin=PASSWORD + "\n") == 0
    assert auth.accounts_configured(store)
    assert _cli(ws, "add", "alice", "--password-stdin", stdin=PASSWORD + "\n") == 1
    assert "already exists" in capsys.readouterr().err
    assert _cli(ws, "add", "bob", "--password-stdin", stdin="short\n") == 1
    assert _cli(ws, "add", "bad name;", "--password-stdin", stdin=PASSWORD + "\n") == 1
    assert _cli(ws, "add", "carol@lab.org", "--role", "admin", "--no-password") == 0
    capsys.readouterr()
    assert _cli(ws, "list") == 0
    out = capsys.readouterr().out
    assert "alice" in out and "reviewer" in out and "carol@lab.org" in out and "OpenID Connect" in out
    assert "bob" not in out

    who = auth.authenticate(store, "alice", PASSWORD)
    assert who == auth.Identity("alice", "reviewer", "local")
    assert auth.authenticate(store, "alice", "wrong password!") is None
    assert auth.authenticate(store, "nobody", PASSWORD) is None
    assert auth.authenticate(store, "carol@lab.org", "") is None  # no local password: no local login

    # a role change applies to a signed-in user at their next page view
    assert _cli(ws, "role", "alice", "admin") == 0
    assert auth.current_identity(store, who).role == "admin"
    assert _cli(ws, "passwd", "alice", "--password-stdin", stdin="another long password\n") == 0
    assert auth.authenticate(store, "alice", PASSWORD) is None
    assert auth.authenticate(store, "alice", "another long password") is not None
    assert _cli(ws, "deactivate", "alice") == 0
    assert auth.current_identity(store, who) is None and auth.authenticate(store, "alice", "another long password") is None
    assert auth.accounts_configured(store)  # deactivated accounts still count: the server stays closed
    assert _cli(ws, "role", "nobody", "admin") == 1


def test_oidc_identities_get_roles_from_the_users_table(ws):
    store = ReviewStore.for_workspace(ws)
    auth.add_user(store, "carol@lab.org", "admin")
    auth.add_user(store, "dave", "reviewer", email="Dave@Lab.org")
    assert auth.identity_from_oidc(store, {"email": "Carol@lab.org", "name": "Carol C."}) == \
        auth.Identity("Carol@lab.org", "admin", "oidc", "Carol C.")
    assert auth.identity_from_oidc(store, {"email": "dave@lab.org"}).role == "reviewer"
    assert auth.identity_from_oidc(store, {"email": "eve@lab.org"}).role == "viewer"
    assert auth.identity_from_oidc(store, {"sub": "x1"}, default_role="reviewer").role == "reviewer"
    auth.deactivate(store, "dave")
    with pytest.raises(auth.PermissionDenied, match="deactivated"):
        auth.identity_from_oidc(store, {"email": "dave@lab.org"})
    with pytest.raises(auth.PermissionDenied):
        auth.identity_from_oidc(store, {})


def test_oidc_refuses_an_unverified_e_mail(ws):
    store = ReviewStore.for_workspace(ws)
    auth.add_user(store, "carol@lab.org", "admin")
    # some providers let anyone put any address on an account: an unverified one must not pick a role
    for flag in (False, "false"):
        with pytest.raises(auth.PermissionDenied, match="not verified"):
            auth.identity_from_oidc(store, {"email": "carol@lab.org", "email_verified": flag})
        with pytest.raises(auth.PermissionDenied, match="not verified"):
            auth.identity_from_oidc(store, {"email": "nobody@lab.org", "email_verified": flag}, "reviewer")
    assert auth.identity_from_oidc(store, {"email": "carol@lab.org", "email_verified": True}).role == "admin"
    # providers that do not send the claim at all are trusted as before
    assert auth.identity_from_oidc(store, {"email": "carol@lab.org"}).role == "admin"
    assert auth.identity_from_oidc(store, {"sub": "x1", "email_verified": False}).username == "x1"


def test_permission_helpers():
    viewer, rev, admin = (auth.Identity("v", "viewer"), auth.Identity("r", "reviewer"), auth.Identity("a", "admin"))
    assert [auth.can_write(x) for x in (None, viewer, rev, admin)] == [False, False, True, True]
    assert auth.can_change(rev, "r") and not auth.can_change(rev, "someone") and auth.can_change(admin, "someone")
    assert not auth.can_change(viewer, "v")
