"""Volumes per scan for the biomarker analyses, in mm³: the cohort's ``hippocampal_volume`` column (ADNIMERGE's
``Hippocampus`` is mapped to it when the table is read), a per-scan segmentation NIfTI named in a cohort column
(label voxels × voxel volume, :func:`label_volumes`, cached by the files' stamps and the labels), or the demo
cohort's ground truth; optionally as a percentage of the intracranial volume."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from lib.core import atomic, memo
from lib.core import cache as _cache
from lib.core.progress import Progress
from lib.data.atlas import hemisphere_of
from lib.data.workspace import Workspace
from lib.data.atlases import DEFAULT_ATLAS, segmentation_labels

SIDES = ("both", "left", "right")
VOLUME_SOURCES = ("cohort", "segmentation", "ground_truth")
# Label values of the hippocampi in common segmentations (per side).
SEGMENTATION_LABELS = segmentation_labels()
ICV_COLUMNS = ("intracranial_volume", "icv", "etiv", "tiv", "total_intracranial_volume", "estimated_tiv")


def _key(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:20]



def icv_column(cohort: pd.DataFrame) -> str | None:
    """The cohort's intracranial-volume column (``intracranial_volume``, ADNIMERGE ``ICV``, ``eTIV`` …) or None."""
    lower = {str(c).strip().lower(): c for c in cohort.columns}
    for name in ICV_COLUMNS:
        col = lower.get(name)
        if col is not None and pd.to_numeric(cohort[col], errors="coerce").notna().any():
            return col
    return None



@memo.memoized(32)
def segmentation_columns(cohort: pd.DataFrame) -> list[str]:
    """Cohort columns (other than the scan ``path``) whose values are NIfTI file names."""
    out = []
    for col in cohort.columns:
        if col == "path" or pd.api.types.is_numeric_dtype(cohort[col]):
            continue
        values = cohort[col].dropna().astype(str)
        if len(values) and values.str.contains(r"\.nii(?:\.gz)?$", case=False, regex=True).mean() > 0.5:
            out.append(col)
    return out



@memo.memoized(32)
def volume_sources(ws: Workspace, cohort: pd.DataFrame) -> list[str]:
    """The hippocampal-volume sources this workspace offers, best first."""
    out = []
    if "hippocampal_volume" in cohort and pd.to_numeric(cohort["hippocampal_volume"], errors="coerce").notna().any():
        out.append("cohort")
    if segmentation_columns(cohort):
        out.append("segmentation")
    if (ws.ground_truth_dir / "region_volumes.csv").exists():
        out.append("ground_truth")
    return out



def _side_labels(labels, side: str) -> list[int]:
    """Label values for ``side`` from a preset name, ``{"left": […], "right": […]}`` or a flat list (any side)."""
    if isinstance(labels, str):
        if labels not in SEGMENTATION_LABELS:
            raise KeyError(f"unknown label preset {labels!r}; choose one of {sorted(SEGMENTATION_LABELS)} "
                           "or give the label values")
        labels = SEGMENTATION_LABELS[labels]
    if isinstance(labels, Mapping):
        sides = ("left", "right") if side == "both" else (side,)
        return sorted({int(v) for s in sides for v in labels.get(s, ())})
    return sorted({int(v) for v in labels})



def label_volumes(paths: Sequence[str | Path], labels: Sequence[int], progress: Progress | None = None
                  ) -> np.ndarray:
    """Volume in mm³ of the voxels holding any of ``labels`` in each labels NIfTI: count × voxel volume.

    The voxel volume is ``|det(affine[:3, :3])|`` of each file, so segmentations on any grid work.
    A file that cannot be read gives NaN.
    """
    wanted = np.asarray(sorted(set(int(v) for v in labels)))
    out = np.full(len(paths), np.nan)
    for i, path in enumerate(paths):
        try:
            img = nib.load(str(path))
            data = np.asanyarray(img.dataobj)
            if not np.issubdtype(data.dtype, np.integer):
                data = np.rint(data)
            out[i] = float(np.isin(data, wanted).sum()) * abs(float(np.linalg.det(img.affine[:3, :3])))
        except (OSError, ValueError, nib.filebasedimages.ImageFileError):
            pass
        if progress:
            progress(i + 1, len(paths), f"segmentation {i + 1}/{len(paths)}")
    return out



def segmentation_volumes(ws: Workspace, cohort: pd.DataFrame, column: str, labels: Sequence[int],
                         progress: Progress | None = None) -> pd.Series:
    """:func:`label_volumes` of the files in ``cohort[column]`` (paths relative to the workspace), cached on
    disk by the files' paths, sizes and modification times and the label values."""
    paths = []
    for value in cohort[column]:
        if pd.isna(value) or not str(value).strip():
            paths.append(None)
            continue
        paths.append(ws.resolve(str(value)))
    stamp = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) if p is not None and p.exists() else None
             for p in paths]
    key = _key({"kind": "segmentation", "column": column, "labels": sorted(int(v) for v in labels),
                "files": stamp})
    cache = ws.cache_dir / "biomarker" / "volumes" / f"{key}.csv"
    ids = cohort["scan_id"].astype(str).to_numpy()
    if _cache.ok(cache):
        cached = pd.read_csv(cache, dtype={"scan_id": str}).set_index("scan_id")["volume"]
        if set(ids) <= set(cached.index):
            return cached.reindex(ids)
    _cache.discard(cache)   # absent, corrupted or of an older version: recomputed
    have = [i for i, s in enumerate(stamp) if s is not None]
    vols = np.full(len(ids), np.nan)
    vols[have] = label_volumes([paths[i] for i in have], labels, progress)
    atomic.write_csv(cache, pd.DataFrame({"scan_id": ids, "volume": vols}))
    _cache.seal(cache, kind="biomarker", column=column)
    return pd.Series(vols, index=pd.Index(ids, name="scan_id"), name="volume")



def hippocampal_volumes(ws: Workspace, cohort: pd.DataFrame, source: str = "auto", *, side: str = "both",
                        segmentation_column: str | None = None, labels=DEFAULT_ATLAS,
                        normalise: bool = False, progress: Progress | None = None) -> pd.Series:
    """Hippocampal volume per scan (index ``scan_id``).

    Parameters
    ----------
    source : {"auto", "cohort", "segmentation", "ground_truth"}
        ``cohort``: the ``hippocampal_volume`` column (both hippocampi; ``side`` other than
        "both" is noted in ``attrs["note"]`` and the total is used). ``segmentation``: count of
        ``labels`` voxels × voxel volume in the NIfTI named by ``segmentation_column``.
        ``ground_truth``: the demo cohort's measured region volumes. ``auto``: the first of
        :func:`volume_sources`.
    side : {"both", "left", "right"}
    labels : str, mapping or sequence
        Segmentation label values: a preset of :data:`SEGMENTATION_LABELS`, ``{"left": […],
        "right": […]}``, or a flat list.
    normalise : bool
        Divide by the intracranial volume (:func:`icv_column`) and report % of it.

    Returns
    -------
    Series of float (mm³, or % of intracranial volume), NaN where unknown; ``attrs`` holds
    ``unit``, ``label`` (axis title), ``source`` and ``note``.
    """
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}")
    available = volume_sources(ws, cohort)
    if source == "auto":
        if not available:
            raise ValueError("no hippocampal volume: the cohort has no hippocampal_volume column, no segmentation "
                             "column and no ground truth")
        source = available[0]
    ids = cohort["scan_id"].astype(str).to_numpy()
    note = ""
    if source == "cohort":
        if "hippocampal_volume" not in cohort:
            raise ValueError("the cohort table has no hippocampal_volume column (or ADNIMERGE's Hippocampus)")
        vol = pd.to_numeric(cohort["hippocampal_volume"], errors="coerce").to_numpy(float)
        if side != "both":
            note = "the cohort's hippocampal_volume is the total of both sides; the total is used"
        what = "hippocampal volume (cohort table)"
    elif source == "segmentation":
        cols = segmentation_columns(cohort)
        column = segmentation_column or (cols[0] if cols else None)
        if column is None or column not in cohort:
            raise ValueError("no segmentation column in the cohort table (a column of NIfTI label images)")
        vol = segmentation_volumes(ws, cohort, column, _side_labels(labels, side), progress).to_numpy(float)
        what = f"hippocampal volume (segmentation '{column}')"
    elif source == "ground_truth":
        path = ws.ground_truth_dir / "region_volumes.csv"
        if not path.exists():
            raise ValueError("this workspace has no ground truth (only the demo cohort has one)")
        gt = pd.read_csv(path, dtype={"scan_id": str}).set_index("scan_id")
        cols = [c for c in gt.columns if hemisphere_of(c)[1].lower() == "hippocampus"
                and (side == "both" or hemisphere_of(c)[0] == side)]
        if not cols:
            raise ValueError(f"{path} has no hippocampus column")
        vol = gt[cols].sum(axis=1, min_count=len(cols)).reindex(ids).to_numpy(float)
        what = "hippocampal volume (ground truth)"
    else:
        raise ValueError(f"source must be 'auto' or one of {VOLUME_SOURCES}")
    if side != "both" and not note:
        what = what.replace("hippocampal volume", f"{side} hippocampal volume")
    unit = "mm³"
    if normalise:
        col = icv_column(cohort)
        if col is None:
            raise ValueError("the cohort table has no intracranial volume column (intracranial_volume, ICV, eTIV)")
        icv = pd.to_numeric(cohort[col], errors="coerce").to_numpy(float)
        with np.errstate(divide="ignore", invalid="ignore"):
            vol = np.where(icv > 0, 100.0 * vol / icv, np.nan)
        unit = "% of ICV"
    out = pd.Series(vol, index=pd.Index(ids, name="scan_id"), name="hippocampal_volume")
    out.attrs.update(unit=unit, label=f"{what}, {unit}", source=source, note=note)
    return out

