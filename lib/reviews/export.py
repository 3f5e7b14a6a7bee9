"""Reviews as CSV for a spreadsheet: one row per review, cells guarded against formula injection."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict
from datetime import datetime

from lib.reviews.records import ReviewRecord

EXPORT_COLUMNS = ("id", "parent_id", "target_kind", "target_key", "page", "run_id", "checkpoint", "method",
                  "verdict", "status", "tags", "author", "created_at", "updated_at", "updated_by", "version",
                  "n_replies", "deleted", "blinded", "settings", "text")


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, datetime):
        return v.isoformat(timespec="seconds")
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True)
    s = ", ".join(v) if isinstance(v, tuple) else str(v)
    # a spreadsheet would run a cell that starts like a formula: keep it text
    return "'" + s if s[:1] in ("=", "+", "-", "@", "\t", "\r") else s


def export_csv(reviews: list[ReviewRecord]) -> str:
    """Reviews as CSV text (one row per review or reply), safe to open in a spreadsheet."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(EXPORT_COLUMNS)
    for r in reviews:
        d = asdict(r)
        w.writerow([_cell(d[c]) for c in EXPORT_COLUMNS])
    return buf.getvalue()
