"""Biomarkers: hippocampal relevance against hippocampal volume (Böhle et al. 2019 §3.3, Fig 9), and any atlas
region against any numeric column of the cohort table. Computations live in lib.analysis.biomarker; region tables are the
cached ones of lib.analysis.region_tables (computed here when small, by ``python -m lib regions`` when large)."""

from __future__ import annotations

from urllib.parse import urlencode

import numpy as np
import pandas as pd
import streamlit as st

from lib.analysis import biomarker, region_tables
from lib.explain import heatmaps
from lib import jobs
from lib.views import viewer
from pages.common import checkpoint_sha as _checkpoint_sha, cohort_table as _cohort, heatmap_store as _store, predictions_csv as _predictions
from pages.common import allowed, current_workspace, job_progress, locked, missing_for, require_ready_run, submit_job
from pages.review_panel import review_panel
from pages.report_button import report_button

PAPER_BETAS = (0.0, 0.25, 0.5, 0.75, 1.0)
SPLIT_NAMES = {"test": "test split", "validation": "validation split", "train": "training split", "all": "all scans"}
SOURCE_NAMES = {"cohort": "cohort table", "segmentation": "segmentations", "ground_truth": "ground truth (demo)"}
SCAN_GROUPS = {"TP": ["TP"], "TP+FP": ["TP", "FP"], "AD": ["TP", "FN"], "all": ["TP", "FP", "TN", "FN"]}
SCAN_GROUP_NAMES = {"TP": "true positives", "TP+FP": "classified AD (TP+FP)", "AD": "AD patients (TP+FN)",
                    "all": "every scan"}
INLINE_LIMIT = 2e8   # voxels read (scans × grid) up to which a region table is computed while the page waits
PERMUTATIONS = 10_000

ws = current_workspace()
st.title("Biomarkers")
st.caption("Do the heatmaps track biology? Böhle et al. 2019 (Fig 9) correlate the LRP relevance in the hippocampus "
           "with hippocampal volume in correctly classified AD patients: r = −0.560 (permutation p < 0.001), "
           "weaker as β grows, while guided backprop shows none (r = 0.096).")
run = require_ready_run(ws)
report_button(ws, run)


# --------------------------------------------------------------------------- cached loaders
def _mtime(path) -> int:
    return path.stat().st_mtime_ns


@st.cache_data(max_entries=32, show_spinner=False)
def _region_table(folder: str, atlas: str) -> pd.DataFrame | None:
    # a table's key names its store and atlas, so once it exists it never changes
    return biomarker.find_region_table(ws, _store(folder), atlas)


@st.cache_data(max_entries=16, show_spinner=False)
def _region_correlations(preds_file: str, preds_mtime: int, cohort_mtime: int, folder: str, atlas: str, merge: bool,
                         metric: str, absolute: bool, measure_name: str, groups: tuple, split: str,
                         one_per_subject: bool, covariates: tuple) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series]:
    """(scans × regions values of the analysed scans, correlations across regions sorted by p, the measure):
    10,000 permutations per region, computed once per choice (the key names every input's file and version)."""
    table = _region_table(folder, atlas)
    choices = biomarker.region_choices(_atlas(atlas, _store(folder).grid.resolution, False), merge=merge)
    values = biomarker.region_values(table, choices, metric, absolute=absolute)
    p = _predictions(preds_file, preds_mtime)
    measure = pd.to_numeric(cohort.set_index(cohort["scan_id"].astype(str))[measure_name], errors="coerce")
    scans = biomarker.scan_points(p, values.iloc[:, 0], measure, split=split, groups=list(groups),
                                  one_per_subject=one_per_subject)["scan_id"]
    cov = biomarker.covariate_frame(cohort, scans, list(covariates)) if covariates else None
    values = values.reindex(scans)
    corr = biomarker.region_correlations(values, measure, cov, n_permutations=PERMUTATIONS)
    return values, corr, measure


@st.cache_resource(max_entries=4, show_spinner=False)
def _atlas(name: str, resolution: float, merge: bool):
    return region_tables.get_atlas(ws, name, resolution, merge)


sha = _checkpoint_sha(str(run.best_checkpoint), _mtime(run.best_checkpoint))
stores = [_store(str(s.folder)) for s in viewer.stores_of(ws, sha)]
preds = _predictions(str(run.dir / "predictions.csv"), _mtime(run.dir / "predictions.csv"))
cohort = _cohort(str(ws.cohort_csv), _mtime(ws.cohort_csv))
lrp_stores = [s for s in stores if s.params.get("method") == "lrp"]
gb_store = next((s for s in stores if s.params.get("method") == "guided_backprop"), None)


def _submit_explain(method: str, beta: float | None = None) -> bool:
    params = {"beta": beta} if beta is not None else {}
    args = ["--run", run.id, "--method", method] + (["--beta", f"{beta:g}"] if beta is not None else [])
    return submit_job(ws, "explain", args, key=heatmaps.job_key(ws, run, method, **params)) is not None


def _active(command: str) -> list:
    return [j for j in jobs.list_jobs(ws, command) if j.active and run.id in j.record.get("args", [])]


for job in _active("explain") + _active("regions"):
    job_progress(job.id, ws, rerun_when_done=True, key="biomarker")
if not lrp_stores and gb_store is None:
    st.info(f"No heatmaps of run **{run.id}** yet. The figure needs LRP (β = 0, the paper's) and guided backprop "
            "maps of every scan; they are computed once in the background and cached for every page.")
    if st.button("Compute LRP β = 0 and guided backprop", type="primary", icon=":material/calculate:",
                 disabled=locked("compute")) and _submit_explain("lrp", 0.0) and _submit_explain("guided_backprop"):
        st.rerun()
    st.stop()


def region_table(store, atlas: str) -> pd.DataFrame | None:
    """The store's region table: read, computed here when small, or requested from a background job (None)."""
    table = _region_table(str(store.folder), atlas)
    if table is not None:
        return table
    if len(store) * float(np.prod(store.grid.shape)) <= INLINE_LIMIT:
        label = biomarker.method_label(store.params)
        bar = st.progress(0.0, text=f"Relevance per region of the {label} maps ({len(store)} scans, once)")
        biomarker.region_table(ws, store, atlas, progress=lambda d, t, m: bar.progress(
            min(d / max(t, 1), 1.0), text=f"Relevance per region of the {label} maps: {d}/{t} scans"))
        bar.empty()
        _region_table.clear()
        return _region_table(str(store.folder), atlas)
    args, key = region_tables.request([run.id], stores=[store.folder.name], atlas=atlas)
    job = jobs.find_active(ws, key)
    if job is None and not allowed("compute"):
        missing_for("compute", f"The {atlas} region table of the {biomarker.method_label(store.params)} maps is")
        return None
    job = job or submit_job(ws, "regions", args, key=key)
    if job is None:
        return None
    job_progress(job.id, ws, rerun_when_done=True, key=f"regions-{store.folder.name}")
    return None


def viewer_url(store, point: dict) -> str:
    params = biomarker.viewer_params(run.id, store.folder.name, point)
    if st.query_params.get("workspace"):
        params["workspace"] = st.query_params["workspace"]
    return "heatmaps?" + urlencode(params)   # relative: resolves next to this page, behind any proxy prefix


def clicked_scan(event, store, points: pd.DataFrame, key: str) -> None:
    """Facts of a clicked point and a link that opens its heatmap in the viewer (a new tab, this page stays)."""
    pick = biomarker.selected_scan(event)
    if pick is None:
        st.caption("Click a point to open that scan's heatmap in the viewer.")
        return
    row = points.set_index("scan_id").loc[pick["scan_id"]]
    st.markdown(f"**{pick['scan_id']}** · {pick['outcome']} · AD score {pick['ad_score']:.2f} · "
                f"{row.get('split', '')} split · x = {row['measure']:.4g}, y = {row['relevance']:.4g}")
    st.link_button("Open in the heatmap viewer", viewer_url(store, pick), icon=":material/open_in_new:",
                   help=f"The individual view of {pick['scan_id']} on the Heatmaps page, "
                        f"{biomarker.method_label(store.params)} (opens a new tab)")


def stats_table(st_df: pd.DataFrame) -> pd.DataFrame:
    """The statistics as text: one row per group, "—" where there are too few scans."""
    def f(v, fmt="{:.3f}"):
        return "—" if pd.isna(v) else fmt.format(v).replace("-", "−")

    return pd.DataFrame({
        "group": st_df.index, "n": st_df["n"].astype(int),
        "Pearson r": [f(v) for v in st_df["r"]],
        "permutation p": [biomarker.format_p(v, PERMUTATIONS) if pd.notna(v) else "—"
                          for v in st_df["p_permutation"]],
        "Spearman ρ": [f(v) for v in st_df["rho"]],
        "95 % CI of r": [f"{f(lo, '{:.2f}')} … {f(hi, '{:.2f}')}" if pd.notna(lo) else "—"
                         for lo, hi in zip(st_df["ci_low"], st_df["ci_high"])]})


STATS_HELP = {"permutation p": st.column_config.TextColumn(help=f"two-sided, {PERMUTATIONS:,} permutations"),
              "95 % CI of r": st.column_config.TextColumn(help=f"percentile bootstrap, {PERMUTATIONS:,} resamples")}

# --------------------------------------------------------------------------- shared settings
atlases = [a for a in region_tables.list_atlases(ws)]
with st.container(border=True):
    c = st.columns(5)
    n_split = preds["split"].value_counts()
    splits = [s for s in ("test", "validation", "train", "all") if s == "all" or n_split.get(s, 0) > 0]
    split = c[0].selectbox("Scans", splits, format_func=lambda s: f"{SPLIT_NAMES[s]} ({n_split.get(s, len(preds))})",
                           key="bm_split", help="The paper correlates the test split's true positives.")
    atlas_name = c[1].selectbox("Atlas", atlases, key="bm_atlas",
                                help="Neuromorphometrics is the paper's; the region's relevance is summed over its "
                                     "voxels on the run's grid.")
    side = c[2].selectbox("Hippocampus", list(biomarker.SIDES), key="bm_side",
                          format_func=lambda s: {"both": "left + right", "left": "left", "right": "right"}[s])
    metric = c[3].selectbox("Relevance", list(biomarker.METRICS), key="bm_metric",
                            format_func={"sum": "sum", "density": "density (per voxel)"}.get,
                            help="Density = sum ÷ the region's voxel count. For one region the count is the same "
                                 "in every scan, so r is the same for both.")
    lrp_pick = None
    if lrp_stores:
        lrp_betas = [float(s.params.get("beta", 0) or 0) for s in lrp_stores]
        lrp_pick = c[4].selectbox("LRP β (Fig 9)", range(len(lrp_stores)), key="bm_lrp",
                                  format_func=lambda i: f"{lrp_betas[i]:g}",
                                  index=lrp_betas.index(0.0) if 0.0 in lrp_betas else 0,
                                  help="β-rule with α = 1 + β; the paper's figure uses β = 0")
    v = st.columns(5)
    v[3].write("")
    one_per_subject = v[3].toggle("First visit only", key="bm_first",
                                  help="Visits of one person are not independent, which the permutation test "
                                       "assumes; the paper used every scan.")
    sources = biomarker.volume_sources(ws, cohort)
    if not sources:
        v[0].warning("No hippocampal volume: add a `hippocampal_volume` column (mm³) or a column of per-scan "
                     "segmentation NIfTI files to the cohort table.")
        source = None
    else:
        source = v[0].selectbox("Volume from", sources, format_func=SOURCE_NAMES.get, key="bm_source")
    seg_column, labels = None, "neuromorphometrics"
    if source == "segmentation":
        seg_column = v[1].selectbox("Segmentation column", biomarker.segmentation_columns(cohort), key="bm_seg")
        labels = v[2].selectbox("Hippocampus labels", list(biomarker.SEGMENTATION_LABELS), key="bm_labels",
                                help="Label values: Neuromorphometrics 47/48 (SPM), FreeSurfer aseg 17/53.")
    has_icv = biomarker.icv_column(cohort) is not None
    v[4].write("")
    normalise = v[4].toggle("Volume ÷ ICV (%)", key="bm_icv", disabled=not has_icv,
                            help="Hippocampal volume ÷ the cohort's intracranial volume (ICV) column" if has_icv else
                            "The cohort table has no intracranial volume column (intracranial_volume, ICV, eTIV).")

volume = None
if source is not None:
    bar = st.empty()
    try:
        volume = biomarker.hippocampal_volumes(
            ws, cohort, source, side=side, segmentation_column=seg_column, labels=labels, normalise=normalise,
            progress=lambda d, t, m: bar.progress(min(d / max(t, 1), 1.0), text=f"Counting label voxels: {m}"))
    except (ValueError, KeyError) as exc:
        st.error(str(exc))
    bar.empty()
    if volume is not None and volume.attrs.get("note"):
        st.caption(f"Note: {volume.attrs['note']}.")

atlas_obj = _atlas(atlas_name, run.grid.resolution, False)
try:
    biomarker.hippocampus_regions(atlas_obj.table, side)
    has_hippocampus = True
except KeyError as exc:
    has_hippocampus = False
    hippo_error = str(exc.args[0])

fig9_tab, beta_tab, any_tab = st.tabs(["Hippocampus vs volume (Fig 9)", "r across β", "Any region × any measure"])


# --------------------------------------------------------------------------- the paper's figure
def fig9_panel(store, key: str) -> None:
    table = region_table(store, atlas_name)
    if table is None:
        return
    absolute = biomarker.default_absolute(store.params.get("method", ""))
    rel = biomarker.hippocampal_relevance(table, side, metric, absolute=absolute)
    points = biomarker.scan_points(preds, rel, volume, split=split, one_per_subject=one_per_subject)
    res = biomarker.group_stats(points, n_permutations=PERMUTATIONS, n_boot=PERMUTATIONS)
    label = biomarker.method_label(store.params)
    what = (f"susceptibility (|gradient| {metric})" if absolute else f"relevance {metric}")
    tp = res.loc["TP"]
    fig = biomarker.scatter_figure(
        points, x_title=volume.attrs["label"],
        y_title=("left " if side == "left" else "right " if side == "right" else "") + f"hippocampal {what}",
        title=f"{label} · TP: r = {biomarker.format_r(tp['r'])}, {biomarker.p_text(tp['p_permutation'], PERMUTATIONS)}"
        if pd.notna(tp["r"]) else f"{label} · fewer than 3 true positives")
    event = st.plotly_chart(fig, key=f"bm_fig9_{key}", on_select="rerun", selection_mode="points",
                            config={"displaylogo": False})
    st.dataframe(stats_table(res), hide_index=True, width="stretch", column_config=STATS_HELP)
    paper = biomarker.PAPER_R.get(store.params.get("method"))
    paper = paper.get(float(store.params.get("beta", 0) or 0)) if isinstance(paper, dict) else paper
    notes = [f"The paper (ADNI, test split, TP): r = {biomarker.format_r(paper)}." if paper is not None else "",
             "Guided backprop is read as |gradient| (the paper's susceptibility)." if absolute else ""]
    if any(notes):
        st.caption(" ".join(n for n in notes if n))
    clicked_scan(event, store, points, key)
    st.download_button("CSV of these points", points.to_csv(index=False).encode(), icon=":material/download:",
                       file_name=biomarker.safe_name(f"{run.id}_{label}_hippocampus_{split}.csv"), mime="text/csv",
                       key=f"bm_csv_{key}", on_click="ignore")


with fig9_tab:
    if volume is None or not has_hippocampus:
        st.info(hippo_error if not has_hippocampus else "Choose where the hippocampal volumes come from above.")
    else:
        left, right = st.columns(2)
        with left:
            if lrp_pick is not None:
                fig9_panel(lrp_stores[lrp_pick], "lrp")
            else:
                st.info("No LRP heatmaps of this run yet.")
                if st.button("Compute LRP β = 0", key="bm_do_lrp", disabled=locked("compute")) and \
                        _submit_explain("lrp", 0.0):
                    st.rerun()
        with right:
            if gb_store is not None:
                fig9_panel(gb_store, "gb")
            else:
                st.info("No guided backprop heatmaps of this run yet.")
                if st.button("Compute guided backprop", key="bm_do_gb", disabled=locked("compute")) and \
                        _submit_explain("guided_backprop"):
                    st.rerun()
        st.caption(f"True positives (AD classified AD) with a least-squares line; false positives (controls classified "
                   f"AD) drawn as well, as in the paper, to see whether they are outliers. Relevance is summed over "
                   f"the {atlas_name} hippocampus on the run's {run.grid.resolution:g} mm grid; p from "
                   f"{PERMUTATIONS:,} permutations (two-sided), CI from {PERMUTATIONS:,} bootstrap resamples.")

# --------------------------------------------------------------------------- r across β
with beta_tab:
    if volume is None or not has_hippocampus:
        st.info(hippo_error if not has_hippocampus else "Choose where the hippocampal volumes come from above.")
    else:
        have = {float(s.params.get("beta", 0) or 0) for s in lrp_stores}
        missing = [b for b in PAPER_BETAS if b not in have]
        ready = [s for s in lrp_stores if region_table(s, atlas_name) is not None]
        if ready:
            bt = biomarker.beta_table(ws, ready, preds, volume, atlas=atlas_name, side=side, metric=metric,
                                      split=split, one_per_subject=one_per_subject, n_permutations=PERMUTATIONS,
                                      n_boot=PERMUTATIONS)
            c1, c2 = st.columns([1.6, 1])
            c1.plotly_chart(biomarker.beta_figure(bt, title="Hippocampal relevance vs volume, true positives"),
                            config={"displaylogo": False}, key="bm_beta_fig")
            c2.markdown(f"**True positives, {SPLIT_NAMES[split]}**: one LRP heatmap store per β.")
            c2.caption("The paper: the correlation weakens as β grows (−0.560, −0.562, −0.525, −0.457, −0.361 for "
                       "β = 0, 0.25, 0.5, 0.75, 1; dotted). Error bars: 95 % bootstrap intervals of r.")
            shown = stats_table(bt.set_index("beta")).rename(columns={"group": "β"})
            shown["β"] = [f"{b:g}" for b in bt["beta"]]
            shown["paper r"] = [biomarker.format_r(v) if pd.notna(v) else "—" for v in bt["paper_r"]]
            st.dataframe(shown, hide_index=True, width="stretch",
                         column_config={**STATS_HELP, "paper r": st.column_config.TextColumn(
                             help="Böhle et al. 2019 (ADNI, test split, true positives)")})
        if missing:
            st.caption(f"No heatmaps yet for β = {', '.join(f'{b:g}' for b in missing)}.")
            if st.button(f"Compute LRP β = {', '.join(f'{b:g}' for b in missing)}", key="bm_do_betas",
                         icon=":material/calculate:",
                         help="One background job computes the missing heatmaps and their region tables.",
                         disabled=locked("compute")):
                args, key = region_tables.request([run.id], method="lrp", betas=missing, atlas=atlas_name)
                if jobs.find_active(ws, key) or submit_job(ws, "regions", args, key=key):
                    st.rerun()


# --------------------------------------------------------------------------- any region × any measure
with any_tab:
    measures = biomarker.measure_columns(cohort, ws)
    if not measures:
        st.info("The cohort table has no numeric column (MMSE, CDR, age, volumes) to correlate with.")
    else:
        c = st.columns([1.3, 1.2, 1.2, 1.3])
        labels_ = [biomarker.method_label(s.params) for s in stores]
        default = next((i for i, s in enumerate(stores) if s.params.get("method") == "lrp"
                        and float(s.params.get("beta", 0) or 0) == 0.0), 0)
        si = c[0].selectbox("Heatmaps", range(len(stores)), format_func=lambda i: labels_[i], index=default,
                            key="bm_any_store")
        store = stores[si]
        measure_name = c[1].selectbox("Measure (cohort column)", measures, key="bm_measure")
        scans = c[2].selectbox("Scans", list(SCAN_GROUPS), format_func=SCAN_GROUP_NAMES.get, key="bm_any_groups",
                               help=f"Within the {SPLIT_NAMES[split]} chosen above.")
        covariate_names = [n for n in ("age", "icv") if (n == "icv" and has_icv) or (n == "age" and "age" in cohort)]
        icv_col = biomarker.icv_column(cohort)
        covariate_names = [n for n in covariate_names if {"icv": icv_col}.get(n, n) != measure_name]
        covs = c[3].multiselect("Controlling for", covariate_names, default=covariate_names, key="bm_covs",
                                format_func={"age": "age", "icv": "intracranial volume"}.get,
                                help="Partial correlation: relevance and the measure are each regressed on these, "
                                     "and the residuals correlated.")
        c = st.columns([1.3, 1.2, 1.2, 1.3])
        merge = c[0].toggle("Merge left and right", key="bm_merge")
        absolute = c[1].toggle("|relevance|", value=biomarker.default_absolute(store.params.get("method", "")),
                               key=f"bm_abs_{store.params.get('method')}",
                               help="Sum of absolute values (the paper's reading of gradient maps)")
        any_metric = c[2].selectbox("Region metric", list(biomarker.METRICS), key="bm_any_metric",
                                    index=list(biomarker.METRICS).index(metric))
        table = region_table(store, atlas_name)
        if table is not None:
            pred_file = run.dir / "predictions.csv"
            values, corr, measure = _region_correlations(
                str(pred_file), _mtime(pred_file), _mtime(ws.cohort_csv), str(store.folder), atlas_name, merge,
                any_metric, absolute, measure_name, tuple(SCAN_GROUPS[scans]), split, one_per_subject, tuple(covs))
            names = list(values.columns)
            try:
                hippo = biomarker.hippocampus_regions(pd.DataFrame({"name": names}))[0]
            except KeyError:
                hippo = names[0]
            region = c[3].selectbox("Region", names, index=names.index(hippo), key=f"bm_region_{merge}",
                                    format_func=lambda n: n.replace("_", " "))
            points = biomarker.scan_points(preds, values[region], measure, split=split, groups=SCAN_GROUPS[scans],
                                           one_per_subject=one_per_subject)
            adjusted = bool(covs) and c[0].toggle("Adjusted for the covariates", value=True, key="bm_adjusted",
                                                  help="Plot residuals on the covariates (plus the mean): the "
                                                       "added-variable plot, whose r is the partial r.")
            plotted = biomarker.adjust_for(points, biomarker.covariate_frame(cohort, points["scan_id"], covs)
                                           if adjusted else None)
            row = corr.set_index("region").loc[region]
            label = biomarker.method_label(store.params)
            kind = "partial r" if covs else "r"
            adj = " (adjusted)" if adjusted else ""
            fig = biomarker.scatter_figure(
                plotted, groups=SCAN_GROUPS[scans], fit=SCAN_GROUPS[scans][:1] if scans == "TP" else (),
                x_title=measure_name + adj,
                y_title=f"{region.replace('_', ' ')} {'|relevance|' if absolute else 'relevance'} {any_metric}{adj}",
                title=f"{label} · {kind} = {biomarker.format_r(row['r'])}, "
                      f"{biomarker.p_text(row['p_permutation'], PERMUTATIONS)}"
                      f" (FDR {biomarker.format_p(row['p_fdr'])}), n = {int(row['n'])}"
                if pd.notna(row["r"]) else f"{label} · too few scans")
            left, right = st.columns([1.15, 1])
            with left:
                event = st.plotly_chart(fig, key="bm_any_fig", on_select="rerun", selection_mode="points",
                                        config={"displaylogo": False})
                controls = " and ".join(covs).replace("icv", "intracranial volume")
                st.caption((f"Partial correlation controlling for {controls}" + (
                            f"; points adjusted for {controls} (residuals plus the mean)" if adjusted else
                            "; the points are the raw values") if covs else "Pearson correlation")
                           + f"; p from {PERMUTATIONS:,} permutations, FDR (Benjamini–Hochberg) over the "
                             f"{len(corr)} regions.")
                clicked_scan(event, store, plotted, "any")
            with right:
                st.markdown(f"**Every region** · {kind} with {measure_name}, sorted by p")
                shown = corr.assign(region=corr["region"].str.replace("_", " "))[["region", "r", "p_permutation",
                                                                                   "p_fdr"]]
                st.dataframe(shown, hide_index=True, width="stretch", height=420,
                             column_config={"r": st.column_config.NumberColumn(kind, format="%.3f"),
                                            "p_permutation": st.column_config.NumberColumn(
                                                "p", format="%.4f", help=f"two-sided, {PERMUTATIONS:,} permutations"),
                                            "p_fdr": st.column_config.NumberColumn(
                                                "p (FDR)", format="%.4f",
                                                help="Benjamini–Hochberg over the regions")})
                st.download_button("CSV of the table", corr.to_csv(index=False).encode(), mime="text/csv",
                                   file_name=biomarker.safe_name(f"{run.id}_{label}_{measure_name}_regions.csv"),
                                   icon=":material/download:", key="bm_any_csv", on_click="ignore")

review_panel(ws, {"kind": "region", "region": "Hippocampus"},
             {"page": "pages/biomarker.py", "run": run.id, "checkpoint": sha, "split": split, "atlas": atlas_name,
              "side": side, "metric": metric, "volume": source, "icv": normalise})
