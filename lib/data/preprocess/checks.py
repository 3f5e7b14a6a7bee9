"""Checks of a raw scan before registration: each problem is one message naming the file, and the batch goes on.

A scan that fails here is recorded as "failed" with the message; nothing is written for it but its QC.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

MIN_FOV_MM = 100.0
"""Smallest extent of a whole-brain field of view along every axis (an adult brain is about 140 × 170 × 120
mm; a slab, a single slice or a localiser is thinner)."""


class InputProblem(ValueError):
    """A scan that cannot be preprocessed; the message names the file and the problem."""


def _voxels(path: Path, img) -> np.ndarray:
    try:
        return np.asarray(img.dataobj)
    except Exception as exc:  # truncated or corrupt voxel data
        raise InputProblem(f"{path}: voxel data cannot be read ({type(exc).__name__}: {exc})") from None


def load_raw(path: str | Path) -> tuple[nib.Nifti1Image, np.ndarray]:
    """The scan as a 3D float32 image, or :class:`InputProblem` (unreadable, 4D, 2D, NaN, empty, constant,
    too small a field of view)."""
    path = Path(path)
    try:
        img = nib.load(str(path))
    except FileNotFoundError:
        raise InputProblem(f"{path}: file not found") from None
    except Exception as exc:
        raise InputProblem(f"{path}: unreadable as NIfTI ({type(exc).__name__}: {' '.join(str(exc).split())[:160]})"
                           ) from None
    data = _voxels(path, img)
    if data.dtype.kind not in "iuf":
        raise InputProblem(f"{path}: voxels of type {data.dtype} are not grey values of a T1 scan")
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    shape = "×".join(map(str, data.shape))
    if data.ndim > 3:
        raise InputProblem(f"{path}: 4D image ({shape}, {int(np.prod(data.shape[3:]))} volumes); "
                           "give one 3D T1 volume per row")
    if data.ndim < 3 or min(data.shape) < 8:
        raise InputProblem(f"{path}: 2D image ({shape}); a 3D T1 volume is expected")
    data = data.astype(np.float32)
    bad = int(np.count_nonzero(~np.isfinite(data)))
    if bad:
        raise InputProblem(f"{path}: {bad} voxels are NaN or infinite; export the scan again")
    lo, hi = float(data.min()), float(data.max())
    if lo == hi:
        raise InputProblem(f"{path}: empty image (every voxel is {lo:g})")
    zooms = np.linalg.norm(img.affine[:3, :3], axis=0)
    if not np.all(np.isfinite(img.affine)) or np.any(zooms == 0):
        raise InputProblem(f"{path}: the header's affine is not a valid voxel-to-world transform")
    fov = zooms * np.asarray(data.shape)
    if fov.min() < MIN_FOV_MM:
        raise InputProblem(f"{path}: field of view {'×'.join(f'{f:.0f}' for f in fov)} mm is too small for a "
                           f"whole brain (at least {MIN_FOV_MM:.0f} mm along every axis)")
    out = nib.Nifti1Image(data, img.affine)
    out.header.set_xyzt_units("mm")
    return out, data
