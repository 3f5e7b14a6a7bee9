"""Users, reviews and the append-only review audit.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("username", sa.String(200), nullable=False, unique=True),
        sa.Column("email", sa.String(320), index=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.String(255)),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("last_login", _TS),
    )
    op.create_table(
        "reviews",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("uid", sa.String(32), nullable=False, unique=True),
        sa.Column("workspace", sa.String(200), nullable=False, index=True),
        sa.Column("parent_id", sa.Integer, sa.ForeignKey("reviews.id"), index=True),
        sa.Column("target_kind", sa.String(16), nullable=False),
        sa.Column("target_key", sa.String(400), nullable=False, index=True),
        sa.Column("target", sa.JSON, nullable=False),
        sa.Column("page", sa.String(200)),
        sa.Column("run_id", sa.String(200), index=True),
        sa.Column("checkpoint", sa.String(128)),
        sa.Column("method", sa.String(100)),
        sa.Column("settings", sa.JSON, nullable=False),
        sa.Column("verdict", sa.String(16)),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("tags", sa.String(1000), nullable=False),
        sa.Column("author", sa.String(200), nullable=False, index=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.Column("updated_by", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("resolved_by", sa.String(200)),
        sa.Column("resolved_at", _TS),
        sa.Column("deleted", sa.Boolean, nullable=False),
        sa.Column("deleted_by", sa.String(200)),
        sa.Column("deleted_at", _TS),
        sa.Column("blinded", sa.Boolean, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
    )
    op.create_table(
        "review_audit",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("review_id", sa.Integer, sa.ForeignKey("reviews.id"), nullable=False, index=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("at", _TS, nullable=False),
        sa.Column("snapshot", sa.JSON, nullable=False),
        sa.UniqueConstraint("review_id", "version", name="uq_review_audit_version"),
    )
    # the audit is append-only in the database itself, not only by convention of this code
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE FUNCTION review_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
                   "BEGIN RAISE EXCEPTION 'review_audit is append-only'; END $$")
        op.execute("CREATE TRIGGER review_audit_append_only BEFORE UPDATE OR DELETE ON review_audit "
                   "FOR EACH ROW EXECUTE FUNCTION review_audit_append_only()")
    else:
        for what in ("UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER review_audit_no_{what.lower()} BEFORE {what} ON review_audit "
                       "BEGIN SELECT RAISE(ABORT, 'review_audit is append-only'); END")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS review_audit_append_only ON review_audit")
        op.execute("DROP FUNCTION IF EXISTS review_audit_append_only()")
    op.drop_table("review_audit")
    op.drop_table("reviews")
    op.drop_table("users")
