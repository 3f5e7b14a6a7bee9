"""PostgreSQL: the audit row is chained at commit, so the chain lock is held only through the commit itself.

A write transaction stages its audit content in ``review_audit_pending``; a deferred constraint trigger on
that table runs as the transaction commits (before its commit record) and appends the row through
``review_audit_append`` (migration 0003: chain lock, last row, the server's sha256, the same hash bytes),
then removes the staged row. The lock is released when the commit ends, so no client round trip happens
while it is held. The staging table is UNLOGGED: its rows never outlive their transaction. The trigger
function runs with the rights of whoever commits (SECURITY INVOKER), who needs SELECT, INSERT and DELETE
on the staging table; the migration grants those to every role that may already insert into
``review_audit`` (``setup-postgres`` grants them too). ``review_audit_append`` stays, so an app of the
previous revision still running appends under the same lock. SQLite: nothing to do.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_TABLE = """
CREATE UNLOGGED TABLE review_audit_pending (
    review_id integer NOT NULL,
    version integer NOT NULL,
    action text NOT NULL,
    actor text NOT NULL,
    at timestamptz NOT NULL,
    snapshot json NOT NULL,
    prefix text NOT NULL,
    suffix text NOT NULL,
    PRIMARY KEY (review_id, version)
)
"""

_FUNCTION = """
CREATE FUNCTION review_audit_pending_append() RETURNS trigger LANGUAGE plpgsql SECURITY INVOKER AS $$
BEGIN
    PERFORM review_audit_append(NEW.review_id, NEW.version, NEW.action, NEW.actor, NEW.at, NEW.snapshot,
                                NEW.prefix, NEW.suffix);
    DELETE FROM review_audit_pending WHERE review_id = NEW.review_id AND version = NEW.version;
    RETURN NULL;
END $$
"""

_TRIGGER = ("CREATE CONSTRAINT TRIGGER review_audit_pending_append AFTER INSERT ON review_audit_pending "
            "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION review_audit_pending_append()")

# whoever may append to the audit may stage an append: an app role set up before this revision keeps working
_GRANT = """
DO $$
DECLARE r name;
BEGIN
    FOR r IN SELECT DISTINCT grantee FROM information_schema.role_table_grants
             WHERE table_schema = current_schema() AND table_name = 'review_audit' AND privilege_type = 'INSERT'
               AND grantee NOT IN ('PUBLIC', current_user)
    LOOP
        EXECUTE format('GRANT SELECT, INSERT, DELETE ON review_audit_pending TO %I', r);
    END LOOP;
END $$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_TABLE)
        op.execute(_FUNCTION)
        op.execute(_TRIGGER)
        op.execute(_GRANT)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TABLE IF EXISTS review_audit_pending")  # its trigger goes with it
        op.execute("DROP FUNCTION IF EXISTS review_audit_pending_append()")
