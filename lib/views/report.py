"""A run's report: one self-contained HTML file and a PDF with every result computed for the run.

The report gathers what the analysis pages show, from the same library calls and the same caches:
cohort summary, training curves and test metrics, group maps of each heatmap method (Böhle et al. 2019
Fig 3), top regions with density estimates and gain (Figs 4, 6), fingerprints, robustness across β and
retrainings (Fig 7), hippocampal relevance against volume (Fig 9), the evaluation of the methods and the
reviews. It computes nothing heavy: a section whose results are missing says so and names the command
that computes them. A methods paragraph lists every setting, read from the run's stored configuration and
the caches' stored parameters.

Formats: the HTML embeds plotly.js once and each figure as an interactive plotly chart, slices as PNG data
URIs, and each chart's SVG as a download link, so it opens offline. The PDF and the SVG files are drawn
with matplotlib (a dependency already: atlasreader needs it) from the same plotly figures
(:func:`to_matplotlib`), so no browser or image-export service is needed; slices stay raster images.

Reports are cached under ``cache/reports/<content key>/``: the key hashes what the report shows (the
run's checkpoint, its predictions, the cache entries read and the reviews' latest change), so an unchanged
run is never rebuilt and any new result gives a new report.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from lib.core import atomic
from lib.data.workspace import Workspace
from lib.core.progress import Progress

REPORT_VERSION = 1
ATLAS = "neuromorphometrics"
SPLIT = "test"
CROSSHAIR_MNI = (-26, -22, -14)   # the left hippocampus, where AD atrophy starts (the Heatmaps page's default)
TOP_K = 25
OVERLAP_K = 10
PERMUTATIONS = 10_000
FINGERPRINT_MIN_SCORE = 0.9
PALETTE = ["#1f77b4", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#2ca02c", "#ff7f0e"]
SECTIONS = {
    "cohort": "Cohort",
    "training": "Training and test metrics",
    "group_maps": "Group maps (Fig 3)",
    "top_regions": "Top regions: density and gain (Figs 4, 6)",
    "fingerprints": "Individual fingerprints (Figs 5, 8)",
    "robustness": "Robustness across β and retrainings (Fig 7)",
    "biomarker": "Hippocampal relevance vs volume (Fig 9)",
    "evaluation": "Evaluation of the explanation methods",
    "reviews": "Reviews",
}


# --------------------------------------------------------------------------------------------- the model
@dataclass
class Figure:
    """One figure: a plotly chart (interactive in HTML, redrawn by matplotlib for PDF/SVG) or a PNG image."""

    name: str
    caption: str = ""
    plotly: object | None = None
    png: bytes | None = None


@dataclass
class Section:
    key: str
    title: str
    text: list[str] = field(default_factory=list)          # paragraphs (plain text)
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)       # what is not computed yet, with its command

    @property
    def filled(self) -> bool:
        return bool(self.text or self.tables or self.figures)


@dataclass
class Report:
    run_id: str
    workspace: str
    key: str
    created: float
    methods: str
    settings: dict
    sections: list[Section]


# --------------------------------------------------------------------------------------------- content key
def _stamp(path: Path) -> str:
    try:
        s = path.stat()
    except FileNotFoundError:
        return "-"
    return f"{s.st_size}:{s.st_mtime_ns}"


def reviews_stamp(ws: Workspace) -> str:
    """The reviews' latest change (count and newest update time), or why it is unknown."""
    try:
        from sqlalchemy import func, select

        from lib.reviews import ReviewStore
        from lib.reviews.models import Review

        store = ReviewStore.for_workspace(ws)
        try:
            n, last = store.run(lambda s: s.execute(select(func.count(), func.max(Review.updated_at))
                                                    .where(Review.workspace == store.workspace)).one(), write=False)
        finally:
            store.close()
        return f"{n}:{last}"
    except Exception as exc:  # noqa: BLE001 - an unreachable database leaves the reviews section empty
        return f"unavailable:{type(exc).__name__}"


def content_key(ws: Workspace, run) -> str:
    """Hash of everything the report shows; equal keys mean an identical report."""
    from lib.analysis import region_tables as rt
    from lib.views import viewer

    sha = run.checkpoint_hash() if run.best_checkpoint.exists() else "-"
    parts = {"v": REPORT_VERSION, "run": run.id, "checkpoint": sha, "config": _stamp(run.dir / "config.json"),
             "metrics": _stamp(run.dir / "metrics.jsonl"), "predictions": _stamp(run.dir / "predictions.csv"),
             "cohort": _stamp(ws.cohort_csv), "splits": _stamp(ws.splits_json), "reviews": reviews_stamp(ws)}
    stores = viewer.stores_of(ws, sha) if sha != "-" else []
    parts["stores"] = [s.folder.name for s in stores]
    # group means are not keyed: they follow from the stores and the predictions, and the report averages
    # missing small ones itself (keying them would change the key by building the report)
    regions = ws.cache_dir / "regions"
    parts["regions"] = sorted(p.name for p in regions.glob("*.json")) if regions.exists() else []
    evaluation = ws.cache_dir / "evaluation"
    parts["evaluation"] = sorted(p.parent.name for p in evaluation.glob("*/result.json")) if evaluation.exists() else []
    parts["group_runs"] = [r.id + _stamp(r.best_checkpoint) for r in rt.group_runs(ws, run)]
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def cache_folder(ws: Workspace, key: str) -> Path:
    return ws.cache_dir / "reports" / key


def cached(ws: Workspace, run, key: str | None = None) -> dict[str, Path] | None:
    """The cached report files of ``run`` for its current content, or None."""
    folder = cache_folder(ws, key or content_key(ws, run))
    html_file = folder / f"{run.id}_report.html"
    if not html_file.exists():
        return None
    out = {"html": html_file}
    for kind, name in (("pdf", f"{run.id}_report.pdf"), ("figures", "figures")):
        if (folder / name).exists():
            out[kind] = folder / name
    return out


def job_key(ws: Workspace, run, key: str | None = None) -> str:
    return f"report:{run.id}:{key or content_key(ws, run)}"


# --------------------------------------------------------------------------------------------- helpers
def _fmt(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "—"
    if isinstance(v, (float, np.floating)):
        return f"{v:.{digits}g}" if abs(v) < 1e-2 or abs(v) >= 1e4 else f"{v:.{digits}f}"
    return str(v)


def _cmd(ws: Workspace, args: str) -> str:
    return f"python -m lib --workspace {ws.root} {args}"


def _store_label(store) -> str:
    from lib.views.viewer import store_label

    return store_label(store.params, store.meta.get("target", "AD"))


def _png_of(img) -> bytes:
    from lib.views.render import to_png

    return to_png(img)


# --------------------------------------------------------------------------------------------- sections
def _cohort_section(ws: Workspace, run, preds: pd.DataFrame | None) -> Section:
    from lib.data.overview import load_cohort

    sec = Section("cohort", SECTIONS["cohort"])
    cohort = load_cohort(ws)
    n_sub = cohort["subject_id"].nunique()
    sec.text.append(f"{len(cohort)} scans of {n_sub} subjects in workspace {ws.name} ({ws.kind}).")
    rows = []
    for dx, g in cohort.groupby("diagnosis"):
        row = {"diagnosis": dx, "scans": len(g), "subjects": g["subject_id"].nunique()}
        if "age" in g:
            row["age (mean ± sd)"] = f"{g['age'].mean():.1f} ± {g['age'].std():.1f}"
        if "sex" in g:
            row["female"] = int((g["sex"].astype(str).str.upper().str[0] == "F").sum())
        if "mmse" in g and g["mmse"].notna().any():
            row["MMSE (mean)"] = f"{g['mmse'].mean():.1f}"
        if "site" in g:
            row["sites"] = g["site"].nunique()
        rows.append(row)
    sec.tables.append(("Scans and subjects by diagnosis", pd.DataFrame(rows)))
    if preds is not None:
        t = preds.groupby(["split", "diagnosis"]).agg(scans=("scan_id", "size"), subjects=("subject_id", "nunique"))
        t = t.reset_index().pivot(index="split", columns="diagnosis", values=["scans", "subjects"])
        t.columns = [f"{a} {b}" for a, b in t.columns]
        sec.tables.append((f"The run's split (subject-level; run {run.id})",
                           t.reindex([s for s in ("train", "validation", "test") if s in t.index]).reset_index()))
    return sec


def _training_section(ws: Workspace, run) -> Section:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from lib.views import monitor

    sec = Section("training", SECTIONS["training"])
    st_ = run.state
    summ = run.summary() or {}
    sec.text.append(f"Run {run.id}: status {run.status}, {summ.get('epochs_run', st_.get('epoch', -1) + 1)} epochs, "
                    f"best epoch {(summ.get('best_epoch', st_.get('best_epoch')) or 0) + 1} (1-based; its checkpoint "
                    f"is explained), stopped: {summ.get('stopped', st_.get('stopped', '—'))}.")
    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss", "balanced accuracy"))
    any_curve = False
    for col, metric in ((1, "loss"), (2, "balanced_accuracy")):
        data = monitor.curves([run], metric, "epoch")
        data = data[data["series"] != "train (batches)"]
        for series, g in data.groupby("series", sort=False):
            any_curve = True
            fig.add_trace(go.Scatter(x=g["x"], y=g["value"], mode="lines+markers", name=series,
                                     legendgroup=series, showlegend=col == 1,
                                     line=dict(color="#1f77b4" if series == "train" else "#d62728",
                                               dash="dash" if series == "train" else "solid")), row=1, col=col)
            best = g[g["best"]]
            if series == "validation" and len(best):
                fig.add_trace(go.Scatter(x=best["x"], y=best["value"], mode="markers", name="best epoch",
                                         showlegend=col == 1, marker=dict(symbol="star", size=14, color="black")),
                              row=1, col=col)
        fig.update_xaxes(title_text="epoch", row=1, col=col)
    fig.update_layout(height=380, margin=dict(l=10, r=10, t=60, b=10), title="Learning curves")
    if any_curve:
        sec.figures.append(Figure("learning_curves", "Training (dashed) and validation (solid) per epoch; ★ the "
                                  "best epoch (kept checkpoint).", plotly=fig))
    rows = []
    for split in ("train", "validation", "test"):
        ev = monitor.evaluation(run, split)
        if ev and ev.get("n"):
            m = ev["metrics"]
            cm = np.asarray(ev["confusion"])
            rows.append({"split": split, "scans": ev["n"], **{k: round(float(m[k]), 3) for k in
                         ("balanced_accuracy", "accuracy", "auc", "sensitivity", "specificity")},
                         "TN": int(cm[0, 0]), "FP": int(cm[0, 1]), "FN": int(cm[1, 0]), "TP": int(cm[1, 1])})
            if split == SPLIT:
                roc = ev["roc"]
                f = go.Figure([go.Scatter(x=roc["fpr"], y=roc["tpr"], mode="lines", line=dict(shape="hv", width=2.5),
                                          name=f"AUC {m['auc']:.3f}"),
                               go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dot", color="grey"),
                                          showlegend=False)])
                f.update_layout(height=360, width=460, margin=dict(l=10, r=10, t=50, b=10),
                                title=f"ROC · {split} split (AD positive)", xaxis_title="false positive rate",
                                yaxis_title="true positive rate")
                sec.figures.append(Figure("roc_test", f"ROC of the best checkpoint on the {split} split.", plotly=f))
    if rows:
        sec.tables.append(("Metrics of the best checkpoint (threshold 0.5 on the AD probability)", pd.DataFrame(rows)))
    else:
        sec.missing.append(f"No predictions yet: `{_cmd(ws, f'predict --run {run.id}')}`.")
    return sec


def _group_maps_section(ws: Workspace, run, stores, preds) -> Section:
    from lib.views import viewer
    from lib.views.render import colorbar, ortho_image, stack, titled
    from lib.data.templates import template

    sec = Section("group_maps", SECTIONS["group_maps"])
    if not stores:
        sec.missing.append(f"No heatmaps of run {run.id}: `{_cmd(ws, f'explain --run {run.id} --method lrp --beta 0')}` "
                           f"(and `--method guided_backprop`).")
        return sec
    grid = run.grid
    background = np.asarray(template(grid.resolution).dataobj, dtype=np.float32)
    bg_range = viewer.background_range(background)
    ijk = viewer.voxel_of(grid, CROSSHAIR_MNI)
    table = viewer.selection(preds, SPLIT)
    for store in stores:
        label = _store_label(store)
        folder = store.folder / "group_means" / viewer.grouping_key(store, table, None)
        if (folder / "index.json").exists():
            means = viewer.CachedGroupMeans(folder)
        elif viewer.is_small(store, table):   # what the Heatmaps page averages while it waits (about a second)
            means = viewer.cached_group_means(store, table)
        else:
            sec.missing.append(f"{label}: group means not computed: "
                               f"`{_cmd(ws, f'group-means --run {run.id} --store {store.folder.name}')}`.")
            continue
        panels, ov = [], None
        for g in ("AD", "HC", "TP", "FP", "TN", "FN"):
            e = means.entry(g)
            if e.count == 0:
                continue
            ov = viewer.overlay(means[g], "paper", means, alpha=0.8)   # one scale shared by every group
            panels.append(titled(ortho_image(background, ijk, overlay=ov, height=130, bg_range=bg_range),
                                 f"{g} · n = {e.count}", size=12))
        if not panels:
            sec.missing.append(f"{label}: no scans of the {SPLIT} split in any group.")
            continue
        img = stack([stack(panels[i:i + 2], vertical=False) for i in range(0, len(panels), 2)]
                    + [colorbar(ov.cmap, ov.vmin, ov.vmax, label="relevance")])
        x, y, z = (float(v) for v in grid.voxel_to_mni(ijk))
        sec.figures.append(Figure(
            f"group_maps_{store.folder.name}", f"{label}: mean maps of the {SPLIT} split per group (AD, HC, and "
            f"the outcomes TP, FP, TN, FN) at MNI ({x:.0f}, {y:.0f}, {z:.0f}) mm over the ICBM152 2009c template; "
            f"the paper's scale shared by all groups: black below {means.paper.vmin:.3g} (50th percentile of the "
            f"average {means.scale_from} map), white above {means.paper.vmax:.3g} (99.5th).",
            png=_png_of(titled(img, label))))
    return sec


def _region_tables(ws: Workspace, run, stores, atlas):
    """(store, annotated test-split table) for each store with a cached region table; and the missing ones."""
    from lib.analysis import region_analysis as ra
    from lib.analysis import region_tables as rt

    preds = run.predictions()
    have, missing = [], []
    for s in stores:
        path = rt.find_table(ws, s, atlas)
        if path is None:
            missing.append(s)
            continue
        absolute = s.params.get("method", "") in ra.ABSOLUTE_BY_DEFAULT
        have.append((s, path, ra.annotate(rt.read_table(path), preds, split=SPLIT, absolute=absolute)))
    return have, missing


def _regions_cmd(ws, run, stores) -> str:
    return _cmd(ws, f"regions --run {run.id} --store {' '.join(s.folder.name for s in stores)} --atlas {ATLAS}")


def _top_regions_section(ws, run, tables, missing, truth) -> Section:
    from lib.analysis import region_analysis as ra
    from lib.views import region_figures as rf

    sec = Section("top_regions", SECTIONS["top_regions"])
    if missing:
        sec.missing.append(f"No region metrics of {', '.join(_store_label(s) for s in missing)} on {ATLAS}: "
                           f"`{_regions_cmd(ws, run, missing)}`.")
    for store, _, table in tables:
        label = _store_label(store)
        for metric, groups in (("density", ("AD", "HC")), ("gain", ("TP", "TN"))):
            if not all(ra.group_scans(table, g) for g in groups):
                sec.text.append(f"{label}, {metric}: no {' or '.join(groups)} scans in the {SPLIT} split.")
                continue
            top = ra.top_table(table, metric, TOP_K, groups=groups, rank_group=groups[0])
            regions = list(top["region"])
            if not regions:
                continue
            dists = ra.distributions(table, metric, regions, groups)
            fig = rf.region_figure(dists, metric, groups, marked=truth, identity=metric == "gain",
                                   title=f"Top {len(regions)} regions by {groups[0]} mean {metric} · {label}")
            cap = (f"Circles: group means ({groups[0]} orange, {groups[1]} green); shaded: density estimates of the "
                   f"scans' values ({groups[0]} above the line, {groups[1]} below). "
                   + ("Gain = the scan's region sum ÷ the mean HC sum there; dashed: gain 1. " if metric == "gain"
                      else "") + ("★ = a region the demo generator atrophied." if truth else ""))
            sec.figures.append(Figure(f"top_{metric}_{store.folder.name}", cap, plotly=fig))
            if truth:
                o = ra.truth_overlap(regions[:10], truth)
                sec.text.append(f"{label}, {metric}: {o['hits']} of the top {o['k']} regions are regions the demo "
                                "generator atrophied.")
        res = ra.region_tests(table, "fraction")
        n_sig = int(res["significant"].sum())
        sec.text.append(f"{label}: {n_sig} of {int(res['p'].notna().sum())} regions differ between AD and HC in their "
                        "share of the scan's relevance (Mann–Whitney U, Benjamini–Hochberg FDR 0.05).")
    return sec


def _fingerprints_section(ws, run, tables, missing, truth) -> Section:
    from lib.analysis import region_analysis as ra
    from lib.views import region_figures as rf

    sec = Section("fingerprints", SECTIONS["fingerprints"])
    if not tables:
        sec.missing.append(f"Needs region metrics: `{_regions_cmd(ws, run, missing)}`." if missing
                           else f"Needs heatmaps: `{_cmd(ws, f'explain --run {run.id} --method lrp --beta 0')}`.")
        return sec
    store, _, table = tables[0]
    regions = list(ra.ranking(table, "density", "AD").head(TOP_K).index)
    pair = ra.most_different_patients(table, regions, metric="density", min_score=FINGERPRINT_MIN_SCORE)
    if pair is None:
        n = len(ra.confident_patients(table, FINGERPRINT_MIN_SCORE))
        sec.text.append(f"{n} AD patient(s) of the {SPLIT} split have an AD score above {FINGERPRINT_MIN_SCORE}; "
                        "two are needed for the paper's pair of most different patients.")
        return sec
    fp = ra.fingerprints(table, [pair[0], pair[1]], regions, "density")
    fig = rf.region_figure(ra.distributions(table, "density", regions, ("AD", "HC")), "density", fingerprints=fp,
                           marked=truth, title=f"Fingerprints of {pair[0]} and {pair[1]} · {_store_label(store)}")
    sec.figures.append(Figure("fingerprints", f"The two confident AD patients (AD score > {FINGERPRINT_MIN_SCORE}) "
                              f"whose relevance density over the top {len(regions)} regions differs most "
                              f"(cosine distance {pair[2]:.3f}), over the AD and HC distributions.", plotly=fig))
    return sec


def _robustness_section(ws, run, sha, atlas, tables_by_store) -> Section:
    from lib.analysis import region_analysis as ra
    from lib.views import region_figures as rf
    from lib.analysis import region_tables as rt

    sec = Section("robustness", SECTIONS["robustness"])
    found, missing = {}, []
    for b in rt.BETAS:
        s = rt.matching_store(ws, sha, "lrp", {"beta": float(b)})
        t = tables_by_store.get(s.folder.name) if s is not None else None
        if t is None:
            missing.append(b)
        else:
            found[f"β={b:g}"] = t
    if len(found) >= 2:
        mats = ra.overlap_matrices(found, k=OVERLAP_K)
        sec.figures.append(Figure("overlap_beta", f"Share (%) of the top {OVERLAP_K} regions (by AD mean) two LRP β "
                                  "values have in common, per metric.", plotly=rf.overlap_figure(
                                      mats, title=f"Overlap of the top {OVERLAP_K} regions between β values (%)")))
    if missing:
        sec.missing.append(f"LRP β = {', '.join(f'{b:g}' for b in missing)} without region metrics: "
                           f"`{_cmd(ws, f'regions --run {run.id} --method lrp --beta ' + ' '.join(f'{b:g}' for b in missing))}`.")
    members = rt.group_runs(ws, run)
    if len(members) < 2:
        sec.text.append(f"Run {run.id} was trained alone (no group of seeds or folds), so there are no retrainings "
                        "to compare.")
    else:
        have = {}
        for r in members:
            s = rt.matching_store(ws, r.checkpoint_hash(), "lrp", {"beta": 0.0})
            path = rt.find_table(ws, s, atlas) if s is not None else None
            if path is not None and r.predictions() is not None:
                have[r.id] = ra.annotate(rt.read_table(path), r.predictions(), split=SPLIT)
        if len(have) >= 2:
            mo = ra.mean_overlaps(have, k=OVERLAP_K)
            sec.tables.append((f"Mean pairwise overlap of the top {OVERLAP_K} regions between the group's runs "
                               "(LRP β=0)", mo))
            sec.figures.append(Figure("overlap_runs", "Overlap between retrainings.", plotly=rf.overlap_figure(
                ra.overlap_matrices(have, k=OVERLAP_K), title="Overlap of the top regions between runs (%)")))
        lacking = [r.id for r in members if r.id not in have]
        if lacking:
            sec.missing.append(f"Runs without LRP β=0 region metrics: `{_cmd(ws, 'regions --run ' + ' '.join(lacking) + ' --method lrp --beta 0')}`.")
    return sec


def _biomarker_section(ws, run, stores, preds) -> tuple[Section, dict]:
    from lib.analysis import biomarker
    from lib.data.overview import load_cohort

    sec = Section("biomarker", SECTIONS["biomarker"])
    used = {}
    cohort = load_cohort(ws)
    try:
        volume = biomarker.hippocampal_volumes(ws, cohort, "auto")
    except (ValueError, KeyError) as exc:
        sec.text.append(f"No hippocampal volume: {exc}")
        return sec, used
    used["volume"] = volume.attrs.get("label", "hippocampal volume")
    lrp = [s for s in stores if s.params.get("method") == "lrp"]
    lrp0 = next((s for s in lrp if float(s.params.get("beta", 0) or 0) == 0.0), lrp[0] if lrp else None)
    gb = next((s for s in stores if s.params.get("method") == "guided_backprop"), None)
    rows, ready_lrp = [], []
    for s in [x for x in (lrp0, gb) if x is not None]:
        table = biomarker.find_region_table(ws, s, ATLAS)
        label = biomarker.method_label(s.params)
        if table is None:
            sec.missing.append(f"{label}: no region metrics: `{_regions_cmd(ws, run, [s])}`.")
            continue
        absolute = biomarker.default_absolute(s.params.get("method", ""))
        rel = biomarker.hippocampal_relevance(table, "both", "sum", absolute=absolute)
        points = biomarker.scan_points(preds, rel, volume, split=SPLIT)
        res = biomarker.group_stats(points, n_permutations=PERMUTATIONS, n_boot=PERMUTATIONS)
        tp = res.loc["TP"]
        what = "susceptibility (|gradient| sum)" if absolute else "relevance sum"
        fig = biomarker.scatter_figure(
            points, x_title=volume.attrs.get("label", "hippocampal volume"), y_title=f"hippocampal {what}",
            title=(f"{label} · TP: r = {biomarker.format_r(tp['r'])}, {biomarker.p_text(tp['p_permutation'], PERMUTATIONS)}"
                   if pd.notna(tp["r"]) else f"{label} · fewer than 3 true positives"))
        sec.figures.append(Figure(f"fig9_{s.folder.name}", f"{label}: hippocampal {what} (both hippocampi, {ATLAS}) "
                                  f"against volume, {SPLIT} split; true positives with a least-squares line, false "
                                  "positives drawn as well.", plotly=fig))
        for g, r in res.iterrows():
            rows.append({"method": label, "group": g, "n": int(r["n"]), "Pearson r": _fmt(r["r"]),
                         "permutation p": biomarker.format_p(r["p_permutation"], PERMUTATIONS)
                         if pd.notna(r["p_permutation"]) else "—", "Spearman ρ": _fmt(r["rho"]),
                         "95 % CI of r": f"{_fmt(r['ci_low'], 2)} … {_fmt(r['ci_high'], 2)}",
                         "paper r (TP)": biomarker.format_r(biomarker.PAPER_R["lrp"][0.0]) if g == "TP" and s is lrp0
                         else biomarker.format_r(biomarker.PAPER_R["guided_backprop"]) if g == "TP" else ""})
    for s in lrp:
        if biomarker.find_region_table(ws, s, ATLAS) is not None:
            ready_lrp.append(s)
    if rows:
        sec.tables.append((f"Correlation per outcome group ({PERMUTATIONS:,} permutations, two-sided; percentile "
                           f"bootstrap CI with {PERMUTATIONS:,} resamples)", pd.DataFrame(rows)))
    if len(ready_lrp) >= 2:
        bt = biomarker.beta_table(ws, ready_lrp, preds, volume, atlas=ATLAS, split=SPLIT,
                                  n_permutations=PERMUTATIONS, n_boot=PERMUTATIONS)
        sec.figures.append(Figure("fig9_beta", "Pearson r of hippocampal relevance and volume in the true positives "
                                  "per LRP β, with 95 % bootstrap intervals; dotted: Böhle et al. 2019 (ADNI).",
                                  plotly=biomarker.beta_figure(bt, title="Hippocampal relevance vs volume across β")))
        shown = pd.DataFrame({"β": [f"{b:g}" for b in bt["beta"]], "n": bt["n"], "Pearson r": bt["r"].map(_fmt),
                              "permutation p": [biomarker.format_p(v, PERMUTATIONS) if pd.notna(v) else "—"
                                                for v in bt["p_permutation"]], "Spearman ρ": bt["rho"].map(_fmt),
                              "95 % CI of r": [f"{_fmt(lo, 2)} … {_fmt(hi, 2)}" for lo, hi in
                                               zip(bt["ci_low"], bt["ci_high"])],
                              "paper r": [biomarker.format_r(v) if pd.notna(v) else "—" for v in bt["paper_r"]]})
        sec.tables.append(("r across β (true positives)", shown))
    if lrp0 is None and gb is None:
        sec.missing.append(f"Needs LRP β=0 and guided backprop heatmaps: "
                           f"`{_cmd(ws, f'explain --run {run.id} --method lrp --beta 0')}`, "
                           f"`{_cmd(ws, f'explain --run {run.id} --method guided_backprop')}`.")
    return sec, used


def _evaluation_section(ws, run) -> tuple[Section, dict]:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from lib.analysis import evaluation as ev

    sec = Section("evaluation", SECTIONS["evaluation"])
    request = ev.Evaluation(ws, run, list(ev.DEFAULT_METHODS), ev.Settings())
    results = request.results()
    labels = [m.label for m in request.methods]
    done = [lab for lab in labels if any(lab in results[c] for c in ev.CHECKS)]
    missing = request.missing()
    if missing:
        names = sorted({lab for _, lab in missing}, key=lambda x: (x != "random order", x))
        sec.missing.append(f"With the default settings: {', '.join(names)}: "
                           f"`{_cmd(ws, f'evaluate-maps --run {run.id}')}`.")
    if not done:
        return sec, {}
    table = ev.summary(results, done)
    sec.tables.append(("Ranking (mean rank over AOPC gain, mass accuracy, voxel AUC and pointing game; a failed "
                       "sanity check ranks last)", table.round(3)))
    chance = ev.chance_levels(results)
    if chance:
        sec.text.append("Chance levels: " + ", ".join(f"{k} {v:.3f}" for k, v in chance.items()) + ".")
    curves = ev.aopc_curves(results)
    if not curves.empty:
        fig = go.Figure()
        for i, (lab, g) in enumerate(curves.groupby("label", sort=False)):
            fig.add_trace(go.Scatter(x=g["k"], y=g["drop"], mode="lines", name=lab,
                                     line=dict(dash="dash", color="#7f7f7f") if lab == "random order"
                                     else dict(color=PALETTE[i % len(PALETTE)])))
        fig.update_layout(height=400, title="Region perturbation: mean drop of the AD probability",
                          xaxis_title="regions perturbed, k", yaxis_title="output drop",
                          margin=dict(l=10, r=10, t=50, b=10))
        sec.figures.append(Figure("aopc", "Most relevant regions first per method; dashed: the same regions in "
                                  "random order (AOPC, Samek et al. 2017).", plotly=fig))
    st_table = ev.sanity_table(results)
    if not st_table.empty:
        fig = make_subplots(rows=1, cols=3, subplot_titles=("Spearman ρ", "SSIM (|maps|)", "top-k overlap"))
        for i, (lab, g) in enumerate(st_table.groupby("label", sort=False)):
            for col, metric in enumerate(("spearman", "ssim", "topk"), start=1):
                fig.add_trace(go.Scatter(x=g["step"], y=g[metric], mode="lines+markers", name=lab, legendgroup=lab,
                                         showlegend=col == 1, line=dict(color=PALETTE[i % len(PALETTE)])),
                              row=1, col=col)
        fig.update_layout(height=380, title="Sanity check: similarity to the trained model's map as layers are "
                          "randomised (output layer first)", margin=dict(l=10, r=10, t=70, b=10))
        fig.update_xaxes(title_text="randomised down to", tickangle=-40)
        sec.figures.append(Figure("sanity", "Cascading randomisation (Adebayo et al. 2018); a method passes when "
                                  f"|ρ| < {ev.Settings().sanity_threshold:g} with every layer randomised.", plotly=fig))
    s = request.settings
    return sec, {"split": s.split, "scans": len(request.scans["aopc"]), "sanity_scans": len(request.scans["sanity"]),
                 "localisation_scans": len(request.scans["localisation"]), "regions": s.regions,
                 "cube_mm": s.cube_mm, "steps": s.steps, "replacement": s.replacement, "output": s.output,
                 "seed": s.seed, "threshold": s.sanity_threshold, "truth": s.truth, "min_loss": s.min_loss,
                 "methods": done}


def _reviews_section(ws, run) -> Section:
    from lib.reviews import ReviewStore, target_label
    from lib.reviews.agreement import agreement
    from lib.reviews.models import VERDICTS

    sec = Section("reviews", SECTIONS["reviews"])
    try:
        store = ReviewStore.for_workspace(ws)
        try:
            reviews = store.find(run_id=run.id)
            ratings = store.ratings("scan")
        finally:
            store.close()
    except Exception as exc:  # noqa: BLE001 - the report is still useful without the review database
        sec.text.append(f"The review database could not be read: {exc}")
        return sec
    if not reviews:
        sec.text.append(f"No reviews of run {run.id} yet (write them in the review panel of any analysis page).")
    else:
        rows = {}
        for r in reviews:
            row = rows.setdefault(target_label(r.target), {"target": target_label(r.target), "reviews": 0,
                                                           **{v: 0 for v in VERDICTS}, "open": 0})
            row["reviews"] += 1
            if r.verdict in VERDICTS:
                row[r.verdict] += 1
            row["open"] += r.status == "open"
        t = pd.DataFrame(list(rows.values())).sort_values("reviews", ascending=False)
        by = pd.Series([r.verdict or "no verdict" for r in reviews]).value_counts()
        sec.text.append(f"{len(reviews)} reviews of run {run.id} by {len({r.author for r in reviews})} reviewer(s) on "
                        f"{len(rows)} targets: " + ", ".join(f"{k} {v}" for k, v in by.items()) + ".")
        sec.tables.append(("Verdicts per target", t))
    res = agreement(ratings)
    if res["n_targets"]:
        fl = res["fleiss"]
        sec.text.append(f"Agreement on scan verdicts (all runs of the workspace, each rater's latest verdict): "
                        f"{res['n_targets']} scans rated by two or more of {res['n_raters']} raters; Fleiss' κ = "
                        + ("—" if fl is None or np.isnan(fl) else f"{fl:.2f}") + ".")
        if len(res["pairs"]):
            sec.tables.append(("Cohen's κ per pair of raters", res["pairs"].round(3)))
    else:
        sec.text.append("No scan has verdicts from two raters yet, so there is no agreement (κ) to report.")
    return sec


# --------------------------------------------------------------------------------------------- methods paragraph
def stored_settings(ws: Workspace, run, stores, atlas, evaluation: dict, biomarker: dict) -> dict:
    """Every setting the report's results depend on, as stored by the run and the caches."""
    tc = run.config.get("train", {})
    parts = run.config.get("parts", {})
    summ = run.summary() or {}
    return {
        "run": run.id, "checkpoint_sha256": run.checkpoint_hash() if run.best_checkpoint.exists() else None,
        "model": tc.get("model"), "resolution_mm": run.config.get("resolution"),
        "input_shape": run.config.get("input_shape"), "train": tc, "normaliser": run.config.get("normaliser"),
        "subjects_per_part": {k: len(v) for k, v in parts.items()}, "best_epoch": summ.get("best_epoch"),
        "epochs_run": summ.get("epochs_run"), "stopped": summ.get("stopped"), "torch": run.config.get("torch"),
        "cohort_fingerprint": run.config.get("cohort_fingerprint"), "workspace": ws.name, "workspace_kind": ws.kind,
        "n_scans": ws.config.get("n_scans"), "workspace_resolution_mm": ws.config.get("resolution"),
        "demo_config": ws.config.get("demo_config") if ws.is_demo else None, "split": _split_settings(ws),
        "heatmaps": [{"store": s.folder.name, "label": _store_label(s), "method": s.params.get("method"),
                      "params": {k: v for k, v in s.params.items() if k != "method"},
                      "target": s.meta.get("target", "AD"), "scans": len(s)} for s in stores],
        "atlas": {"name": atlas.name, "regions": int(atlas.n_regions), "resolution_mm": atlas.resolution}
        if atlas is not None else None,
        "split_analysed": SPLIT, "top_k": TOP_K, "overlap_k": OVERLAP_K, "permutations": PERMUTATIONS,
        "fingerprint_min_score": FINGERPRINT_MIN_SCORE, "crosshair_mni": list(CROSSHAIR_MNI),
        "biomarker": biomarker, "evaluation": evaluation,
    }


def _split_settings(ws: Workspace) -> dict | None:
    d = atomic.read_json(ws.splits_json)
    if not d:
        return None
    return {k: d[k] for k in ("test_fraction", "validation_fraction", "k_folds", "seed", "balanced_test") if k in d}


def _heatmap_settings(stores: list[dict]) -> str:
    """Each method's stored parameters, those shared by all its stores said once (LRP over several β)."""
    by_method: dict[str, list[dict]] = {}
    for h in stores:
        by_method.setdefault(str(h["method"]), []).append(h)
    out = []
    for hs in by_method.values():
        shared = {k: v for k, v in hs[0]["params"].items() if all(h["params"].get(k, object()) == v for h in hs)}
        own = [", ".join(f"{k} = {v}" for k, v in sorted(h["params"].items()) if k not in shared) for h in hs]
        labels = "; ".join(f"{h['label']}" + (f" ({o})" if o else "") for h, o in zip(hs, own))
        common = ", ".join(f"{k} = {v}" for k, v in sorted(shared.items())) or "defaults"
        targets = sorted({h["target"] for h in hs})
        out.append(f"{labels} ({common}; class {', '.join(targets)} explained; "
                   f"{', '.join(sorted({str(h['scans']) for h in hs}))} scans)")
    return "; ".join(out)


def methods_paragraph(s: dict) -> str:
    """The methods as prose, every number taken from ``s`` (:func:`stored_settings`)."""
    t = s["train"]
    n = s["subjects_per_part"]
    shift = t.get("shift_voxels")
    text = [
        f"We trained the {t.get('model')} 3D CNN (run {s['run']}) on {s['workspace']} ({s['n_scans']} scans; "
        f"{s['workspace_kind']} workspace, cohort fingerprint {s['cohort_fingerprint']}), resampled to a "
        f"{s['resolution_mm']:g} mm MNI grid of {'×'.join(str(v) for v in s['input_shape'] or [])} voxels. Subjects were split "
        f"without overlap into {n.get('train', 0)} training, {n.get('validation', 0)} validation and {n.get('test', 0)} "
        f"test subjects" + (f" (cross-validation fold {t['fold']})" if t.get("fold") is not None else "")
        + (f"; the workspace split holds out {sp['test_fraction']:g} of the subjects for testing and "
           f"{sp['validation_fraction']:g} for validation ({'as many AD as HC test subjects, ' if sp.get('balanced_test') else ''}"
           f"{sp.get('k_folds')} folds, seed {sp.get('seed')})" if (sp := s.get("split")) and "test_fraction" in sp else "")
        + ".",
        f"Training used Adam with learning rate {t.get('lr'):g}, weight decay {t.get('weight_decay'):g}, batch size "
        f"{t.get('batch_size')}, at most {t.get('max_epochs')} epochs with early stopping after {t.get('patience')} "
        f"epochs without improvement of the validation balanced accuracy, "
        f"{'class-weighted' if t.get('class_weighted') else 'unweighted'} cross-entropy, random left–right flips "
        f"(p = {t.get('flip_p'):g}) and translations ({'2 mm' if shift is None else f'{shift} voxels'}), "
        f"{t.get('normalisation')} intensity normalisation ({t.get('scan_scaling')} scan scaling), seed {t.get('seed')}"
        f"{', mixed precision on CUDA' if t.get('amp') else ''}; the checkpoint of epoch {(s['best_epoch'] or 0) + 1} "
        f"(of {s['epochs_run']}, stopped {s['stopped']}; SHA-256 {str(s['checkpoint_sha256'])[:16]}…) was analysed"
        f" (PyTorch {s['torch']}).",
    ]
    if s.get("demo_config"):
        text.insert(1, "The cohort is the synthetic demo of this project (python -m lib demo; "
                    + ", ".join(f"{k} = {v}" for k, v in sorted(s["demo_config"].items())) + ").")
    if s["heatmaps"]:
        text.append(f"Heatmaps were computed for every scan with: {_heatmap_settings(s['heatmaps'])}. Group maps average the {s['split_analysed']} "
                    "split per diagnosis and outcome (TP, FP, TN, FN) and are shown on the paper's shared scale "
                    "(50th–99.5th percentile of the average AD map within the brain).")
    if s["atlas"]:
        a = s["atlas"]
        text.append(f"Relevance was summed per region of the {a['name']} atlas ({a['regions']} regions on the "
                    f"{a['resolution_mm']:g} mm grid); density is the sum per voxel, gain the scan's region sum ÷ the "
                    f"mean HC sum of the region; the top {s['top_k']} regions are ranked by the AD (or TP) mean, "
                    f"density estimates are Gaussian kernel estimates of the scans' values, robustness is the overlap "
                    f"of the top {s['overlap_k']} regions, and AD vs HC tests are Mann–Whitney U with "
                    "Benjamini–Hochberg FDR correction over regions.")
    if s["biomarker"]:
        text.append(f"For Fig 9 the relevance summed over both hippocampi was correlated with {s['biomarker']['volume']} "
                    f"in each outcome group of the {s['split_analysed']} split (Pearson r, two-sided permutation test "
                    f"with {s['permutations']:,} permutations, Spearman ρ, percentile bootstrap 95 % CI with "
                    f"{s['permutations']:,} resamples); gradient maps were read as absolute values.")
    e = s["evaluation"]
    if e:
        text.append(f"The explanation methods ({', '.join(e['methods'])}) were evaluated on {e['scans']} scans of the "
                    f"{e['split']} split by region perturbation ({e['regions']} of {e['cube_mm']:g} mm, {e['steps']} "
                    f"steps, {e['replacement']} replacement, f = AD {e['output']}; AOPC against a random order), a "
                    f"cascading randomisation sanity check on {e['sanity_scans']} scans (pass: |ρ| < {e['threshold']:g})"
                    + (f" and localisation of the known atrophy (local volume loss ≥ {e['min_loss']:.0%}) on "
                       f"{e['localisation_scans']} scans" if e["localisation_scans"] else "")
                    + f"; seed {e['seed']}.")
    return " ".join(text)


# --------------------------------------------------------------------------------------------- building
def build(ws: Workspace, run, progress: Progress | None = None) -> Report:
    """Gather every section of ``run``'s report from the caches (nothing heavy is computed)."""
    from lib.analysis import region_tables as rt
    from lib.views import viewer
    from lib.analysis.region_analysis import atrophied_regions

    tick = progress or (lambda d, t, m: None)
    total = 10
    tick(0, total, "content key")
    key = content_key(ws, run)
    preds = run.predictions()
    sha = run.checkpoint_hash() if run.best_checkpoint.exists() else "-"
    stores = viewer.stores_of(ws, sha) if sha != "-" else []
    atlas = rt.get_atlas(ws, ATLAS, run.grid.resolution)
    truth = atrophied_regions(ws) if ws.is_demo else set()
    sections = []
    tick(1, total, "cohort")
    sections.append(_cohort_section(ws, run, preds))
    tick(2, total, "training")
    sections.append(_training_section(ws, run))
    if preds is None:
        for k in list(SECTIONS)[2:-1]:
            sections.append(Section(k, SECTIONS[k], missing=[f"No predictions of run {run.id} yet: "
                                                              f"`{_cmd(ws, f'predict --run {run.id}')}`."]))
        ev_settings, bm = {}, {}
    else:
        tick(3, total, "group maps")
        sections.append(_group_maps_section(ws, run, stores, preds))
        tick(4, total, "region tables")
        tables, missing = _region_tables(ws, run, stores, atlas)
        by_store = {s.folder.name: t for s, _, t in tables}
        tick(5, total, "top regions")
        sections.append(_top_regions_section(ws, run, tables, missing, truth))
        sections.append(_fingerprints_section(ws, run, tables, missing, truth))
        tick(6, total, "robustness")
        sections.append(_robustness_section(ws, run, sha, atlas, by_store))
        tick(7, total, "Fig 9")
        bsec, bm = _biomarker_section(ws, run, stores, preds)
        sections.append(bsec)
        tick(8, total, "evaluation")
        esec, ev_settings = _evaluation_section(ws, run)
        sections.append(esec)
    tick(9, total, "reviews")
    sections.append(_reviews_section(ws, run))
    settings = stored_settings(ws, run, stores, atlas, ev_settings, bm)
    tick(total, total, "gathered")
    return Report(run.id, ws.name, key, time.time(), methods_paragraph(settings), settings, sections)


# --------------------------------------------------------------------------------------------- matplotlib
_DASH = {"dash": "--", "dot": ":", "dashdot": "-.", "longdash": "--", "solid": "-", None: "-"}
_SYMBOL = {"circle": "o", "square": "s", "star": "*", "diamond": "D", "x": "x", "cross": "P", "triangle-up": "^"}


def _colour(c, default="#1f77b4"):
    if c is None or not isinstance(c, str):
        return default
    m = re.match(r"rgba?\(([^)]*)\)", c.replace(" ", ""))
    if m:
        v = [float(x) for x in m.group(1).split(",")]
        return (v[0] / 255, v[1] / 255, v[2] / 255, v[3] if len(v) > 3 else 1.0)
    return c


def _plain(v):
    """Plotly's JSON with its base64 typed arrays (``{"dtype", "bdata", "shape"}``) decoded to lists."""
    if isinstance(v, dict):
        if "bdata" in v and "dtype" in v:
            a = np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
            if v.get("shape"):
                a = a.reshape([int(n) for n in str(v["shape"]).split(",")])
            return a.tolist()
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, np.ndarray):
        return v.tolist()
    return v


def to_matplotlib(fig, size: tuple[float, float] | None = None, bottom: float = 0.0):
    """Redraw a plotly figure of this project (scatter, filled shapes, bars, heatmaps, reference lines,
    subplots in one row) with matplotlib, for the PDF and the SVG files. ``size`` in inches (default: from
    the plotly layout); ``bottom``: share of the height left free (for a caption)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = _plain(json.loads(fig.to_json()))
    data, layout = d.get("data", []), d.get("layout", {})
    pairs = []
    for t in data:
        p = (t.get("xaxis", "x"), t.get("yaxis", "y"))
        if p not in pairs:
            pairs.append(p)
    pairs = pairs or [("x", "y")]
    height = min(max(float(layout.get("height") or 420) / 90, 3.2), 10)
    width = 11 if len(pairs) > 1 or height > 5 else 8
    mfig, axes = plt.subplots(1, len(pairs), figsize=size or (width, height), squeeze=False)
    axes = axes[0]
    ax_of = {p: axes[i] for i, p in enumerate(pairs)}

    def lay(axis_id: str, kind: str) -> dict:
        return layout.get(f"{kind}axis{axis_id[1:]}", {}) or {}

    for t in data:
        ax = ax_of[(t.get("xaxis", "x"), t.get("yaxis", "y"))]
        kind = t.get("type", "scatter")
        name = t.get("name")
        label = name if t.get("showlegend", True) and name and kind != "heatmap" else None
        if kind == "scatter":
            x, y = list(t.get("x", [])), list(t.get("y", []))
            line, marker = t.get("line", {}) or {}, t.get("marker", {}) or {}
            colour = _colour(line.get("color") or (marker.get("color") if isinstance(marker.get("color"), str) else None))
            mode = t.get("mode", "lines+markers")
            if t.get("fill") == "toself":
                seg_x, seg_y = [], []
                for xv, yv in zip(x + [None], y + [None]):
                    if xv is None or yv is None:
                        if seg_x:
                            ax.fill(seg_x, seg_y, color=_colour(t.get("fillcolor"), colour), lw=0.5,
                                    label=label)
                            label = None
                        seg_x, seg_y = [], []
                    else:
                        seg_x.append(xv)
                        seg_y.append(yv)
                continue
            xs = [np.nan if v is None else v for v in x]
            ys = np.array([np.nan if v is None else v for v in y], dtype=float)
            if "lines" in mode:
                ax.plot(xs, ys, _DASH.get(line.get("dash"), "-"), color=colour, lw=line.get("width", 1.8) * 0.8,
                        marker="o" if "markers" in mode else None, ms=3, label=label)
                label = None
            if "markers" in mode and "lines" not in mode:
                sym = marker.get("symbol", "circle")
                sym = sym if isinstance(sym, str) else "circle"
                filled = "open" not in sym
                mk = _SYMBOL.get(sym.replace("-open", ""), "o")
                ax.scatter(xs, ys, s=(marker.get("size") or 8) ** 2 * 0.5, marker=mk,
                           facecolors=colour if filled else "none", edgecolors=colour if not filled else "white",
                           linewidths=0.6, label=label, zorder=3)
            err = t.get("error_y") or {}
            if err.get("array") is not None:
                up = np.asarray(err["array"], float)
                lo = np.asarray(err.get("arrayminus", err["array"]), float)
                ax.errorbar(xs, ys, yerr=[lo, up], fmt="none", ecolor=colour, lw=1)
        elif kind == "bar":
            mc = (t.get("marker") or {}).get("color")
            ax.bar([str(v) for v in t.get("x", [])], t.get("y", []),
                   color=[_colour(c) for c in mc] if isinstance(mc, (list, tuple)) else _colour(mc), label=label)
        elif kind == "heatmap":
            z = np.asarray(t.get("z"), float)
            im = ax.imshow(z, cmap=t.get("colorscale") if isinstance(t.get("colorscale"), str) else "Blues",
                           vmin=t.get("zmin"), vmax=t.get("zmax"), aspect="auto")
            xl, yl = t.get("x"), t.get("y")
            if xl is not None:
                ax.set_xticks(range(len(xl)), [str(v) for v in xl], rotation=30, ha="right", fontsize=8)
            if yl is not None:
                ax.set_yticks(range(len(yl)), [str(v) for v in yl], fontsize=8)
            text = t.get("text")
            if text is not None:
                for i, row in enumerate(text):
                    for j, v in enumerate(row):
                        if v not in ("", None):
                            ax.text(j, i, str(v).replace("<br>", "\n"), ha="center", va="center", fontsize=8,
                                    color="white" if np.nan_to_num(z[i, j]) > 0.6 * np.nanmax(z) else "black")
            if t.get("showscale", True) is not False and t.get("zmax") is not None:
                mfig.colorbar(im, ax=ax, fraction=0.04)
            ax.heatmap = True
    for (xa, ya), ax in ax_of.items():
        xl, yl = lay(xa, "x"), lay(ya, "y")
        if (xl.get("title") or {}).get("text"):
            ax.set_xlabel(xl["title"]["text"])
        if (yl.get("title") or {}).get("text"):
            ax.set_ylabel(yl["title"]["text"])
        if getattr(ax, "heatmap", False):
            continue
        if yl.get("tickvals") is not None:
            ax.set_yticks(yl["tickvals"], yl.get("ticktext") or yl["tickvals"], fontsize=7)
        if yl.get("range") is not None:
            ax.set_ylim(*yl["range"])
        elif yl.get("autorange") == "reversed":
            ax.invert_yaxis()
        if xl.get("range") is not None:
            ax.set_xlim(*xl["range"])
        if xl.get("tickangle"):
            ax.tick_params(axis="x", labelrotation=-float(xl["tickangle"]), labelsize=7)
        ax.grid(True, color="#eee", lw=0.6)
        ax.set_axisbelow(True)
    for shape in layout.get("shapes", []) or []:
        ax = ax_of.get((str(shape.get("xref", "x")).split(" ")[0], str(shape.get("yref", "y")).split(" ")[0]))
        if ax is None:
            ax = axes[0]
        ls = _DASH.get((shape.get("line") or {}).get("dash"), "-")
        c = _colour((shape.get("line") or {}).get("color"), "#444")
        if shape.get("y0") == shape.get("y1") and "domain" in str(shape.get("xref", "")) + "paper":
            ax.axhline(shape["y0"], ls=ls, color=c, lw=1)
        elif shape.get("x0") == shape.get("x1"):
            ax.axvline(shape["x0"], ls=ls, color=c, lw=1)
    titles = [a.get("text") for a in layout.get("annotations", []) or []
              if a.get("xref") == "paper" and a.get("yref") == "paper"]
    if len(titles) == len(axes) and len(axes) > 1:
        for ax, txt in zip(axes, titles):
            ax.set_title(txt, fontsize=10)
    title = layout.get("title")
    title = title.get("text") if isinstance(title, dict) else title
    if title:
        mfig.suptitle(title, fontsize=11, x=0.01, ha="left")
    if any(ax.get_legend_handles_labels()[0] for ax in axes):
        handles, labels = [], []
        for ax in axes:
            h, lab = ax.get_legend_handles_labels()
            for hh, ll in zip(h, lab):
                if ll not in labels:
                    handles.append(hh)
                    labels.append(ll)
        mfig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8, frameon=False,
                    bbox_to_anchor=(0.5, bottom))
        mfig.tight_layout(rect=(0, bottom + 0.06 + 0.03 * ((len(labels) - 1) // 4), 1, 0.95))
    else:
        mfig.tight_layout(rect=(0, bottom, 1, 0.95))
    return mfig


def figure_svg(fig: Figure) -> bytes | None:
    """The figure as SVG (plotly charts only: slices are raster images and stay PNG)."""
    if fig.plotly is None:
        return None
    import matplotlib.pyplot as plt

    m = to_matplotlib(fig.plotly)
    buf = io.BytesIO()
    m.savefig(buf, format="svg")
    plt.close(m)
    return buf.getvalue()


# --------------------------------------------------------------------------------------------- HTML
_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}h1{margin-bottom:.2em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0 1em}td,th{border:1px solid #ddd;padding:3px 7px;
text-align:right}th{background:#f5f5f5}td:first-child,th:first-child{text-align:left}.missing{background:#fff6e0;
border-left:4px solid #f0a000;padding:.5em 1em;margin:.5em 0}.caption{color:#555;font-size:.9em}
figure{margin:1em 0}figure img{max-width:100%}code{background:#f3f3f3;padding:1px 4px;font-size:.85em}
nav a{margin-right:1em}.methods{background:#f7f9fc;padding:1em;border-left:4px solid #4e79a7}
.dl{font-size:.8em;margin-left:1em}
"""


def _inline(text: str) -> str:
    """Plain text with `code` spans, escaped."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def to_html(report: Report, svgs: dict[str, bytes] | None = None) -> str:
    import plotly.io as pio
    from plotly.offline import get_plotlyjs

    svgs = svgs or {}
    out = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Report · {html.escape(report.run_id)}"
           f"</title><style>{_CSS}</style><script>{get_plotlyjs()}</script></head><body>",
           f"<h1>Run report · {html.escape(report.run_id)}</h1>",
           f"<p class='caption'>Workspace {html.escape(report.workspace)} · generated "
           f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(report.created))} · content key {report.key}</p>",
           "<nav>" + "".join(f"<a href='#{s.key}'>{html.escape(s.title)}</a>" for s in report.sections) + "</nav>",
           "<h2 id='methods'>Methods</h2>",
           f"<p class='methods' id='methods-paragraph'>{html.escape(report.methods)}</p>",
           "<script type='application/json' id='report-settings'>"
           + json.dumps(report.settings, default=str).replace("</", "<\\/") + "</script>"]
    for s in report.sections:
        state = "filled" if s.filled else "missing"
        out.append(f"<section id='{s.key}' data-section='{s.key}' data-state='{state}'><h2>{html.escape(s.title)}</h2>")
        for m in s.missing:
            out.append(f"<div class='missing'>Not computed yet. {_inline(m)}</div>")
        for p in s.text:
            out.append(f"<p>{_inline(p)}</p>")
        for caption, t in s.tables:
            out.append(f"<p class='caption'><b>{html.escape(caption)}</b></p>"
                       + t.to_html(index=False, border=0, na_rep="—", float_format=lambda v: _fmt(v)))
        for f in s.figures:
            out.append(f"<figure data-figure='{f.name}'>")
            if f.plotly is not None:
                out.append(pio.to_html(f.plotly, include_plotlyjs=False, full_html=False,
                                       config={"displaylogo": False}, div_id=f"fig-{f.name}"))
            else:
                out.append(f"<img alt='{html.escape(f.name)}' src='data:image/png;base64,"
                           f"{base64.b64encode(f.png).decode()}'>")
            link = ""
            if f.name in svgs:
                link = (f"<a class='dl' download='{f.name}.svg' href='data:image/svg+xml;base64,"
                        f"{base64.b64encode(svgs[f.name]).decode()}'>SVG</a>")
            elif f.png is not None:
                link = (f"<a class='dl' download='{f.name}.png' href='data:image/png;base64,"
                        f"{base64.b64encode(f.png).decode()}'>PNG</a>")
            out.append(f"<figcaption class='caption'>{html.escape(f.caption)}{link}</figcaption></figure>")
        out.append("</section>")
    out.append("</body></html>")
    return "\n".join(out)


# --------------------------------------------------------------------------------------------- PDF
A4_PORTRAIT = (8.27, 11.69)
A4_LANDSCAPE = (11.69, 8.27)


def _text_page(pdf, title: str, blocks: list[tuple[str, str]]) -> None:
    """Pages of wrapped text (``("h"|"p"|"mono", text)`` blocks), A4 portrait."""
    import textwrap

    import matplotlib.pyplot as plt

    lines: list[tuple[str, str]] = [("title", title)]
    for kind, text in blocks:
        if kind == "mono":
            lines += [("mono", ln) for ln in text.splitlines()] + [("p", "")]
        elif kind == "h":
            lines += [("h", ln) for ln in textwrap.wrap(text, 95)]
        else:
            lines += [("p", ln) for ln in textwrap.wrap(text, 105)] + [("p", "")]
    per_page = 60
    for start in range(0, max(len(lines), 1), per_page):
        fig = plt.figure(figsize=A4_PORTRAIT)
        y = 0.95
        for kind, ln in lines[start:start + per_page]:
            style = {"title": dict(fontsize=15, weight="bold"), "h": dict(fontsize=9.5, weight="bold"),
                     "mono": dict(fontsize=6.3, family="monospace"), "p": dict(fontsize=8.5)}[kind]
            fig.text(0.07, y, ln, va="top", **style)
            y -= 0.028 if kind == "title" else 0.0145
        pdf.savefig(fig)
        plt.close(fig)


def _table_text(t: pd.DataFrame) -> str:
    shown = t.copy()
    for c in shown.columns:
        if pd.api.types.is_float_dtype(shown[c]):
            shown[c] = shown[c].map(_fmt)
    shown.columns = [str(c)[:18] for c in shown.columns]
    return shown.astype(str).map(lambda v: v if len(v) <= 34 else v[:33] + "…").to_string(index=False)


def _figure_page(f: Figure, heading: str):
    """One figure on an A4 page (portrait for tall charts, landscape otherwise) with its caption below."""
    import textwrap

    import matplotlib.pyplot as plt
    from PIL import Image

    if f.plotly is not None:
        tall = float(f.plotly.layout.height or 420) > 560
        size = A4_PORTRAIT if tall else A4_LANDSCAPE
        fig = to_matplotlib(f.plotly, size=size, bottom=0.08)
    else:
        img = Image.open(io.BytesIO(f.png))
        size = A4_PORTRAIT if img.height > img.width * 1.2 else A4_LANDSCAPE
        fig = plt.figure(figsize=size)
        ax = fig.add_axes((0.04, 0.1, 0.92, 0.86))
        ax.imshow(np.asarray(img.convert("RGB")), interpolation="lanczos")
        ax.axis("off")
    width = 135 if size == A4_PORTRAIT else 190
    fig.text(0.04, 0.012, "\n".join(textwrap.wrap(f"{heading} · {f.caption}", width)[:5]), fontsize=7,
             va="bottom", color="#333")
    return fig


def to_pdf(report: Report, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    with atomic.atomic_path(path) as tmp, PdfPages(tmp) as pdf:
        _text_page(pdf, f"Run report · {report.run_id}", [
            ("p", f"Workspace {report.workspace} · generated "
                  f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(report.created))} · content key {report.key}"),
            ("h", "Methods"), ("p", report.methods),
            ("h", "Contents"), ("p", " · ".join(s.title for s in report.sections))])
        for s in report.sections:
            blocks = [("p", "Not computed yet. " + m.replace("`", "")) for m in s.missing]
            blocks += [("p", p.replace("`", "")) for p in s.text]
            for caption, t in s.tables:
                blocks += [("h", caption), ("mono", _table_text(t))]
            if blocks or not s.figures:
                _text_page(pdf, s.title, blocks or [("p", "Nothing to show.")])
            for f in s.figures:
                fig = _figure_page(f, s.title)
                pdf.savefig(fig)
                plt.close(fig)
        meta = pdf.infodict()
        meta["Title"] = f"Run report {report.run_id}"


# --------------------------------------------------------------------------------------------- files
def write(ws: Workspace, run, *, pdf: bool = True, progress: Progress | None = None) -> dict[str, Path]:
    """Build the report into the cache (unless the same content is cached already) and return its files:
    ``html``, ``pdf`` (if asked) and ``figures`` (SVG of every chart, PNG of every slice panel)."""
    tick = progress or (lambda d, t, m: None)
    key = content_key(ws, run)
    have = cached(ws, run, key)
    if have is not None and (not pdf or "pdf" in have):
        tick(1, 1, "cached")
        return have
    report = build(ws, run, progress=lambda d, t, m: tick(d, t + 4, m))
    folder = cache_folder(ws, report.key)
    figures = folder / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    tick(10, 14, "SVG figures")
    svgs = {}
    for s in report.sections:
        for f in s.figures:
            svg = figure_svg(f)
            if svg is not None:
                svgs[f.name] = svg
                atomic.write_text(figures / f"{f.name}.svg", svg.decode())
            elif f.png is not None:
                with atomic.atomic_path(figures / f"{f.name}.png") as tmp:
                    tmp.write_bytes(f.png)
    atomic.write_json(folder / "settings.json", report.settings)
    if pdf:
        tick(12, 14, "PDF")
        to_pdf(report, folder / f"{run.id}_report.pdf")
    tick(13, 14, "HTML")
    # the HTML last: its presence marks the cached report complete (see cached())
    atomic.write_text(folder / f"{run.id}_report.html", to_html(report, svgs))
    tick(14, 14, "done")
    return cached(ws, run, report.key)


def figures_zip(files: dict[str, Path]) -> bytes:
    """The report's figures folder (SVG charts, PNG slice panels) as one zip, for a download."""
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(Path(files["figures"]).iterdir()) if "figures" in files else []:
            z.write(f, f.name)
    return buf.getvalue()


def export(files: dict[str, Path], out: Path) -> list[Path]:
    """Copy a cached report to ``out`` (the HTML; the PDF and the figures folder beside it)."""
    out = Path(out)
    written = []
    with atomic.atomic_path(out) as tmp:
        shutil.copyfile(files["html"], tmp)
    written.append(out)
    if "pdf" in files:
        target = out.with_suffix(".pdf")
        with atomic.atomic_path(target) as tmp:
            shutil.copyfile(files["pdf"], tmp)
        written.append(target)
    if "figures" in files:
        target = out.parent / f"{out.stem}_figures"
        tmp = out.parent / f".{out.stem}_figures.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(files["figures"], tmp)
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
        written.append(target)
    return written
