"""What the heatmap page computes: cached group means, overlays in the paper's colour scales, crosshair
read-outs, a scan's top regions, differences between maps, and exports.

Group means of a heatmap store are cached on disk per (store, grouping) by :mod:`lib.views.group_means`.

Everything returns plain arrays, tables and PNG bytes; :mod:`pages.heatmaps` only renders them.
"""

from __future__ import annotations

import gzip
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from lib.analysis.regions import region_metrics
from lib.analysis.similarity import distance_table
from lib.data.atlas import Atlas
from lib.data.cohort_means import group_means
from lib.data.templates import Grid
from lib.explain.heatmaps import list_stores, to_nifti
# the cached group means, imported by the pages and the report from here
from lib.views.group_means import (CACHE_VERSION, THRESHOLD_PERCENTILES, CachedGroupMeans, Entry,  # noqa: F401
                                   Scale, cached_group_means, grouping_key, scales_from, symmetric_limit)
from lib.views.render import Overlay, ortho_image, to_png
from lib.explain import catalogue
from lib.explain.catalogue import METHODS
from lib.data.classes import DEFAULT_CLASSES

SUBGROUPS = {"split": "split", "site": "site", "sex": "sex", "visit": "session"}
"""Subgroup choices of the page → the predictions column that defines them."""
SPLITS = ("test", "validation", "train", "all")
STYLES = ("paper", "threshold", "diverging", "individual")


# --- the scans of a group map --------------------------------------------------------------------------------
def selection(predictions: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """The predictions of one split ("test", "validation", "train") or of every scan ("all").

    The paper's group maps are over the test set.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}")
    return predictions if split == "all" else predictions[predictions["split"] == split]


# --- overlays -------------------------------------------------------------------------------------------------
def overlay(volume: np.ndarray, style: str, means: CachedGroupMeans | None = None, *, alpha: float = 0.8,
            threshold: float | None = None, limit: float | None = None) -> Overlay:
    """A map as a coloured overlay in one of :data:`STYLES`.

    ``paper``: "hot" (black → red → yellow → white) from the 50th to the 99.5th percentile of the
    average AD map, shared by all groups (Böhle et al. Figs 2–3). ``threshold``: the same colours (same
    value, same colour) with values below ``threshold`` (default: that 50th percentile) transparent.
    ``diverging``: blue–white–red symmetric around 0 (± ``limit``, default from the AD map) for signed
    maps, more opaque the larger |v| (|v| below 2 % of the limit transparent). ``individual``: Fig 8,
    red → yellow from the 90th to the 99.5th percentile of the average AD map, values below transparent
    and above yellow.
    """
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}")
    paper = means.paper if means is not None else Scale(*_percentiles(volume, (50, 99.5)))
    if style == "paper":
        return Overlay(volume, paper.vmin, paper.vmax, cmap="hot", alpha=alpha)
    if style == "threshold":   # the paper's colours, so a voxel has the same colour with and without the cut
        cut = paper.vmin if threshold is None else float(threshold)
        return Overlay(volume, paper.vmin, paper.vmax, cmap="hot", alpha=alpha, transparent_below=cut)
    if style == "diverging":
        lim = float(limit) if limit is not None else (means.diverging.vmax if means is not None
                                                       else symmetric_limit(volume))
        return Overlay(volume, -lim, lim, cmap="RdBu_r", alpha=alpha, threshold=0.02 * lim, fade=True)
    ind = means.individual if means is not None else Scale(*_percentiles(volume, (90, 99.5)))
    return Overlay(volume, ind.vmin, ind.vmax, cmap="autumn", alpha=alpha, transparent_below=ind.vmin)


def _percentiles(volume: np.ndarray, qs) -> list[float]:
    return [float(v) for v in np.percentile(np.asarray(volume, dtype=np.float32), qs)]


def view_png(background: np.ndarray, ijk, ov: Overlay | None = None, *, labels: np.ndarray | None = None,
             height: int = 260, bg_range: tuple[float, float] | None = None,
             outline_color: tuple[int, int, int] = (60, 190, 255)) -> bytes:
    """Sagittal, coronal and axial panels through ``ijk`` with the overlay, as PNG bytes."""
    return to_png(ortho_image(background, tuple(int(v) for v in ijk), overlay=ov, labels=labels, height=height,
                              bg_range=bg_range, outline_color=outline_color))


def background_range(background: np.ndarray) -> tuple[float, float]:
    """Grey-level window of an anatomy: 0 to the 99.5th percentile of its non-zero voxels (compute once)."""
    nz = background[background > 0]
    return 0.0, float(np.percentile(nz, 99.5)) if nz.size else 1.0


def difference(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, float]:
    """``a − b`` (float32) and its symmetric colour limit (99.5th percentile of |a − b|)."""
    d = np.asarray(a, dtype=np.float32) - np.asarray(b, dtype=np.float32)
    return d, symmetric_limit(d)


# --- the crosshair ----------------------------------------------------------------------------------------------
def crosshair(grid: Grid, ijk, volume: np.ndarray | None, atlas: Atlas | None) -> dict:
    """What the read-out under the viewer says about voxel ``ijk``.

    Returns
    -------
    dict with ``voxel`` (clipped to the grid), ``mni`` (x, y, z in mm, from the grid's affine),
    ``value`` (the map's value there, NaN without a map) and ``region`` (atlas name, or
    "outside the atlas").
    """
    ijk = tuple(int(np.clip(int(v), 0, n - 1)) for v, n in zip(ijk, grid.shape))
    mni = tuple(float(v) for v in grid.voxel_to_mni(ijk))
    value = float(volume[ijk]) if volume is not None else float("nan")
    region = atlas.region_of(ijk) if atlas is not None else None
    return {"voxel": ijk, "mni": mni, "value": value,
            "region": (region or "outside the atlas").replace("_", " ")}


def voxel_of(grid: Grid, mni) -> tuple[int, int, int]:
    """The grid voxel nearest to MNI ``(x, y, z)`` mm, clipped to the grid."""
    v = grid.mni_to_voxel(np.asarray(mni, dtype=float))
    return tuple(int(np.clip(int(x), 0, n - 1)) for x, n in zip(v, grid.shape))


def region_voxel(atlas: Atlas, name: str) -> tuple[int, int, int]:
    """A voxel inside region ``name``: the one nearest to its centroid (centroids of curved regions lie outside)."""
    pts = np.argwhere(atlas.labels == atlas.index_of(name))
    centre = pts.mean(axis=0)
    return tuple(int(v) for v in pts[np.argmin(((pts - centre) ** 2).sum(axis=1))])


def peak_voxel(volume: np.ndarray) -> tuple[int, int, int]:
    """The voxel of the largest value."""
    return tuple(int(v) for v in np.unravel_index(int(np.nanargmax(volume)), volume.shape))


# --- one scan ---------------------------------------------------------------------------------------------------
def top_regions(volume: np.ndarray, atlas: Atlas, k: int = 8, metric: str = "sum") -> pd.DataFrame:
    """The ``k`` atlas regions with the most relevance in one map, best first.

    ``metric``: "sum" (relevance summed over the region) or "density" (per voxel). Columns:
    ``rank, region, label, sum, density, share`` where ``share`` is the region's fraction of the map's
    positive relevance (Rieke et al. 2018 Table 1 reports such fractions).
    """
    if metric not in ("sum", "density"):
        raise ValueError("metric must be 'sum' or 'density'")
    t = region_metrics([("scan", np.asarray(volume, dtype=np.float32))], atlas, backend="numpy")
    t = t.sort_values(metric, ascending=False, kind="stable").head(k).reset_index(drop=True)
    out = pd.DataFrame({"rank": np.arange(1, len(t) + 1), "region": t["region"].str.replace("_", " "),
                        "label": t["label"].astype(int), "sum": t["sum"], "density": t["density"],
                        "share": t["positive_fraction"]})
    return out


def outline_labels(atlas: Atlas, labels: Sequence[int]) -> np.ndarray:
    """The atlas with every region but ``labels`` set to 0 (for outlining a few regions only)."""
    return np.where(np.isin(atlas.labels, np.asarray(list(labels), dtype=np.int32)), atlas.labels, 0)


def neighbours(ids: Sequence[str], current: str) -> tuple[str | None, str | None]:
    """The scans before and after ``current`` in ``ids`` (None at the ends or when it is not there)."""
    ids = list(ids)
    if current not in ids:
        return None, None
    i = ids.index(current)
    return (ids[i - 1] if i > 0 else None), (ids[i + 1] if i + 1 < len(ids) else None)


def scan_facts(predictions: pd.DataFrame, cohort: pd.DataFrame | None, scan_id: str) -> dict:
    """Prediction, outcome and demographics of one scan (what the individual view lists)."""
    row = predictions.loc[predictions["scan_id"].astype(str) == str(scan_id)]
    if row.empty:
        raise KeyError(f"scan {scan_id!r} has no prediction")
    facts = {k: v for k, v in row.iloc[0].items() if pd.notna(v)}
    if cohort is not None:
        c = cohort.loc[cohort["scan_id"].astype(str) == str(scan_id)]
        if len(c):
            for k in ("mmse", "cdr", "hippocampal_volume", "lesion_load", "edss"):
                if k in c and pd.notna(c.iloc[0][k]):
                    facts[k] = c.iloc[0][k]
    return facts


# --- distances between methods --------------------------------------------------------------------------------
def method_distances(maps: Mapping[str, Mapping[str, np.ndarray]], groups: Sequence[str] = DEFAULT_CLASSES.names[::-1], *,
                     normalise: str | None = None) -> dict[str, pd.DataFrame]:
    """Euclidean distance tables between methods' mean maps, one per group (Rieke et al. 2018 Table 2).

    ``maps``: method label → {group → mean map}. Methods without a map for a group are left out of
    that group's table. See :func:`lib.analysis.similarity.distance_table` for ``normalise``.
    """
    out = {}
    for g in groups:
        have = {m: v[g] for m, v in maps.items() if g in v}
        if have:
            out[g] = distance_table(have, normalise=normalise)
    return out


def combined_table(tables: Mapping[str, pd.DataFrame], fmt: str = "{:.3g}") -> pd.DataFrame:
    """Tables of the same methods as one with ``"a / b"`` cells, in the order of ``tables`` (Table 2's layout)."""
    frames = list(tables.values())
    if not frames:
        return pd.DataFrame()
    names = [n for n in frames[0].index if all(n in t.index for t in frames)]
    return pd.DataFrame([[" / ".join(fmt.format(t.loc[a, b]) for t in frames) for b in names] for a in names],
                        index=names, columns=names)


# --- exports ------------------------------------------------------------------------------------------------------
def nifti_bytes(volume: np.ndarray, grid: Grid, description: str = "") -> bytes:
    """A map as gzipped NIfTI bytes on ``grid`` with the MNI affine (for a download button)."""
    img = to_nifti(volume, grid)
    if description:
        img.header["descrip"] = description.encode()[:79]
    return gzip.compress(img.to_bytes(), compresslevel=6)


def mean_anatomy(ws, grid: Grid) -> np.ndarray | None:
    """The cohort's mean anatomy (mean of the two classes' mean images of the overview) on ``grid``, or None
    while the overview's group means have not been computed (``python -m lib means``)."""
    means = group_means(ws)
    if means is None:
        return None
    mean = 0.5 * (means[ws.classes.positive] + means[ws.classes.negative])
    if tuple(mean.shape) == tuple(grid.shape) and ws.grid.resolution == grid.resolution:
        return mean.astype(np.float32)
    import nibabel as nib
    from nilearn.image import resample_img

    img = resample_img(nib.Nifti1Image(mean.astype(np.float32), ws.grid.affine), target_affine=grid.affine,
                       target_shape=grid.shape, interpolation="continuous", force_resample=True, copy_header=True)
    return np.asarray(img.dataobj, dtype=np.float32)


# --- stores of a run ----------------------------------------------------------------------------------------------
def store_label(params: Mapping, target: str | None = None, positive: str = DEFAULT_CLASSES.positive) -> str:
    """How a store reads in a list: ``"LRP β=0"``, ``"Guided backprop"``, ``"Occlusion (patch_mm=20)"``;
    parameters at their defaults are left out (β always shown for LRP); a store that explains the
    negative class says so (``"…, HC explained"``)."""
    return catalogue.store_label(params, target, positive)


def label_of(store) -> str:
    """:func:`store_label` of a heatmap store, against the positive class of the run it explains."""
    return store_label(store.params, store.meta.get("target"), store.meta.get("positive", DEFAULT_CLASSES.positive))


def stores_of(ws, checkpoint_sha: str) -> list:
    """Finished heatmap stores of one checkpoint, LRP first (by β), then the other methods by name."""
    stores = [s for s in list_stores(ws) if s.meta.get("checkpoint_sha256") == checkpoint_sha]
    order = list(METHODS)

    def key(s):
        m = s.params.get("method", "")
        rank = order.index(m) if m in order else len(order)
        return rank, float(s.params.get("beta", 0) or 0), store_label(s.params)

    return sorted(stores, key=key)


def other_method_index(methods: Sequence[str], pick: int) -> int:
    """The store to compare with store ``pick`` by default: the next one of another method (LRP β=0 is
    compared with guided backprop, not with LRP β=0.25); the next store when all are of one method."""
    n = len(methods)
    for step in range(1, n):
        if methods[(pick + step) % n] != methods[pick]:
            return (pick + step) % n
    return (pick + 1) % n


# --- as a background job ------------------------------------------------------------------------------------------
INLINE_LIMIT = 2e8
"""Voxel reads (scans × voxels) up to which a page averages in its own process (about a second); larger
groupings run as a job (``python -m lib group-means``)."""


def is_small(store, table: pd.DataFrame) -> bool:
    """Whether averaging ``table``'s scans of ``store`` is quick enough to do while a page waits."""
    return len(table) * int(np.prod(store.grid.shape)) <= INLINE_LIMIT


def run_group_means(ws, run, store, *, split: str = "test", by: str | None = None, progress=None
                    ) -> CachedGroupMeans:
    """Group means of ``run``'s predictions on one split (``by``: a key of :data:`SUBGROUPS`), cached."""
    preds = run.predictions()
    if preds is None:
        raise ValueError(f"run {run.id} has no predictions yet")
    if by is not None and by not in SUBGROUPS:
        raise ValueError(f"subgroups by one of {sorted(SUBGROUPS)}, not {by!r}")
    return cached_group_means(store, selection(preds, split), by=SUBGROUPS.get(by) if by else None,
                              progress=progress, classes=run.classes)


def store_by_key(ws, run, key: str):
    """The finished store ``key`` (its folder name) of ``run``'s current checkpoint; KeyError naming the choices."""
    stores = list_stores(ws, run)
    for s in stores:
        if Path(s.folder).name == key:
            return s
    known = ", ".join(f"{Path(s.folder).name} ({store_label(s.params)})" for s in stores) or "none"
    raise KeyError(f"no finished heatmap store {key!r} for run {run.id} (stores: {known})")
