"""PostgreSQL with two roles: an owner that holds the schema, and the role the application connects as.

The owner role owns the tables, their triggers and the trigger function, and runs the migrations. The app
role gets only what the app needs: SELECT, INSERT and UPDATE on ``reviews`` and ``users``, SELECT and
INSERT on ``review_audit`` (no UPDATE, DELETE or TRUNCATE), USAGE on the id sequences and SELECT on
``alembic_version``. It appends to the audit through ``review_audit_append`` (migration 0003, owned by
the owner too), which every role may execute (PostgreSQL's default for functions) and which runs with the
caller's rights, so it grants nothing more. Only a table's owner (or a superuser) may disable or drop its
triggers, so the app role, should it be taken over, can neither rewrite the audit nor switch its protection
off.

    python -m lib reviews setup-postgres --owner-url postgresql://atlas@localhost/atlas --app-role atlas_app

is idempotent: run it again after an upgrade (it migrates first) to re-apply the grants.
"""

from __future__ import annotations

import re

from sqlalchemy import text

from lib.reviews import db

_TABLES = ("review_audit", "reviews", "users", "alembic_version")


class SetupError(ValueError):
    pass


def _ident(name: str) -> str:
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name or ""):
        raise SetupError(f"role name {name!r}: lower-case letters, digits and _ only")
    return f'"{name}"'


def grants(app_role: str, database: str) -> list[str]:
    """The statements that give ``app_role`` the app's rights and nothing more (see the module docstring)."""
    app = _ident(app_role)
    tables = ", ".join(_TABLES)
    return [
        f'GRANT CONNECT ON DATABASE "{database}" TO {app}',
        f"GRANT USAGE ON SCHEMA public TO {app}",
        f"REVOKE ALL ON {tables} FROM PUBLIC",
        f"REVOKE ALL ON {tables} FROM {app}",
        f"GRANT SELECT, INSERT, UPDATE ON reviews, users TO {app}",
        f"GRANT SELECT, INSERT ON review_audit TO {app}",
        f"GRANT SELECT ON alembic_version TO {app}",
        f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {app}",
    ]


def migrate_as_owner(owner_url: str) -> str:
    """Bring the schema to the newest revision as the owner role; returns the revision."""
    engine = db.make_engine(db.normalise_url(owner_url))
    try:
        db.migrate(engine)
    finally:
        engine.dispose()
    return db.head_revision()


def setup_postgres(owner_url: str, app_role: str, *, app_password: str | None = None) -> list[str]:
    """Migrate as the owner, then grant ``app_role`` the app's rights; returns the statements run.

    The app role must exist (``sudo -u postgres createuser --pwprompt NAME``) unless ``app_password`` is
    given and the owner may create roles. It must be neither the owner, a member of the owner role, nor a
    superuser: any of those could still disable the audit's triggers.
    """
    url = db.normalise_url(owner_url)
    if not url.startswith("postgresql"):
        raise SetupError(f"{db.describe(url)} is not a PostgreSQL URL")
    app = _ident(app_role)
    engine = db.make_engine(url)
    try:
        db.migrate(engine)
        done = []
        with engine.begin() as conn:
            owner, database = conn.execute(text("SELECT current_user, current_database()")).one()
            if app_role == owner:
                raise SetupError(f"the app role must differ from the owner role {owner!r}")
            role = conn.execute(text("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = :r"),
                                {"r": app_role}).first()
            if role is None:
                if app_password is None:
                    raise SetupError(f"role {app_role!r} does not exist: create it as a superuser "
                                     f"(sudo -u postgres createuser --pwprompt {app_role}) or give a password")
                from psycopg import sql

                # quoted by the driver, sent without parameters (DDL takes none)
                conn.connection.dbapi_connection.cursor().execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(app_role), sql.Literal(app_password)))
                done.append(f"CREATE ROLE {app} LOGIN PASSWORD '…'")
            elif role.rolsuper or role.rolbypassrls:
                raise SetupError(f"role {app_role!r} is a superuser (or bypasses row security): it could "
                                 "disable the audit's triggers; use an ordinary role")
            elif conn.scalar(text("SELECT pg_has_role(:a, :o, 'MEMBER')"), {"a": app_role, "o": owner}):
                raise SetupError(f"role {app_role!r} is a member of the owner role {owner!r}: it could disable "
                                 "the audit's triggers; revoke that membership first")
            for stmt in grants(app_role, database):
                conn.exec_driver_sql(stmt)
                done.append(stmt)
        return done
    finally:
        engine.dispose()
