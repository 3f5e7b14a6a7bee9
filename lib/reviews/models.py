"""The review database's tables (SQLAlchemy 2 declarative models).

``users``          local accounts and OpenID Connect role mappings (see :mod:`lib.reviews.auth`)
``reviews``        one row per review or reply; ``version`` grows with every change (optimistic locking)
``review_audit``   append-only: the full state of a review after every change, one row per version;
                   database triggers refuse UPDATE, DELETE, TRUNCATE and INSERT OR REPLACE on it, and
                   each row carries a hash chained to the row before it (see ``audit.py``)

The schema itself is created by the Alembic migrations in ``migrations/``; these classes must match them
(a test compares the two).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, DateTime, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

VERDICTS = ("plausible", "implausible", "artefact", "unsure")
TARGET_KINDS = ("scan", "group", "region", "coordinate")
STATUSES = ("open", "resolved")


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(200), unique=True)
    email: Mapped[str | None] = mapped_column(String(320), index=True)
    role: Mapped[str] = mapped_column(String(16))
    # argon2id hash; NULL for an OpenID Connect identity that only needs a role
    password_hash: Mapped[str | None] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_login: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Review(Base):
    __tablename__ = "reviews"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # made by the writer, so a write retried after a lost connection cannot be stored twice
    uid: Mapped[str] = mapped_column(String(32), unique=True)
    workspace: Mapped[str] = mapped_column(String(200), index=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("reviews.id"), index=True)
    target_kind: Mapped[str] = mapped_column(String(16))
    target_key: Mapped[str] = mapped_column(String(400), index=True)
    target: Mapped[dict] = mapped_column(JSON)
    page: Mapped[str | None] = mapped_column(String(200))
    run_id: Mapped[str | None] = mapped_column(String(200), index=True)
    checkpoint: Mapped[str | None] = mapped_column(String(128))
    method: Mapped[str | None] = mapped_column(String(100))
    settings: Mapped[dict] = mapped_column(JSON)
    verdict: Mapped[str | None] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(Text)
    tags: Mapped[str] = mapped_column(String(1000), default="")  # ",tag1,tag2," so LIKE finds a whole tag
    author: Mapped[str] = mapped_column(String(200), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_by: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="open")
    resolved_by: Mapped[str | None] = mapped_column(String(200))
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    deleted_by: Mapped[str | None] = mapped_column(String(200))
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    blinded: Mapped[bool] = mapped_column(Boolean, default=False)
    version: Mapped[int] = mapped_column(Integer, default=1)


class AuditEntry(Base):
    __tablename__ = "review_audit"
    __table_args__ = (UniqueConstraint("review_id", "version", name="uq_review_audit_version"),
                      # one successor per row: the chain cannot fork
                      UniqueConstraint("prev_hash", name="uq_review_audit_prev_hash"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    review_id: Mapped[int] = mapped_column(ForeignKey("reviews.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(16))  # create, edit, resolve, reopen, delete, restore
    actor: Mapped[str] = mapped_column(String(200))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    snapshot: Mapped[dict] = mapped_column(JSON)  # verdict, text, tags, status, deleted after the change
    prev_hash: Mapped[str] = mapped_column(String(64))  # row_hash of the row before (id order)
    row_hash: Mapped[str] = mapped_column(String(64))   # sha256(prev_hash, canonical content)
