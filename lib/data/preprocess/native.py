"""Maps on the template grid back to a scan's own space (clinicians read maps on the patient's anatomy)."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np

from lib.core import atomic
from lib.data.preprocess import antsio


class NotPreprocessed(ValueError):
    """The scan has no preprocessing folder with transforms (it was not registered by this pipeline)."""


def warp_to_native(volume_on_template: np.ndarray, template_affine: np.ndarray,
                   scan_dir: str | os.PathLike) -> nib.Nifti1Image:
    """``volume_on_template`` (X, Y, Z on the grid of ``template_affine``) resampled (linear) onto the scan's
    original grid, in its original orientation and affine, through the inverse transforms in ``scan_dir``
    (``…/preprocessed/<scan_id>``)."""
    import ants

    scan_dir = Path(scan_dir)
    record = atomic.read_json(scan_dir / "qc.json") if (scan_dir / "qc.json").is_file() else None
    grid_file = scan_dir / "native_grid.nii.gz"
    if not record or not record.get("inverse") or not grid_file.is_file():
        raise NotPreprocessed(f"{scan_dir}: no preprocessing result with transforms (qc.json, native_grid.nii.gz); "
                              "preprocess the raw scan first (python -m lib preprocess)")
    native = nib.load(str(grid_file))
    fixed = antsio.from_nib(native, np.zeros(native.shape, np.float32))
    volume = np.asarray(volume_on_template, dtype=np.float32)
    moving = antsio.from_nib(nib.Nifti1Image(volume, np.asarray(template_affine, float)))
    out = ants.apply_transforms(fixed, moving, [str(scan_dir / t) for t in record["inverse"]],
                                interpolator="linear", whichtoinvert=[False] * len(record["inverse"]))
    img = nib.Nifti1Image(out.numpy().astype(np.float32), native.affine)
    img.header.set_xyzt_units("mm")
    return img
