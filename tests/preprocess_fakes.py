"""A tiny preprocessed workspace as the preprocessing pipeline leaves it: ``preprocessed/qc.csv`` and
``preprocessed/<scan_id>/t1.nii.gz`` on the template grid, one scan of each status."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from lib.core import atomic
from lib.data.templates import Grid, template
from lib.data.workspace import Workspace

RESOLUTION = 3.0
# scan → (status, message, voxels the registered scan is off the template by)
SCANS = {
    "sub-01_ses-1": ("ok", "", 0),
    "sub-02_ses-1": ("flagged", "correlation with the template 0.71 < 0.90", 4),
    "sub-03_ses-1": ("failed", "registration diverged (Dice brain 0.12)", None),
    "sub-04_ses-1": ("passed_through", "already on the template grid: passed through", 0),
}


def fake_preprocessed(root: Path) -> Workspace:
    grid = Grid(RESOLUTION)
    ws = Workspace.create(root, name="Preprocessed (test)", kind="study", resolution=RESOLUTION, complete=True,
                          n_scans=len(SCANS))
    base = np.asarray(template(RESOLUTION).dataobj, dtype=np.float32) * 1000
    rows, qc = [], []
    rng = np.random.default_rng(0)
    for i, (scan_id, (status, message, shift)) in enumerate(SCANS.items()):
        path = Path("preprocessed") / scan_id / "t1.nii.gz"
        if shift is not None:
            data = np.roll(base, shift, axis=2) + rng.normal(0, 20, base.shape).astype(np.float32)
            atomic.write_nifti(root / path, nib.Nifti1Image(data.clip(0).astype(np.float32), grid.affine))
        rows.append({"subject_id": scan_id[:6], "scan_id": scan_id, "path": str(path),
                     "diagnosis": "AD" if i % 2 else "HC"})
        good = status in ("ok", "passed_through")
        qc.append({"scan_id": scan_id, "status": status, "message": message, "registration": "nonlinear",
                   "corr_template": 0.97 if good else 0.71, "dice_brain": 0.96 if good else 0.12,
                   "dice_hippocampus": 0.84 if good else 0.2, "jacobian_folded_share": 0.0,
                   "jacobian_min": 0.4, "jacobian_max": 2.1, "seconds": 21.5 + i})
    atomic.write_csv(root / "preprocessed" / "qc.csv", pd.DataFrame(qc))
    atomic.write_csv(ws.cohort_csv, pd.DataFrame(rows))
    return ws
