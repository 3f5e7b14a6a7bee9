"""Sign-in and the review database of a workspace: who is using the app, and where reviews live.

Whether anonymous visitors get only the sign-in page is decided by :func:`lib.reviews.signin.decide`: the
server's ``accounts`` setting (``accounts = "required"``, written by ``python -m lib users add``), or
OpenID Connect configured in Streamlit's secrets (an ``[auth]`` section, used through ``st.login``), or,
on a server whose settings say nothing, any account in the account database. With accounts required,
no state of the account database opens the dashboard. Otherwise the app is open, as on a single-user
lab laptop, and reviews carry the name typed into the sidebar.

The account database is the server's: ``$RELEVANCE_ATLAS_DB`` if set, else the default workspace's
(so choosing another workspace folder in the sidebar cannot switch accounts off).
"""

from __future__ import annotations

import logging
import re

import streamlit as st

from lib.reviews import auth, signin
from lib.core import settings
from lib.reviews import DatabaseUnavailable, ReviewStore, database_url
from lib.data.workspace import Workspace

_LOG = logging.getLogger("relevance_atlas.signin")


@st.cache_resource(show_spinner=False)
def _store(url: str, workspace: str) -> ReviewStore:
    return ReviewStore(url, workspace=workspace)


def review_store(ws: Workspace) -> ReviewStore:
    """The workspace's review store (one engine and connection pool per database and server process)."""
    return _store(database_url(ws), ws.name)


def accounts_store() -> ReviewStore:
    """The server's account database (reads no more of the default workspace than where it is)."""
    return _store(signin.accounts_database_url(), "accounts")


@st.cache_data(ttl=10, show_spinner=False)
def _account_state(url: str, _store_: ReviewStore) -> signin.AccountState:
    # counted at most every 10 s per server, not on every slider move
    return signin.account_state(_store_)


def _oidc_providers() -> list[str | None] | None:
    """Providers configured in ``[auth]`` of the secrets; None when OpenID Connect is not configured."""
    try:
        conf = st.secrets.get("auth")
    except Exception:  # no secrets file at all
        return None
    if not conf:
        return None
    named = [k for k, v in conf.items() if hasattr(v, "keys")]
    return named or [None]


def _oidc_default_role() -> str:
    try:
        return str(st.secrets.get("relevance_atlas", {}).get("oidc_default_role", "viewer"))
    except Exception:
        return "viewer"


_NO_WORKSPACE_JSON = ("The default workspace's workspace.json, which says where the accounts are, cannot be "
                      "read, so nobody can sign in now. On the server: restore it, or set $RELEVANCE_ATLAS_DB; "
                      "the server's log names the file and the problem.")
_PROBLEM = ("The dashboard cannot read its account database, so nobody can sign in now. The server's log "
            "says why; on the server, `python -m lib users list` shows the problem.")


def _gate(providers) -> tuple[signin.Gate, ReviewStore | None]:
    """The gate now, and the account store when it could be opened. Never raises: an unreadable
    setting or account database fails closed (the details go to the server's log, not to visitors)."""
    try:
        conf = settings.load()
    except settings.SettingsError as exc:
        _LOG.error("%s", exc)
        return signin.Gate(required=True, problem="The server's settings file cannot be read, so nobody can "
                                                  "sign in now. The server's log names the problem."), None
    if conf.accounts_set and not conf.accounts_required and providers is None:
        return signin.decide(conf, False, None), None  # explicitly open: the database is not consulted
    try:
        store = accounts_store()
        state = _account_state(store.url, store)
    except signin.AccountsUnavailable as exc:
        _LOG.error("%s", exc)
        return signin.decide(conf, providers is not None, None, _NO_WORKSPACE_JSON), None
    except DatabaseUnavailable as exc:
        _LOG.error("account database: %s", exc)
        return signin.decide(conf, providers is not None, None, _PROBLEM), None
    except Exception as exc:  # a replaced or damaged database file
        _LOG.exception("account database unreadable: %s", exc)
        return signin.decide(conf, providers is not None, None, _PROBLEM), None
    return signin.decide(conf, providers is not None, state), store


def login_gate() -> auth.Identity | None:
    """Call first in ``app.py``. Returns who is signed in, or None when the app is open to everyone.

    With a sign-in required and nobody signed in, shows only the sign-in page and stops the script.
    """
    providers = _oidc_providers()
    gate, store = _gate(providers)
    if not gate.required:
        st.session_state["accounts_on"] = False
        st.session_state.pop("identity", None)
        return None
    st.session_state["accounts_on"] = True
    who = None
    try:
        if store is None:
            who = None
        elif providers is not None and st.user.is_logged_in:
            who = auth.identity_from_oidc(store, st.user.to_dict(), _oidc_default_role())
        elif st.session_state.get("identity") is not None:
            who = auth.current_identity(store, st.session_state["identity"])
            if who is None:
                st.session_state.pop("identity", None)
                st.session_state["login_message"] = "Your account was deactivated."
    except auth.PermissionDenied as exc:
        st.session_state["login_message"] = str(exc)
        who = None
    except DatabaseUnavailable as exc:
        _LOG.error("account database: %s", exc)
        gate, who = signin.Gate(required=True, problem=_PROBLEM), None
    if who is None:
        def sign_in() -> None:
            _sign_in_page(store, providers, gate)

        pages = [st.Page(sign_in, title="Sign in", icon=":material/login:", url_path="login", default=True)]
        # the sign-in answers at the address asked for (a shared link), so after signing in the same
        # address shows the page it names, with its query parameters
        asked = (st.context.url or "").rstrip("/").rsplit("/", 1)[-1]
        if asked and asked != "login" and re.fullmatch(r"[A-Za-z0-9_-]+", asked) and ":" not in asked:
            pages.append(st.Page(sign_in, title="Sign in", url_path=asked))
        st.navigation(pages, position="hidden").run()
        st.stop()
    st.session_state["identity"] = who
    return who


def _client_address() -> str | None:
    """The visitor's address (behind a reverse proxy on this machine, the one it forwards in
    X-Forwarded-For: uvicorn trusts that header from 127.0.0.1, or from $FORWARDED_ALLOW_IPS)."""
    try:
        return st.context.ip_address
    except Exception:
        return None


def _sign_in_page(store: ReviewStore | None, providers, gate: signin.Gate) -> None:
    st.title("Sign in")
    st.caption("relevance-atlas · this dashboard is shared by a team; sign in to see it.")
    if msg := st.session_state.pop("login_message", None):
        st.warning(msg)
    if gate.problem:
        st.error(gate.problem)
    elif gate.notice:
        st.warning(gate.notice)
    if providers is not None:
        for provider in providers:
            st.button(f"Sign in with {provider or 'your organisation'}", key=f"oidc-{provider}", type="primary",
                      on_click=st.login, args=(provider,) if provider else ())
    if gate.passwords and store is not None:
        with st.form("sign-in"):
            username = st.text_input("User name", autocomplete="username")
            password = st.text_input("Password", type="password", autocomplete="current-password")
            submitted = st.form_submit_button("Sign in", type="primary")
        if submitted:
            try:
                attempt = signin.sign_in(store, username, password, _client_address())
            except DatabaseUnavailable as exc:
                _LOG.error("account database: %s", exc)
                st.error(_PROBLEM)
                return
            if attempt.identity is None:
                st.error(attempt.message)
            else:
                st.session_state["identity"] = attempt.identity
                st.rerun()
        st.caption("Accounts are made by an administrator: `python -m lib users add NAME --role reviewer`.")


def sidebar_account(who: auth.Identity | None) -> None:
    """Who is signed in and a sign-out button; in an open app, the name reviews are written under."""
    with st.sidebar:
        if who is not None:
            st.caption(f"Signed in as **{who.label}** · {who.role}")
            if st.button("Sign out", key="sign-out"):
                st.session_state.pop("identity", None)
                if who.source == "oidc":
                    st.logout()
                st.rerun()
        else:
            # the typed name rides in the address (?reviewer=): a reload or another page of this tab keeps it
            if not st.session_state.get("author_name") and st.query_params.get("reviewer"):
                st.session_state["author_name"] = st.query_params["reviewer"]
            st.text_input("Your name", key="author_name", placeholder="shown on your reviews",
                          help="No accounts are configured on this server, so reviews carry the name typed "
                               "here (kept in the address as ?reviewer=). `python -m lib users add` turns "
                               "accounts on.")
            name = " ".join(str(st.session_state.get("author_name") or "").split())
            if name and st.query_params.get("reviewer") != name:
                st.query_params["reviewer"] = name


def current_identity() -> auth.Identity | None:
    """Who acts on this page: the signed-in identity, or in an open app a reviewer by the typed name."""
    who = st.session_state.get("identity")
    if who is not None or st.session_state.get("accounts_on"):
        return who
    name = " ".join(str(st.session_state.get("author_name") or "").split())
    return auth.Identity(name, "reviewer", "open") if name else None


def current_actor() -> auth.Identity | None:
    """Who acts at this moment, re-read from the account database on every call: call it at the click,
    in the button's handler or callback, never keep a value from the render (a callback runs before
    ``app.py`` signs the request in again, and a demoted or deactivated user's page still shows the
    buttons of their old role). None when nobody is signed in or the account was deactivated.

    In an open app (no accounts: a single-user laptop) it is a reviewer by the name typed in the sidebar,
    or "local user", who may do everything but moderate. The app counts as open only when sign-in found
    it open and the server's settings do not require accounts; an unreadable account database or settings
    file counts as nobody (fail closed).
    """
    from lib.core import settings
    from lib.core.settings import SettingsError

    if st.session_state.get("accounts_on") is False:
        try:
            required = settings.load().accounts_required
        except SettingsError:
            return None
        if not required:
            name = " ".join(str(st.session_state.get("author_name") or "").split())
            return auth.Identity(name or "local user", "reviewer", "open")
    who = st.session_state.get("identity")
    if who is None:
        return None
    try:
        return auth.refresh(accounts_store(), who)
    except DatabaseUnavailable:
        return None
