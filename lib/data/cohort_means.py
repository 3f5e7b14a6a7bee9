"""Mean images of the two classes (AD and HC by default) of the whole cohort (the Overview page's group means, ``python -m lib means``).

Each scan is brain-normalised (mean of its non-zero voxels = 1) and streamed one at a time; the result is
cached under ``cache/overview/`` keyed by the scans' paths, sizes and modification times.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from lib.core import atomic, cache
from lib.data.scans import load_cohort, load_scan
from lib.data.workspace import Workspace
from lib.data.classes import DEFAULT_CLASSES



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
    """Mean brain-normalised image of the positive and of the negative class's scans (AD, HC), streamed one
    scan at a time.

    Saved as a 3-volume NIfTI (positive mean, negative mean, positive − negative) on the workspace grid,
    keyed by the scans' paths, sizes and modification times.
    """
    cohort = load_cohort(ws)
    target = group_means_path(ws, cohort)
    if cache.ok(target):
        return target
    cache.discard(target)   # absent, corrupted or of an older version: recomputed
    pos, neg = ws.classes.positive, ws.classes.negative
    sums = {dx: np.zeros(ws.grid.shape, np.float64) for dx in (pos, neg)}
    n = {pos: 0, neg: 0}
    total = len(cohort)
    for i, row in enumerate(cohort.itertuples(index=False)):
        if row.diagnosis in sums:
            data = np.asarray(load_scan(ws, row.path).dataobj, dtype=np.float32)
            sums[row.diagnosis] += brain_normalised(data)
            n[row.diagnosis] += 1
        if progress:
            progress(i + 1, total, f"scan {row.scan_id}")
    means = {dx: (sums[dx] / max(n[dx], 1)).astype(np.float32) for dx in sums}
    stack = np.stack([means[pos], means[neg], means[pos] - means[neg]], axis=-1)
    img = nib.Nifti1Image(stack, ws.grid.affine)
    img.header["descrip"] = (f"mean {pos} (n={n[pos]}), mean {neg} (n={n[neg]}), "
                             f"{pos}-{neg}").encode()[:79]
    atomic.write_nifti(target, img)
    cache.seal(target, kind="overview", **n)
    return target


def read_group_means(path: str | Path, positive: str = DEFAULT_CLASSES.positive,
                     negative: str = DEFAULT_CLASSES.negative) -> dict[str, np.ndarray]:
    """The three volumes of a group-means file keyed by the task's names: AD, HC and AD − HC by default.

    Raises :class:`lib.core.cache.CacheError` naming the file when it does not match its checksum marker.
    """
    cache.require(path, "cohort mean images", "python -m lib means")
    data = np.asarray(nib.load(path).dataobj, dtype=np.float32)
    return {positive: data[..., 0], negative: data[..., 1], f"{positive} - {negative}": data[..., 2]}


def group_means(ws: Workspace, cohort: pd.DataFrame | None = None) -> dict[str, np.ndarray] | None:
    """The cached group means, or None if they have not been computed for the current cohort."""
    target = group_means_path(ws, load_cohort(ws) if cohort is None else cohort)
    return read_group_means(target, *ws.classes.names[::-1]) if cache.ok(target) else None
