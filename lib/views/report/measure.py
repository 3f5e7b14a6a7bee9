"""The report's biomarker section for a workspace whose measure is not hippocampal volume (lesion load or EDSS
on an MS cohort, a lab's own column): the brain's relevance against the workspace's measure per outcome group,
as Fig 9 does for the hippocampus, and the regions whose relevance follows the measure most closely."""

from __future__ import annotations

import pandas as pd

from lib.analysis import biomarker
from lib.data.scans import load_cohort
from lib.data.workspace import Workspace

from lib.views.report.model import (ATLAS, PERMUTATIONS, SECTIONS, SPLIT, Figure, Section, _cmd, _fmt,
                                    fig9_stores)

TOP_REGIONS = 10


def title(measure: str | None) -> str:
    """The section's title: what is correlated with what."""
    return f"Relevance vs {measure_label(measure)} (Fig 9)" if measure else "Relevance vs a biomarker (Fig 9)"


def section_title(ws: Workspace, key: str) -> str:
    """A section's title on ``ws``: the biomarker section names the workspace's measure."""
    if key == "biomarker" and ws.biomarker_measure != "hippocampal_volume":
        return title(ws.biomarker_measure)
    return SECTIONS[key]


def measure_label(measure: str | None) -> str:
    return (measure or "").replace("_", " ")


def measure_values(ws: Workspace, measure: str) -> pd.Series:
    """Scan id → the workspace's measure; ValueError naming the column when the cohort table lacks it."""
    cohort = load_cohort(ws)
    if measure not in cohort.columns:
        raise ValueError(f"the cohort table {ws.cohort_csv.name} has no column {measure!r}")
    values = pd.to_numeric(cohort[measure], errors="coerce")
    if values.notna().sum() < 3:
        raise ValueError(f"the column {measure!r} of {ws.cohort_csv.name} has fewer than 3 numeric values")
    return pd.Series(values.to_numpy(float), index=cohort["scan_id"].astype(str), name=measure)


def measure_section(ws: Workspace, run, stores, preds, measure: str | None, regions_cmd) -> tuple[Section, dict]:
    """Relevance summed over the brain (every atlas region) against ``measure`` in the test split's TP and FP,
    plus the regions most correlated with it in the true positives (FDR over regions)."""
    sec = Section("biomarker", title(measure))
    if not measure:
        sec.missing.append("This workspace declares no biomarker measure: choose a cohort column on the Biomarkers "
                           "page, or set one when the workspace is made (the Cohort page's Task section).")
        return sec, {}
    try:
        values = measure_values(ws, measure)
    except ValueError as exc:
        sec.text.append(f"No {measure_label(measure)}: {exc}.")
        return sec, {}
    chosen = fig9_stores(stores)
    if not chosen:
        sec.missing.append(f"Needs LRP β=0 heatmaps: `{_cmd(ws, f'explain --run {run.id} --method lrp --beta 0')}`.")
        return sec, {}
    rows, name = [], measure_label(measure)
    for s in chosen:
        table = biomarker.find_region_table(ws, s, ATLAS)
        label = biomarker.method_label(s.params)
        if table is None:
            sec.missing.append(f"{label}: no region metrics: `{regions_cmd(ws, run, [s])}`.")
            continue
        absolute = biomarker.default_absolute(s.params.get("method", ""))
        what = "|relevance|" if absolute else "relevance"
        per_region = biomarker.region_values(table, {n: [n] for n in table["region"].unique()}, "sum",
                                             absolute=absolute)
        points = biomarker.scan_points(preds, per_region.sum(axis=1), values, split=SPLIT)
        res = biomarker.group_stats(points, n_permutations=PERMUTATIONS, n_boot=PERMUTATIONS)
        tp = res.loc["TP"]
        sec.figures.append(Figure(
            f"fig9_{s.folder.name}", f"{label}: {what} summed over the brain (every {ATLAS} region) against "
            f"{name}, {SPLIT} split; true positives with a least-squares line, false positives drawn as well.",
            plotly=biomarker.scatter_figure(
                points, x_title=name, y_title=f"brain {what} sum",
                title=(f"{label} · TP: r = {biomarker.format_r(tp['r'])}, "
                       f"{biomarker.p_text(tp['p_permutation'], PERMUTATIONS)}" if pd.notna(tp["r"])
                       else f"{label} · fewer than 3 true positives"))))
        for g, r in res.iterrows():
            rows.append({"method": label, "group": g, "n": int(r["n"]), "Pearson r": _fmt(r["r"]),
                         "permutation p": biomarker.format_p(r["p_permutation"], PERMUTATIONS)
                         if pd.notna(r["p_permutation"]) else "—", "Spearman ρ": _fmt(r["rho"]),
                         "95 % CI of r": f"{_fmt(r['ci_low'], 2)} … {_fmt(r['ci_high'], 2)}"})
        top = _top_regions(per_region, points, values)
        if top is not None:
            sec.tables.append((f"{label}: the {TOP_REGIONS} regions whose {what} correlates most with {name} in "
                               f"the true positives ({PERMUTATIONS:,} permutations, FDR over regions)", top))
    if rows:
        sec.tables.insert(0, (f"Brain relevance vs {name} per outcome group ({PERMUTATIONS:,} permutations, "
                              f"two-sided; percentile bootstrap CI with {PERMUTATIONS:,} resamples)",
                              pd.DataFrame(rows)))
    return sec, ({"measure": measure, "relevance": "summed over the brain"} if rows else {})


def _top_regions(per_region: pd.DataFrame, points: pd.DataFrame, values: pd.Series) -> pd.DataFrame | None:
    scans = points.loc[(points["outcome"] == "TP") & points["measure"].notna(), "scan_id"]
    if len(scans) < 4:
        return None
    corr = biomarker.region_correlations(per_region.reindex(scans), values, n_permutations=PERMUTATIONS)
    top = corr.dropna(subset=["r"]).head(TOP_REGIONS)
    return pd.DataFrame({"region": top["region"].str.replace("_", " "), "n": top["n"].astype(int),
                         "Pearson r": top["r"].map(_fmt),
                         "permutation p": [biomarker.format_p(p, PERMUTATIONS) for p in top["p_permutation"]],
                         "FDR p": top["p_fdr"].map(_fmt)})
