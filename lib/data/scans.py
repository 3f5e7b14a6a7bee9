"""The workspace's scans: its cohort table with each scan's split, fold and QC flags, one scan's image on the
workspace grid, and the demo's ground truth of a scan.

Training, the explanations, the analyses and every page read the cohort through :func:`load_cohort`, so a
split or a QC flag means the same everywhere.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import pandas as pd

from lib.core import memo
from lib.data.images import load_on_grid
from lib.data.splits import assign, load_splits
from lib.data.workspace import Workspace


@memo.memoized(8)
def load_cohort(ws: Workspace) -> pd.DataFrame:
    """The workspace's cohort with ``split`` and ``fold`` (leakage-checked) and QC flags merged in."""
    cohort = pd.read_csv(ws.cohort_csv, dtype={"subject_id": str, "scan_id": str})
    if ws.splits_json.exists():
        cohort = assign(cohort, load_splits(ws, cohort))
    if ws.qc_csv.exists():
        qc = pd.read_csv(ws.qc_csv, dtype={"scan_id": str})
        keep = [c for c in qc.columns if c not in cohort.columns or c == "scan_id"]
        cohort = cohort.merge(qc[keep], on="scan_id", how="left")
    return cohort


def load_scan(ws: Workspace, path: str) -> nib.Nifti1Image:
    """A scan of the cohort on the workspace grid (resampled with nilearn if it is not)."""
    img, _warnings = load_on_grid(ws.resolve(path), ws.grid)
    return img


def ground_truth(ws: Workspace, scan_id: str) -> dict | None:
    """Demo cohort only: the atrophy applied to a scan (per unit, mm) and its atrophy map path."""
    table = ws.ground_truth_dir / "atrophy.csv"
    if not table.exists():
        return None
    gt = _atrophy_table(table)
    row = gt[gt["scan_id"] == scan_id]
    if row.empty:
        return None
    row = row.iloc[0]
    units = {c[3:]: float(row[c]) for c in gt.columns if c.startswith("mm_")}
    return {"subtype": row["subtype"], "severity": float(row["severity"]), "atypical": bool(row["atypical"]),
            "units_mm": units, "atrophy_map": ws.resolve(row["atrophy_map"])}


@memo.memoized(4)
def _atrophy_table(path: Path) -> pd.DataFrame:
    """The demo's atrophy table, read once per version of the file."""
    return pd.read_csv(path, dtype={"scan_id": str})
