"""Links between the pages: the query parameters that reopen a page on a review's target and settings, and
how they are read back; plus the short texts the review panel shows about a review."""

from __future__ import annotations

import json
from datetime import datetime, timezone

TARGET_PARAM = {"scan_id": "scan"}
"""A target field whose query parameter has another name."""


def encode(v) -> str:
    """One setting as a query-parameter value: numbers lists as ``1,2.5``, dicts and other lists as JSON."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)) and all(isinstance(x, (int, float)) for x in v):
        return ",".join(f"{x:g}" if isinstance(x, float) else str(x) for x in v)
    if isinstance(v, (dict, list, tuple)):
        return json.dumps(v, sort_keys=True, separators=(",", ":"))
    return str(v)


def view_params(target: dict, settings: dict, workspace: str | None = None) -> dict[str, str]:
    """Query parameters for a target and its settings (``page`` is the path, not a parameter)."""
    q = {TARGET_PARAM.get(k, k): encode(v) for k, v in target.items() if k != "kind" and v is not None}
    q.update({k: encode(v) for k, v in settings.items() if k != "page" and v is not None})
    if workspace:
        q["workspace"] = workspace
    return q


def parse_param(raw: str | None, default=None, kind=str):
    """A query-parameter value parsed as ``kind`` (str, int, float, bool, ``"ints"``/``"floats"``/list, dict);
    ``default`` when it is missing or unreadable, so a hand-edited link never breaks the page."""
    if raw is None:
        return default
    try:
        if kind is bool:
            return raw.lower() in ("1", "true", "yes", "on")
        if kind in (list, "ints", "floats"):
            items = [float(x) for x in raw.split(",")]
            return [int(round(x)) for x in items] if kind == "ints" else items
        if kind is dict:
            return json.loads(raw)
        return kind(raw)
    except (ValueError, TypeError):
        return default


def when(dt: datetime | None, now: datetime | None = None) -> str:
    """How long ago ``dt`` was, in words ("just now", "5 min ago", "3 h ago", else the date)."""
    if dt is None:
        return ""
    d = ((now or datetime.now(timezone.utc)) - dt).total_seconds()
    if d < 60:
        return "just now"
    if d < 3600:
        return f"{d / 60:.0f} min ago"
    if d < 86400:
        return f"{d / 3600:.0f} h ago"
    return f"{dt:%Y-%m-%d}"


def settings_summary(r) -> str:
    """Run, method, checkpoint and blinding of a review record, joined by " · "."""
    bits = [f"run {r.run_id}" if r.run_id else "", r.method or "", f"ckpt {r.checkpoint[:8]}" if r.checkpoint else ""]
    if r.blinded:
        bits.append("blinded")
    return " · ".join(b for b in bits if b)
