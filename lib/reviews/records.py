"""What the review store hands out: review and audit records, targets and their keys, errors.

Plain values (no database session behind them), so pages and exports can keep them after the store closed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

from lib.reviews.models import TARGET_KINDS, Review

_UNSET = object()


class ReviewError(Exception):
    """Base of the errors whose message is meant for the person who acted."""


class NotFound(ReviewError, LookupError):
    pass


class EditConflict(ReviewError):
    """Someone else changed the review after this writer read it; nothing was saved."""

    def __init__(self, message: str, current: "ReviewRecord | None" = None):
        super().__init__(message)
        self.current = current


class InvalidReview(ReviewError, ValueError):
    pass


@dataclass(frozen=True)
class ReviewRecord:
    """A review as read from the database (a plain value: safe to keep across requests)."""

    id: int
    uid: str
    workspace: str
    parent_id: int | None
    target_kind: str
    target_key: str
    target: dict
    page: str | None
    run_id: str | None
    checkpoint: str | None
    method: str | None
    settings: dict
    verdict: str | None
    text: str
    tags: tuple[str, ...]
    author: str
    created_at: datetime
    updated_at: datetime
    updated_by: str
    status: str
    resolved_by: str | None
    resolved_at: datetime | None
    deleted: bool
    deleted_by: str | None
    deleted_at: datetime | None
    blinded: bool
    version: int
    n_replies: int = 0

    @property
    def is_reply(self) -> bool:
        return self.parent_id is not None

    @property
    def edited(self) -> bool:
        return self.version > 1


@dataclass(frozen=True)
class AuditRecord:
    review_id: int
    version: int
    action: str
    actor: str
    at: datetime
    snapshot: dict = field(default_factory=dict)


def target_key(target: dict) -> str:
    """A canonical string for a target, used to find every review of the same thing.

    >>> target_key({"kind": "coordinate", "mni": [-26.0, -22, -14.4]})
    'coordinate:-26,-22,-14'
    """
    kind = target.get("kind")
    if kind not in TARGET_KINDS:
        raise InvalidReview(f"target kind {kind!r}: one of {', '.join(TARGET_KINDS)}")
    if kind == "coordinate":
        mni = target.get("mni")
        if mni is None or len(mni) != 3:
            raise InvalidReview("a coordinate target needs mni = [x, y, z] (mm)")
        return "coordinate:" + ",".join(f"{round(float(v)):d}" for v in mni)
    name = {"scan": "scan_id", "group": "group", "region": "region"}[kind]
    value = target.get(name)
    if value is None or str(value).strip() == "":
        raise InvalidReview(f"a {kind} target needs {name!r}")
    return f"{kind}:{str(value).strip()}"


def target_label(target: dict) -> str:
    """How a target reads in a list: ``scan sub-001_ses-1``, ``MNI (-26, -22, -14)``."""
    kind = target.get("kind")
    if kind == "coordinate":
        return "MNI (" + ", ".join(f"{float(v):.0f}" for v in target["mni"]) + ")"
    return f"{kind} {target.get({'scan': 'scan_id'}.get(kind, kind), '')}"


def _clean_tags(tags) -> tuple[str, ...]:
    if isinstance(tags, str):
        tags = tags.split(",")
    out = []
    for t in tags or ():
        t = " ".join(str(t).replace(",", " ").split()).lower()
        if t and t not in out:
            out.append(t[:60])
    return tuple(out)


def _tags_column(tags: tuple[str, ...]) -> str:
    return "," + ",".join(tags) + "," if tags else ""


def _utc(dt: datetime | None) -> datetime | None:
    # SQLite hands timestamps back without a zone; they were written in UTC
    if dt is not None and dt.tzinfo is None:
        return dt.replace(tzinfo=timezone.utc)
    return dt


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _record(r: Review, n_replies: int = 0) -> ReviewRecord:
    return ReviewRecord(
        id=r.id, uid=r.uid, workspace=r.workspace, parent_id=r.parent_id, target_kind=r.target_kind,
        target_key=r.target_key, target=dict(r.target or {}), page=r.page, run_id=r.run_id,
        checkpoint=r.checkpoint, method=r.method, settings=dict(r.settings or {}), verdict=r.verdict,
        text=r.text, tags=tuple(t for t in (r.tags or "").split(",") if t), author=r.author,
        created_at=_utc(r.created_at), updated_at=_utc(r.updated_at), updated_by=r.updated_by,
        status=r.status, resolved_by=r.resolved_by, resolved_at=_utc(r.resolved_at), deleted=bool(r.deleted),
        deleted_by=r.deleted_by, deleted_at=_utc(r.deleted_at), blinded=bool(r.blinded), version=r.version,
        n_replies=n_replies)


def _snapshot(r: Review) -> dict:
    return {"verdict": r.verdict, "text": r.text, "tags": [t for t in (r.tags or "").split(",") if t],
            "status": r.status, "deleted": bool(r.deleted), "parent_id": r.parent_id,
            "target_key": r.target_key, "author": r.author}


def _opt(v) -> str | None:
    return None if v is None or v == "" else str(v)
