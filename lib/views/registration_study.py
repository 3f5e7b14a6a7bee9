"""The Training page's registration study panel (Eitel's study 4 on the raw demo): the table as shown."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lib.data.workspace import Workspace
from lib.learn import registration_study as study

LABELS = {"none": "none (pad/crop)", "linear": "linear (affine)", "nonlinear": "non-linear (affine + SyN)"}


def _pm(mean: float, spread: float, digits: int) -> str:
    if not np.isfinite(mean):
        return "—"
    return f"{mean:.{digits}f}" + (f" ± {spread:.{digits}f}" if np.isfinite(spread) else "")


def study_table(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per registration type: the demo's balanced accuracy and AUC (mean ± sd over seeds), the
    gain in balanced accuracy over no registration (points), the untrained hippocampus probe, and the thesis's numbers (mean ± standard
    error) beside them."""
    base = frame.set_index("registration")["balanced_accuracy"].get("none", np.nan)
    thesis_base = study.THESIS["none"]["balanced_accuracy"]
    rows = []
    for r in frame.to_dict("records"):
        rows.append({
            "registration": LABELS.get(r["registration"], r["registration"]),
            "runs": int(r["runs"]),
            "demo: bal. acc. %": _pm(r["balanced_accuracy"], r["balanced_accuracy_sd"], 1),
            "demo: gain": _pm(r["balanced_accuracy"] - base, np.nan, 1)
            if r["registration"] != "none" else "",
            "demo: AUC": _pm(r["auc"], r["auc_sd"], 3),
            "demo: hippocampus probe AUC": _pm(r.get("probe_auc", np.nan), np.nan, 3),
            "thesis: bal. acc. %": _pm(r["thesis_balanced_accuracy"], r["thesis_balanced_accuracy_se"], 1),
            "thesis: gain": f"{r['thesis_balanced_accuracy'] - thesis_base:.1f}"
            if r["registration"] != "none" else "",
            "thesis: AUC": _pm(r["thesis_auc"], r["thesis_auc_se"], 3),
        })
    return pd.DataFrame(rows)


def load(ws: Workspace) -> tuple[pd.DataFrame, dict] | None:
    """The displayed table and the study's settings, or None when the study has not run here."""
    found = study.load_results(ws)
    if found is None:
        return None
    frame, meta = found
    return study_table(frame), meta
