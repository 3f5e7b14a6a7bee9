"""The review audit as a hash chain: a rewritten, deleted or inserted audit row is detected.

Each ``review_audit`` row stores ``prev_hash`` (the ``row_hash`` of the row before it in id order, or
:data:`GENESIS` for the first) and ``row_hash`` = sha256 of ``prev_hash`` and a canonical JSON of its own
content (id, review, version, action, actor, time, snapshot). Rows are appended one at a time: on
PostgreSQL by a server-side function (migration 0003) under a transaction-scoped advisory lock held to
commit, on SQLite inside the ``BEGIN IMMEDIATE`` write transaction every write already runs in, so two
writers never chain onto the same row.

:func:`verify` walks the chain and reports the first broken link; it also checks that every review has one
audit row per version and that its current state matches its last audit snapshot, which catches rows cut
off the end of the chain and reviews rewritten without an audit row. What a chain cannot catch on its own
is someone recomputing every hash after a rewrite: keep the head hash that ``python -m lib audit verify``
prints somewhere else (a log, a ticket) and compare.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import JSON, DateTime, bindparam, insert, select, text
from sqlalchemy.orm import Session

from lib.reviews.models import AuditEntry, Review

GENESIS = "0" * 64
NEEDS_FLUSH = "audit_needs_flush"  # Session.info key: the transaction committed without waiting for its flush


def _iso(at: datetime) -> str:
    if at.tzinfo is None:  # SQLite hands timestamps back without a zone; they were written in UTC
        at = at.replace(tzinfo=timezone.utc)
    return at.astimezone(timezone.utc).isoformat(timespec="microseconds")


def canonical(id_: int, review_id: int, version: int, action: str, actor: str, at: datetime,
              snapshot: dict) -> bytes:
    """The bytes a row's hash covers (stable across backends and drivers)."""
    return json.dumps({"id": int(id_), "review_id": int(review_id), "version": int(version), "action": action,
                       "actor": actor, "at": _iso(at), "snapshot": snapshot},
                      sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def chain_hash(prev_hash: str, content: bytes) -> str:
    return hashlib.sha256(prev_hash.encode() + b"\n" + content).hexdigest()


def row_hash_of(a) -> str:
    """The hash a stored row should carry, recomputed from its content and its ``prev_hash``."""
    return chain_hash(a.prev_hash or "", canonical(a.id, a.review_id, a.version, a.action, a.actor, a.at,
                                                   a.snapshot))


def canonical_around_id(review_id: int, version: int, action: str, actor: str, at: datetime,
                        snapshot: dict) -> tuple[str, str]:
    """The text of :func:`canonical` before and after the id's digits, for a row whose id is not known yet.

    The keys are sorted and ``action``, ``actor`` and ``at`` (string values, whose quotes are escaped)
    come before ``id``, so the first ``"id":`` is the key.
    """
    body = canonical(0, review_id, version, action, actor, at, snapshot).decode()
    head, _, tail = body.partition('"id":0,')
    return head + '"id":', "," + tail


def append(s: Session, *, review_id: int, version: int, action: str, actor: str, at: datetime,
           snapshot: dict, flush_later: bool = False) -> int:
    """Add one audit row at the end of the chain, in the caller's (write) transaction; returns its id.

    ``flush_later`` (PostgreSQL, where :func:`can_flush`): the caller calls :func:`flush` after the commit.
    """
    if s.get_bind().dialect.name == "postgresql":
        # review_audit_append (migration 0003) takes the chain lock, reads the last row after the lock was
        # granted, and inserts the row with its hash in one round trip. The lock is held to commit: the next
        # appender reads this row as its predecessor only once it is visible. With flush_later the commit
        # does not wait for its WAL flush, so the lock is not held through an fsync (appenders would
        # otherwise queue for one fsync each); the caller waits for it after.
        s.info[NEEDS_FLUSH] = flush_later
        prefix, suffix = canonical_around_id(review_id, version, action, actor, at, snapshot)
        _, new_id = s.execute(_PG_APPEND, {
            "sync": "off" if flush_later else "on", "review_id": review_id, "version": version, "action": action,
            "actor": actor, "at": at, "snapshot": snapshot, "prefix": prefix, "suffix": suffix}).one()
        return new_id
    # SQLite: the write transaction (BEGIN IMMEDIATE) already excludes every other writer
    last = s.execute(_LAST).first()
    last_id, prev = last if last else (None, None)
    new_id = (last_id or 0) + 1
    prev = prev or GENESIS
    s.execute(_INSERT, {"id": new_id, "review_id": review_id, "version": version, "action": action, "actor": actor,
                        "at": at, "snapshot": snapshot, "prev_hash": prev,
                        "row_hash": chain_hash(prev, canonical(new_id, review_id, version, action, actor, at,
                                                               snapshot))})
    return new_id


_PG_APPEND = text(
    "SELECT set_config('synchronous_commit', :sync, true), review_audit_append(:review_id, :version, :action, "
    ":actor, :at, :snapshot, :prefix, :suffix)"
).bindparams(bindparam("at", type_=DateTime(timezone=True)), bindparam("snapshot", type_=JSON))
_LAST = select(AuditEntry.id, AuditEntry.row_hash).order_by(AuditEntry.id.desc()).limit(1)
_INSERT = insert(AuditEntry.__table__)


def can_flush(s: Session) -> bool:
    """Whether this role may call what :func:`flush` calls (PUBLIC may, unless an administrator revoked it)."""
    return bool(s.scalar(text("SELECT bool_or(has_function_privilege(oid, 'EXECUTE')) FROM pg_proc "
                              "WHERE proname = 'pg_logical_emit_message' AND proargtypes[2] = 'text'::regtype")))


def flush(conn) -> None:
    """Wait until everything committed so far is on disk (PostgreSQL).

    A transaction that writes WAL and commits synchronously flushes the WAL up to its own commit record,
    which lies after every earlier commit, the asynchronous one of :func:`append` included; concurrent
    callers share one fsync (group commit). A transactional logical message is such a write, needs no
    table and no privilege, and changes nothing. WAL is replayed in order after a crash, so a chained row
    is never durable without the rows it chains onto.
    """
    conn.exec_driver_sql("SELECT pg_logical_emit_message(true, 'relevance-atlas', 'audit flush'::text)")


@dataclass(frozen=True)
class Verdict:
    ok: bool
    rows: int
    head: str            # row_hash of the last row (GENESIS for an empty audit)
    problem: str = ""    # the first broken link, for people
    row_id: int | None = None
    more: int = 0        # further problems after the first

    def message(self) -> str:
        if self.ok:
            return f"OK: {self.rows} audit rows, chain intact; head {self.head}"
        extra = f" ({self.more} more problem{'s' if self.more != 1 else ''} after it)" if self.more else ""
        return f"BROKEN: {self.problem}{extra}"


_COMPARED = ("verdict", "text", "tags", "status", "deleted", "parent_id", "target_key", "author")


def _state(r: Review) -> dict:
    return {"verdict": r.verdict, "text": r.text, "tags": [t for t in (r.tags or "").split(",") if t],
            "status": r.status, "deleted": bool(r.deleted), "parent_id": r.parent_id, "target_key": r.target_key,
            "author": r.author}


def verify(s: Session) -> Verdict:
    """Walk the audit chain in id order (see the module docstring); read in one snapshot."""
    problems: list[tuple[int | None, str]] = []
    prev_row = None
    expected = GENESIS
    seen: dict[str, int] = {}
    n = 0
    versions: dict[int, dict[int, AuditEntry]] = {}
    for a in s.scalars(select(AuditEntry).order_by(AuditEntry.id).execution_options(yield_per=2000)):
        n += 1
        versions.setdefault(a.review_id, {})[a.version] = (a.id, a.action, a.snapshot)
        if not a.row_hash or not a.prev_hash:
            problems.append((a.id, f"audit row #{a.id} has no hash: it was written outside the application"))
        elif row_hash_of(a) != a.row_hash:
            problems.append((a.id, f"audit row #{a.id} (review #{a.review_id} version {a.version}) was altered: "
                                   "its content no longer matches its hash"))
        elif a.prev_hash != expected:
            if prev_row is None:
                what = "rows before it were deleted (it does not start the chain)"
            elif a.prev_hash in seen:
                what = (f"it links to row #{seen[a.prev_hash]}, so row #{prev_row.id} was inserted into the chain "
                        "afterwards")
            else:
                what = (f"it does not link to row #{prev_row.id}: row #{prev_row.id} was replaced (content and hash "
                        f"rewritten) or a row between #{prev_row.id} and #{a.id} was deleted")
            problems.append((a.id, f"audit row #{a.id}: {what}"))
        if a.row_hash:
            seen[a.row_hash] = a.id
        expected = a.row_hash
        prev_row = a
    head = expected if n else GENESIS
    # the chain says nothing about rows cut off its end, or reviews changed without an audit row
    for r in s.scalars(select(Review).order_by(Review.id).execution_options(yield_per=2000)):
        have = versions.get(r.id, {})
        missing = [v for v in range(1, r.version + 1) if v not in have]
        if missing:
            problems.append((None, f"review #{r.id} is at version {r.version} but the audit has no row for "
                                   f"version {missing[0]}: audit rows were deleted"))
        elif max(have) > r.version:
            problems.append((None, f"review #{r.id} is at version {r.version} but the audit has version "
                                   f"{max(have)}: the review was rolled back outside the application"))
        else:
            snap = have[r.version][2] or {}
            state = _state(r)
            diff = [k for k in _COMPARED if k in snap and snap[k] != state[k]]
            if diff:
                problems.append((None, f"review #{r.id} differs from its last audit row #{have[r.version][0]} "
                                       f"({', '.join(diff)}): it was changed outside the application"))
    if not problems:
        return Verdict(True, n, head)
    row_id, msg = problems[0]
    return Verdict(False, n, head, msg, row_id, len(problems) - 1)
