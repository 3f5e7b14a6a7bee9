"""What the dataset overview shows: counts, demographics, QC, group mean images.

Everything here takes a workspace and returns plain tables or images, so the
page only renders.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from lib.core import atomic, cache
from lib.data.splits import assign, load_splits
from lib.data.workspace import Workspace
from lib.data.classes import DEFAULT_CLASSES

POSITIVE, NEGATIVE = DEFAULT_CLASSES.positive, DEFAULT_CLASSES.negative


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


def counts(cohort: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Scans and subjects by diagnosis, and scans by split, visit and site (columns AD/HC)."""
    out = {"diagnosis": pd.DataFrame({
        "scans": cohort.groupby("diagnosis").size(),
        "subjects": cohort.groupby("diagnosis")["subject_id"].nunique(),
    }).T}
    for col, name in (("split", "split"), ("session", "visit"), ("site", "site")):
        if col in cohort and cohort[col].notna().any():
            t = cohort.groupby([col, "diagnosis"]).size().unstack(fill_value=0)
            if col == "split":
                t = t.reindex([p for p in ("train", "validation", "test") if p in t.index])
            t.index.name = name
            out[name] = t
    return out


def demographics(cohort: pd.DataFrame) -> pd.DataFrame:
    """Per diagnosis, at the first visit of each subject: n, age, % female, MMSE, CDR (mean ± SD).

    A display table: every cell is text ("75.4 ± 8.2", "40"), so each column has one type (Arrow, which
    Streamlit serialises tables with, refuses a column mixing numbers and text).
    """
    first = cohort.sort_values([c for c in ("subject_id", "session") if c in cohort]).groupby("subject_id").head(1)
    rows = {}
    for dx, g in first.groupby("diagnosis"):
        row = {"subjects": str(len(g))}
        for col, label in (("age", "age (years)"), ("mmse", "MMSE"), ("cdr", "CDR"),
                           ("hippocampal_volume", "hippocampal volume (mm³)")):
            if col in g and pd.to_numeric(g[col], errors="coerce").notna().any():
                v = pd.to_numeric(g[col], errors="coerce")
                row[label] = f"{v.mean():.1f} ± {v.std():.1f}"
        if "sex" in g:
            row["female"] = f"{(g['sex'] == 'F').mean():.0%}"
        rows[dx] = row
    return pd.DataFrame(rows)


def load_scan(ws: Workspace, path: str) -> nib.Nifti1Image:
    """A scan of the cohort on the workspace grid (resampled with nilearn if it is not)."""
    from lib.data.validation import load_on_grid

    img, _warnings = load_on_grid(ws.resolve(path), ws.grid)
    return img


def brain_normalised(data: np.ndarray) -> np.ndarray:
    """Scale a scan so the mean of its non-zero voxels is 1 (removes scanner gain for display)."""
    nz = data[data > 0]
    return data / (float(nz.mean()) if nz.size else 1.0)


def _cohort_key(ws: Workspace, cohort: pd.DataFrame) -> str:
    h = hashlib.sha256()
    for path in cohort["path"]:
        p = ws.resolve(path)
        st = p.stat()
        h.update(f"{p}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:16]


def group_means_path(ws: Workspace, cohort: pd.DataFrame) -> Path:
    return ws.cache_dir / "overview" / f"group_means_{_cohort_key(ws, cohort)}.nii.gz"


def compute_group_means(ws: Workspace, progress=None) -> Path:
    """Mean brain-normalised image of AD and of HC scans, streamed one scan at a time.

    Saved as a 3-volume NIfTI (AD mean, HC mean, AD − HC) on the workspace grid,
    keyed by the scans' paths, sizes and modification times.
    """
    cohort = load_cohort(ws)
    target = group_means_path(ws, cohort)
    if cache.ok(target):
        return target
    cache.discard(target)   # absent, corrupted or of an older version: recomputed
    sums = {dx: np.zeros(ws.grid.shape, np.float64) for dx in (POSITIVE, NEGATIVE)}
    n = {POSITIVE: 0, NEGATIVE: 0}
    total = len(cohort)
    for i, row in enumerate(cohort.itertuples(index=False)):
        if row.diagnosis in sums:
            data = np.asarray(load_scan(ws, row.path).dataobj, dtype=np.float32)
            sums[row.diagnosis] += brain_normalised(data)
            n[row.diagnosis] += 1
        if progress:
            progress(i + 1, total, f"scan {row.scan_id}")
    means = {dx: (sums[dx] / max(n[dx], 1)).astype(np.float32) for dx in sums}
    stack = np.stack([means[POSITIVE], means[NEGATIVE], means[POSITIVE] - means[NEGATIVE]], axis=-1)
    img = nib.Nifti1Image(stack, ws.grid.affine)
    img.header["descrip"] = (f"mean {POSITIVE} (n={n[POSITIVE]}), mean {NEGATIVE} (n={n[NEGATIVE]}), "
                             f"{POSITIVE}-{NEGATIVE}").encode()[:79]
    atomic.write_nifti(target, img)
    cache.seal(target, kind="overview", **n)
    return target


def read_group_means(path: str | Path) -> dict[str, np.ndarray]:
    """The three volumes of a group-means file: AD, HC and AD − HC.

    Raises :class:`lib.core.cache.CacheError` naming the file when it does not match its checksum marker.
    """
    cache.require(path, "cohort mean images", "python -m lib means")
    data = np.asarray(nib.load(path).dataobj, dtype=np.float32)
    return {POSITIVE: data[..., 0], NEGATIVE: data[..., 1], f"{POSITIVE} - {NEGATIVE}": data[..., 2]}


def group_means(ws: Workspace, cohort: pd.DataFrame | None = None) -> dict[str, np.ndarray] | None:
    """The cached group means, or None if they have not been computed for the current cohort."""
    target = group_means_path(ws, load_cohort(ws) if cohort is None else cohort)
    return read_group_means(target) if cache.ok(target) else None


def ground_truth(ws: Workspace, scan_id: str) -> dict | None:
    """Demo cohort only: the atrophy applied to a scan (per unit, mm) and its atrophy map path."""
    table = ws.ground_truth_dir / "atrophy.csv"
    if not table.exists():
        return None
    gt = pd.read_csv(table, dtype={"scan_id": str})
    row = gt[gt["scan_id"] == scan_id]
    if row.empty:
        return None
    row = row.iloc[0]
    units = {c[3:]: float(row[c]) for c in gt.columns if c.startswith("mm_")}
    return {"subtype": row["subtype"], "severity": float(row["severity"]), "atypical": bool(row["atypical"]),
            "units_mm": units, "atrophy_map": ws.resolve(row["atrophy_map"])}


def region_at(labels: np.ndarray, table: pd.DataFrame, ijk) -> str:
    """Atlas region name at voxel ``ijk`` ('outside the atlas' for background)."""
    i, j, k = (int(np.clip(v, 0, s - 1)) for v, s in zip(ijk, labels.shape))
    value = int(labels[i, j, k])
    if value == 0:
        return "outside the atlas"
    names = table.loc[table["index"] == value, "name"]
    return names.iat[0].replace("_", " ") if len(names) else f"label {value}"
