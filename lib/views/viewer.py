"""What the heatmap page computes: cached group means, overlays in the paper's colour scales, crosshair
read-outs, a scan's top regions, differences between maps, and exports.

Group means of a heatmap store (streamed by :mod:`lib.analysis.groups`) are cached on disk per (store,
grouping) in ``<store>/group_means/<key>/``: one ``<group>.npy`` (float32 ``(X, Y, Z)`` on the run's
grid, memory-mapped when read) per non-empty group, an ``index.json`` holding the member counts and
the colour scales, and a ``complete.json`` marker written last (checksums, :mod:`lib.core.cache`): a grouping
whose files do not match it is recomputed. ``key`` hashes the store's folder name (itself a content key:
checkpoint, method, parameters, scans) and the exact members of every group, so a changed split,
prediction or subgrouping is another cache entry and never a stale one.

Everything returns plain arrays, tables and PNG bytes; :mod:`pages.heatmaps` only renders them.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lib.core import atomic, cache
from lib.data.atlas import Atlas
from lib.views.render import Overlay, ortho_image, to_png
from lib.data.templates import Grid

SUBGROUPS = {"split": "split", "site": "site", "sex": "sex", "visit": "session"}
"""Subgroup choices of the page → the predictions column that defines them."""
SPLITS = ("test", "validation", "train", "all")
STYLES = ("paper", "threshold", "diverging", "individual")
THRESHOLD_PERCENTILES = (50, 75, 90, 95, 99)
CACHE_VERSION = 1


# --- group means cached per (store, grouping) ----------------------------------------------------------------
@dataclass(frozen=True)
class Scale:
    """A colour scale: values ≤ ``vmin`` get the map's first colour (or are transparent), ≥ ``vmax`` its last."""

    vmin: float
    vmax: float


@dataclass(frozen=True)
class Entry:
    """One group or subgroup of a cached grouping (``subgroup`` None = the whole group)."""

    group: str
    subgroup: str | None
    count: int
    reason: str
    file: str | None

    @property
    def label(self) -> str:
        """``"TP"`` or ``"TP · site-A"``."""
        return self.group if self.subgroup is None else f"{self.group} · {self.subgroup}"


class CachedGroupMeans:
    """One cached grouping of one store: the group means as memory-mapped arrays, counts and colour scales.

    Attributes
    ----------
    entries : list of Entry in :func:`lib.analysis.groups.membership` order: each of AD, HC, TP, FP, TN, FN followed
        by its subgroups
    by : the subgroup column or None
    paper, individual, diverging : Scale
        From the grouping's average AD map (``scale_from`` names the map when AD is empty): the paper's
        50th–99.5th percentile scale over brain voxels, shared by all groups (Figs 2–3); Fig 8's
        90th–99.5th percentile scale for single scans; ± the 99.5th percentile of |AD map| for signed maps.
    """

    def __init__(self, folder: Path):
        """Raises :class:`lib.core.cache.CacheError` when the grouping is incomplete or its files are altered."""
        self.folder = Path(folder)
        cache.require(self.folder, "group means", "python -m lib group-means --run RUN --store STORE")
        self.index = json.loads((self.folder / "index.json").read_text())
        self.by: str | None = self.index["by"]
        self.entries = [Entry(e["group"], e["subgroup"], int(e["count"]), e["reason"], e["file"])
                        for e in self.index["entries"]]
        self._by_label = {e.label: e for e in self.entries}
        scales = self.index["scales"]
        self.scale_from: str | None = scales["from"]
        self.paper = Scale(*scales["paper"])
        self.individual = Scale(*scales["individual"])
        self.diverging = Scale(*scales["diverging"])
        #: value of the reference map at each of :data:`THRESHOLD_PERCENTILES` (brain voxels)
        self.percentiles = {int(q): float(v) for q, v in scales["percentiles"].items()}

    def entry(self, label: str) -> Entry:
        if label not in self._by_label:
            raise KeyError(f"no group {label!r} in this grouping")
        return self._by_label[label]

    def __contains__(self, label: str) -> bool:
        return label in self._by_label and self._by_label[label].file is not None

    def __getitem__(self, label: str) -> np.ndarray:
        """The mean map of ``label`` ("AD", "TP · site-A"), float32 ``(X, Y, Z)``, memory-mapped read-only."""
        e = self.entry(label)
        if e.file is None:
            raise KeyError(f"group {label!r} is empty: {e.reason}")
        return np.load(self.folder / e.file, mmap_mode="r")

    def count(self, label: str) -> int:
        return self.entry(label).count

    @property
    def labels(self) -> list[str]:
        return [e.label for e in self.entries]

    @property
    def empty(self) -> list[Entry]:
        """Groups and subgroups without any scan, each with the reason."""
        return [e for e in self.entries if e.count == 0]


def selection(predictions: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """The predictions of one split ("test", "validation", "train") or of every scan ("all").

    The paper's group maps are over the test set.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}")
    return predictions if split == "all" else predictions[predictions["split"] == split]


def grouping_key(store, table: pd.DataFrame, by: str | None) -> str:
    """Content key of one grouping of one store: the store's own key and the members of every (sub)group."""
    from lib.analysis.groups import membership

    members = membership(table, by)
    blob = json.dumps({"v": CACHE_VERSION, "store": Path(store.folder).name, "by": by,
                       "groups": [[g, v, sorted(ids)] for (g, v), ids in members.items()]},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def cached_group_means(store, table: pd.DataFrame, *, by: str | None = None, progress=None) -> CachedGroupMeans:
    """Group means of ``store`` over the scans of ``table`` (e.g. :func:`selection`), cached on disk.

    Parameters
    ----------
    store : lib.explain.heatmaps.HeatmapStore
    table : predictions of the scans to average (``scan_id, diagnosis, outcome`` and ``by``)
    by : None or a predictions column for subgroups (see :data:`SUBGROUPS`)

    The means are streamed by :func:`lib.analysis.groups.group_means` over the store (one volume in memory at a
    time) into a temporary folder, sealed (checksums, :mod:`lib.core.cache`) and renamed into place, so a reader
    never sees half a grouping and two users computing the same grouping at once both leave a whole one.
    """
    from lib.analysis import groups as gm

    folder = Path(store.folder) / "group_means" / grouping_key(store, table, by)
    if cache.ok(folder):
        return CachedGroupMeans(folder)
    if folder.exists():   # corrupted, unfinished or of an older version: recomputed
        cache.discard(folder)
    ids = [s for s in table["scan_id"].astype(str) if s in store]
    result = gm.group_means(store.iter(ids), table, by=by, progress=progress)
    final, folder = folder, folder.with_name(f".{folder.name}.{os.getpid()}.{time.time_ns()}")
    try:
        entries = []
        for i, key in enumerate(result):
            g, v = key if isinstance(key, tuple) else (key, None)
            item = result[(g, v)]
            file = None
            if item.count > 0:
                file = f"{i:03d}_{re.sub(r'[^A-Za-z0-9_.-]+', '_', f'{g}_{v}' if v is not None else g)[:60]}.npy"
                with atomic.atomic_path(folder / file) as tmp:
                    np.save(tmp, np.asarray(item.mean, dtype=np.float32))
            entries.append({"group": g, "subgroup": None if v is None else str(v), "count": int(item.count),
                            "reason": item.reason, "file": file})
        source = next((g for g in ("AD", *gm.GROUPS) if result.count(g) > 0), None)
        scales = scales_from(result.mean(source) if source else None, store.grid.resolution)
        atomic.write_json(folder / "index.json", {
            "version": CACHE_VERSION, "store": Path(store.folder).name, "by": by, "entries": entries,
            "scales": {"from": source, **scales}})
        cache.seal(folder, kind="group_means", store=Path(store.folder).name, by=by)
        try:
            os.rename(folder, final)
        except OSError:   # another user finished the same grouping first: theirs is used
            shutil.rmtree(folder, ignore_errors=True)
            if not cache.ok(final):
                raise
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)   # an interrupted grouping leaves nothing
        raise
    return CachedGroupMeans(final)


def scales_from(reference: np.ndarray | None, resolution: float) -> dict[str, list[float]]:
    """The paper's, Fig 8's and a symmetric scale from an average map, and its values at
    :data:`THRESHOLD_PERCENTILES`, over the template's brain voxels (:func:`lib.analysis.groups.brain_mask`, so every
    method is scaled over the same voxels). Unit scales without a map."""
    from lib.analysis.groups import brain_mask, individual_scale, paper_scale, percentile_scale

    unit = {"paper": [0.0, 1.0], "individual": [0.0, 1.0], "diverging": [-1.0, 1.0],
            "percentiles": {str(q): float(q) / 100 for q in THRESHOLD_PERCENTILES}}
    if reference is None:
        return unit
    mask = brain_mask(resolution)
    if not np.any(np.asarray(reference)[mask]):
        mask = None   # a map that is zero over the whole brain: fall back to its non-zero voxels
    try:
        paper, individual = paper_scale(reference, mask), individual_scale(reference, mask)
        cuts = {str(q): percentile_scale(reference, q, q, mask)[0] for q in THRESHOLD_PERCENTILES}
    except ValueError:   # an all-zero map
        return unit
    lim = symmetric_limit(np.asarray(reference)[mask] if mask is not None else reference)
    return {"paper": [float(paper[0]), float(max(paper[1], paper[0] + 1e-12))],
            "individual": [float(individual[0]), float(max(individual[1], individual[0] + 1e-12))],
            "diverging": [-lim, lim], "percentiles": cuts}


# --- overlays -------------------------------------------------------------------------------------------------
def symmetric_limit(volume: np.ndarray, q: float = 99.5) -> float:
    """The ``q``-th percentile of |volume| over its non-zero voxels (1 for an all-zero map)."""
    a = np.abs(np.asarray(volume, dtype=np.float32))
    nz = a[a > 0]
    lim = float(np.percentile(nz, q)) if nz.size else 0.0
    return lim if lim > 0 else 1.0


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
    from lib.analysis.regions import region_metrics

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
            for k in ("mmse", "cdr", "hippocampal_volume"):
                if k in c and pd.notna(c.iloc[0][k]):
                    facts[k] = c.iloc[0][k]
    return facts


# --- distances between methods --------------------------------------------------------------------------------
def method_distances(maps: Mapping[str, Mapping[str, np.ndarray]], groups: Sequence[str] = ("AD", "HC"), *,
                     normalise: str | None = None) -> dict[str, pd.DataFrame]:
    """Euclidean distance tables between methods' mean maps, one per group (Rieke et al. 2018 Table 2).

    ``maps``: method label → {group → mean map}. Methods without a map for a group are left out of
    that group's table. See :func:`lib.analysis.stats.distance_table` for ``normalise``.
    """
    from lib.analysis.stats import distance_table

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
    from lib.explain.heatmaps import to_nifti

    img = to_nifti(volume, grid)
    if description:
        img.header["descrip"] = description.encode()[:79]
    return gzip.compress(img.to_bytes(), compresslevel=6)


def mean_anatomy(ws, grid: Grid) -> np.ndarray | None:
    """The cohort's mean anatomy (mean of the AD and HC mean images of the overview) on ``grid``, or None
    while the overview's group means have not been computed (``python -m lib means``)."""
    from lib.data.overview import group_means

    means = group_means(ws)
    if means is None:
        return None
    mean = 0.5 * (means["AD"] + means["HC"])
    if tuple(mean.shape) == tuple(grid.shape) and ws.grid.resolution == grid.resolution:
        return mean.astype(np.float32)
    import nibabel as nib
    from nilearn.image import resample_img

    img = resample_img(nib.Nifti1Image(mean.astype(np.float32), ws.grid.affine), target_affine=grid.affine,
                       target_shape=grid.shape, interpolation="continuous", force_resample=True, copy_header=True)
    return np.asarray(img.dataobj, dtype=np.float32)


# --- stores of a run ----------------------------------------------------------------------------------------------
METHOD_NAMES = {"lrp": "LRP", "guided_backprop": "Guided backprop", "sensitivity": "Sensitivity",
                "gradient_x_input": "Gradient × input", "occlusion": "Occlusion",
                "area_occlusion": "Brain-area occlusion", "gradcam": "Grad-CAM"}


def store_label(params: Mapping, target: str = "AD") -> str:
    """How a store reads in a list: ``"LRP β=0"``, ``"Guided backprop"``, ``"Occlusion (patch_mm=20)"``;
    parameters at their defaults are left out (β always shown for LRP)."""
    from lib.explain import canonical_params

    method = str(params.get("method", "?"))
    name = METHOD_NAMES.get(method, method)
    try:
        defaults = canonical_params(method) if method != "area_occlusion" else {}
    except (KeyError, TypeError, ValueError):
        defaults = {}
    shown = []
    if method == "lrp":
        shown.append(f"β={params.get('beta', 0):g}")
    for k, v in params.items():
        if k in ("method", "beta") or (k in defaults and defaults[k] == v):
            continue
        if method == "area_occlusion" and k != "atlas":
            continue
        shown.append(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}")
    label = name if not shown else (f"{name} {shown[0]}" + (f" ({', '.join(shown[1:])})" if shown[1:] else "")
                                    if method == "lrp" else f"{name} ({', '.join(shown)})")
    return label if target == "AD" else f"{label}, {target} explained"


def stores_of(ws, checkpoint_sha: str) -> list:
    """Finished heatmap stores of one checkpoint, LRP first (by β), then the other methods by name."""
    from lib.explain.heatmaps import list_stores

    stores = [s for s in list_stores(ws) if s.meta.get("checkpoint_sha256") == checkpoint_sha]
    order = list(METHOD_NAMES)

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
                              progress=progress)


def store_by_key(ws, run, key: str):
    """The finished store ``key`` (its folder name) of ``run``'s current checkpoint; KeyError naming the choices."""
    from lib.explain.heatmaps import list_stores

    stores = list_stores(ws, run)
    for s in stores:
        if Path(s.folder).name == key:
            return s
    known = ", ".join(f"{Path(s.folder).name} ({store_label(s.params)})" for s in stores) or "none"
    raise KeyError(f"no finished heatmap store {key!r} for run {run.id} (stores: {known})")
