"""The Biomarkers page's choices and texts: splits, scan groups, covariates, figure titles and the
statistics table as text. The statistics are :mod:`lib.analysis.biomarker`'s."""

from __future__ import annotations

import pandas as pd

from lib.analysis import biomarker
from lib.data.classes import DEFAULT_CLASSES, Classes

PAPER_BETAS = (0.0, 0.25, 0.5, 0.75, 1.0)
SPLIT_NAMES = {"test": "test split", "validation": "validation split", "train": "training split", "all": "all scans"}
SOURCE_NAMES = {"cohort": "cohort table", "segmentation": "segmentations", "ground_truth": "ground truth (demo)"}
SCAN_GROUPS = {"TP": ["TP"], "TP+FP": ["TP", "FP"], "TP+FN": ["TP", "FN"], "all": ["TP", "FP", "TN", "FN"]}


def scan_group_names(classes: Classes = DEFAULT_CLASSES) -> dict[str, str]:
    """What each of :data:`SCAN_GROUPS` holds, in the task's names."""
    p = classes.positive
    return {"TP": "true positives", "TP+FP": f"classified {p} (TP+FP)", "TP+FN": f"{p} patients (TP+FN)",
            "all": "every scan"}


SCAN_GROUP_NAMES = scan_group_names()
SIDE_NAMES = {"both": "left + right", "left": "left", "right": "right"}
COVARIATE_NAMES = {"age": "age", "icv": "intracranial volume"}
INLINE_LIMIT = 2e8   # voxels read (scans × grid) up to which a region table is computed while the page waits
PERMUTATIONS = 10_000


def split_choices(predictions: pd.DataFrame) -> list[str]:
    n_split = predictions["split"].value_counts()
    return [s for s in ("test", "validation", "train", "all") if s == "all" or n_split.get(s, 0) > 0]


def split_label(predictions: pd.DataFrame, split: str) -> str:
    return f"{SPLIT_NAMES[split]} ({predictions['split'].value_counts().get(split, len(predictions))})"


def beta_of(store) -> float:
    return float(store.params.get("beta", 0) or 0)


def default_store(stores: list) -> int:
    """The paper's LRP β = 0 store, else the first."""
    return next((i for i, s in enumerate(stores) if s.params.get("method") == "lrp" and beta_of(s) == 0.0), 0)


def covariate_choices(cohort: pd.DataFrame, measure: str, has_icv: bool) -> list[str]:
    """Age and intracranial volume where the cohort has them, never the measure itself."""
    names = [n for n in ("age", "icv") if (n == "icv" and has_icv) or (n == "age" and "age" in cohort)]
    icv_col = biomarker.icv_column(cohort)
    return [n for n in names if {"icv": icv_col}.get(n, n) != measure]


def _f(v, fmt="{:.3f}") -> str:
    return "—" if pd.isna(v) else fmt.format(v).replace("-", "−")


def stats_table(st_df: pd.DataFrame, permutations: int = PERMUTATIONS) -> pd.DataFrame:
    """The statistics as text: one row per group, "—" where there are too few scans."""
    return pd.DataFrame({
        "group": st_df.index, "n": st_df["n"].astype(int),
        "Pearson r": [_f(v) for v in st_df["r"]],
        "permutation p": [biomarker.format_p(v, permutations) if pd.notna(v) else "—"
                          for v in st_df["p_permutation"]],
        "Spearman ρ": [_f(v) for v in st_df["rho"]],
        "95 % CI of r": [f"{_f(lo, '{:.2f}')} … {_f(hi, '{:.2f}')}" if pd.notna(lo) else "—"
                         for lo, hi in zip(st_df["ci_low"], st_df["ci_high"])]})


def beta_stats_table(bt: pd.DataFrame) -> pd.DataFrame:
    """:func:`stats_table` of the r-across-β table, one row per β with the paper's r."""
    shown = stats_table(bt.set_index("beta")).rename(columns={"group": "β"})
    shown["β"] = [f"{b:g}" for b in bt["beta"]]
    shown["paper r"] = [biomarker.format_r(v) if pd.notna(v) else "—" for v in bt["paper_r"]]
    return shown


def paper_r(params: dict) -> float | None:
    """The paper's TP correlation of a method (per β for LRP), None when it reports none."""
    paper = biomarker.PAPER_R.get(params.get("method"))
    return paper.get(float(params.get("beta", 0) or 0)) if isinstance(paper, dict) else paper


def fig9_texts(label: str, side: str, metric: str, absolute: bool, tp: pd.Series) -> tuple[str, str]:
    """(y-axis title, figure title) of one Fig 9 panel; ``tp`` is the true positives' statistics."""
    what = f"susceptibility (|gradient| {metric})" if absolute else f"relevance {metric}"
    y_title = ("left " if side == "left" else "right " if side == "right" else "") + f"hippocampal {what}"
    title = (f"{label} · TP: r = {biomarker.format_r(tp['r'])}, {biomarker.p_text(tp['p_permutation'], PERMUTATIONS)}"
             if pd.notna(tp["r"]) else f"{label} · fewer than 3 true positives")
    return y_title, title


def fig9_notes(params: dict, absolute: bool) -> str:
    paper = paper_r(params)
    notes = [f"The paper (ADNI, test split, TP): r = {biomarker.format_r(paper)}." if paper is not None else "",
             "Guided backprop is read as |gradient| (the paper's susceptibility)." if absolute else ""]
    return " ".join(n for n in notes if n)


def correlation_title(label: str, kind: str, row: pd.Series) -> str:
    """Title of the any-region scatter: the (partial) r, its permutation and FDR p, n."""
    if pd.isna(row["r"]):
        return f"{label} · too few scans"
    return (f"{label} · {kind} = {biomarker.format_r(row['r'])}, "
            f"{biomarker.p_text(row['p_permutation'], PERMUTATIONS)}"
            f" (FDR {biomarker.format_p(row['p_fdr'])}), n = {int(row['n'])}")


def correlation_caption(covs: list[str], adjusted: bool, n_regions: int) -> str:
    controls = " and ".join(covs).replace("icv", "intracranial volume")
    return ((f"Partial correlation controlling for {controls}" + (
            f"; points adjusted for {controls} (residuals plus the mean)" if adjusted else
            "; the points are the raw values") if covs else "Pearson correlation")
            + f"; p from {PERMUTATIONS:,} permutations, FDR (Benjamini–Hochberg) over the {n_regions} regions.")


def correlations_shown(corr: pd.DataFrame) -> pd.DataFrame:
    return corr.assign(region=corr["region"].str.replace("_", " "))[["region", "r", "p_permutation", "p_fdr"]]
