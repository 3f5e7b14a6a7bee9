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

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from lib.analysis import region_tables, stats
# the figures and the volumes of the analyses, imported by the pages from here
from lib.analysis.biomarker_figures import (GROUP_STYLE, PAPER_R, beta_figure, format_p, format_r,  # noqa: F401
                                            p_text, safe_name, scatter_figure, selected_scan, stats_caption,
                                            viewer_params)
from lib.analysis.biomarker_volumes import (ICV_COLUMNS, SEGMENTATION_LABELS, SIDES, VOLUME_SOURCES,  # noqa: F401
                                            hippocampal_volumes, icv_column, label_volumes,
                                            segmentation_columns, segmentation_volumes, volume_sources)
from lib.core import cache as _cache, memo
from lib.core.progress import Progress
from lib.data.atlas import Atlas, hemisphere_of, merge_hemispheres
from lib.data.workspace import Workspace
from lib.data.atlases import DEFAULT_ATLAS
from lib.explain import catalogue

METRICS = ("sum", "density")
# Cohort columns that are identifiers or bookkeeping, not measures.
NOT_MEASURES = ("row", "session", "fold", "visit")


# --- relevance per region -----------------------------------------------------------------------------------


def find_region_table(ws: Workspace, store, atlas: str = DEFAULT_ATLAS) -> pd.DataFrame | None:
    """The cached region table of ``store`` on ``atlas`` (:mod:`lib.analysis.region_tables`), or None; computes nothing."""
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


@memo.memoized(32)
def hippocampal_relevance(table: pd.DataFrame, side: str = "both", metric: str = "sum", *,
                          absolute: bool = False) -> pd.Series:
    """Hippocampal relevance per scan (index ``scan_id``) from a :func:`region_table`."""
    atlas_table = table.drop_duplicates("region")[["region", "label"]].rename(columns={"region": "name"})
    names = hippocampus_regions(atlas_table, side)
    out = region_values(table, {"hippocampus": names}, metric, absolute=absolute)["hippocampus"]
    return out.rename("relevance")


# --- the scans analysed -------------------------------------------------------------------------------------
@memo.memoized(32)
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


@memo.memoized(32)
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


@memo.memoized(32)
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
@memo.memoized(32)
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
