"""Reviews: judgements of what the app shows, pinned to what was seen, shared over one database.

::

    lib/reviews/models.py      tables: users, reviews, review_audit (append-only)
    lib/reviews/migrations/    Alembic revisions, applied whenever a database is opened
    lib/reviews/db.py          which database (SQLite in the workspace, PostgreSQL by URL), engine settings
    lib/reviews/service.py     ReviewStore: create, reply, edit (version-checked), resolve, delete, find
    lib/reviews/agreement.py   Cohen's and Fleiss' κ over verdicts
    lib/reviews/text.py        Markdown that cannot carry HTML or script
    lib/reviews/pgcluster.py   a throwaway PostgreSQL server (tests, benchmark)

Who may do what is :mod:`lib.auth`'s business; the store enforces it on every write.
"""

from .db import DatabaseUnavailable, database_url
from .models import STATUSES, TARGET_KINDS, VERDICTS
from .service import (AuditRecord, EditConflict, InvalidReview, NotFound, ReviewError, ReviewRecord, ReviewStore,
                      export_csv, target_key, target_label)
from .text import safe_markdown

__all__ = ["AuditRecord", "DatabaseUnavailable", "EditConflict", "InvalidReview", "NotFound", "ReviewError",
           "ReviewRecord", "ReviewStore", "STATUSES", "TARGET_KINDS", "VERDICTS", "database_url", "export_csv",
           "safe_markdown", "target_key", "target_label"]
