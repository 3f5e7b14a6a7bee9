"""Localisation of known atrophy (demo cohort): the ground-truth mask of a scan on the run's grid, relevance
mass accuracy, voxel AUC and the pointing game."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.stats import rankdata

from lib.analysis.evaluation.data import truth_table
from lib.analysis.evaluation.settings import Settings
from lib.data.atlases import DEFAULT_ATLAS
from lib.data.templates import Grid


def voxel_auc(scores: np.ndarray, truth: np.ndarray) -> float:
    """ROC AUC of ``scores`` against boolean ``truth`` (Mann–Whitney with midranks: ties count half)."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    t = np.asarray(truth, bool).ravel()
    n_pos, n_neg = int(t.sum()), int((~t).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[t].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _ball(radius: float) -> np.ndarray:
    r = int(np.floor(radius))
    g = np.indices((2 * r + 1,) * 3) - r
    return (g ** 2).sum(0) <= radius ** 2 + 1e-9


def localisation_scores(relevance: np.ndarray, truth: np.ndarray, domain: np.ndarray | None = None,
                        tolerance_vox: float = 0.0) -> dict:
    """Relevance mass accuracy, voxel AUC and pointing-game hit of one map against a ground-truth mask.

    ``relevance`` and boolean ``truth`` are ``(X, Y, Z)``; ``domain`` restricts the voxels (default: all);
    the pointing game's mask is dilated by ``tolerance_vox``. Returns ``mass``, ``auc``, ``hit`` (0/1; with
    ties for the maximum, the share of the tied voxels inside the mask),
    ``chance_mass`` (the mask's share of the domain) and ``chance_hit`` (the dilated mask's share).
    """
    r = np.asarray(relevance, dtype=np.float64)
    t = np.asarray(truth, bool)
    d = np.ones(t.shape, bool) if domain is None else np.asarray(domain, bool)
    hit_mask = ndimage.binary_dilation(t, _ball(tolerance_vox)) if tolerance_vox >= 1 else t
    rv, tv = r[d], t[d]
    pos = np.clip(rv, 0, None)
    total = pos.sum()
    mass = float(pos[tv].sum() / total) if total > 0 else float("nan")
    # several voxels sharing the maximum (plateaus of coarse maps): the expected hit of picking one at random
    top = np.flatnonzero(d)[rv == rv.max()]
    return {"mass": mass, "auc": voxel_auc(rv, tv), "hit": float(hit_mask.ravel()[top].mean()),
            "chance_mass": float(tv.mean()), "chance_hit": float(hit_mask[d].mean()), "mask_voxels": int(tv.sum())}


def ground_truth_mask(ws, scan_id: str, grid: Grid, settings: Settings = Settings(),
                      table: pd.DataFrame | None = None) -> np.ndarray | None:
    """Boolean ``(X, Y, Z)`` ground-truth mask of a demo scan on ``grid`` (None without a ground truth).

    ``truth="atrophy"``: local volume loss ≥ ``min_loss``, the loss map resampled linearly; ``"regions"``:
    the scan's deformed labels of the units displaced by ≥ ``min_mm``, resampled nearest-neighbour.
    """
    import nibabel as nib
    from nilearn.image import resample_img

    table = truth_table(ws) if table is None else table
    if table is None:
        return None
    row = table[table["scan_id"] == str(scan_id)]
    if row.empty:
        return None
    row = row.iloc[0]
    if settings.truth == "atrophy":
        img = nib.load(ws.resolve(row["atrophy_map"]))
        interpolation = "linear"
    else:
        img = nib.load(ws.resolve(row["labels"]))
        interpolation = "nearest"
    if not grid.matches(img):
        img = resample_img(img, target_affine=grid.affine, target_shape=grid.shape, interpolation=interpolation,
                           force_resample=True, copy_header=True)
    data = np.asarray(img.dataobj)
    if settings.truth == "atrophy":
        return data.astype(np.float32) >= settings.min_loss
    from lib.data.templates import atlas

    _, names = atlas(DEFAULT_ATLAS, ws.grid.resolution)
    index = dict(zip(names["name"], names["index"]))
    units = [c[3:] for c in table.columns if c.startswith("mm_") and float(row[c]) >= settings.min_mm]
    values = [index[u] for u in units if u in index]
    return np.isin(data, values)


def localisation_rows(ws, scans: list[str], maps: dict, grid: Grid, settings: Settings, brain: np.ndarray,
                      diagnosis: dict, label: str, tick) -> list[dict]:
    """The localisation scores of each scan with a non-empty ground truth (within the brain and the mask)."""
    rows = []
    tol = settings.tolerance_mm / grid.resolution
    table = truth_table(ws)
    for sid in scans:
        truth = ground_truth_mask(ws, sid, grid, settings, table)
        if truth is not None and truth.any():
            rows.append({"scan_id": sid, "diagnosis": diagnosis.get(sid),
                         **localisation_scores(maps[sid], truth, brain | truth, tol)})
        tick(1, f"{label}: localisation")
    return rows
