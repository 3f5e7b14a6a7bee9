"""Who is using the app and what they may do: local accounts, OpenID Connect identities, roles.

Roles, each including the one before:

``viewer``    reads every page and every review
``reviewer``  writes reviews and replies; edits, resolves and deletes only their own
``analyst``   starts computations (training, heatmaps, region tables, group means, predictions,
              biomarkers, evaluations) and cancels their own jobs
``admin``     changes workspaces, cohort tables, splits and atlases; cancels anyone's job; moderates
              reviews (edits, resolves, deletes and restores anyone's; sees deleted ones)

``ACTIONS`` maps each state-changing action to the least role that may do it; the library checks it at
the point of the action (:func:`require`, called by :mod:`lib.jobs` and :mod:`lib.analysis.region_tables` too),
not only the pages by hiding a button. In an *open* app (no accounts on a single-user laptop) every
action but moderation is allowed.

Local accounts live in the ``users`` table of the review database (see :mod:`lib.reviews.db`) and are
managed with ``python -m lib users …``; passwords are hashed with argon2id (argon2-cffi). With OpenID
Connect (``st.login``, configured in Streamlit's secrets) the identity provider says who someone is; a
``users`` row with the same user name or e-mail and no password says which role they get, otherwise
they get the default role. The dashboard asks for a login as soon as either is configured.

Nothing here imports Streamlit: the pages decide how to ask, this module decides who is who.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone

ROLES = ("viewer", "reviewer", "analyst", "admin")

# action -> (least role, what it is, as a sentence's object)
ACTIONS: dict[str, tuple[str, str]] = {
    "review": ("reviewer", "write reviews"),
    "compute": ("analyst", "start computations (heatmaps, region tables, group means, evaluations)"),
    "train": ("analyst", "train or resume models"),
    "cancel_own_job": ("analyst", "cancel their own jobs"),
    "cancel_any_job": ("admin", "cancel other people's jobs"),
    "change_workspace": ("admin", "create or change workspaces, cohort tables and splits"),
    "change_atlas": ("admin", "add or replace atlases"),
    "moderate": ("admin", "moderate other people's reviews"),
}
MIN_PASSWORD = 10
_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,199}$")


class PermissionDenied(Exception):
    """The identity's role does not allow the action; the message says who may."""


class AccountError(ValueError):
    """A user name, role or password that cannot be accepted (the message says why)."""


@dataclass(frozen=True)
class Identity:
    """Someone using the app.

    ``source`` is ``local`` (password), ``oidc`` (identity provider) or ``open`` (no accounts are
    configured: a name typed into the sidebar, acting as a reviewer).
    """

    username: str
    role: str = "viewer"
    source: str = "local"
    display_name: str | None = None

    @property
    def label(self) -> str:
        return self.display_name or self.username


def _rank(role: str) -> int:
    return ROLES.index(role) if role in ROLES else -1


def can_write(who: Identity | None) -> bool:
    return who is not None and _rank(who.role) >= _rank("reviewer")


def is_admin(who: Identity | None) -> bool:
    return who is not None and who.role == "admin"


def can_change(who: Identity | None, author: str) -> bool:
    """May ``who`` edit, resolve, reopen, delete or restore a review written by ``author``?"""
    return can_write(who) and (who.username == author or is_admin(who))


def allowed(who: Identity | None, action: str) -> bool:
    """May ``who`` do ``action`` (a key of ``ACTIONS``)? An open app's user may do all but moderate."""
    least, _ = ACTIONS[action]
    if who is None:
        return False
    if who.source == "open" and action != "moderate":
        return True
    return _rank(who.role) >= _rank(least)


def require(who: Identity | None, action: str) -> None:
    """Raise PermissionDenied (saying which role may) unless ``who`` may do ``action``."""
    if allowed(who, action):
        return
    least, what = ACTIONS[action]
    if who is None:
        raise PermissionDenied(f"Sign in to {what}.")
    need = " or ".join(r for r in ROLES if _rank(r) >= _rank(least))
    article = "an" if need[0] in "aeiou" else "a"
    who_article = "an" if who.role[0] in "aeiou" else "a"
    raise PermissionDenied(f"{who.username} is {who_article} {who.role}: only {article} {need} may {what}. "
                           "An admin can change your role.")


def require_write(who: Identity | None) -> None:
    if who is None:
        raise PermissionDenied("Sign in (or enter your name) to write reviews.")
    if not can_write(who):
        raise PermissionDenied(f"{who.username} is a {who.role}: viewers can read reviews but not write "
                               "them. An admin can give you the reviewer role.")


def require_change(who: Identity | None, author: str, action: str = "edit") -> None:
    require_write(who)
    if not can_change(who, author):
        raise PermissionDenied(f"Only {author} (the author) or an admin can {action} this review.")


# --------------------------------------------------------------------------- passwords
def _hasher():
    from argon2 import PasswordHasher

    return PasswordHasher()  # argon2id with the library's current recommended parameters


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"a password needs at least {MIN_PASSWORD} characters")
    return _hasher().hash(password)


def check_password(stored_hash: str | None, password: str) -> bool:
    from argon2.exceptions import InvalidHashError, VerificationError

    if not stored_hash:
        return False
    try:
        return _hasher().verify(stored_hash, password)
    except (VerificationError, InvalidHashError):
        return False


# --------------------------------------------------------------------------- accounts
def _now() -> datetime:
    return datetime.now(timezone.utc)


def _check_role(role: str) -> str:
    if role not in ROLES:
        raise AccountError(f"unknown role {role!r}; roles are {', '.join(ROLES)}")
    return role


def accounts_configured(store) -> bool:
    """True when the database holds any account, active or not.

    Deactivating every account does not make this False: whether the dashboard asks for a sign-in is
    decided by :func:`lib.reviews.signin.decide` (the server's ``accounts`` setting first), never by there
    being an active account.
    """
    from sqlalchemy import func, select

    from lib.reviews.models import User

    return store.run(lambda s: s.scalar(select(func.count()).select_from(User)) > 0, write=False)


def add_user(store, username: str, role: str, password: str | None = None, email: str | None = None) -> None:
    """Create an account. ``password=None`` makes a role mapping for an OpenID Connect identity."""
    from sqlalchemy import select

    from lib.reviews.models import User

    if not _USERNAME.match(username):
        raise AccountError(f"user name {username!r}: use letters, digits and . _ @ + - (at most 200)")
    _check_role(role)
    hashed = hash_password(password) if password is not None else None

    def work(s):
        if s.scalar(select(User).where(User.username == username)) is not None:
            raise AccountError(f"user {username} already exists")
        s.add(User(username=username, email=email or (username if "@" in username else None), role=role,
                   password_hash=hashed, active=True, created_at=_now()))

    store.run(work)


def _update_user(store, username: str, **changes) -> None:
    from sqlalchemy import select

    from lib.reviews.models import User

    def work(s):
        user = s.scalar(select(User).where(User.username == username))
        if user is None:
            raise AccountError(f"no user {username}")
        for k, v in changes.items():
            setattr(user, k, v)

    store.run(work)


def set_password(store, username: str, password: str) -> None:
    _update_user(store, username, password_hash=hash_password(password))


def set_role(store, username: str, role: str) -> None:
    _update_user(store, username, role=_check_role(role))


def deactivate(store, username: str) -> None:
    """Accounts are never deleted (their reviews keep naming them); a deactivated one cannot sign in."""
    _update_user(store, username, active=False)


def activate(store, username: str) -> None:
    _update_user(store, username, active=True)


def list_users(store) -> list[dict]:
    from sqlalchemy import select

    from lib.reviews.models import User

    def work(s):
        return [{"username": u.username, "email": u.email, "role": u.role, "active": u.active,
                 "login": "password" if u.password_hash else "OpenID Connect",
                 "created_at": u.created_at, "last_login": u.last_login}
                for u in s.scalars(select(User).order_by(User.username))]

    return store.run(work, write=False)


def authenticate(store, username: str, password: str) -> Identity | None:
    """The identity for a correct user name and password of an active account, else None.

    The hash is checked outside any transaction (it takes about ¼ s), so a sign-in never holds the
    database's write lock while it hashes. Callers bound how many run at once (:mod:`lib.reviews.signin`).
    """
    from sqlalchemy import select

    from lib.reviews.models import User

    def read(s):
        user = s.scalar(select(User).where(User.username == username, User.active))
        return None if user is None else (user.password_hash, user.role)

    found = store.run(read, write=False)
    # hash something even for an unknown user, so timing does not reveal which names exist
    stored = found[0] if found else None
    if not check_password(stored or _dummy_hash(), password) or not stored:
        return None
    rehash = _hasher().hash(password) if _hasher().check_needs_rehash(stored) else None

    def record(s):
        user = s.scalar(select(User).where(User.username == username, User.active))
        if user is None or user.password_hash != stored:  # deactivated or password changed meanwhile
            return None
        if rehash:
            user.password_hash = rehash
        user.last_login = _now()
        return Identity(user.username, user.role, "local")

    return store.run(record)


_DUMMY: list[str] = []


def _dummy_hash() -> str:
    if not _DUMMY:
        _DUMMY.append(_hasher().hash("not a password of anyone"))
    return _DUMMY[0]


def current_identity(store, who: Identity) -> Identity | None:
    """``who`` with their role as the database says now (None if the account was deactivated).

    Called on every page view, so a role change or deactivation takes effect without a new login.
    """
    if who.source == "open":
        return who
    if who.source == "oidc":
        return who
    from sqlalchemy import select

    from lib.reviews.models import User

    def work(s):
        user = s.scalar(select(User).where(User.username == who.username, User.active))
        return None if user is None else Identity(user.username, user.role, who.source, who.display_name)

    return store.run(work, write=False)


def identity_from_oidc(store, claims: dict, default_role: str = "viewer") -> Identity:
    """Map an OpenID Connect identity (``st.user``'s claims) to an Identity with a role.

    The user name is the e-mail claim (or ``sub``); the role comes from an active ``users`` row whose
    user name or e-mail matches it, otherwise ``default_role``. An inactive matching row refuses access,
    and so does an e-mail the provider says it has not verified (``email_verified`` false): anyone can
    type someone else's address into an account at some providers, and the address is what picks the
    role and the name reviews are written under.
    """
    from sqlalchemy import func, or_, select

    from lib.reviews.models import User

    _check_role(default_role)
    name = str(claims.get("email") or claims.get("preferred_username") or claims.get("sub") or "").strip()
    if not name:
        raise PermissionDenied("The identity provider sent neither an e-mail nor a subject.")
    verified = claims.get("email_verified")
    if claims.get("email") and (verified is False or str(verified).strip().lower() == "false"):
        raise PermissionDenied(f"The identity provider has not verified the e-mail address {name}: verify it "
                               "there, then sign in again.")
    low = name.lower()

    def work(s):
        return s.scalar(select(User).where(or_(func.lower(User.username) == low, func.lower(User.email) == low)))

    user = store.run(work, write=False)
    if user is not None and not user.active:
        raise PermissionDenied(f"The account {name} is deactivated.")
    role = user.role if user is not None else default_role
    return Identity(name, role, "oidc", claims.get("name") or None)


def refresh(store, who: Identity | None) -> Identity | None:
    """``who`` as the account database says now, for the moment of an action (a click, a callback).

    A role change or deactivation therefore takes effect on the next click, not on the next page load.
    Local accounts: the current role, None once deactivated. OpenID Connect identities: the role of an
    active ``users`` row matching their name or e-mail, None if that row was deactivated, else the role
    they signed in with. ``open`` and ``cli`` identities have no account to re-read and are returned as they are.
    """
    if who is None or who.source not in ("local", "oidc"):
        return who
    if who.source == "local":
        return current_identity(store, who)
    from sqlalchemy import func, or_, select

    from lib.reviews.models import User

    low = who.username.lower()

    def work(s):
        user = s.scalar(select(User).where(or_(func.lower(User.username) == low, func.lower(User.email) == low)))
        return None if user is None else (user.active, user.role)

    row = store.run(work, write=False)
    if row is None:
        return who
    active, role = row
    return Identity(who.username, role, "oidc", who.display_name) if active else None


def who_may(action: str) -> str:
    """The sentence a page shows next to a button the current role cannot use (same words as require)."""
    least, what = ACTIONS[action]
    need = " or ".join(r for r in ROLES if _rank(r) >= _rank(least))
    article = "an" if need[0] in "aeiou" else "a"
    return f"Only {article} {need} may {what}."
