"""Relevance against biomarkers: hippocampal relevance vs hippocampal volume (Böhle et al. 2019 §3.3, Fig 9),
and any atlas region against any numeric column of the cohort table.

The paper's check that heatmaps track biology: in correctly classified AD patients (true positives),
the LRP relevance (β = 0) summed over the hippocampus correlates negatively with hippocampal volume
(r = −0.560, permutation p < 1e-3) — the more atrophy, the more evidence for AD the model finds there —
while guided backprop's does not (r = 0.096); the correlation weakens as β grows (−0.560 … −0.361 for
β = 0 … 1). False positives are drawn as well, to see whether they are outliers.

Pieces
------
Volumes (:func:`hippocampal_volumes`), per scan in mm³: the cohort's ``hippocampal_volume`` column
(ADNIMERGE's ``Hippocampus`` is mapped to it when the table is read), a per-scan segmentation NIfTI
named in a cohort column (label voxels × voxel volume, :func:`label_volumes`), or the demo cohort's
ground truth; optionally as a percentage of the intracranial volume.

Relevance per region (:func:`region_table`): every atlas region's relevance sum for every scan of a
heatmap store — the cached region table of :mod:`lib.analysis.region_tables` (streamed through
:func:`lib.analysis.regions.region_metrics` one batch at a time, shared with the Atlas metrics page). Left,
right and both hemispheres, sum or density, signed or of ``|h|`` (guided backprop's
"susceptibility"), come from it without touching the maps again (:func:`region_values`).

Statistics: Pearson r with a two-sided permutation p (10,000 shuffles, vectorised), Spearman ρ and a
bootstrap interval per group (:func:`group_stats`, :func:`lib.analysis.stats.correlate`); across regions,
partial correlations controlling for covariates with FDR-corrected permutation p-values
(:func:`region_correlations`, :func:`lib.analysis.stats.partial_correlations`).

For a fixed atlas region every scan has the same voxel count, so ``density`` = ``sum`` / constant and
r is identical for both; density only makes values of regions of different size comparable.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from lib.explain import catalogue
from lib.core import atomic
from lib.analysis import stats
from lib.core import cache as _cache
from lib.data.atlas import Atlas, hemisphere_of, merge_hemispheres
from lib.data.atlases import DEFAULT_ATLAS, segmentation_labels
from lib.data.workspace import Workspace
from lib.core.progress import Progress

SIDES = ("both", "left", "right")
METRICS = ("sum", "density")
VOLUME_SOURCES = ("cohort", "segmentation", "ground_truth")
# Böhle et al. 2019 §3.3 (ADNI, true positives of the test split): hippocampal relevance vs hippocampal volume.
PAPER_R = {"lrp": {0.0: -0.560, 0.25: -0.562, 0.5: -0.525, 0.75: -0.457, 1.0: -0.361}, "guided_backprop": 0.096}
# Label values of the hippocampi in common segmentations (per side), from the atlas registry.
SEGMENTATION_LABELS = segmentation_labels()
ICV_COLUMNS = ("intracranial_volume", "icv", "etiv", "tiv", "total_intracranial_volume", "estimated_tiv")
# Cohort columns that are identifiers or bookkeeping, not measures.
NOT_MEASURES = ("row", "session", "fold", "visit")
GROUP_STYLE = {  # the paper's AD orange for true positives; false positives are controls (HC green)
    "TP": {"color": "#f28e2b", "symbol": "circle"},
    "FP": {"color": "#59a14f", "symbol": "diamond-open"},
    "TN": {"color": "#59a14f", "symbol": "circle"},
    "FN": {"color": "#f28e2b", "symbol": "diamond-open"},
}


# --- volumes -----------------------------------------------------------------------------------------------
def icv_column(cohort: pd.DataFrame) -> str | None:
    """The cohort's intracranial-volume column (``intracranial_volume``, ADNIMERGE ``ICV``, ``eTIV`` …) or None."""
    lower = {str(c).strip().lower(): c for c in cohort.columns}
    for name in ICV_COLUMNS:
        col = lower.get(name)
        if col is not None and pd.to_numeric(cohort[col], errors="coerce").notna().any():
            return col
    return None


def segmentation_columns(cohort: pd.DataFrame) -> list[str]:
    """Cohort columns (other than the scan ``path``) whose values are NIfTI file names."""
    out = []
    for col in cohort.columns:
        if col == "path" or pd.api.types.is_numeric_dtype(cohort[col]):
            continue
        values = cohort[col].dropna().astype(str)
        if len(values) and values.str.contains(r"\.nii(?:\.gz)?$", case=False, regex=True).mean() > 0.5:
            out.append(col)
    return out


def volume_sources(ws: Workspace, cohort: pd.DataFrame) -> list[str]:
    """The hippocampal-volume sources this workspace offers, best first."""
    out = []
    if "hippocampal_volume" in cohort and pd.to_numeric(cohort["hippocampal_volume"], errors="coerce").notna().any():
        out.append("cohort")
    if segmentation_columns(cohort):
        out.append("segmentation")
    if (ws.ground_truth_dir / "region_volumes.csv").exists():
        out.append("ground_truth")
    return out


def _side_labels(labels, side: str) -> list[int]:
    """Label values for ``side`` from a preset name, ``{"left": […], "right": […]}`` or a flat list (any side)."""
    if isinstance(labels, str):
        if labels not in SEGMENTATION_LABELS:
            raise KeyError(f"unknown label preset {labels!r}; choose one of {sorted(SEGMENTATION_LABELS)} "
                           "or give the label values")
        labels = SEGMENTATION_LABELS[labels]
    if isinstance(labels, Mapping):
        sides = ("left", "right") if side == "both" else (side,)
        return sorted({int(v) for s in sides for v in labels.get(s, ())})
    return sorted({int(v) for v in labels})


def label_volumes(paths: Sequence[str | Path], labels: Sequence[int], progress: Progress | None = None
                  ) -> np.ndarray:
    """Volume in mm³ of the voxels holding any of ``labels`` in each labels NIfTI: count × voxel volume.

    The voxel volume is ``|det(affine[:3, :3])|`` of each file, so segmentations on any grid work.
    A file that cannot be read gives NaN.
    """
    wanted = np.asarray(sorted(set(int(v) for v in labels)))
    out = np.full(len(paths), np.nan)
    for i, path in enumerate(paths):
        try:
            img = nib.load(str(path))
            data = np.asanyarray(img.dataobj)
            if not np.issubdtype(data.dtype, np.integer):
                data = np.rint(data)
            out[i] = float(np.isin(data, wanted).sum()) * abs(float(np.linalg.det(img.affine[:3, :3])))
        except (OSError, ValueError, nib.filebasedimages.ImageFileError):
            pass
        if progress:
            progress(i + 1, len(paths), f"segmentation {i + 1}/{len(paths)}")
    return out


def segmentation_volumes(ws: Workspace, cohort: pd.DataFrame, column: str, labels: Sequence[int],
                         progress: Progress | None = None) -> pd.Series:
    """:func:`label_volumes` of the files in ``cohort[column]`` (paths relative to the workspace), cached on
    disk by the files' paths, sizes and modification times and the label values."""
    paths = []
    for value in cohort[column]:
        if pd.isna(value) or not str(value).strip():
            paths.append(None)
            continue
        paths.append(ws.resolve(str(value)))
    stamp = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) if p is not None and p.exists() else None
             for p in paths]
    key = _key({"kind": "segmentation", "column": column, "labels": sorted(int(v) for v in labels),
                "files": stamp})
    cache = ws.cache_dir / "biomarker" / "volumes" / f"{key}.csv"
    ids = cohort["scan_id"].astype(str).to_numpy()
    if _cache.ok(cache):
        cached = pd.read_csv(cache, dtype={"scan_id": str}).set_index("scan_id")["volume"]
        if set(ids) <= set(cached.index):
            return cached.reindex(ids)
    _cache.discard(cache)   # absent, corrupted or of an older version: recomputed
    have = [i for i, s in enumerate(stamp) if s is not None]
    vols = np.full(len(ids), np.nan)
    vols[have] = label_volumes([paths[i] for i in have], labels, progress)
    atomic.write_csv(cache, pd.DataFrame({"scan_id": ids, "volume": vols}))
    _cache.seal(cache, kind="biomarker", column=column)
    return pd.Series(vols, index=pd.Index(ids, name="scan_id"), name="volume")


def hippocampal_volumes(ws: Workspace, cohort: pd.DataFrame, source: str = "auto", *, side: str = "both",
                        segmentation_column: str | None = None, labels=DEFAULT_ATLAS,
                        normalise: bool = False, progress: Progress | None = None) -> pd.Series:
    """Hippocampal volume per scan (index ``scan_id``).

    Parameters
    ----------
    source : {"auto", "cohort", "segmentation", "ground_truth"}
        ``cohort``: the ``hippocampal_volume`` column (both hippocampi; ``side`` other than
        "both" is noted in ``attrs["note"]`` and the total is used). ``segmentation``: count of
        ``labels`` voxels × voxel volume in the NIfTI named by ``segmentation_column``.
        ``ground_truth``: the demo cohort's measured region volumes. ``auto``: the first of
        :func:`volume_sources`.
    side : {"both", "left", "right"}
    labels : str, mapping or sequence
        Segmentation label values: a preset of :data:`SEGMENTATION_LABELS`, ``{"left": […],
        "right": […]}``, or a flat list.
    normalise : bool
        Divide by the intracranial volume (:func:`icv_column`) and report % of it.

    Returns
    -------
    Series of float (mm³, or % of intracranial volume), NaN where unknown; ``attrs`` holds
    ``unit``, ``label`` (axis title), ``source`` and ``note``.
    """
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}")
    available = volume_sources(ws, cohort)
    if source == "auto":
        if not available:
            raise ValueError("no hippocampal volume: the cohort has no hippocampal_volume column, no segmentation "
                             "column and no ground truth")
        source = available[0]
    ids = cohort["scan_id"].astype(str).to_numpy()
    note = ""
    if source == "cohort":
        if "hippocampal_volume" not in cohort:
            raise ValueError("the cohort table has no hippocampal_volume column (or ADNIMERGE's Hippocampus)")
        vol = pd.to_numeric(cohort["hippocampal_volume"], errors="coerce").to_numpy(float)
        if side != "both":
            note = "the cohort's hippocampal_volume is the total of both sides; the total is used"
        what = "hippocampal volume (cohort table)"
    elif source == "segmentation":
        cols = segmentation_columns(cohort)
        column = segmentation_column or (cols[0] if cols else None)
        if column is None or column not in cohort:
            raise ValueError("no segmentation column in the cohort table (a column of NIfTI label images)")
        vol = segmentation_volumes(ws, cohort, column, _side_labels(labels, side), progress).to_numpy(float)
        what = f"hippocampal volume (segmentation '{column}')"
    elif source == "ground_truth":
        path = ws.ground_truth_dir / "region_volumes.csv"
        if not path.exists():
            raise ValueError("this workspace has no ground truth (only the demo cohort has one)")
        gt = pd.read_csv(path, dtype={"scan_id": str}).set_index("scan_id")
        cols = [c for c in gt.columns if hemisphere_of(c)[1].lower() == "hippocampus"
                and (side == "both" or hemisphere_of(c)[0] == side)]
        if not cols:
            raise ValueError(f"{path} has no hippocampus column")
        vol = gt[cols].sum(axis=1, min_count=len(cols)).reindex(ids).to_numpy(float)
        what = "hippocampal volume (ground truth)"
    else:
        raise ValueError(f"source must be 'auto' or one of {VOLUME_SOURCES}")
    if side != "both" and not note:
        what = what.replace("hippocampal volume", f"{side} hippocampal volume")
    unit = "mm³"
    if normalise:
        col = icv_column(cohort)
        if col is None:
            raise ValueError("the cohort table has no intracranial volume column (intracranial_volume, ICV, eTIV)")
        icv = pd.to_numeric(cohort[col], errors="coerce").to_numpy(float)
        with np.errstate(divide="ignore", invalid="ignore"):
            vol = np.where(icv > 0, 100.0 * vol / icv, np.nan)
        unit = "% of ICV"
    out = pd.Series(vol, index=pd.Index(ids, name="scan_id"), name="hippocampal_volume")
    out.attrs.update(unit=unit, label=f"{what}, {unit}", source=source, note=note)
    return out


# --- relevance per region -----------------------------------------------------------------------------------
def _key(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:20]


def find_region_table(ws: Workspace, store, atlas: str = DEFAULT_ATLAS) -> pd.DataFrame | None:
    """The cached region table of ``store`` on ``atlas`` (:mod:`lib.analysis.region_tables`), or None; computes nothing."""
    from lib.analysis import region_tables

    path = region_tables.find_table(ws, store, region_tables.get_atlas(ws, atlas, store.grid.resolution))
    if path is None:
        return None
    try:
        return region_tables.read_table(path, store)
    except _cache.CacheError:   # lacks scans of the store: absent, so the page offers to recompute it
        return None


def region_table(ws: Workspace, store, atlas: str = DEFAULT_ATLAS, progress: Progress | None = None
                 ) -> pd.DataFrame:
    """Relevance of every region of ``atlas`` (hemispheres apart) for every scan of a heatmap store.

    The cached table of :mod:`lib.analysis.region_tables` (shared with the Atlas metrics page and
    ``python -m lib regions``), computed here when missing: the maps stream through
    :func:`lib.analysis.regions.region_metrics` one batch at a time. ``store`` is a
    :class:`lib.explain.heatmaps.HeatmapStore`.

    Returns
    -------
    DataFrame with one row per scan × region and at least ``scan_id, region, label, hemisphere,
    voxels, sum, abs_sum`` (``sum`` of the signed map, ``abs_sum`` of ``|h|``; float64).
    """
    from lib.analysis import region_tables

    atl = region_tables.get_atlas(ws, atlas, store.grid.resolution)
    # a table that lacks scans of the store is an error, never a biomarker over fewer scans
    return region_tables.read_table(region_tables.compute_table(ws, store, atl, progress=progress), store)


def hippocampus_regions(atlas_table: pd.DataFrame, side: str = "both") -> list[str]:
    """Names of the atlas's hippocampus regions on ``side`` ("Left_Hippocampus", "Hippocampus_R", …)."""
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}")
    out = []
    for name in atlas_table["name"]:
        hemi, base = hemisphere_of(name)
        if base.strip(" _-").lower() == "hippocampus" and (side == "both" or hemi == side):
            out.append(str(name))
    if not out:
        raise KeyError(f"the atlas has no {'' if side == 'both' else side + ' '}hippocampus region")
    return out


def region_choices(atlas: Atlas, merge: bool = False) -> dict[str, list[str]]:
    """Display name → member region names: every region, or left and right merged (``merge=True``)."""
    if not merge:
        return {str(n): [str(n)] for n in atlas.table["name"]}
    merged = merge_hemispheres(atlas)
    pairs = np.unique(np.stack([atlas.labels.ravel(), merged.labels.ravel()]), axis=1)
    names = dict(zip(atlas.table["index"].astype(int), atlas.table["name"].astype(str)))
    out: dict[str, list[str]] = {}
    for _, row in merged.table.iterrows():
        members = [names[int(o)] for o, m in pairs.T if int(m) == int(row["index"]) and int(o) in names]
        out[str(row["name"])] = members
    return out


def region_values(table: pd.DataFrame, regions: Mapping[str, Sequence[str]], metric: str = "sum", *,
                  absolute: bool = False) -> pd.DataFrame:
    """Scans × named regions: the summed relevance of each region's members (``sum``), or that sum over
    their total voxel count (``density``, relevance per voxel). Index ``scan_id``, columns in order.

    ``absolute``: of ``|h|`` (the paper's "susceptibility" for guided backprop, Fig 4 caption) rather
    than of the signed map.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}")
    sums = table.pivot(index="scan_id", columns="region", values="abs_sum" if absolute else "sum")
    voxels = table.drop_duplicates("region").set_index("region")["voxels"]
    cols = {}
    for name, members in regions.items():
        missing = [m for m in members if m not in sums.columns]
        if missing:
            raise KeyError(f"regions {missing} are not in the region table")
        s = sums[list(members)].sum(axis=1)
        cols[name] = s / float(voxels[list(members)].sum()) if metric == "density" else s
    out = pd.DataFrame(cols, index=sums.index)
    out.index = out.index.astype(str)
    return out


def hippocampal_relevance(table: pd.DataFrame, side: str = "both", metric: str = "sum", *,
                          absolute: bool = False) -> pd.Series:
    """Hippocampal relevance per scan (index ``scan_id``) from a :func:`region_table`."""
    atlas_table = table.drop_duplicates("region")[["region", "label"]].rename(columns={"region": "name"})
    names = hippocampus_regions(atlas_table, side)
    out = region_values(table, {"hippocampus": names}, metric, absolute=absolute)["hippocampus"]
    return out.rename("relevance")


# --- the scans analysed -------------------------------------------------------------------------------------
def scan_points(predictions: pd.DataFrame, relevance: pd.Series, measure: pd.Series, *, split: str = "test",
                groups: Sequence[str] | None = ("TP", "FP"), one_per_subject: bool = False) -> pd.DataFrame:
    """One row per analysed scan: ``scan_id, subject_id, session, diagnosis, outcome, split, ad_score,
    relevance, measure`` (``relevance`` and ``measure`` aligned by scan id; NaN where unknown).

    ``split``: "test" (the paper's), "validation", "train" or "all". ``groups``: outcomes kept (None:
    all). ``one_per_subject``: keep each subject's first visit only (visits of one person are not
    independent, which a permutation test assumes).
    """
    p = predictions.copy()
    p["scan_id"] = p["scan_id"].astype(str)
    if split != "all":
        p = p[p["split"] == split]
    if groups is not None:
        p = p[p["outcome"].isin(list(groups))]
    if one_per_subject and len(p):
        order = [c for c in ("subject_id", "session", "scan_id") if c in p]
        p = p.sort_values(order, kind="stable").groupby("subject_id", sort=False).head(1)
    keep = [c for c in ("scan_id", "subject_id", "session", "diagnosis", "outcome", "split", "ad_score") if c in p]
    out = p[keep].reset_index(drop=True)
    rel = pd.Series(relevance, dtype=float)
    rel.index = rel.index.astype(str)
    mea = pd.Series(measure, dtype=float)
    mea.index = mea.index.astype(str)
    out["relevance"] = out["scan_id"].map(rel).astype(float)
    out["measure"] = out["scan_id"].map(mea).astype(float)
    return out


def group_stats(points: pd.DataFrame, groups: Sequence[str] = ("TP", "FP"), *, x: str = "measure",
                y: str = "relevance", n_permutations: int = 10_000, n_boot: int = 10_000, seed: int = 0
                ) -> pd.DataFrame:
    """:func:`lib.analysis.stats.correlate` of ``x`` and ``y`` within each outcome group (pairs with a NaN dropped).

    Returns
    -------
    DataFrame indexed by group: ``n, r, p, p_permutation, rho, p_spearman, ci_low, ci_high,
    n_permutations`` (NaN statistics for groups with fewer than 3 scans).
    """
    rows = {}
    for g in groups:
        sub = points[points["outcome"] == g]
        rows[g] = stats.correlate(sub[x].to_numpy(float), sub[y].to_numpy(float), n_permutations=n_permutations,
                                  n_boot=n_boot, seed=seed)
    return pd.DataFrame.from_dict(rows, orient="index")


def default_absolute(method: str) -> bool:
    """Whether a method's maps are read as ``|h|`` by default (gradients: the paper's "susceptibility")."""
    return catalogue.absolute_by_default(method)


def hippocampus_analysis(ws: Workspace, store, predictions: pd.DataFrame, volume: pd.Series, *,
                         atlas: str = DEFAULT_ATLAS, side: str = "both", metric: str = "sum",
                         absolute: bool | None = None, split: str = "test", groups: Sequence[str] = ("TP", "FP"),
                         one_per_subject: bool = False, n_permutations: int = 10_000, n_boot: int = 10_000,
                         seed: int = 0, progress: Progress | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The paper's Fig 9 for one heatmap store: hippocampal relevance against ``volume`` per outcome group.

    ``absolute`` None takes the method's default (:func:`default_absolute`: ``|h|`` for guided backprop).
    The region table is computed if missing (:func:`region_table`).

    Returns
    -------
    ``(points, stats)``: :func:`scan_points` (``relevance`` = hippocampal relevance, ``measure`` =
    ``volume``) and :func:`group_stats` of ``relevance`` against ``measure`` per group.
    """
    if absolute is None:
        absolute = default_absolute(str(store.params.get("method", "")))
    rel = hippocampal_relevance(region_table(ws, store, atlas, progress), side, metric, absolute=absolute)
    points = scan_points(predictions, rel, volume, split=split, groups=groups, one_per_subject=one_per_subject)
    return points, group_stats(points, groups, n_permutations=n_permutations, n_boot=n_boot, seed=seed)


def method_label(params: Mapping) -> str:
    """``"LRP β=0"``, ``"Guided backprop"``, … for a store's canonical parameters."""
    return catalogue.method_label(params)


def beta_table(ws: Workspace, stores: Sequence, predictions: pd.DataFrame, measure: pd.Series, *,
               atlas: str = DEFAULT_ATLAS, side: str = "both", metric: str = "sum", split: str = "test",
               group: str = "TP", one_per_subject: bool = False, n_permutations: int = 10_000,
               n_boot: int = 10_000, seed: int = 0, progress: Progress | None = None) -> pd.DataFrame:
    """r of hippocampal relevance against ``measure`` in ``group`` for each LRP store, by β (the paper's
    −0.560 … −0.361 row). Stores of other methods are ignored; region tables are computed when missing.

    Returns
    -------
    DataFrame sorted by β: ``beta, store, n, r, p_permutation, rho, ci_low, ci_high, paper_r``.
    """
    rows = []
    lrp = [s for s in stores if s.params.get("method") == "lrp"]
    for s in sorted(lrp, key=lambda s: float(s.params.get("beta", 0) or 0)):
        beta = float(s.params.get("beta", 0) or 0)
        rel = hippocampal_relevance(region_table(ws, s, atlas, progress), side, metric)
        pts = scan_points(predictions, rel, measure, split=split, groups=[group], one_per_subject=one_per_subject)
        st = group_stats(pts, [group], n_permutations=n_permutations, n_boot=n_boot, seed=seed).loc[group]
        rows.append({"beta": beta, "store": Path(s.folder).name, "n": int(st["n"]), "r": st["r"],
                     "p_permutation": st["p_permutation"], "rho": st["rho"], "ci_low": st["ci_low"],
                     "ci_high": st["ci_high"], "paper_r": PAPER_R["lrp"].get(beta, np.nan)})
    cols = ["beta", "store", "n", "r", "p_permutation", "rho", "ci_low", "ci_high", "paper_r"]
    return pd.DataFrame(rows, columns=cols)


# --- any region × any measure -------------------------------------------------------------------------------
def measure_columns(cohort: pd.DataFrame, ws: Workspace | None = None, exclude: Sequence[str] = ()) -> list[str]:
    """Numeric columns of the cohort table that are measures (MMSE, CDR, age, volumes …), clinical ones first.

    With ``ws``, the image statistics merged in from the workspace's QC table are left out.
    """
    first = ["mmse", "cdr", "age", "hippocampal_volume"]
    icv = icv_column(cohort)
    if icv:
        first.append(icv)
    skip = set(NOT_MEASURES) | set(exclude)
    if ws is not None and ws.qc_csv.exists():
        on_disk = set(pd.read_csv(ws.cohort_csv, nrows=0).columns)
        skip |= set(pd.read_csv(ws.qc_csv, nrows=0).columns) - on_disk
    numeric = [c for c in cohort.columns if c not in skip and not str(c).endswith("_raw")
               and pd.api.types.is_numeric_dtype(cohort[c]) and not pd.api.types.is_bool_dtype(cohort[c])
               and cohort[c].notna().sum() >= 3 and cohort[c].nunique(dropna=True) > 1]
    return [c for c in first if c in numeric] + [c for c in numeric if c not in first]


def covariate_frame(cohort: pd.DataFrame, scan_ids: Sequence[str], names: Sequence[str]) -> pd.DataFrame:
    """The named cohort columns (``"age"``, ``"icv"`` for the intracranial-volume column, or any column)
    for ``scan_ids``, as floats in that order; unknown names raise KeyError."""
    c = cohort.copy()
    c["scan_id"] = c["scan_id"].astype(str)
    c = c.set_index("scan_id")
    cols = {}
    for name in names:
        col = icv_column(cohort) if name == "icv" else name
        if col is None or col not in c:
            raise KeyError(f"the cohort table has no column for covariate {name!r}")
        cols[name] = pd.to_numeric(c[col], errors="coerce")
    return pd.DataFrame(cols).reindex([str(s) for s in scan_ids])


def region_correlations(values: pd.DataFrame, measure: pd.Series, covariates: pd.DataFrame | None = None, *,
                        n_permutations: int = 10_000, seed: int = 0, method: str = "bh") -> pd.DataFrame:
    """Partial correlation of every region's relevance with one measure, controlling for ``covariates``.

    Parameters
    ----------
    values : DataFrame
        Scans × regions (:func:`region_values`), index ``scan_id`` — only the scans analysed.
    measure : Series
        Scan id → the measure (MMSE, hippocampal volume …).
    covariates : DataFrame, optional
        Indexed like ``values`` (:func:`covariate_frame`); a covariate equal to the measure
        should be left out by the caller.

    Returns
    -------
    DataFrame sorted by permutation p: ``region, n, r, p, p_permutation, p_fdr`` (FDR across
    the regions; with no covariates ``r`` is Pearson's r).
    """
    y = pd.Series(measure, dtype=float)
    y.index = y.index.astype(str)
    y = y.reindex(values.index.astype(str)).to_numpy(float)
    cov = None if covariates is None or covariates.shape[1] == 0 else covariates.reindex(values.index)
    out = stats.partial_correlations(values, y, cov, n_permutations=n_permutations, seed=seed, method=method)
    out = out.rename(columns={"feature": "region"})
    sort = "p_permutation" if n_permutations > 0 else "p"
    return out.sort_values(sort, kind="stable", na_position="last").reset_index(drop=True)


def adjust_for(points: pd.DataFrame, covariates: pd.DataFrame | None,
               columns: Sequence[str] = ("measure", "relevance")) -> pd.DataFrame:
    """``points`` with ``columns`` replaced by their residuals on ``[1, covariates]`` plus their mean, for an
    added-variable plot: the Pearson r of the adjusted columns is the partial r, and the values keep their
    units and scale. Rows with a missing value get NaN. ``covariates`` is indexed by ``scan_id``."""
    out = points.copy()
    if covariates is None or covariates.shape[1] == 0:
        return out
    cov = covariates.reindex(points["scan_id"].astype(str)).to_numpy(float)
    vals = points[list(columns)].to_numpy(float)
    keep = np.isfinite(cov).all(axis=1) & np.isfinite(vals).all(axis=1)
    design = np.column_stack([np.ones(int(keep.sum())), cov[keep]])
    adjusted = np.full_like(vals, np.nan)
    if keep.sum() > design.shape[1]:
        beta, *_ = np.linalg.lstsq(design, vals[keep], rcond=None)
        adjusted[keep] = vals[keep] - design @ beta + vals[keep].mean(axis=0)
    out[list(columns)] = adjusted
    return out


# --- figures and links --------------------------------------------------------------------------------------
def format_r(r: float, digits: int = 3) -> str:
    """``−0.560`` (a true minus sign), ``n/a`` for NaN."""
    return "n/a" if not np.isfinite(r) else f"{r:.{digits}f}".replace("-", "−")


def format_p(p: float, n_permutations: int | None = None) -> str:
    """``0.004``, ``3.2e-4``, or ``< 1e-4`` at the floor of a permutation test with ``n_permutations``."""
    if not np.isfinite(p):
        return "n/a"
    if n_permutations and p <= 1.0 / (1 + n_permutations) + 1e-15:
        return f"< {1.0 / n_permutations:.0e}".replace("e-0", "e-")
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def p_text(p: float, n_permutations: int | None = None) -> str:
    """``p = 0.004`` or ``p < 1e-4`` (see :func:`format_p`)."""
    text = format_p(p, n_permutations)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def stats_caption(row: Mapping, n_permutations: int | None = None) -> str:
    """``r = −0.56 (95 % CI −0.80 … −0.20), permutation p = 0.004, ρ = −0.51, n = 24``."""
    if not np.isfinite(row.get("r", np.nan)):
        return f"n = {int(row.get('n', 0))}: too few scans for a correlation"
    p = p_text(row["p_permutation"], n_permutations or row.get("n_permutations"))
    return (f"r = {row['r']:.3f} (95 % CI {row['ci_low']:.2f} … {row['ci_high']:.2f}), permutation {p}, "
            f"ρ = {row['rho']:.3f}, n = {int(row['n'])}").replace("-", "−")


def scatter_figure(points: pd.DataFrame, *, x: str = "measure", y: str = "relevance", x_title: str = "",
                   y_title: str = "", title: str = "", groups: Sequence[str] = ("TP", "FP"),
                   fit: Sequence[str] = ("TP",), height: int = 430):
    """A plotly scatter of ``y`` against ``x``, one trace per outcome group, with a least-squares line per
    group in ``fit``. Every point carries ``customdata = [scan_id, subject_id, outcome, ad_score, split]``
    so a click can be traced back to its scan."""
    import plotly.graph_objects as go

    fig = go.Figure()
    lines = []
    for g in groups:
        sub = points[(points["outcome"] == g) & points[x].notna() & points[y].notna()]
        style = GROUP_STYLE.get(g, {"color": "#4e79a7", "symbol": "circle"})
        custom = np.column_stack([sub["scan_id"].astype(str), sub.get("subject_id", sub["scan_id"]).astype(str),
                                  sub["outcome"].astype(str), sub.get("ad_score", pd.Series(np.nan, sub.index)),
                                  sub.get("split", pd.Series("", sub.index)).astype(str)]) if len(sub) else None
        fig.add_trace(go.Scatter(
            x=sub[x], y=sub[y], mode="markers", name=f"{g} (n = {len(sub)})", customdata=custom,
            marker=dict(color=style["color"], symbol=style["symbol"], size=10,
                        line=dict(width=1.5 if "open" in style["symbol"] else 0.5,
                                  color=style["color"] if "open" in style["symbol"] else "white")),
            hovertemplate=("<b>%{customdata[0]}</b> (" + g + ")<br>AD score %{customdata[3]:.2f}<br>"
                           f"{x_title or x}: %{{x:.4g}}<br>{y_title or y}: %{{y:.4g}}<extra></extra>")))
        if g in fit and len(sub) >= 3 and sub[x].nunique() > 1:
            slope, intercept = np.polyfit(sub[x].to_numpy(float), sub[y].to_numpy(float), 1)
            xs = np.array([sub[x].min(), sub[x].max()], float)
            lines.append(go.Scatter(x=xs, y=slope * xs + intercept, mode="lines", name=f"{g} least-squares fit",
                                    line=dict(color=style["color"], width=2, dash="dash"), hoverinfo="skip"))
    for line in lines:   # after the points, so traces 0 … k-1 are the groups in order
        fig.add_trace(line)
    fig.update_layout(
        title=dict(text=title, font=dict(size=15)), height=height, margin=dict(l=10, r=10, t=60 if title else 20, b=10),
        legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0),
        xaxis_title=x_title or x, yaxis_title=y_title or y, clickmode="event+select", hovermode="closest")
    fig.update_yaxes(zeroline=True, zerolinecolor="#bbbbbb", exponentformat="power")
    return fig


def beta_figure(table: pd.DataFrame, *, title: str = "", height: int = 320):
    """r (with its bootstrap interval) against β, and the paper's values for comparison."""
    import plotly.graph_objects as go

    fig = go.Figure()
    if len(table):
        fig.add_trace(go.Scatter(
            x=table["beta"], y=table["r"], mode="lines+markers", name="this run",
            line=dict(color="#f28e2b", width=2), marker=dict(size=9),
            error_y=dict(type="data", symmetric=False, array=table["ci_high"] - table["r"],
                         arrayminus=table["r"] - table["ci_low"], color="#f28e2b", thickness=1)))
    paper = pd.Series(PAPER_R["lrp"])
    fig.add_trace(go.Scatter(x=paper.index, y=paper.values, mode="lines+markers", name="Böhle et al. 2019 (ADNI)",
                             line=dict(color="#7f7f7f", dash="dot"), marker=dict(symbol="square-open", size=8)))
    fig.add_hline(y=0, line_color="#bbbbbb")
    fig.update_layout(title=dict(text=title, font=dict(size=14)), height=height,
                      margin=dict(l=10, r=10, t=50 if title else 20, b=10), xaxis_title="LRP β",
                      yaxis_title="Pearson r (TP)", yaxis_range=[-1, 1],
                      legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0))
    return fig


def viewer_params(run_id: str, store_key: str, point: Mapping) -> dict[str, str]:
    """Query parameters that open one scan in the heatmap viewer (``pages/heatmaps.py``): its individual view
    of ``store_key`` (a store folder name), the scan, its split and outcome group."""
    params = {"run": str(run_id), "view": "Individual", "store": str(store_key), "scan": str(point["scan_id"])}
    if point.get("split"):
        params["split"] = str(point["split"])
    if point.get("outcome"):
        params["group"] = str(point["outcome"])
    return params


def selected_scan(event) -> dict | None:
    """The scan of the first clicked point of a plotly selection event (``customdata`` of
    :func:`scatter_figure`): ``{"scan_id", "subject_id", "outcome", "ad_score", "split"}`` or None."""
    try:
        points = event["selection"]["points"]
    except (KeyError, TypeError):
        points = getattr(getattr(event, "selection", None), "points", None)
    for pt in points or []:
        cd = pt.get("customdata")
        if cd and len(cd) >= 5:
            score = pd.to_numeric(pd.Series([cd[3]]), errors="coerce").iat[0]
            return {"scan_id": str(cd[0]), "subject_id": str(cd[1]), "outcome": str(cd[2]),
                    "ad_score": float(score), "split": str(cd[4])}
    return None


def safe_name(text: str) -> str:
    """A file-name-safe version of ``text``."""
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text).strip("_")
