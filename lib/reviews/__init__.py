"""Reviews: judgements of what the app shows, pinned to what was seen, shared over one database.

::

    lib/reviews/models.py      tables: users, reviews, review_audit (append-only, hash-chained)
    lib/reviews/migrations/    Alembic revisions, applied whenever a database is opened
    lib/reviews/db.py          which database (SQLite in the workspace, PostgreSQL by URL), engine settings
    lib/reviews/service.py     ReviewStore: create, reply, edit (version-checked), resolve, delete, find
    lib/reviews/records.py     what the store hands out: review and audit records, targets, errors
    lib/reviews/export.py      reviews as CSV (cells guarded against formula injection)
    lib/reviews/audit.py       the audit's hash chain: append under a lock, verify
    lib/reviews/pgsetup.py     PostgreSQL owner and app roles (the app role cannot rewrite the audit)
    lib/reviews/agreement.py   Cohen's and Fleiss' κ over verdicts
    lib/reviews/text.py        Markdown re-written from an allow-list: no HTML, images or unsafe links
    lib/reviews/pgcluster.py   a throwaway PostgreSQL server (tests, benchmark)

Who may do what is :mod:`lib.reviews.auth`'s business; the store enforces it on every write.
"""

from lib.reviews.db import DatabaseUnavailable, database_url
from lib.reviews.models import STATUSES, TARGET_KINDS, VERDICTS
from lib.reviews.export import export_csv
from lib.reviews.records import (AuditRecord, EditConflict, InvalidReview, NotFound, ReviewError, ReviewRecord,
                                 target_key, target_label)
from lib.reviews.service import ReviewStore
from lib.reviews.text import plain_markdown, safe_markdown

__all__ = ["AuditRecord", "DatabaseUnavailable", "EditConflict", "InvalidReview", "NotFound", "ReviewError",
           "ReviewRecord", "ReviewStore", "STATUSES", "TARGET_KINDS", "VERDICTS", "database_url", "export_csv",
           "plain_markdown", "safe_markdown", "target_key", "target_label"]
