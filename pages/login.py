"""Sign-in and the review database of a workspace: who is using the app, and where reviews live.

Accounts are *on* when the server's account database holds an active account (``python -m lib users
add``) or Streamlit's secrets configure OpenID Connect (an ``[auth]`` section, used through
``st.login``). Then anonymous visitors get only the sign-in page. Otherwise the app is open, as on a
single-user lab laptop, and reviews carry the name typed into the sidebar.

The account database is the server's: ``$RELEVANCE_ATLAS_DB`` if set, else the default workspace's
(so choosing another workspace folder in the sidebar cannot switch accounts off).
"""

from __future__ import annotations

import re
import time

import streamlit as st

from lib import auth
from lib.reviews import DatabaseUnavailable, ReviewStore, database_url
from lib.workspace import Workspace, default_workspace_path


@st.cache_resource(show_spinner=False)
def _store(url: str, workspace: str) -> ReviewStore:
    return ReviewStore(url, workspace=workspace)


def review_store(ws: Workspace) -> ReviewStore:
    """The workspace's review store (one engine and connection pool per database and server process)."""
    return _store(database_url(ws), ws.name)


def accounts_store() -> ReviewStore:
    return review_store(Workspace.open(default_workspace_path()))


@st.cache_data(ttl=10, show_spinner=False)
def _accounts_on(url: str, _store_: ReviewStore) -> bool:
    # counted at most every 10 s per server, not on every slider move
    return auth.accounts_configured(_store_)


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


def login_gate() -> auth.Identity | None:
    """Call first in ``app.py``. Returns who is signed in, or None when the app is open to everyone.

    With accounts on and nobody signed in, shows only the sign-in page and stops the script.
    """
    providers = _oidc_providers()
    try:
        store = accounts_store()
        local = _accounts_on(store.url, store)
    except DatabaseUnavailable as exc:
        # fail closed: without the account database nobody can tell whether a login is required
        st.error(f"{exc}\n\nThe dashboard needs its account database to decide who may see it.")
        if st.button("Try again"):
            st.rerun()
        st.stop()
    if providers is None and not local:
        st.session_state["accounts_on"] = False
        st.session_state.pop("identity", None)
        return None
    st.session_state["accounts_on"] = True
    who = None
    try:
        if providers is not None and st.user.is_logged_in:
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
        st.error(str(exc))
        st.stop()
    if who is None:
        def sign_in() -> None:
            _sign_in_page(store, providers, local)

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


def _sign_in_page(store: ReviewStore, providers, local: bool) -> None:
    st.title("Sign in")
    st.caption("relevance-atlas · this dashboard is shared by a team; sign in to see it.")
    if msg := st.session_state.pop("login_message", None):
        st.warning(msg)
    if providers is not None:
        for provider in providers:
            st.button(f"Sign in with {provider or 'your organisation'}", key=f"oidc-{provider}", type="primary",
                      on_click=st.login, args=(provider,) if provider else ())
    if local:
        with st.form("sign-in"):
            username = st.text_input("User name", autocomplete="username")
            password = st.text_input("Password", type="password", autocomplete="current-password")
            submitted = st.form_submit_button("Sign in", type="primary")
        if submitted:
            try:
                who = auth.authenticate(store, username.strip(), password)
            except DatabaseUnavailable as exc:
                st.error(str(exc))
                return
            if who is None:
                time.sleep(1.0)  # slows down password guessing
                st.error("Unknown user name or wrong password.")
            else:
                st.session_state["identity"] = who
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
            st.text_input("Your name", key="author_name", placeholder="shown on your reviews",
                          help="No accounts are configured on this server, so reviews carry the name typed "
                               "here. `python -m lib users add` turns accounts on.")


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
    from lib import settings
    from lib.settings import SettingsError

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
