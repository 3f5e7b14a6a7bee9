"""Validation of a cohort table and its scans, reporting every problem at once.

:func:`validate_table` never raises for bad input: a table that cannot be read
becomes a report with one error, and every bad row or scan adds its own
:class:`Issue` (a distinct ``code`` per kind of problem, a message that names
the row and file). Each image is read once, one volume at a time, and
summarised in a per-scan QC table.

Issue codes
-----------
Table: ``table_not_found``, ``unparsable_table``, ``missing_columns``, ``empty_table``,
``read_warning``, ``missing_value``, ``unknown_diagnosis``, ``not_in_task`` (warning: MCI and
other groups outside AD/HC), ``unknown_sex`` (warning), ``non_numeric``, ``age_out_of_range``
(warning), ``mmse_out_of_range`` (warning), ``duplicate_scan_id``, ``duplicate_path``
(warning), ``subject_sex_conflict``, ``subject_diagnosis_conflict``, ``path_outside_workspace``,
``missing_file``, ``not_a_file``.

Image: ``unreadable_image`` (cannot be opened, or truncated/corrupt voxel data), ``bad_dtype``
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
import json
import math
import os
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import nibabel as nib
import numpy as np
import pandas as pd

from lib.data import cohort
from lib.data.cohort import CohortError
from lib.data.templates import Grid, template
from lib.core.progress import Progress

AGE_RANGE = (18.0, 110.0)
MMSE_RANGE = (0.0, 30.0)
MNI_CORR_THRESHOLD = 0.3
FOV_ERROR_BELOW = 0.5
FOV_WARN_BELOW = 0.8
BRAIN_MASK_LEVEL = 0.1  # template intensity (0-1) above which a voxel counts as brain

RESAMPLE_NOTE = "will be resampled to the template grid (nilearn, continuous interpolation)"

QC_COLUMNS = ["scan_id", "row", "path", "readable", "shape", "voxel_size_mm", "on_grid", "dtype",
              "min", "max", "mean", "std", "nonzero_fraction", "template_corr", "fov_overlap",
              "n_errors", "n_warnings", "flags"]



class ImageError(ValueError):
    """An image that cannot be used at all (unreadable, not 3D, unsupported voxel type)."""


@dataclass
class Issue:
    severity: str  # "error" | "warning"
    code: str
    message: str
    row: int | None = None
    scan_id: str | None = None
    path: str | None = None


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


@dataclass
class ValidationReport:
    issues: list[Issue] = field(default_factory=list)
    qc: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=QC_COLUMNS))

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def codes(self) -> set[str]:
        return {i.code for i in self.issues}

    def summary(self) -> str:
        return (f"{_plural(len(self.errors), 'error')}, {_plural(len(self.warnings), 'warning')} "
                f"in {_plural(len(self.qc), 'scan')}")

    def to_frame(self) -> pd.DataFrame:
        cols = ["severity", "code", "message", "row", "scan_id", "path"]
        df = pd.DataFrame([asdict(i) for i in self.issues], columns=cols)
        df["row"] = pd.array(df["row"], dtype="Int64")
        return df

    def to_json(self) -> str:
        qc = json.loads(self.qc.to_json(orient="split", index=False)) if len(self.qc.columns) else \
            {"columns": [], "data": []}
        return json.dumps({"summary": self.summary(), "ok": self.ok,
                           "issues": [asdict(i) for i in self.issues], "qc": qc}, indent=1)

    @classmethod
    def from_json(cls, text: str | bytes) -> "ValidationReport":
        obj = json.loads(text)
        issues = [Issue(**i) for i in obj.get("issues", [])]
        qc = obj.get("qc") or {"columns": QC_COLUMNS, "data": []}
        return cls(issues=issues, qc=pd.DataFrame(qc.get("data", []), columns=qc.get("columns", QC_COLUMNS)))


# --- helpers ---------------------------------------------------------------------------------------
def _na(v) -> bool:
    if v is None or v is pd.NA:
        return True
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def _exc_text(exc: BaseException) -> str:
    """``Type: message`` on one line, shortened."""
    text = " ".join(str(exc).split())
    text = text if len(text) <= 200 else text[:197] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _fmt_shape(shape) -> str:
    return "×".join(str(int(s)) for s in shape)


def _fmt_zooms(zooms) -> str:
    return "×".join(f"{float(z):.2f}" for z in zooms)


def _join_rows(rows: list[int]) -> str:
    rows = [str(r) for r in rows]
    return rows[0] if len(rows) == 1 else ", ".join(rows[:-1]) + " and " + rows[-1]


@functools.lru_cache(maxsize=4)
def _template_refs(resolution: float):
    """Template data, brain mask and the brain's bounding box in mm (min, max corners)."""
    tpl = np.asarray(template(resolution).dataobj, dtype=np.float32)
    mask = tpl > BRAIN_MASK_LEVEL
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
        raise ImageError(f"{name} could not be opened as a NIfTI image ({_exc_text(exc)}).") from exc
    problem = _dtype_problem(np.dtype(img.get_data_dtype()))
    if problem:
        raise ImageError(f"{name} {problem}.")
    try:
        data = np.asanyarray(img.dataobj)
    except Exception as exc:
        raise ImageError(f"{name} is truncated or corrupt: reading its voxel data failed "
                         f"({_exc_text(exc)}).") from exc
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


# --- one image -------------------------------------------------------------------------------------------
def inspect_image(path: str | os.PathLike, grid: Grid, *, corr_threshold: float = MNI_CORR_THRESHOLD
                  ) -> tuple[dict, list[tuple[str, str, str]]]:
    """QC values of one scan and its findings as ``(severity, code, text)``.

    ``text`` completes a sentence whose subject is the file ("is not 3D ...").
    The image is read once; nothing is raised.
    """
    path = Path(path)
    qc: dict = {"readable": False}
    found: list[tuple[str, str, str]] = []
    try:
        img = nib.load(str(path))
    except Exception as exc:
        if _raw_datatype_code(path) == 1:
            found.append(("error", "bad_dtype", "stores 1-bit binary (bool) voxels; this looks like a mask, "
                                                "not a T1 scan"))
        else:
            found.append(("error", "unreadable_image",
                          f"could not be opened as a NIfTI image ({_exc_text(exc)})"))
        return qc, found

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
                                                   f"({_exc_text(exc)})"))
        return qc, found
    qc["readable"] = True
    problem = _dtype_problem(data.dtype) or _dtype_problem(header_dtype)
    if problem:
        found.append(("error", "bad_dtype", problem))
        return qc, found

    full_shape = data.shape
    data = _squeeze(data)
    is_3d = data.ndim == 3
    if not is_3d:
        if data.ndim == 4:
            what = f"is a 4D series of {data.shape[3]} volumes (shape {_fmt_shape(full_shape)})"
        else:
            what = f"has {data.ndim} dimensions (shape {_fmt_shape(full_shape)})"
        found.append(("error", "not_3d", f"{what}; a single 3D volume is expected"))

    affine = np.asarray(img.affine, dtype=float)
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
        vals = data
        qc.update(min=float(vals.min()), max=float(vals.max()), mean=float(vals.mean()),
                  std=float(vals.std()), nonzero_fraction=float(np.count_nonzero(vals) / vals.size))
    if not data.size or qc["min"] == qc["max"]:
        value = qc.get("min", 0.0)
        what = "every voxel is 0" if value == 0 else f"every voxel has the same value {value:g}"
        found.append(("error", "empty_volume", f"is empty: {what}"))
        return qc, found
    if not is_3d:
        return qc, found

    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        found.append(("error", "bad_affine", "has an invalid (singular) voxel-to-world affine, so its position "
                                             "in space is unknown"))
        return qc, found
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

    try:
        on = data if on_grid else _resample(data, affine, grid)
    except Exception as exc:
        found.append(("error", "unreadable_image", f"could not be resampled to the template grid "
                                                   f"({_exc_text(exc)})"))
        return qc, found
    del data
    corr = template_correlation(on, float(grid.resolution))
    qc["template_corr"] = corr
    if not (corr >= corr_threshold):
        detail = ("has no signal inside the MNI brain mask" if math.isnan(corr)
                  else f"correlates only {corr:.2f} with the ICBM152 template inside the brain mask "
                       f"(registered T1 scans score above {corr_threshold:g})")
        found.append(("error", "not_registered",
                      f"does not look registered to MNI space: it {detail}; register it to MNI152 "
                      "(e.g. with ANTs, FSL FLIRT/FNIRT or SPM) before use"))
    return qc, found


# --- the table ---------------------------------------------------------------------------------------------
class _Collector:
    def __init__(self, df: pd.DataFrame, workspace):
        self.df = df
        self.workspace = workspace
        self.issues: list[Issue] = []
        self.by_pos: dict[int, list[Issue]] = {}

    def row(self, pos: int) -> int | None:
        v = self.df["row"].iat[pos]
        return None if _na(v) else int(v)

    def scan(self, pos: int) -> str | None:
        v = self.df["scan_id"].iat[pos]
        return None if _na(v) else str(v)

    def path(self, pos: int) -> str | None:
        v = self.df["path"].iat[pos]
        return None if _na(v) else str(v)

    def where(self, pos: int) -> str:
        row, scan = self.row(pos), self.scan(pos)
        head = f"Row {row}" if row is not None else "A BIDS scan"
        return f"{head} (scan {scan})" if scan else head

    def show(self, path: str | None) -> str:
        if path is None:
            return "(no path)"
        if self.workspace is not None:
            try:
                return str(self.workspace.resolve(path).relative_to(self.workspace.root))
            except ValueError:
                pass
        return str(path)

    def add(self, severity: str, code: str, message: str, positions=(), *, pos: int | None = None) -> Issue:
        positions = list(positions) if positions else ([pos] if pos is not None else [])
        main = positions[-1] if code.startswith("duplicate") and positions else (positions[0] if positions else None)
        issue = Issue(severity, code, message,
                      row=self.row(main) if main is not None else None,
                      scan_id=self.scan(main) if main is not None else None,
                      path=self.path(main) if main is not None else None)
        self.issues.append(issue)
        for p in positions:
            self.by_pos.setdefault(p, []).append(issue)
        return issue


def _known_labels_text() -> str:
    return "AD: " + ", ".join(cohort.AD_LABELS[:8]) + "; HC: " + ", ".join(cohort.HC_LABELS[:8])


def _table_checks(c: _Collector) -> None:
    df = c.df
    n = len(df)
    for text in df.attrs.get(cohort.READ_WARNINGS, []) or []:
        c.add("warning", "read_warning", str(text))

    for i in range(n):
        w = c.where(i)
        missing = [col for col in ("subject_id", "scan_id", "path") if _na(df[col].iat[i])]
        if _na(df["diagnosis_raw"].iat[i]):
            missing.append("diagnosis")
        if missing:
            c.add("error", "missing_value", f"{w}: required value missing in column(s) {', '.join(missing)}.", pos=i)

        raw = df["diagnosis_raw"].iat[i]
        if not _na(raw) and _na(df["diagnosis"].iat[i]):
            if cohort.is_other_group(raw):
                c.add("warning", "not_in_task",
                      f'{w}: diagnosis "{raw}" is not part of the AD/HC task; this scan cannot be used as AD or HC.',
                      pos=i)
            else:
                guess = cohort.suggest_diagnosis(raw)
                hint = (f' Did you mean "{guess}" ({cohort.map_diagnosis(guess)})?' if guess
                        else f" Known labels: {_known_labels_text()}.")
                c.add("error", "unknown_diagnosis", f'{w}: unknown diagnosis label "{raw}".{hint}', pos=i)

        if "sex" in df.columns and "sex_raw" in df.columns:
            raw = df["sex_raw"].iat[i]
            if not _na(raw) and _na(df["sex"].iat[i]):
                c.add("warning", "unknown_sex",
                      f'{w}: sex "{raw}" is not recognised (use F/Female/W/2 or M/Male/1); it is treated as unknown.',
                      pos=i)

        for col in cohort.NUMERIC:
            raw_col = f"{col}_raw"
            if raw_col in df.columns and col in df.columns:
                raw = df[raw_col].iat[i]
                if not _na(raw) and _na(df[col].iat[i]):
                    c.add("error", "non_numeric", f'{w}: {col} "{raw}" is not a number.', pos=i)

        if "age" in df.columns:
            age = df["age"].iat[i]
            if not _na(age) and not (AGE_RANGE[0] <= float(age) <= AGE_RANGE[1]):
                c.add("warning", "age_out_of_range",
                      f"{w}: age {float(age):g} is outside the plausible range "
                      f"{AGE_RANGE[0]:g}–{AGE_RANGE[1]:g} years.", pos=i)
        if "mmse" in df.columns:
            mmse = df["mmse"].iat[i]
            if not _na(mmse) and not (MMSE_RANGE[0] <= float(mmse) <= MMSE_RANGE[1]):
                c.add("warning", "mmse_out_of_range",
                      f"{w}: MMSE {float(mmse):g} is outside the scale's range 0–30.", pos=i)

    # Duplicates.
    for col, code, sev, what in (("scan_id", "duplicate_scan_id", "error", "scan ID"),
                                 ("path", "duplicate_path", "warning", "file")):
        values = df[col]
        keyed = values[values.notna()]
        if col == "path" and c.workspace is not None:
            keyed = keyed.map(lambda p: str(c.workspace.resolve(p)))
        for key, grp in keyed.groupby(keyed, sort=False):
            if len(grp) > 1:
                pos = list(grp.index)
                rows = [c.row(p) for p in pos]
                shown = key if col == "scan_id" else c.show(str(key))
                tail = ("; scan IDs must be unique" if col == "scan_id"
                        else "; the same scan would be counted more than once")
                c.add(sev, code, f"Rows {_join_rows(rows)} share the same {what} {shown}{tail}.", positions=pos)

    # Subjects whose sex or diagnosis differs between rows.
    subj = df["subject_id"]
    for col, code in (("sex", "subject_sex_conflict"), ("diagnosis", "subject_diagnosis_conflict")):
        if col not in df.columns:
            continue
        sub = df.loc[subj.notna() & df[col].notna(), ["subject_id", col]]
        for sid, grp in sub.groupby("subject_id", sort=False):
            vals = grp[col].unique()
            if len(vals) > 1:
                parts = []
                for v in vals:
                    rows = [c.row(p) for p in grp.index[grp[col] == v]]
                    parts.append(f"{v} in {'row' if len(rows) == 1 else 'rows'} {_join_rows(rows)}")
                c.add("error", code, f"Subject {sid} has conflicting {col} across rows: {'; '.join(parts)}.",
                      positions=list(grp.index))


def _empty_qc_row(c: _Collector, i: int) -> dict:
    return {"scan_id": c.scan(i), "row": c.row(i), "path": c.path(i), "readable": False, "shape": None,
            "voxel_size_mm": None, "on_grid": None, "dtype": None, "min": np.nan, "max": np.nan,
            "mean": np.nan, "std": np.nan, "nonzero_fraction": np.nan, "template_corr": np.nan,
            "fov_overlap": np.nan}


def validate_table(source, workspace, *, check_images: bool = True, progress: Progress | None = None
                   ) -> ValidationReport:
    """Check a cohort table (a path, or a DataFrame) and, with ``check_images``, every scan it lists.

    ``workspace`` gives the template grid and the folders scans may live in
    (``None``: 2 mm grid, no folder restriction). ``progress(done, total,
    message)`` is called once per scan. Never raises for bad input.
    """
    def tick(done: int, total: int, message: str) -> None:
        if progress is not None:
            try:
                progress(done, total, message)
            except Exception:
                pass

    src_name = str(source) if not isinstance(source, pd.DataFrame) else source.attrs.get("source", "the cohort table")
    try:
        if isinstance(source, pd.DataFrame):
            df = cohort.canonicalize(source, source=f"Cohort table {src_name}")
        else:
            df = cohort.read_table(source)
    except CohortError as exc:
        return ValidationReport([Issue("error", exc.code, str(exc), None, None, src_name)])
    except Exception as exc:  # an unexpected parser failure is still a bad table, not a crash
        return ValidationReport([Issue("error", "unparsable_table",
                                       f"Cohort table {src_name} could not be read ({_exc_text(exc)}).",
                                       None, None, src_name)])

    grid = workspace.grid if workspace is not None else Grid(2.0)
    c = _Collector(df, workspace)
    total = len(df)
    tick(0, total, "checking the table")
    if total == 0:
        c.add("error", "empty_table", f"Cohort table {src_name} has no rows.")
    _table_checks(c)

    qc_rows = []
    for i in range(total):
        qc = _empty_qc_row(c, i)
        w = c.where(i)
        p = c.path(i)
        checkable = False
        if p is not None:
            shown = c.show(p)
            abs_path = workspace.resolve(p) if workspace is not None else Path(p).expanduser().resolve()
            if workspace is not None and not workspace.is_inside_data_roots(p):
                c.add("error", "path_outside_workspace",
                      f"{w}: {shown}: path escapes the workspace; add its folder to data_roots in workspace.json.",
                      pos=i)
            elif not abs_path.exists():
                c.add("error", "missing_file", f"{w}: file {shown} does not exist.", pos=i)
            elif not abs_path.is_file():
                c.add("error", "not_a_file", f"{w}: {shown} is a folder, not a NIfTI file.", pos=i)
            else:
                checkable = True
        if checkable and check_images:
            try:
                values, found = inspect_image(abs_path, grid)
            except Exception as exc:  # keep going: one bad scan must not hide the others
                values, found = {"readable": False}, [("error", "unreadable_image",
                                                       f"could not be checked ({_exc_text(exc)})")]
            qc.update(values)
            for sev, code, text in found:
                c.add(sev, code, f"{w}: file {shown} {text}.", pos=i)
        tick(i + 1, total, f"checked {c.scan(i) or f'row {c.row(i)}'}")
        qc_rows.append(qc)

    for i, qc in enumerate(qc_rows):
        own = c.by_pos.get(i, [])
        qc["n_errors"] = sum(1 for x in own if x.severity == "error")
        qc["n_warnings"] = sum(1 for x in own if x.severity == "warning")
        qc["flags"] = ",".join(dict.fromkeys(x.code for x in own))
    qc_df = pd.DataFrame(qc_rows, columns=QC_COLUMNS)
    if len(qc_df):
        qc_df["row"] = pd.array(qc_df["row"], dtype="Int64")
    issues = sorted(c.issues, key=lambda x: (-1 if x.row is None else x.row))
    return ValidationReport(issues=issues, qc=qc_df)


def format_report(report: ValidationReport) -> str:
    """Terminal text: one line per issue (``error   row 5  scan s005  missing_file: ...``) and a summary."""
    lines = []
    order = sorted(report.issues, key=lambda x: (-1 if x.row is None else x.row, x.severity != "error"))
    for it in order:
        where = f"row {it.row}" if it.row is not None else "table"
        scan = f"scan {it.scan_id}  " if it.scan_id else ""
        message = " ".join(str(it.message).split())
        lines.append(f"{it.severity:<8}{where:<8} {scan}{it.code}: {message}")
    lines.append(report.summary())
    return "\n".join(lines)
