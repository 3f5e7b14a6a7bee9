"""Hash chain over the review audit; no INSERT OR REPLACE (SQLite) or TRUNCATE (PostgreSQL) of it.

Existing audit rows are chained in id order. SQLite's REPLACE deletes a conflicting row without firing
DELETE triggers, so a BEFORE INSERT trigger now refuses any row that would collide with a stored one.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

from lib.reviews.audit import GENESIS, canonical, chain_hash

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_MSG = "review_audit is append-only"
_SQLITE_TRIGGERS = {
    "review_audit_no_update": f"BEFORE UPDATE ON review_audit BEGIN SELECT RAISE(ABORT, '{_MSG}'); END",
    "review_audit_no_delete": f"BEFORE DELETE ON review_audit BEGIN SELECT RAISE(ABORT, '{_MSG}'); END",
    # INSERT OR REPLACE would silently delete the row it collides with on any unique key
    "review_audit_no_replace": (
        "BEFORE INSERT ON review_audit WHEN EXISTS (SELECT 1 FROM review_audit WHERE id = NEW.id "
        "OR (review_id = NEW.review_id AND version = NEW.version) OR prev_hash = NEW.prev_hash) "
        f"BEGIN SELECT RAISE(ABORT, '{_MSG}'); END"),
}


def _chain_existing(bind) -> None:
    audit = sa.table("review_audit", sa.column("id", sa.Integer), sa.column("review_id", sa.Integer),
                     sa.column("version", sa.Integer), sa.column("action", sa.String),
                     sa.column("actor", sa.String), sa.column("at", sa.DateTime(timezone=True)),
                     sa.column("snapshot", sa.JSON), sa.column("prev_hash", sa.String),
                     sa.column("row_hash", sa.String))
    prev = GENESIS
    for a in bind.execute(sa.select(audit).order_by(audit.c.id)).all():
        h = chain_hash(prev, canonical(a.id, a.review_id, a.version, a.action, a.actor, a.at, a.snapshot))
        bind.execute(audit.update().where(audit.c.id == a.id).values(prev_hash=prev, row_hash=h))
        prev = h


def upgrade() -> None:
    bind = op.get_bind()
    pg = bind.dialect.name == "postgresql"
    with op.batch_alter_table("review_audit") as b:
        b.add_column(sa.Column("prev_hash", sa.String(64)))
        b.add_column(sa.Column("row_hash", sa.String(64)))
    if pg:
        op.execute("ALTER TABLE review_audit DISABLE TRIGGER review_audit_append_only")
        _chain_existing(bind)
        op.execute("ALTER TABLE review_audit ENABLE TRIGGER review_audit_append_only")
    else:
        for name in ("review_audit_no_update", "review_audit_no_delete"):
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        _chain_existing(bind)
    # SQLite rebuilds the table here (its triggers go with the old one: they are created below)
    with op.batch_alter_table("review_audit") as b:
        b.alter_column("prev_hash", existing_type=sa.String(64), nullable=False)
        b.alter_column("row_hash", existing_type=sa.String(64), nullable=False)
        b.create_unique_constraint("uq_review_audit_prev_hash", ["prev_hash"])
    if pg:
        op.execute("CREATE TRIGGER review_audit_no_truncate BEFORE TRUNCATE ON review_audit "
                   "FOR EACH STATEMENT EXECUTE FUNCTION review_audit_append_only()")
    else:
        for name, body in _SQLITE_TRIGGERS.items():
            op.execute(f"CREATE TRIGGER {name} {body}")


def downgrade() -> None:
    pg = op.get_bind().dialect.name == "postgresql"
    if pg:
        op.execute("DROP TRIGGER IF EXISTS review_audit_no_truncate ON review_audit")
    else:
        for name in _SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    with op.batch_alter_table("review_audit") as b:
        b.drop_constraint("uq_review_audit_prev_hash", type_="unique")
        b.drop_column("row_hash")
        b.drop_column("prev_hash")
    if not pg:
        for name in ("review_audit_no_update", "review_audit_no_delete"):
            op.execute(f"CREATE TRIGGER {name} {_SQLITE_TRIGGERS[name]}")
