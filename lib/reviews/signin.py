"""Who must sign in, and how often one may try: the sign-in gate's decisions, without Streamlit.

**The gate.** A server asks for a sign-in when its settings say so (``accounts = "required"`` in
``server.toml`` or ``$RELEVANCE_ATLAS_ACCOUNTS``, see :mod:`lib.core.settings`), when OpenID Connect is
configured, or, on a server whose settings say nothing, when its account database holds any account,
active or not (servers set up before the setting existed keep asking). The answer never depends on
the account database alone once the setting is there: a missing, emptied or replaced database, or
every account deactivated, leaves the sign-in page, where nobody can get in, rather than an open
dashboard. ``accounts = "off"``, written explicitly, is a single-user laptop: open, whatever the
database holds.

**Throttling.** Every failed password sign-in counts against the user name tried (known or not, so
throttling tells nothing about which names exist) and against the client's address. After
``FAILURES_ALLOWED`` failures within ``WINDOW_S`` seconds, each further failure makes that name or
address wait ``BASE_DELAY_S`` seconds, doubling per failure up to ``MAX_DELAY_S``. A success clears the
name's count (not the address's: signing in to one's own account must not buy more guesses at
others). The counts live in this server process, shared by all its sessions; several processes each
keep their own. At most ``HASH_SLOTS`` password checks (argon2, 64 MiB and about ¼ s each) run at
once; an attempt that cannot get a slot within ``SLOT_WAIT_S`` seconds is turned away with a message,
so parallel attempts cannot exhaust the server's memory or cores.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from lib.reviews import auth

FAILURES_ALLOWED = 5
WINDOW_S = 15 * 60.0
BASE_DELAY_S = 30.0
MAX_DELAY_S = 15 * 60.0
HASH_SLOTS = 2
SLOT_WAIT_S = 5.0
MAX_TRACKED = 10_000  # names and addresses remembered at most (a spray of random names cannot fill memory)

NO_ADMIN = ("No active administrator: recover with `python -m lib users add NAME --role admin` or "
            "`python -m lib users activate NAME` on the server.")
REFUSED = "Unknown user name or wrong password."
BUSY = "The server is busy checking other sign-ins; try again in a few seconds."


class AccountsUnavailable(RuntimeError):
    """The account database cannot be located or read (the message names the file and the problem)."""


# --------------------------------------------------------------------------- where the accounts live
def accounts_database_url() -> str:
    """The account database's URL: ``$RELEVANCE_ATLAS_DB``, else the default workspace's review database.

    Reads only the ``reviews_db`` key of the default workspace's ``workspace.json`` (not the workspace
    itself); a file that cannot be read raises AccountsUnavailable rather than falling back to another
    database, which might hold no accounts.
    """
    from lib.reviews.db import DB_ENV, normalise_url
    from lib.data.workspace import default_workspace_path

    if os.environ.get(DB_ENV):
        return normalise_url(os.environ[DB_ENV])
    root = default_workspace_path()
    path = root / "workspace.json"
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        config = {}
    except (OSError, ValueError) as exc:
        raise AccountsUnavailable(f"{path} cannot be read ({exc.__class__.__name__}: {exc}); it names the "
                                  "account database. Restore it, or set $RELEVANCE_ATLAS_DB.") from None
    url = config.get("reviews_db") if isinstance(config, dict) else None
    if not isinstance(config, dict) or not isinstance(url, (str, type(None))):
        raise AccountsUnavailable(f"{path}: not a workspace description (expected an object with a text "
                                  "reviews_db); restore it, or set $RELEVANCE_ATLAS_DB.")
    return normalise_url(url) if url else f"sqlite:///{Path(root) / 'reviews.db'}"


@dataclass(frozen=True)
class AccountState:
    accounts: int       # every row, active or not
    active: int
    active_admins: int


def account_state(store) -> AccountState:
    from sqlalchemy import func, select

    from lib.reviews.models import User

    def work(s):
        def count(*where):
            return s.scalar(select(func.count()).select_from(User).where(*where))

        return AccountState(count(), count(User.active), count(User.active, User.role == "admin"))

    return store.run(work, write=False)


# --------------------------------------------------------------------------- the gate
@dataclass(frozen=True)
class Gate:
    """What the dashboard shows an anonymous visitor.

    ``required``: only the sign-in page. ``passwords``: the password form is offered (the account
    database was read). ``notice``: a line for the operator (no active administrator). ``problem``:
    the account database could not be read (shown without internals; details go to the log).
    """

    required: bool
    passwords: bool = False
    notice: str | None = None
    problem: str | None = None


def decide(settings, oidc: bool, state: AccountState | None, problem: str | None = None) -> Gate:
    """The gate for ``settings`` (a :class:`lib.core.settings.ServerSettings`), whether OpenID Connect is
    configured, and the account database's ``state`` (None when it could not be read: ``problem``)."""
    explicitly_off = getattr(settings, "accounts_set", False) and not settings.accounts_required
    if explicitly_off and not oidc:
        return Gate(required=False)
    if state is None:
        # nobody can tell whether accounts exist: fail closed
        return Gate(required=True, passwords=False, problem=problem or "The account database cannot be read.")
    required = settings.accounts_required or oidc or (not explicitly_off and state.accounts > 0)
    if not required:
        return Gate(required=False)
    return Gate(required=True, passwords=True, notice=None if state.active_admins else NO_ADMIN)


# --------------------------------------------------------------------------- throttling
def _fmt(seconds: float) -> str:
    seconds = math.ceil(seconds)
    if seconds < 90:
        return f"{seconds} s"
    return f"{math.ceil(seconds / 60)} min"


class Throttle:
    """Failed sign-ins per key (``("user", name)`` or ``("client", address)``) with exponential backoff.

    Thread-safe; ``clock`` is injectable for tests (seconds, monotonic).
    """

    def __init__(self, *, allowed: int = FAILURES_ALLOWED, window: float = WINDOW_S, base: float = BASE_DELAY_S,
                 cap: float = MAX_DELAY_S, max_tracked: int = MAX_TRACKED, clock=time.monotonic):
        self.allowed, self.window, self.base, self.cap = allowed, window, base, cap
        self.max_tracked = max_tracked
        self.clock = clock
        self._lock = threading.Lock()
        self._failures: dict[tuple[str, str], deque[float]] = {}

    def _recent(self, key, now: float) -> deque[float]:
        q = self._failures.get(key)
        if q is None:
            return deque()
        while q and now - q[0] > max(self.window, self.cap):
            q.popleft()
        if not q:
            del self._failures[key]
        return q

    def _wait(self, key, now: float) -> float:
        q = self._recent(key, now)
        n = sum(1 for t in q if now - t <= self.window)
        if n < self.allowed:
            return 0.0
        delay = min(self.cap, self.base * 2 ** (n - self.allowed))
        return max(0.0, q[-1] + delay - now)

    def wait(self, *keys) -> tuple[float, tuple[str, str] | None]:
        """Seconds until ``keys`` may try again (0 when they may now), and the key that waits longest."""
        now = self.clock()
        with self._lock:
            waits = [(self._wait(k, now), k) for k in keys]
        longest = max(waits, default=(0.0, None))
        return (longest[0], longest[1]) if longest[0] > 0 else (0.0, None)

    def failed(self, *keys) -> None:
        now = self.clock()
        with self._lock:
            for k in keys:
                self._failures.setdefault(k, deque()).append(now)
                q = self._failures[k]
                while len(q) > self.allowed + 16:  # enough for the backoff to reach its cap
                    q.popleft()
            if len(self._failures) > self.max_tracked:
                # forget the keys whose last failure is oldest
                for k in sorted(self._failures, key=lambda k: self._failures[k][-1] if self._failures[k] else 0.0)[
                        :len(self._failures) - self.max_tracked]:
                    del self._failures[k]

    def succeeded(self, key) -> None:
        with self._lock:
            self._failures.pop(key, None)

    def reset(self) -> None:
        with self._lock:
            self._failures.clear()


THROTTLE = Throttle()
SLOTS = threading.BoundedSemaphore(HASH_SLOTS)


@dataclass(frozen=True)
class Attempt:
    identity: auth.Identity | None
    message: str | None = None  # why not (None when signed in)
    wait_s: float = 0.0


def _keys(username: str, client: str | None):
    return ("user", username.strip().lower()), ("client", client or "local")


def sign_in(store, username: str, password: str, client: str | None, *, throttle: Throttle | None = None,
            slots: threading.Semaphore | None = None, slot_wait: float = SLOT_WAIT_S) -> Attempt:
    """One password sign-in from ``client`` (an address; None for the server itself), throttled.

    Raises what :func:`lib.reviews.auth.authenticate` raises (``DatabaseUnavailable``).
    """
    throttle = THROTTLE if throttle is None else throttle
    slots = SLOTS if slots is None else slots
    user_key, client_key = _keys(username, client)

    def refused_for_now(wait: float, key) -> Attempt:
        whom = "this user name" if key == user_key else "your address"
        return Attempt(None, f"Too many failed sign-ins for {whom}: try again in {_fmt(wait)}.", wait)

    wait, key = throttle.wait(user_key, client_key)
    if wait:
        return refused_for_now(wait, key)
    if not slots.acquire(timeout=slot_wait):
        return Attempt(None, BUSY)
    try:
        # checked again: attempts that queued for a slot may have used up the allowance meanwhile
        wait, key = throttle.wait(user_key, client_key)
        if wait:
            return refused_for_now(wait, key)
        who = auth.authenticate(store, username.strip(), password)
    finally:
        slots.release()
    if who is None:
        throttle.failed(user_key, client_key)
        wait, key = throttle.wait(user_key, client_key)
        if wait:
            return Attempt(None, f"{REFUSED} {refused_for_now(wait, key).message}", wait)
        return Attempt(None, REFUSED)
    throttle.succeeded(user_key)
    return Attempt(who)
