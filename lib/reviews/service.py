"""Reading and writing reviews: every rule (roles, versions, audit, soft deletes) is enforced here.

A review is pinned to a *target* and to the *settings* it was made under::

    target   {"kind": "scan", "scan_id": "sub-001_ses-1"}   | {"kind": "group", "group": "TP"}
             {"kind": "region", "region": "Left Hippocampus"} | {"kind": "coordinate", "mni": [x, y, z]}
    settings {"page": "overview", "run": ..., "checkpoint": ..., "method": ..., "params": {...},
              "vmin": ..., "vmax": ..., ...}   (anything that restores the view; JSON)

Every change increases the review's ``version`` and appends the new state to ``review_audit``. A change
names the version its writer saw; if someone else changed the review since, it is refused with
:class:`EditConflict` instead of overwriting their change.
"""

from __future__ import annotations

import json
import uuid
from contextlib import contextmanager

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from lib.reviews import auth
from lib.reviews import audit, db
from lib.reviews.models import STATUSES, VERDICTS, AuditEntry, Review
from lib.reviews.records import (_UNSET, AuditRecord, EditConflict, InvalidReview, NotFound, ReviewRecord, _clean_tags,
                                 _now, _opt, _record, _snapshot, _tags_column, _utc, target_key)


class ReviewStore:
    """The reviews of one workspace in one database.

    Parameters
    ----------
    url : SQLAlchemy URL (``sqlite:///path/reviews.db``, ``postgresql+psycopg://…``); see
        :func:`lib.reviews.db.database_url` for how a workspace's URL is chosen.
    workspace : name the reviews are filed under, so several workspaces can share one server database.
    busy_timeout : seconds a writer waits for SQLite's write lock (or a pool connection) before the
        call fails with :class:`~lib.reviews.db.DatabaseUnavailable`.

    Every method is one transaction. A call that loses its connection is retried once (the pool then
    reconnects, e.g. after a server restart); if the database is still unreachable the call raises
    ``DatabaseUnavailable`` with a message for people, and the next call tries again.
    """

    def __init__(self, url: str, workspace: str = "default", *, busy_timeout: float = 30.0):
        self.url = db.normalise_url(url)
        self.workspace = workspace
        self.engine = db.make_engine(self.url, busy_timeout=busy_timeout)
        self.run(lambda s: None, write=False, _migrate=True)
        self._flush_later = self.backend == "postgresql" and self.run(audit.can_flush, write=False)

    @classmethod
    def for_workspace(cls, ws, **kwargs) -> "ReviewStore":
        return cls(db.database_url(ws), workspace=ws.name, **kwargs)

    @property
    def display_url(self) -> str:
        return db.describe(self.url)

    @property
    def backend(self) -> str:
        return self.engine.dialect.name

    def close(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------------ transactions
    @contextmanager
    def _session(self, write: bool, snapshot: bool = False):
        with self.engine.connect() as conn:
            if write:
                conn.execution_options(write=True)
            if snapshot and self.backend == "postgresql":
                # every statement sees the same state (SQLite's read transaction already does)
                conn.execution_options(isolation_level="REPEATABLE READ")
            with Session(bind=conn, expire_on_commit=False, autoflush=True) as s, s.begin():
                yield s

    def run(self, fn, *, write: bool = True, _migrate: bool = False, _snapshot: bool = False):
        """Run ``fn(session)`` in one transaction; retry once on a lost connection (see class doc)."""
        for attempt in (0, 1):
            try:
                if _migrate:
                    db.migrate(self.engine)
                with self._session(write, _snapshot) as s:
                    result = fn(s)
                break
            except DBAPIError as exc:
                if not db.is_unavailable(exc):
                    raise
                if attempt == 1:
                    raise db.DatabaseUnavailable(db.unavailable_message(self.url, exc)) from exc
        if s.info.get(audit.NEEDS_FLUSH):
            self._flush()
        return result

    def _flush(self) -> None:
        """Return only once the audit append just committed is on disk (see :func:`audit.append`)."""
        for attempt in (0, 1):
            try:
                with self.engine.connect() as conn, conn.begin():
                    audit.flush(conn)
                return
            except DBAPIError as exc:
                if not db.is_unavailable(exc):
                    raise
                if attempt == 1:
                    raise db.DatabaseUnavailable(
                        f"The review database {self.display_url} went away just after saving: the change is "
                        "stored unless the server crashed at that moment. Reload to check.") from exc

    # ------------------------------------------------------------------ writing
    def create(self, who: auth.Identity | None, target: dict, settings: dict | None = None, *,
               verdict: str | None, text: str, tags=(), page: str | None = None,
               blinded: bool = False) -> ReviewRecord:
        """A new review of ``target`` made under ``settings`` (see the module docstring)."""
        auth.require_write(who)
        key = target_key(target)
        if verdict not in VERDICTS:
            raise InvalidReview(f"verdict {verdict!r}: one of {', '.join(VERDICTS)}")
        text = (text or "").strip()
        settings = dict(settings or {})
        json.dumps(target), json.dumps(settings)  # JSON or nothing: a link must be able to carry it
        now = _now()
        row = dict(uid=uuid.uuid4().hex, workspace=self.workspace, parent_id=None, target_kind=target["kind"],
                   target_key=key, target=dict(target), page=page or settings.get("page"),
                   run_id=_opt(settings.get("run")), checkpoint=_opt(settings.get("checkpoint")),
                   method=_opt(settings.get("method")), settings=settings, verdict=verdict, text=text,
                   tags=_tags_column(_clean_tags(tags)), author=who.username, created_at=now, updated_at=now,
                   updated_by=who.username, status="open", deleted=False, blinded=bool(blinded), version=1)
        return self._insert(row, who)

    def reply(self, who: auth.Identity | None, parent_id: int, text: str) -> ReviewRecord:
        """A reply in the thread of review ``parent_id`` (replies to a reply join the same thread)."""
        auth.require_write(who)
        text = (text or "").strip()
        if not text:
            raise InvalidReview("a reply needs some text")
        parent = self.get(parent_id)
        root = self.get(parent.parent_id) if parent.parent_id else parent
        if root.deleted:
            raise InvalidReview(f"review #{root.id} was deleted; it takes no replies")
        now = _now()
        row = dict(uid=uuid.uuid4().hex, workspace=self.workspace, parent_id=root.id,
                   target_kind=root.target_kind, target_key=root.target_key, target=root.target, page=root.page,
                   run_id=root.run_id, checkpoint=root.checkpoint, method=root.method, settings=root.settings,
                   verdict=None, text=text, tags="", author=who.username, created_at=now, updated_at=now,
                   updated_by=who.username, status="open", deleted=False, blinded=False, version=1)
        return self._insert(row, who)

    def _insert(self, row: dict, who: auth.Identity) -> ReviewRecord:
        def work(s):
            # retried after a lost connection whose commit did go through: the uid finds the first write
            existing = s.scalar(select(Review).where(Review.uid == row["uid"]))
            if existing is not None:
                return _record(existing)
            r = Review(**row)
            s.add(r)
            s.flush()
            audit.append(s, review_id=r.id, version=1, action="create", actor=who.username, at=row["created_at"],
                         snapshot=_snapshot(r), flush_later=self._flush_later)
            return _record(r)

        try:
            return self.run(work)
        except IntegrityError:
            # two attempts raced on the same uid: the other one stored it
            found = self.run(lambda s: s.scalar(select(Review).where(Review.uid == row["uid"])), write=False)
            if found is None:
                raise
            return _record(found)

    def edit(self, who: auth.Identity | None, review_id: int, expected_version: int, *,
             verdict=_UNSET, text=_UNSET, tags=_UNSET) -> ReviewRecord:
        """Change verdict, text and/or tags of a review last seen at ``expected_version``."""
        changes = {}
        if verdict is not _UNSET:
            if verdict not in VERDICTS:
                raise InvalidReview(f"verdict {verdict!r}: one of {', '.join(VERDICTS)}")
            changes["verdict"] = verdict
        if text is not _UNSET:
            changes["text"] = (text or "").strip()
        if tags is not _UNSET:
            changes["tags"] = _tags_column(_clean_tags(tags))
        return self._change(who, review_id, expected_version, "edit", changes)

    def resolve(self, who, review_id: int, expected_version: int | None = None) -> ReviewRecord:
        now = _now()
        return self._change(who, review_id, expected_version, "resolve",
                            {"status": "resolved", "resolved_by": who.username if who else None, "resolved_at": now})

    def reopen(self, who, review_id: int, expected_version: int | None = None) -> ReviewRecord:
        return self._change(who, review_id, expected_version, "reopen",
                            {"status": "open", "resolved_by": None, "resolved_at": None})

    def delete(self, who, review_id: int, expected_version: int | None = None) -> ReviewRecord:
        """Soft delete: the review disappears from lists but stays in the database and its audit."""
        return self._change(who, review_id, expected_version, "delete",
                            {"deleted": True, "deleted_by": who.username if who else None, "deleted_at": _now()})

    def restore(self, who, review_id: int, expected_version: int | None = None) -> ReviewRecord:
        return self._change(who, review_id, expected_version, "restore",
                            {"deleted": False, "deleted_by": None, "deleted_at": None})

    def _change(self, who, review_id: int, expected_version: int | None, action: str,
                changes: dict) -> ReviewRecord:
        auth.require_write(who)
        current = self.get(review_id)
        auth.require_change(who, current.author, action)
        if current.deleted and action not in ("restore",):
            raise InvalidReview(f"review #{review_id} is deleted; restore it first")
        if action == "edit" and current.is_reply and changes.get("verdict") is not None:
            raise InvalidReview("a reply has no verdict")
        if action == "edit" and current.is_reply:
            changes.pop("verdict", None)
            changes.pop("tags", None)
        expected = current.version if expected_version is None else int(expected_version)

        def work(s):
            now = _now()
            res = s.execute(update(Review)
                            .where(Review.id == review_id, Review.version == expected)
                            .values(**changes, version=Review.version + 1, updated_at=now, updated_by=who.username)
                            .execution_options(synchronize_session=False))
            if res.rowcount != 1:
                return None
            r = s.get(Review, review_id, populate_existing=True)
            audit.append(s, review_id=r.id, version=r.version, action=action, actor=who.username, at=now,
                         snapshot=_snapshot(r), flush_later=self._flush_later)
            return _record(r)

        done = self.run(work)
        if done is None:
            now_ = self.get(review_id)
            raise EditConflict(
                f"Review #{review_id} was changed by {now_.updated_by} at {now_.updated_at:%Y-%m-%d %H:%M:%S} UTC "
                f"(it is now version {now_.version}; you opened version {expected}). Your {action} was not "
                "saved: read the current text, then apply your change again.", current=now_)
        return done

    # ------------------------------------------------------------------ reading
    def get(self, review_id: int) -> ReviewRecord:
        r = self.run(lambda s: s.get(Review, review_id), write=False)
        if r is None or r.workspace != self.workspace:
            raise NotFound(f"no review #{review_id}")
        return _record(r)

    def thread(self, review_id: int, *, include_deleted: bool = False) -> list[ReviewRecord]:
        """A review followed by its replies, oldest reply first."""
        root = self.get(review_id)
        if root.parent_id:
            root = self.get(root.parent_id)

        def work(s):
            q = select(Review).where(Review.parent_id == root.id)
            if not include_deleted:
                q = q.where(Review.deleted.is_(False))
            return [_record(r) for r in s.scalars(q.order_by(Review.created_at, Review.id))]

        return [root, *self.run(work, write=False)]

    def find(self, *, target: dict | None = None, target_kind: str | list | None = None,
             verdict: str | list | None = None, status: str | None = None, author: str | list | None = None,
             tag: str | None = None, run_id: str | None = None, method: str | None = None,
             search: str | None = None, include_deleted: bool = False, limit: int | None = None
             ) -> list[ReviewRecord]:
        """Top-level reviews matching every given filter, newest first, with their reply counts.

        ``search`` is case-insensitive and looks in the text (replies included), the target, tags and
        author. List-valued filters match any of their values.
        """
        def any_of(col, v):
            return col.in_(list(v)) if isinstance(v, (list, tuple, set)) else col == v

        q = select(Review).where(Review.workspace == self.workspace, Review.parent_id.is_(None))
        if target is not None:
            q = q.where(Review.target_key == target_key(target))
        if target_kind:
            q = q.where(any_of(Review.target_kind, target_kind))
        if verdict:
            q = q.where(any_of(Review.verdict, verdict))
        if status:
            if status not in STATUSES:
                raise InvalidReview(f"status {status!r}: one of {', '.join(STATUSES)}")
            q = q.where(Review.status == status)
        if author:
            q = q.where(any_of(Review.author, author))
        if tag:
            q = q.where(Review.tags.contains("," + _clean_tags([tag])[0] + ",", autoescape=True))
        if run_id:
            q = q.where(Review.run_id == run_id)
        if method:
            q = q.where(Review.method == method)
        if not include_deleted:
            q = q.where(Review.deleted.is_(False))
        if search and search.strip():
            needle = search.strip().lower()

            def has(col):
                return func.lower(col).contains(needle, autoescape=True)

            replies = select(Review.parent_id).where(Review.parent_id.is_not(None), Review.deleted.is_(False),
                                                     has(Review.text))
            q = q.where(or_(has(Review.text), has(Review.target_key), has(Review.tags), has(Review.author),
                            Review.id.in_(replies)))
        q = q.order_by(Review.created_at.desc(), Review.id.desc())
        if limit:
            q = q.limit(limit)

        def work(s):
            rows = list(s.scalars(q))
            counts = {}
            if rows:
                counts = dict(s.execute(
                    select(Review.parent_id, func.count()).where(
                        Review.parent_id.in_([r.id for r in rows]), Review.deleted.is_(False))
                    .group_by(Review.parent_id)).all())
            return [_record(r, counts.get(r.id, 0)) for r in rows]

        return self.run(work, write=False)

    def history(self, review_id: int) -> list[AuditRecord]:
        """Every version of a review, oldest first, from the append-only audit table."""
        self.get(review_id)

        def work(s):
            return [AuditRecord(a.review_id, a.version, a.action, a.actor, _utc(a.at), dict(a.snapshot))
                    for a in s.scalars(select(AuditEntry).where(AuditEntry.review_id == review_id)
                                       .order_by(AuditEntry.version))]

        return self.run(work, write=False)

    def verify_audit(self) -> "audit.Verdict":
        """Check the audit's hash chain and that every review matches its last audit row (all workspaces)."""
        def work(s):
            return audit.verify(s)

        return self.run(work, write=False, _snapshot=True)

    def authors(self) -> list[str]:
        return self.run(lambda s: sorted(s.scalars(select(Review.author).distinct().where(
            Review.workspace == self.workspace))), write=False)

    def tags(self) -> list[str]:
        def work(s):
            out = set()
            for t in s.scalars(select(Review.tags).distinct().where(Review.workspace == self.workspace)):
                out.update(x for x in (t or "").split(",") if x)
            return sorted(out)

        return self.run(work, write=False)

    def ratings(self, kind: str = "scan") -> list[tuple[str, str, str]]:
        """``(target, rater, verdict)``: each rater's latest verdict on each target of ``kind``."""
        def work(s):
            rows = s.execute(select(Review.target_key, Review.author, Review.verdict, Review.created_at, Review.id)
                             .where(Review.workspace == self.workspace, Review.parent_id.is_(None),
                                    Review.deleted.is_(False), Review.target_kind == kind,
                                    Review.verdict.is_not(None))
                             .order_by(Review.created_at, Review.id)).all()
            latest = {}
            for key, rater, verdict, _, _ in rows:
                latest[(key.split(":", 1)[1], rater)] = verdict
            return [(t, r, v) for (t, r), v in sorted(latest.items())]

        return self.run(work, write=False)

    def reviewed_targets(self, author: str | None = None, kind: str = "scan") -> set[str]:
        """Targets of ``kind`` with a review (by ``author`` if given), e.g. scan ids."""
        q = select(Review.target_key).distinct().where(
            Review.workspace == self.workspace, Review.parent_id.is_(None), Review.deleted.is_(False),
            Review.target_kind == kind)
        if author:
            q = q.where(Review.author == author)
        return {k.split(":", 1)[1] for k in self.run(lambda s: list(s.scalars(q)), write=False)}
