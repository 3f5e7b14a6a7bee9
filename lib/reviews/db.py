"""Where reviews are stored and how a connection is made: SQLite by default, PostgreSQL by URL.

The database of a workspace is, first match wins:

1. ``$RELEVANCE_ATLAS_DB`` (a team server points every workspace at one PostgreSQL database),
2. ``reviews_db`` in ``workspace.json``, honoured only for a SQLite file inside that workspace (a bare
   path is relative to it) or a URL listed in ``review_databases`` of the server settings
   (:mod:`lib.core.settings`); any other is refused (:class:`DatabaseNotAllowed`), so a workspace.json cannot
   make the server connect to a host or open a file of its choosing,
3. ``sqlite:///<workspace>/reviews.db``.

``postgresql://user:pass@host/db`` URLs are served by psycopg 3. The schema is brought to the newest
Alembic revision whenever a database is opened, under a lock so two processes opening a fresh database
at once do not both create it. On a team server the app connects as a role that may not change the schema
(:mod:`lib.reviews.pgsetup`); a schema already current is left alone, an outdated one is upgraded by the
owner role (``python -m lib reviews migrate --owner-url …``).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

DB_ENV = "RELEVANCE_ATLAS_DB"
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# an arbitrary constant: the advisory lock PostgreSQL holds while one process migrates
_PG_MIGRATION_LOCK = 7_243_511


class DatabaseUnavailable(RuntimeError):
    """The review database cannot be reached (server down or restarting, file locked too long).

    The message says which database and that nothing was saved; the next call tries again.
    """


class DatabaseNotAllowed(DatabaseUnavailable):
    """A workspace.json names a review database that the server's settings do not allow."""


def _comparable(url: str) -> str:
    """A URL without its password (credentials do not choose the database; host, port, name, options do)."""
    return make_url(normalise_url(url))._replace(password=None).render_as_string(hide_password=False)


def database_url(ws=None) -> str:
    """The SQLAlchemy URL of a workspace's review database (see the module docstring)."""
    url = os.environ.get(DB_ENV)
    if url:
        return normalise_url(url)
    if ws is None:
        raise ValueError(f"no workspace and no ${DB_ENV}: cannot tell where reviews are stored")
    root = Path(ws.root)
    own = ws.config.get("reviews_db")
    if not own:
        return f"sqlite:///{root / 'reviews.db'}"
    if "://" not in own:  # a bare path: a SQLite file, relative to the workspace
        own = str((root / Path(own).expanduser()).resolve())
    url = normalise_url(own)
    try:
        u = make_url(url)
    except ArgumentError:
        raise DatabaseNotAllowed(f"{root / 'workspace.json'}: reviews_db is not a database URL or path. "
                                 "Nothing was read or saved.") from None
    if u.get_backend_name() == "sqlite" and not u.query and u.database and u.database != ":memory:":
        db_file = Path(u.database).expanduser().resolve()
        if db_file == root or root in db_file.parents:
            return url
    from lib.core import settings

    try:
        allowed = {_comparable(a) for a in settings.load().review_databases}
    except (settings.SettingsError, ArgumentError):
        allowed = set()  # unreadable settings allow nothing (fail closed)
    if _comparable(url) in allowed:
        return url
    raise DatabaseNotAllowed(
        f"{root / 'workspace.json'} names the review database {describe(url)}, which this server does not "
        f"allow: reviews_db may name a SQLite file inside the workspace or a database listed in "
        f"review_databases of the server settings ({settings.config_path()}). Nothing was read or saved.")


def normalise_url(url: str) -> str:
    """``postgresql://`` and ``postgres://`` mean psycopg 3; a bare path means a SQLite file."""
    if "://" not in url:
        return f"sqlite:///{Path(url).expanduser().resolve()}"
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def describe(url: str | URL) -> str:
    """The URL as shown to people: no password."""
    return make_url(url).render_as_string(hide_password=True)


def make_engine(url: str, *, busy_timeout: float = 30.0) -> Engine:
    """An engine with the settings this project relies on.

    SQLite: WAL (readers never wait for the writer), ``synchronous=NORMAL`` (durable at checkpoints,
    never corrupt), a busy timeout, and write transactions that take the write lock when they start
    (``BEGIN IMMEDIATE``): pysqlite's own deferred BEGIN lets two writers deadlock on the lock upgrade.
    PostgreSQL: connections are pinged before use, so a restarted server is reconnected to silently.
    """
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        if u.database and u.database != ":memory:":
            Path(u.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(u, connect_args={"timeout": busy_timeout, "check_same_thread": False},
                               pool_size=8, max_overflow=24, pool_timeout=busy_timeout)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):
            dbapi_conn.isolation_level = None  # BEGIN is ours (see _on_begin)
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn):
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("write") else "BEGIN")

        return engine
    connect_args = {}
    if u.get_backend_name() == "postgresql":
        connect_args = {"connect_timeout": 5, "application_name": "relevance-atlas"}
    return create_engine(u, pool_pre_ping=True, pool_size=5, max_overflow=20, pool_timeout=busy_timeout,
                         connect_args=connect_args)


_migrated: set[str] = set()
_migrate_lock = threading.Lock()


class SchemaOutdated(DatabaseUnavailable):
    """The schema needs upgrading and the role the app connects as may not change it (as it should not)."""


def _alembic_config():
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def migrate(engine: Engine) -> None:
    """Upgrade the schema to the newest revision (once per database and process).

    A schema already at the newest revision is left alone, so an application role without rights on the
    schema (PostgreSQL's owner/app split, see :mod:`lib.reviews.pgsetup`) opens it; if it is behind and
    the role may not upgrade it, :class:`SchemaOutdated` says which command the owner runs.
    """
    key = engine.url.render_as_string(hide_password=False)
    with _migrate_lock:
        if key in _migrated:
            return
        from alembic import command
        from alembic.migration import MigrationContext
        from sqlalchemy.exc import ProgrammingError

        cfg = _alembic_config()
        head, current = head_revision(), None
        with engine.connect() as conn:
            conn.execution_options(write=True)  # SQLite: hold the write lock for the whole migration
            try:
                with conn.begin():
                    if engine.dialect.name == "postgresql":
                        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})")
                    current = MigrationContext.configure(conn).get_current_revision()
                    if current != head:
                        cfg.attributes["connection"] = conn
                        command.upgrade(cfg, "head")
            except ProgrammingError as exc:
                if getattr(exc.orig, "sqlstate", None) != "42501":  # insufficient privilege
                    raise
                who = engine.url.username or "this role"
                raise SchemaOutdated(
                    f"The review database {describe(engine.url)} is at schema revision {current or 'none'} and "
                    f"this version of the app needs {head}, but {who} may not change the schema (the app role "
                    "should not). Nothing was saved. The database owner upgrades it with: python -m lib "
                    "reviews migrate --owner-url postgresql://OWNER@HOST/DATABASE") from exc
        _migrated.add(key)


def is_unavailable(exc: BaseException) -> bool:
    """True for errors that mean "the database is not there right now" rather than a bug.

    Lost or refused connections, a server shutting down, SQLite's "database is locked" after the busy
    timeout, and PostgreSQL's serialization failures and deadlocks (all worth one retry).
    """
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    from sqlalchemy.exc import InterfaceError, OperationalError

    return isinstance(exc, (OperationalError, InterfaceError))


def unavailable_message(url: str, exc: BaseException) -> str:
    detail = str(getattr(exc, "orig", exc) or exc).strip().splitlines()
    detail = detail[0] if detail else type(exc).__name__
    if "locked" in detail or "busy" in detail:
        what = "is busy (another process holds its write lock)"
    else:
        what = "cannot be reached (restarting or down?)"
    return (f"The review database {describe(url)} {what}: {detail}. Nothing was saved; "
            "try again in a moment — the app reconnects by itself.")
