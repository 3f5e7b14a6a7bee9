"""What the Atlas metrics page shows, computed from cached region tables (:mod:`lib.analysis.region_tables`) and a
run's predictions: group means and density estimates of the top regions (Böhle et al. 2019 Figs 4–6),
individual fingerprints and the two most different confident patients (Figs 5, 8), top-10 overlap
across β values (Fig 7) and across retrainings (Eitel, study 3), each method's top regions with their
fraction of relevance (Rieke et al. 2018 Table 1), and per-region AD vs HC tests with FDR correction.

Everything takes an *annotated* table (:func:`annotate`): one row per scan × region with the metric
columns ``sum``, ``density``, ``fraction`` (signed, or of ``|h|`` with ``absolute=True``) and ``gain``
(the scan's ``sum`` / the mean ``sum`` of the selection's HC scans in that region, so that a group's
mean ``gain`` is the group gain of the paper), plus the scan's ``diagnosis``, ``outcome``,
``ad_score`` and ``split``.

Rankings: a region's score under a metric is its mean over the ranking group's scans (AD by default,
the explained class); for ``gain`` that mean is the group gain. Regions with fewer than
``min_voxels`` voxels on the grid can be left out of rankings (a one-voxel region has a noisy density).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from urllib.parse import urlencode

import numpy as np
import pandas as pd

from lib.analysis.regions import add_gain, diverse_pair, wide
from lib.analysis.similarity import mean_pairwise_overlap, overlap_matrix
from lib.analysis.stats import compare_groups, kde, kde_grid
from lib.data.classes import DEFAULT_CLASSES, Classes
from lib.core import memo

METRICS = ("sum", "density", "gain", "fraction")
METRIC_NAMES = {"sum": "Sum of relevance", "density": "Relevance density (mean per voxel)",
                "gain": "Gain (sum ÷ mean sum of the negative class)", "fraction": "Fraction of the scan's relevance"}
ROBUSTNESS_METRICS = ("sum", "density", "gain")
"""The three metrics of Fig 7."""
OUTCOME_COLOURS = {"TP": "#ff7f0e", "TN": "#2ca02c", "FP": "#d62728", "FN": "#9467bd"}


def group_colours(classes: Classes = DEFAULT_CLASSES) -> dict[str, str]:
    """The paper's colours: the positive class (AD; and true positives) orange, the negative (HC; and true
    negatives) green."""
    return {classes.positive: "#ff7f0e", classes.negative: "#2ca02c", **OUTCOME_COLOURS}


GROUP_COLOURS = group_colours()
SCAN_COLUMNS = ("subject_id", "diagnosis", "predicted", "outcome", "ad_score", "split")


# --- the table every view reads ------------------------------------------------------------------------------
def annotate(metrics: pd.DataFrame, predictions: pd.DataFrame, *, split: str = "test",
             absolute: bool = False, classes: Classes = DEFAULT_CLASSES) -> pd.DataFrame:
    """The scans of ``split`` ("test", "validation", "train" or "all") with their predictions and ``gain``.

    Parameters
    ----------
    metrics : DataFrame
        A cached region table (:func:`lib.analysis.region_tables.read_table`).
    predictions : DataFrame
        ``Run.predictions()``: ``scan_id, diagnosis, outcome, ad_score, split, …``.
    absolute : bool
        Use the metrics of ``|h|`` (``abs_*`` columns) as ``sum``, ``density`` and ``fraction``.

    Returns
    -------
    DataFrame ``scan_id, region, label, hemisphere, voxels, sum, density, fraction, gain`` and the scan
    columns; scans without a prediction are left out.
    """
    preds = predictions.copy()
    preds["scan_id"] = preds["scan_id"].astype(str)
    if split != "all":
        preds = preds[preds["split"] == split]
    src = {m: (f"abs_{m}" if absolute else m) for m in ("sum", "density", "fraction")}
    missing = [c for c in src.values() if c not in metrics]
    if missing:
        raise KeyError(f"the region table has no column(s) {missing}")
    t = metrics[["scan_id", "region", "label", "hemisphere", "voxels", *src.values()]].rename(
        columns={v: k for k, v in src.items()})
    t = t[t["scan_id"].astype(str).isin(set(preds["scan_id"]))].copy()
    t["scan_id"] = t["scan_id"].astype(str)
    hc = preds.loc[preds["diagnosis"] == classes.negative, "scan_id"]
    t = add_gain(t, hc)
    cols = [c for c in SCAN_COLUMNS if c in preds]
    out = t.merge(preds[["scan_id", *cols]], on="scan_id", how="left")
    out.attrs["absolute"] = absolute
    return out.reset_index(drop=True)


def group_scans(table: pd.DataFrame, group: str) -> list[str]:
    """Scan ids of a group: TP/FP/TN/FN by outcome, a class name (AD, HC, MS …) by diagnosis."""
    col = "outcome" if group in OUTCOME_COLOURS else "diagnosis"
    scans = table.drop_duplicates("scan_id")
    return list(scans.loc[scans[col] == group, "scan_id"])


def ranking(table: pd.DataFrame, metric: str, group: str | None = None, *, min_voxels: int = 0,
            classes: Classes = DEFAULT_CLASSES) -> pd.Series:
    """Region → mean ``metric`` over ``group``'s scans (default the positive class), highest first (NaN left
    out)."""
    group = group or classes.positive
    if metric not in METRICS:
        raise KeyError(f"metric must be one of {METRICS}, not {metric!r}")
    t = table[table["scan_id"].isin(group_scans(table, group)) & (table["voxels"] >= min_voxels)]
    s = t.groupby("region", sort=False)[metric].mean().dropna()
    return s.sort_values(ascending=False, kind="stable")


def top_table(table: pd.DataFrame, metric: str, k: int = 25, *, groups: Sequence[str] | None = None,
              rank_group: str | None = None, min_voxels: int = 0, classes: Classes = DEFAULT_CLASSES
              ) -> pd.DataFrame:
    """The ``k`` best regions by ``rank_group``'s mean: ``rank, region, voxels`` and ``mean_<g>``, ``n_<g>``
    for each group (means over the group's scans; for ``gain`` the group gain)."""
    groups = groups or (classes.positive, classes.negative)
    order = ranking(table, metric, rank_group, min_voxels=min_voxels, classes=classes).head(k)
    out = pd.DataFrame({"rank": np.arange(1, len(order) + 1), "region": order.index})
    vox = table.drop_duplicates("region").set_index("region")["voxels"]
    out["voxels"] = out["region"].map(vox).astype("Int64")
    for g in groups:
        t = table[table["scan_id"].isin(group_scans(table, g)) & table["region"].isin(order.index)]
        out[f"mean_{g}"] = out["region"].map(t.groupby("region")[metric].mean())
        out[f"n_{g}"] = len(group_scans(table, g))
    return out


def distributions(table: pd.DataFrame, metric: str, regions: Sequence[str],
                  groups: Sequence[str] = DEFAULT_CLASSES.names[::-1],
                  *, n_points: int = 96, cut: float = 0.0) -> list[dict]:
    """Per region (in ``regions`` order) and group: the values, their mean and a Gaussian density estimate.

    ``cut``: how far the evaluation grid reaches beyond the group's smallest and largest value, in
    bandwidths. 0 (default) draws the estimate over the observed range only, so relevance that is never
    negative is not shown with a negative tail; 3 covers (nearly) all of the estimate's mass.

    Returns
    -------
    list of ``{"region": name, "groups": {g: {"values", "n", "mean", "grid", "density"}}}``. Each group
    is evaluated on a grid over its own values (:func:`lib.analysis.stats.kde_grid`), so a narrow distribution
    next to a wide one is still resolved; densities are per unit of the metric, so they compare. A
    group without scans has ``n`` 0, ``mean`` NaN and a zero density.
    """
    sub = table[table["region"].isin(regions)]
    members = {g: set(group_scans(table, g)) for g in groups}
    out = []
    for region in regions:
        r = sub[sub["region"] == region]
        vals = {g: r.loc[r["scan_id"].isin(members[g]), metric].to_numpy(dtype=float) for g in groups}
        vals = {g: v[np.isfinite(v)] for g, v in vals.items()}
        entry = {}
        for g, v in vals.items():
            src = v if v.size else np.concatenate(list(vals.values()))
            grid = kde_grid(src, n_points=n_points, cut=cut)
            if np.ptp(grid) == 0:   # a single or constant value: widen so the spike still shows
                grid = kde_grid(src, n_points=n_points, cut=max(cut, 3.0))
            _, dens = kde(v, grid)
            entry[g] = {"values": v, "n": int(v.size), "mean": float(v.mean()) if v.size else float("nan"),
                        "grid": grid, "density": dens}
        out.append({"region": region, "groups": entry})
    return out


# --- individuals ---------------------------------------------------------------------------------------------
def fingerprints(table: pd.DataFrame, scans: Sequence[str], regions: Sequence[str], metric: str = "density"
                 ) -> pd.DataFrame:
    """Scans × regions matrix of ``metric`` (rows in ``scans`` order, columns in ``regions`` order)."""
    t = table[table["scan_id"].isin(list(scans)) & table["region"].isin(list(regions))]
    w = wide(t, metric)
    return w.reindex(index=[s for s in scans if s in w.index], columns=list(regions))


def confident_patients(table: pd.DataFrame, min_score: float = 0.9, *, classes: Classes = DEFAULT_CLASSES
                       ) -> pd.Series:
    """Patients (positive class) whose score exceeds ``min_score``: scan id → score, highest first."""
    scans = table.drop_duplicates("scan_id").set_index("scan_id")
    s = scans.loc[(scans["diagnosis"] == classes.positive) & (scans["ad_score"] > min_score), "ad_score"]
    return s.sort_values(ascending=False, kind="stable")


def most_different_patients(table: pd.DataFrame, regions: Sequence[str], *, metric: str = "density",
                            min_score: float = 0.9, classes: Classes = DEFAULT_CLASSES
                            ) -> tuple[str, str, float] | None:
    """The two patients (positive class) with a score > ``min_score`` whose ``metric`` vectors over ``regions`` are
    furthest apart by cosine distance (Fig 5, Fig 8): ``(scan_a, scan_b, distance)``, or None with fewer
    than two such patients."""
    confident = confident_patients(table, min_score, classes=classes)
    if len(confident) < 2:
        return None
    scores = table.drop_duplicates("scan_id").set_index("scan_id")["ad_score"]
    return diverse_pair(table, scores, metric=metric, regions=list(regions), min_score=min_score,
                        scans=list(confident.index))


def viewer_link(run_id: str, store: str, scan_id: str, workspace: str | None = None) -> str:
    """Relative address of the heatmap page showing one scan's map (its *Individual* view)."""
    q = {"run": run_id, "store": store, "view": "Individual", "split": "all", "scan": scan_id}
    if workspace:
        q["workspace"] = workspace
    return "heatmaps?" + urlencode(q)


# --- robustness ----------------------------------------------------------------------------------------------
def top_rankings(tables: Mapping[str, pd.DataFrame], metric: str, *, k: int = 10, group: str | None = None,
                 min_voxels: int = 0, classes: Classes = DEFAULT_CLASSES) -> dict[str, list[str]]:
    """The top ``k`` regions of each named table (e.g. one per β value or per run) under ``metric``."""
    return {name: list(ranking(t, metric, group, min_voxels=min_voxels, classes=classes).head(k).index)
            for name, t in tables.items()}


def overlap_matrices(tables: Mapping[str, pd.DataFrame], metrics: Sequence[str] = ROBUSTNESS_METRICS, *,
                     k: int = 10, group: str | None = None, min_voxels: int = 0, classes: Classes = DEFAULT_CLASSES
                     ) -> dict[str, pd.DataFrame]:
    """Per metric, the % overlap of the top ``k`` regions between every pair of named tables (Fig 7)."""
    return {m: overlap_matrix(top_rankings(tables, m, k=k, group=group, min_voxels=min_voxels, classes=classes), k)
            for m in metrics}


def mean_overlaps(tables: Mapping[str, pd.DataFrame], metrics: Sequence[str] = ROBUSTNESS_METRICS, *,
                  k: int = 10, group: str | None = None, min_voxels: int = 0, classes: Classes = DEFAULT_CLASSES
                  ) -> pd.DataFrame:
    """Per metric, the mean pairwise % overlap of the top ``k`` regions across the tables (e.g. the
    retrainings of one model; Eitel, study 3): ``metric, mean_overlap, tables, pairs``."""
    n = len(tables)
    rows = [{"metric": m,
             "mean_overlap": mean_pairwise_overlap(list(top_rankings(tables, m, k=k, group=group,
                                                                     min_voxels=min_voxels, classes=classes).values()), k),
             "tables": n, "pairs": n * (n - 1) // 2} for m in metrics]
    return pd.DataFrame(rows)


# --- methods -------------------------------------------------------------------------------------------------
def method_top_regions(tables: Mapping[str, pd.DataFrame], *, k: int = 4,
                       groups: Sequence[str] = DEFAULT_CLASSES.names[::-1], min_voxels: int = 0) -> pd.DataFrame:
    """Each method's ``k`` regions with the largest mean fraction of the scan's relevance, per group
    (Rieke et al. 2018 Table 1): ``method, group, rank, region, fraction, n``."""
    rows = []
    for method, t in tables.items():
        for g in groups:
            r = ranking(t, "fraction", g, min_voxels=min_voxels).head(k)
            n = len(group_scans(t, g))
            rows += [{"method": method, "group": g, "rank": i + 1, "region": region, "fraction": float(v), "n": n}
                     for i, (region, v) in enumerate(r.items())]
    return pd.DataFrame(rows, columns=["method", "group", "rank", "region", "fraction", "n"])


def method_table(long: pd.DataFrame, group: str) -> pd.DataFrame:
    """One group of :func:`method_top_regions` as the paper prints it: rank × method cells
    ``"Region (12.3 %)"``."""
    t = long[long["group"] == group]
    if t.empty:
        return pd.DataFrame()
    cell = t.assign(cell=[f"{r} ({f:.1%})" for r, f in zip(t["region"], t["fraction"])])
    out = cell.pivot(index="rank", columns="method", values="cell")
    return out[[m for m in dict.fromkeys(t["method"]) if m in out.columns]]


# --- tests ---------------------------------------------------------------------------------------------------
def region_tests(table: pd.DataFrame, metric: str = "density", *, test: str = "mannwhitney", alpha: float = 0.05,
                 fdr_method: str = "bh", classes: Classes = DEFAULT_CLASSES) -> pd.DataFrame:
    """Per region, the positive against the negative class (Mann–Whitney U or Welch's t), p-values corrected
    for the false discovery rate over all regions: ``region, n_AD, n_HC, mean_AD, mean_HC, statistic, p,
    p_fdr, effect, effect_name, significant`` (the task's class names in the columns) sorted by p.
    ``effect`` > 0 means more in the positive class."""
    p, n = classes.positive, classes.negative
    values = wide(table, metric)
    labels = table.drop_duplicates("scan_id").set_index("scan_id")["diagnosis"]
    res = compare_groups(values, labels, p, n, test=test, method=fdr_method)
    res = res.rename(columns={"feature": "region", "n_a": f"n_{p}", "n_b": f"n_{n}", "mean_a": f"mean_{p}",
                              "mean_b": f"mean_{n}", "median_a": f"median_{p}", "median_b": f"median_{n}"})
    res["significant"] = res["p_fdr"] < alpha
    return res


# --- the demo cohort's ground truth --------------------------------------------------------------------------
@memo.memoized(8)
def atrophied_regions(ws, *, merged: bool = False) -> frozenset[str]:
    """Neuromorphometrics regions the demo generator shrank in at least one AD scan (ventricles, which it
    enlarges, are not counted); base names ("Hippocampus") with ``merged``. Empty outside a demo workspace."""
    from lib.data.atlas import hemisphere_of

    path = ws.ground_truth_dir / "atrophy.csv"
    if not path.exists():
        return frozenset()
    gt = pd.read_csv(path, dtype={"scan_id": str})
    cohort = pd.read_csv(ws.cohort_csv, dtype={"scan_id": str})
    ad = set(cohort.loc[cohort["diagnosis"] == ws.classes.positive, "scan_id"])
    gt = gt[gt["scan_id"].isin(ad)]
    out = set()
    for col in gt.columns:
        if col.startswith("mm_") and "Vent" not in col and (gt[col] > 0).any():
            name = col[3:]
            out.add(hemisphere_of(name)[1] if merged else name)
    return frozenset(out)


def truth_overlap(regions: Iterable[str], truth: set[str]) -> dict:
    """How many of ``regions`` (e.g. a top 10) are in ``truth``: ``k, hits, percent, matched``."""
    regions = list(regions)
    matched = [r for r in regions if r in truth]
    return {"k": len(regions), "hits": len(matched),
            "percent": 100.0 * len(matched) / len(regions) if regions else float("nan"), "matched": matched}
