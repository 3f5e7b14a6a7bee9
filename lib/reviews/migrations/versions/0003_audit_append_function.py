"""PostgreSQL: the audit append as one server-side function, so the chain lock is held for one round trip.

``review_audit_append`` takes the chain lock, reads the last row, computes the new row's hash with the
server's ``sha256`` and inserts it, in one call (see :func:`lib.reviews.audit.append`). It runs with the
rights of whoever calls it (SECURITY INVOKER): it lets the app role do nothing it could not do before, and
the table's triggers and grants apply as they did. The hash is the one :func:`lib.reviews.audit.chain_hash`
computes, so existing chains and ``audit verify`` are unchanged. SQLite: nothing to do.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05
"""

from alembic import op

from lib.reviews.audit import GENESIS

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# the key appenders queue on: the one appends took before this revision, so an older app still running
# and this one exclude each other
_LOCK = 7_243_512
_ARGS = "integer, integer, text, text, timestamptz, json, text, text"

# Each statement of a VOLATILE function takes a fresh snapshot (READ COMMITTED), so the last row is read
# after the lock was granted. The id is the larger of the sequence's next value and the last id + 1, so an
# insert that leaves id to the sequence never collides. The hashed bytes are canonical()'s: the caller
# sends the JSON text before and after the id's digits.
_FUNCTION = f"""
CREATE FUNCTION review_audit_append(p_review_id integer, p_version integer, p_action text, p_actor text,
                                    p_at timestamptz, p_snapshot json, p_prefix text, p_suffix text)
RETURNS integer LANGUAGE plpgsql VOLATILE SECURITY INVOKER AS $$
DECLARE
    last_id integer;
    prev text;
    new_id integer;
BEGIN
    PERFORM pg_advisory_xact_lock({_LOCK});
    SELECT id, row_hash INTO last_id, prev FROM review_audit ORDER BY id DESC LIMIT 1;
    new_id := greatest(nextval(pg_get_serial_sequence('review_audit', 'id')), coalesce(last_id, 0) + 1);
    prev := coalesce(prev, '{GENESIS}');
    INSERT INTO review_audit (id, review_id, version, action, actor, at, snapshot, prev_hash, row_hash)
    VALUES (new_id, p_review_id, p_version, p_action, p_actor, p_at, p_snapshot, prev,
            encode(sha256(convert_to(prev || E'\\n' || p_prefix || new_id::text || p_suffix, 'UTF8')), 'hex'));
    RETURN new_id;
END $$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP FUNCTION IF EXISTS review_audit_append({_ARGS})")
