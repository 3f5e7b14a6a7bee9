"""The report's sections, each gathered from the caches the analysis pages fill (nothing heavy is computed):
a section whose results are missing says so and names the command that computes them."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lib.analysis import biomarker
from lib.analysis import evaluation as ev
from lib.analysis import region_analysis as ra
from lib.analysis import region_tables as rt
from lib.data.scans import load_cohort
from lib.data.templates import template
from lib.data.workspace import Workspace
from lib.reviews import ReviewStore, target_label
from lib.reviews.agreement import agreement
from lib.reviews.models import VERDICTS
from lib.views import monitor
from lib.views import region_figures as rf
from lib.views import viewer
from lib.views.render import colorbar, ortho_image, stack, titled
from lib.explain.catalogue import absolute_by_default

from lib.views.report.measure import measure_section
from lib.views.report.model import (ATLAS, CROSSHAIR_MNI, FINGERPRINT_MIN_SCORE, OVERLAP_K, PALETTE, PERMUTATIONS,
                                    SECTIONS, SPLIT, TOP_K, Figure, Section, _cmd, _fmt, _png_of, _store_label,
                                    fig9_stores)


def _cohort_section(ws: Workspace, run, preds: pd.DataFrame | None) -> Section:
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
        scored = monitor.evaluation(run, split)
        if scored and scored.get("n"):
            m = scored["metrics"]
            cm = np.asarray(scored["confusion"])
            rows.append({"split": split, "scans": scored["n"], **{k: round(float(m[k]), 3) for k in
                         ("balanced_accuracy", "accuracy", "auc", "sensitivity", "specificity")},
                         "TN": int(cm[0, 0]), "FP": int(cm[0, 1]), "FN": int(cm[1, 0]), "TP": int(cm[1, 1])})
            if split == SPLIT:
                roc = scored["roc"]
                f = go.Figure([go.Scatter(x=roc["fpr"], y=roc["tpr"], mode="lines", line=dict(shape="hv", width=2.5),
                                          name=f"AUC {m['auc']:.3f}"),
                               go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dot", color="grey"),
                                          showlegend=False)])
                f.update_layout(height=360, width=460, margin=dict(l=10, r=10, t=50, b=10),
                                title=f"ROC · {split} split ({run.classes.positive} positive)", xaxis_title="false positive rate",
                                yaxis_title="true positive rate")
                sec.figures.append(Figure("roc_test", f"ROC of the best checkpoint on the {split} split.", plotly=f))
    if rows:
        sec.tables.append((f"Metrics of the best checkpoint (threshold 0.5 on the {run.classes.positive} probability)", pd.DataFrame(rows)))
    else:
        sec.missing.append(f"No predictions yet: `{_cmd(ws, f'predict --run {run.id}')}`.")
    return sec



def _group_maps_section(ws: Workspace, run, stores, preds) -> Section:
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
        folder = store.folder / "group_means" / viewer.grouping_key(store, table, None, run.classes)
        if (folder / "index.json").exists():
            means = viewer.CachedGroupMeans(folder)
        elif viewer.is_small(store, table):   # what the Heatmaps page averages while it waits (about a second)
            means = viewer.cached_group_means(store, table, classes=run.classes)
        else:
            sec.missing.append(f"{label}: group means not computed: "
                               f"`{_cmd(ws, f'group-means --run {run.id} --store {store.folder.name}')}`.")
            continue
        panels, ov = [], None
        for g in (*run.classes.names[::-1], "TP", "FP", "TN", "FN"):
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
            f"group_maps_{store.folder.name}", f"{label}: mean maps of the {SPLIT} split per group ({run.classes.positive}, {run.classes.negative}, and "
            f"the outcomes TP, FP, TN, FN) at MNI ({x:.0f}, {y:.0f}, {z:.0f}) mm over the ICBM152 2009c template; "
            f"the paper's scale shared by all groups: black below {means.paper.vmin:.3g} (50th percentile of the "
            f"average {means.scale_from} map), white above {means.paper.vmax:.3g} (99.5th).",
            png=_png_of(titled(img, label))))
    return sec



def _region_tables(ws: Workspace, run, stores, atlas):
    """(store, annotated test-split table) for each store with a cached region table; and the missing ones."""
    preds = run.predictions()
    have, missing = [], []
    for s in stores:
        path = rt.find_table(ws, s, atlas)
        if path is None:
            missing.append(s)
            continue
        absolute = absolute_by_default(s.params.get("method", ""))
        have.append((s, path, ra.annotate(rt.read_table(path), preds, split=SPLIT, absolute=absolute,
                                          classes=run.classes)))
    return have, missing



def _regions_cmd(ws, run, stores) -> str:
    return _cmd(ws, f"regions --run {run.id} --store {' '.join(s.folder.name for s in stores)} --atlas {ATLAS}")



def _top_regions_section(ws, run, tables, missing, truth) -> Section:
    sec = Section("top_regions", SECTIONS["top_regions"])
    if missing:
        sec.missing.append(f"No region metrics of {', '.join(_store_label(s) for s in missing)} on {ATLAS}: "
                           f"`{_regions_cmd(ws, run, missing)}`.")
    elif not tables:   # no heatmaps at all: say so rather than leave the section empty
        sec.missing.append(f"Needs heatmaps: `{_cmd(ws, f'explain --run {run.id} --method lrp --beta 0')}`.")
    for store, _, table in tables:
        label = _store_label(store)
        for metric, groups in (("density", run.classes.names[::-1]), ("gain", ("TP", "TN"))):
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
                   + (f"Gain = the scan's region sum ÷ the mean {run.classes.negative} sum there; dashed: gain 1. " if metric == "gain"
                      else "") + ("★ = a region the demo generator atrophied." if truth else ""))
            sec.figures.append(Figure(f"top_{metric}_{store.folder.name}", cap, plotly=fig))
            if truth:
                o = ra.truth_overlap(regions[:10], truth)
                sec.text.append(f"{label}, {metric}: {o['hits']} of the top {o['k']} regions are regions the demo "
                                "generator atrophied.")
        res = ra.region_tests(table, "fraction", classes=run.classes)
        n_sig = int(res["significant"].sum())
        sec.text.append(f"{label}: {n_sig} of {int(res['p'].notna().sum())} regions differ between "
                        f"{run.classes.positive} and {run.classes.negative} in their "
                        "share of the scan's relevance (Mann–Whitney U, Benjamini–Hochberg FDR 0.05).")
    return sec



def _fingerprints_section(ws, run, tables, missing, truth) -> Section:
    sec = Section("fingerprints", SECTIONS["fingerprints"])
    if not tables:
        sec.missing.append(f"Needs region metrics: `{_regions_cmd(ws, run, missing)}`." if missing
                           else f"Needs heatmaps: `{_cmd(ws, f'explain --run {run.id} --method lrp --beta 0')}`.")
        return sec
    store, _, table = tables[0]
    k = run.classes
    regions = list(ra.ranking(table, "density", k.positive).head(TOP_K).index)
    pair = ra.most_different_patients(table, regions, metric="density", min_score=FINGERPRINT_MIN_SCORE, classes=k)
    if pair is None:
        n = len(ra.confident_patients(table, FINGERPRINT_MIN_SCORE, classes=k))
        sec.text.append(f"{n} {k.positive} patient(s) of the {SPLIT} split have a {k.positive} score above "
                        f"{FINGERPRINT_MIN_SCORE}; "
                        "two are needed for the paper's pair of most different patients.")
        return sec
    fp = ra.fingerprints(table, [pair[0], pair[1]], regions, "density")
    fig = rf.region_figure(ra.distributions(table, "density", regions, k.names[::-1]), "density", k.names[::-1],
                           fingerprints=fp,
                           marked=truth, title=f"Fingerprints of {pair[0]} and {pair[1]} · {_store_label(store)}")
    sec.figures.append(Figure("fingerprints", f"The two confident {k.positive} patients ({k.positive} score > "
                              f"{FINGERPRINT_MIN_SCORE}) "
                              f"whose relevance density over the top {len(regions)} regions differs most "
                              f"(cosine distance {pair[2]:.3f}), over the {k.positive} and {k.negative} distributions.", plotly=fig))
    return sec



def _robustness_section(ws, run, sha, atlas, tables_by_store) -> Section:
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
        mats = ra.overlap_matrices(found, k=OVERLAP_K, classes=run.classes)
        sec.figures.append(Figure("overlap_beta", f"Share (%) of the top {OVERLAP_K} regions (by {run.classes.positive} "
                                  "mean) two LRP β "
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
                have[r.id] = ra.annotate(rt.read_table(path), r.predictions(), split=SPLIT, classes=run.classes)
        if len(have) >= 2:
            mo = ra.mean_overlaps(have, k=OVERLAP_K, classes=run.classes)
            sec.tables.append((f"Mean pairwise overlap of the top {OVERLAP_K} regions between the group's runs "
                               "(LRP β=0)", mo))
            sec.figures.append(Figure("overlap_runs", "Overlap between retrainings.", plotly=rf.overlap_figure(
                ra.overlap_matrices(have, k=OVERLAP_K, classes=run.classes), title="Overlap of the top regions between runs (%)")))
        lacking = [r.id for r in members if r.id not in have]
        if lacking:
            sec.missing.append(f"Runs without LRP β=0 region metrics: `{_cmd(ws, 'regions --run ' + ' '.join(lacking) + ' --method lrp --beta 0')}`.")
    return sec



def _biomarker_section(ws, run, stores, preds) -> tuple[Section, dict]:
    if ws.biomarker_measure != "hippocampal_volume":   # the workspace's own measure (lesion load on the MS demo)
        return measure_section(ws, run, stores, preds, ws.biomarker_measure, _regions_cmd)
    sec = Section("biomarker", SECTIONS["biomarker"])
    used = {}
    cohort = load_cohort(ws)
    try:
        volume = biomarker.hippocampal_volumes(ws, cohort, "auto")
    except (ValueError, KeyError) as exc:
        sec.text.append(f"No hippocampal volume: {exc}")
        return sec, used
    used["volume"] = volume.attrs.get("label", "hippocampal volume")
    chosen = fig9_stores(stores)
    rows, ready_lrp = [], []
    for s in chosen:
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
                         "paper r (TP)": biomarker.format_r(biomarker.PAPER_R["lrp"][0.0]) if g == "TP" and s.params.get("method") == "lrp"
                         else biomarker.format_r(biomarker.PAPER_R["guided_backprop"]) if g == "TP" else ""})
    for s in stores:
        if s.params.get("method") == "lrp" and biomarker.find_region_table(ws, s, ATLAS) is not None:
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
    if not chosen:
        sec.missing.append(f"Needs LRP β=0 and guided backprop heatmaps: "
                           f"`{_cmd(ws, f'explain --run {run.id} --method lrp --beta 0')}`, "
                           f"`{_cmd(ws, f'explain --run {run.id} --method guided_backprop')}`.")
    return sec, used



def _evaluation_section(ws, run) -> tuple[Section, dict]:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

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
        fig.update_layout(height=400, title=f"Region perturbation: mean drop of the {run.classes.positive} probability",
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

