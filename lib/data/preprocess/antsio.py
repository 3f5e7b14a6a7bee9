"""Between nibabel (RAS+ affines) and ANTsPy (ITK's LPS physical space), and the transforms written to disk.

ANTsPy is imported inside the functions: a worker process sets ITK's thread count before the first import.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

LPS = np.diag([-1.0, -1.0, 1.0, 1.0])   # RAS+ ↔ LPS (its own inverse)


def from_nib(img: nib.spatialimages.SpatialImage, data: np.ndarray | None = None):
    """An ANTs image with ``img``'s voxels (or ``data``) in ``img``'s physical space."""
    import ants

    data = np.asarray(img.dataobj if data is None else data, dtype=np.float32)
    lps = LPS @ img.affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    return ants.from_numpy(np.ascontiguousarray(data), origin=tuple(map(float, lps[:3, 3])),
                           spacing=tuple(map(float, spacing)), direction=lps[:3, :3] / spacing)


def affine_of(image) -> np.ndarray:
    """The RAS+ voxel-to-world affine of an ANTs image."""
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(image.direction) * np.asarray(image.spacing)
    lps[:3, 3] = image.origin
    return LPS @ lps


def to_nib(image, affine: np.ndarray | None = None, dtype=np.float32) -> nib.Nifti1Image:
    """A NIfTI image of an ANTs image; ``affine`` replaces its affine (the exact template grid's)."""
    out = nib.Nifti1Image(np.asarray(image.numpy(), dtype=dtype), affine_of(image) if affine is None else affine)
    out.header.set_xyzt_units("mm")
    return out


def write_affine(path: Path, ras_matrix: np.ndarray) -> None:
    """An ANTs affine transform file of a 4×4 RAS+ matrix mapping fixed points to moving points (ANTs' sense
    of a forward transform)."""
    import ants

    lps = LPS @ ras_matrix @ LPS
    tx = ants.create_ants_transform(transform_type="AffineTransform", dimension=3,
                                    matrix=lps[:3, :3], translation=lps[:3, 3])
    ants.write_transform(tx, str(path))


def write_inverse_affine(src: Path, dst: Path) -> None:
    import ants

    ants.write_transform(ants.read_transform(str(src)).invert(), str(dst))
