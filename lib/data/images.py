"""One scan's image: loading it onto the template grid, and the checks of a cohort's scans.

:func:`inspect_image` reads an image once and returns its QC values and findings (never raises);
:func:`load_on_grid` gives the float32 volume on the template grid, or raises :class:`ImageError`.
:func:`lib.data.validation.validate_table` runs the checks over every scan of a cohort table.

Issue codes: ``unreadable_image`` (cannot be opened, or truncated/corrupt voxel data), ``bad_dtype``
(complex, binary/bool, RGB or other structured voxels), ``not_3d``, ``non_finite`` (NaN/Inf),
``empty_volume`` (all zero or constant), ``bad_affine``, ``off_grid`` (warning: will be
resampled), ``fov_mismatch`` (field of view misses the MNI brain box: error below 50 %
overlap, warning below 80 %), ``not_registered`` (correlation with the ICBM152 template inside
its brain mask below :data:`MNI_CORR_THRESHOLD`).

Registration threshold: after resampling to the grid, the real single-subject
Colin27 T1 (with skull, ``mricron-data``'s ch2) correlates about 0.55–0.60 with
the brain-extracted ICBM152 template at 2–6 mm; the same scan shifted by
20 mm scores below 0.2, by 40 mm below 0.1, and scrambled voxels about 0.
The threshold 0.3 sits between the two.
"""

from __future__ import annotations

import functools
import gzip
import math
import os
import struct
from pathlib import Path

import nibabel as nib
import numpy as np

from lib.data.templates import Grid, brain_mask, template

MNI_CORR_THRESHOLD = 0.3
FOV_ERROR_BELOW = 0.5
FOV_WARN_BELOW = 0.8

RESAMPLE_NOTE = "will be resampled to the template grid (nilearn, continuous interpolation)"

Finding = tuple[str, str, str]   # (severity, code, text completing a sentence whose subject is the file)


class ImageError(ValueError):
    """An image that cannot be used at all (unreadable, not 3D, unsupported voxel type)."""



def exc_text(exc: BaseException) -> str:
    """``Type: message`` on one line, shortened."""
    text = " ".join(str(exc).split())
    text = text if len(text) <= 200 else text[:197] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__



def _fmt_shape(shape) -> str:
    return "×".join(str(int(s)) for s in shape)



def _fmt_zooms(zooms) -> str:
    return "×".join(f"{float(z):.2f}" for z in zooms)



@functools.lru_cache(maxsize=4)
def _template_refs(resolution: float):
    """Template data, brain mask and the brain's bounding box in mm (min, max corners)."""
    tpl = np.asarray(template(resolution).dataobj, dtype=np.float32)
    mask = brain_mask(resolution)
    grid = Grid(resolution)
    idx = np.argwhere(mask)
    lo = nib.affines.apply_affine(grid.affine, idx.min(0) - 0.5)
    hi = nib.affines.apply_affine(grid.affine, idx.max(0) + 0.5)
    return tpl, mask, np.minimum(lo, hi), np.maximum(lo, hi)



def _raw_datatype_code(path: Path) -> int | None:
    """The NIfTI-1 datatype code straight from the header bytes (for files nibabel refuses)."""
    try:
        opener = gzip.open if str(path).endswith(".gz") else open
        with opener(path, "rb") as fh:
            head = fh.read(72)
        if len(head) < 72:
            return None
        for endian in ("<", ">"):
            if struct.unpack(endian + "i", head[:4])[0] in (348, 540):
                return struct.unpack(endian + "h", head[70:72])[0]
    except Exception:
        return None
    return None



def _dtype_problem(dtype: np.dtype) -> str | None:
    if dtype.fields is not None:
        names = "".join(dtype.names or ())
        kind = "RGB" if names.upper() in ("RGB", "RGBA") else "structured"
        return f"stores {kind} voxels ({dtype}); a single-channel grey-value T1 is expected"
    if dtype.kind == "c":
        return f"stores complex voxels ({dtype}); export the magnitude image instead"
    if dtype.kind == "b":
        return "stores boolean voxels; this looks like a mask, not a T1 scan"
    if dtype.kind not in "iuf":
        return f"stores voxels of unsupported type {dtype}"
    return None



def _squeeze(data: np.ndarray) -> np.ndarray:
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    return data



def _resample(data: np.ndarray, affine: np.ndarray, grid: Grid) -> np.ndarray:
    from nilearn.image import resample_img

    img = nib.Nifti1Image(data.astype(np.float32, copy=False), affine)
    out = resample_img(img, target_affine=grid.affine, target_shape=grid.shape,
                       interpolation="continuous", force_resample=True, copy_header=True)
    return np.asarray(out.dataobj, dtype=np.float32)



def _on_grid(shape, affine, grid: Grid) -> bool:
    return tuple(int(s) for s in shape[:3]) == grid.shape and np.allclose(affine, grid.affine, atol=1e-3)



def _fov_overlap(shape, affine, lo: np.ndarray, hi: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Fraction of the brain box [lo, hi] (mm) covered by the image's axis-aligned field of view."""
    corners = np.array([[i, j, k] for i in (-0.5, shape[0] - 0.5) for j in (-0.5, shape[1] - 0.5)
                        for k in (-0.5, shape[2] - 0.5)])
    world = nib.affines.apply_affine(affine, corners)
    fmin, fmax = world.min(0), world.max(0)
    inter = np.clip(np.minimum(fmax, hi) - np.maximum(fmin, lo), 0, None)
    return float(np.prod(inter) / np.prod(hi - lo)), fmin, fmax



def template_correlation(data_on_grid: np.ndarray, resolution: float) -> float:
    """Pearson correlation with the ICBM152 template inside its brain mask (NaN if constant)."""
    tpl, mask, _, _ = _template_refs(float(resolution))
    x = np.asarray(data_on_grid, dtype=np.float64)[mask]
    y = tpl[mask].astype(np.float64)
    if x.size < 2 or np.std(x) == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])



# --- loading ------------------------------------------------------------------------------------------
def load_on_grid(path: str | os.PathLike | nib.spatialimages.SpatialImage, grid: Grid
                 ) -> tuple[nib.Nifti1Image, list[str]]:
    """The scan as a float32 image on ``grid`` (affine ``grid.affine``) and warnings about what was done.

    A 4D image with one volume is squeezed; an image off the grid is resampled
    with nilearn (continuous interpolation); NaN/Inf voxels become 0. Raises
    :class:`ImageError` for images that cannot be used.
    """
    name = getattr(path, "get_filename", lambda: None)() if isinstance(path, nib.spatialimages.SpatialImage) \
        else str(path)
    name = name or "image"
    try:
        img = path if isinstance(path, nib.spatialimages.SpatialImage) else nib.load(str(path))
    except Exception as exc:
        raise ImageError(f"{name} could not be opened as a NIfTI image ({exc_text(exc)}).") from exc
    problem = _dtype_problem(np.dtype(img.get_data_dtype()))
    if problem:
        raise ImageError(f"{name} {problem}.")
    try:
        data = np.asanyarray(img.dataobj)
    except Exception as exc:
        raise ImageError(f"{name} is truncated or corrupt: reading its voxel data failed "
                         f"({exc_text(exc)}).") from exc
    warnings: list[str] = []
    if data.ndim > 3:
        squeezed = _squeeze(data)
        if squeezed.ndim == 3:
            warnings.append(f"{name}: 4D image of shape {_fmt_shape(data.shape)} with a single volume "
                            "was used as 3D.")
        data = squeezed
    if data.ndim != 3:
        raise ImageError(f"{name} has shape {_fmt_shape(data.shape)}; a single 3D volume is expected.")
    data = np.asarray(data, dtype=np.float32)
    bad = ~np.isfinite(data)
    if bad.any():
        warnings.append(f"{name}: {int(bad.sum())} NaN/infinite voxels were set to 0.")
        data = np.where(bad, np.float32(0), data)
    del bad
    affine = np.asarray(img.affine, dtype=float)
    if not _on_grid(data.shape, affine, grid):
        zooms = np.sqrt((affine[:3, :3] ** 2).sum(0))
        data = _resample(data, affine, grid)
        warnings.append(
            f"{name}: resampled to the template grid (nilearn, continuous interpolation) from shape "
            f"{_fmt_shape(img.shape[:3])} at {_fmt_zooms(zooms)} mm voxels to {_fmt_shape(grid.shape)} at "
            f"{float(grid.resolution):g} mm.")
    out = nib.Nifti1Image(np.ascontiguousarray(data, dtype=np.float32), grid.affine)
    out.set_sform(grid.affine, code="mni")
    out.set_qform(grid.affine, code="mni")
    return out, warnings



# --- checking -------------------------------------------------------------------------------------------
def inspect_image(path: str | os.PathLike, grid: Grid, *, corr_threshold: float = MNI_CORR_THRESHOLD
                  ) -> tuple[dict, list[Finding]]:
    """QC values of one scan and its findings as ``(severity, code, text)``.

    ``text`` completes a sentence whose subject is the file ("is not 3D ...").
    The image is read once; nothing is raised. Each step stops the checks when the image is unusable.
    """
    qc: dict = {"readable": False}
    found: list[Finding] = []
    read = _read_voxels(Path(path), qc, found)
    if read is None:
        return qc, found
    img, data = read
    affine = np.asarray(img.affine, dtype=float)
    data, is_3d = _voxel_values(data, affine, grid, qc, found)
    if data is None or not is_3d:
        return qc, found
    on_grid = _placement(data, affine, grid, qc, found)
    if on_grid is None:
        return qc, found
    _registration(data, affine, grid, on_grid, corr_threshold, qc, found)
    return qc, found


def _read_voxels(path: Path, qc: dict, found: list[Finding]) -> tuple[nib.spatialimages.SpatialImage, np.ndarray] | None:
    """The image and its raw voxel array, with dtype, shape and voxel size in ``qc``; None if unreadable."""
    try:
        img = nib.load(str(path))
    except Exception as exc:
        if _raw_datatype_code(path) == 1:
            found.append(("error", "bad_dtype", "stores 1-bit binary (bool) voxels; this looks like a mask, "
                                                "not a T1 scan"))
        else:
            found.append(("error", "unreadable_image",
                          f"could not be opened as a NIfTI image ({exc_text(exc)})"))
        return None
    header_dtype = np.dtype(img.get_data_dtype())
    qc["dtype"] = str(header_dtype)
    qc["shape"] = _fmt_shape(img.shape)
    try:
        qc["voxel_size_mm"] = _fmt_zooms(img.header.get_zooms()[:3])
    except Exception:
        pass
    try:
        data = np.asanyarray(img.dataobj)
    except Exception as exc:
        found.append(("error", "unreadable_image", "is truncated or corrupt: reading its voxel data failed "
                                                   f"({exc_text(exc)})"))
        return None
    qc["readable"] = True
    problem = _dtype_problem(data.dtype) or _dtype_problem(header_dtype)
    if problem:
        found.append(("error", "bad_dtype", problem))
        return None
    return img, data


def _voxel_values(data: np.ndarray, affine: np.ndarray, grid: Grid, qc: dict, found: list[Finding]
                  ) -> tuple[np.ndarray | None, bool]:
    """The voxels as finite float32 (NaN/Inf set to 0) and whether they are 3D, their statistics in ``qc``;
    no voxels (None) when the volume is empty or constant."""
    full_shape = data.shape
    data = _squeeze(data)
    is_3d = data.ndim == 3
    if not is_3d:
        if data.ndim == 4:
            what = f"is a 4D series of {data.shape[3]} volumes (shape {_fmt_shape(full_shape)})"
        else:
            what = f"has {data.ndim} dimensions (shape {_fmt_shape(full_shape)})"
        found.append(("error", "not_3d", f"{what}; a single 3D volume is expected"))
    if is_3d and np.all(np.isfinite(affine)):
        qc["on_grid"] = _on_grid(data.shape, affine, grid)

    data = np.asarray(data, dtype=np.float32)
    finite = np.isfinite(data)
    n_bad = int(data.size - np.count_nonzero(finite))
    if n_bad:
        n_nan = int(np.isnan(data).sum())
        found.append(("error", "non_finite",
                      f"contains {n_nan} NaN and {n_bad - n_nan} infinite voxel values"))
        data = np.where(finite, data, np.float32(0))
    del finite
    if data.size:
        qc.update(min=float(data.min()), max=float(data.max()), mean=float(data.mean()),
                  std=float(data.std()), nonzero_fraction=float(np.count_nonzero(data) / data.size))
    if not data.size or qc["min"] == qc["max"]:
        value = qc.get("min", 0.0)
        what = "every voxel is 0" if value == 0 else f"every voxel has the same value {value:g}"
        found.append(("error", "empty_volume", f"is empty: {what}"))
        return None, is_3d
    return data, is_3d


def _placement(data: np.ndarray, affine: np.ndarray, grid: Grid, qc: dict, found: list[Finding]) -> bool | None:
    """Whether the image lies on the template grid (None: its affine is unusable); the share of the MNI brain
    box its field of view covers in ``qc``."""
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        found.append(("error", "bad_affine", "has an invalid (singular) voxel-to-world affine, so its position "
                                             "in space is unknown"))
        return None
    on_grid = _on_grid(data.shape, affine, grid)
    qc["on_grid"] = on_grid
    if not on_grid:
        zooms = np.sqrt((affine[:3, :3] ** 2).sum(0))
        if tuple(data.shape) == grid.shape and np.allclose(zooms, grid.resolution, atol=1e-3):
            what = (f"has the template grid's shape {_fmt_shape(data.shape)} and {float(grid.resolution):g} mm "
                    "voxels but a different origin or orientation (affine)")
        else:
            what = (f"has shape {_fmt_shape(data.shape)} at {_fmt_zooms(zooms)} mm voxels, not the template grid "
                    f"{_fmt_shape(grid.shape)} at {float(grid.resolution):g} mm")
        found.append(("warning", "off_grid", f"{what}; it {RESAMPLE_NOTE}"))

    _, _, lo, hi = _template_refs(float(grid.resolution))
    overlap, fmin, fmax = _fov_overlap(data.shape, affine, lo, hi)
    qc["fov_overlap"] = overlap
    if overlap < FOV_WARN_BELOW:
        box = ", ".join(f"{ax} {a:.0f}..{b:.0f}" for ax, a, b in zip("xyz", fmin, fmax))
        sev = "error" if overlap < FOV_ERROR_BELOW else "warning"
        found.append((sev, "fov_mismatch",
                      f"covers only {overlap:.0%} of the MNI brain bounding box (its field of view spans "
                      f"{box} mm); it does not look like an image in MNI space"))
    return on_grid


def _registration(data: np.ndarray, affine: np.ndarray, grid: Grid, on_grid: bool, corr_threshold: float,
                  qc: dict, found: list[Finding]) -> None:
    """The correlation with the template inside its brain on the grid (``qc["template_corr"]``)."""
    try:
        on = data if on_grid else _resample(data, affine, grid)
    except Exception as exc:
        found.append(("error", "unreadable_image", f"could not be resampled to the template grid "
                                                   f"({exc_text(exc)})"))
        return
    corr = template_correlation(on, float(grid.resolution))
    qc["template_corr"] = corr
    if not (corr >= corr_threshold):
        detail = ("has no signal inside the MNI brain mask" if math.isnan(corr)
                  else f"correlates only {corr:.2f} with the ICBM152 template inside the brain mask "
                       f"(registered T1 scans score above {corr_threshold:g})")
        found.append(("error", "not_registered",
                      f"does not look registered to MNI space: it {detail}; register it to MNI152 "
                      "(e.g. with ANTs, FSL FLIRT/FNIRT or SPM) before use"))
