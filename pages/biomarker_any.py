"""The Biomarkers page's "Any region × any measure" tab: a (partial) correlation of every atlas region's
relevance with a numeric column of the cohort table, permutation-tested and FDR-corrected."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from lib.analysis import biomarker, region_tables
from lib.views import biomarker as bv
from pages.biomarker_tabs import BiomarkerView, cached_region_table, clicked_scan, region_table
from pages.loaders import heatmap_store, predictions_csv


def _mtime(path) -> int:
    return path.stat().st_mtime_ns


@st.cache_resource(max_entries=4, show_spinner=False)
def atlas_of(name: str, resolution: float, merge: bool, _ws):
    return region_tables.get_atlas(_ws, name, resolution, merge)


@st.cache_data(max_entries=16, show_spinner=False)
def _region_correlations(preds_file: str, preds_mtime: int, cohort_mtime: int, folder: str, atlas: str, merge: bool,
                         metric: str, absolute: bool, measure_name: str, groups: tuple, split: str,
                         one_per_subject: bool, covariates: tuple, _ws, _cohort
                         ) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series]:
    """(scans × regions values of the analysed scans, correlations across regions sorted by p, the measure):
    10,000 permutations per region, computed once per choice (the key names every input's file and version)."""
    cohort = _cohort
    table = cached_region_table(folder, atlas, _ws)
    choices = biomarker.region_choices(atlas_of(atlas, heatmap_store(folder).grid.resolution, False, _ws),
                                       merge=merge)
    values = biomarker.region_values(table, choices, metric, absolute=absolute)
    p = predictions_csv(preds_file, preds_mtime)
    measure = pd.to_numeric(cohort.set_index(cohort["scan_id"].astype(str))[measure_name], errors="coerce")
    scans = biomarker.scan_points(p, values.iloc[:, 0], measure, split=split, groups=list(groups),
                                  one_per_subject=one_per_subject)["scan_id"]
    cov = biomarker.covariate_frame(cohort, scans, list(covariates)) if covariates else None
    values = values.reindex(scans)
    corr = biomarker.region_correlations(values, measure, cov, n_permutations=bv.PERMUTATIONS)
    return values, corr, measure


def any_tab(v: BiomarkerView) -> None:
    measures = biomarker.measure_columns(v.cohort, v.ws)
    if not measures:
        st.info("The cohort table has no numeric column (MMSE, CDR, age, volumes) to correlate with.")
        return
    stores, cohort = v.stores, v.cohort
    c = st.columns([1.3, 1.2, 1.2, 1.3])
    labels_ = [biomarker.method_label(s.params) for s in stores]
    si = c[0].selectbox("Heatmaps", range(len(stores)), format_func=lambda i: labels_[i],
                        index=bv.default_store(stores), key="bm_any_store")
    store = stores[si]
    default = v.ws.biomarker_measure
    measure_name = c[1].selectbox("Measure (cohort column)", measures, key="bm_measure",
                                  index=measures.index(default) if default in measures else 0,
                                  help="The workspace's default measure is part of its task, set when the workspace "
                                       "is made (the Cohort page's Task section); lesion load on the MS demo.")
    scans = c[2].selectbox("Scans", list(bv.SCAN_GROUPS), format_func=bv.scan_group_names(v.ws.classes).get,
                           key="bm_any_groups",
                           help=f"Within the {bv.SPLIT_NAMES[v.split]} chosen above.")
    covariate_names = bv.covariate_choices(cohort, measure_name, v.has_icv)
    covs = c[3].multiselect("Controlling for", covariate_names, default=covariate_names, key="bm_covs",
                            format_func=bv.COVARIATE_NAMES.get,
                            help="Partial correlation: relevance and the measure are each regressed on these, "
                                 "and the residuals correlated.")
    c = st.columns([1.3, 1.2, 1.2, 1.3])
    merge = c[0].toggle("Merge left and right", key="bm_merge")
    absolute = c[1].toggle("|relevance|", value=biomarker.default_absolute(store.params.get("method", "")),
                           key=f"bm_abs_{store.params.get('method')}",
                           help="Sum of absolute values (the paper's reading of gradient maps)")
    any_metric = c[2].selectbox("Region metric", list(biomarker.METRICS), key="bm_any_metric",
                                index=list(biomarker.METRICS).index(v.metric))
    if region_table(v, store, v.atlas_name) is None:
        return
    pred_file = v.run.dir / "predictions.csv"
    values, corr, measure = _region_correlations(
        str(pred_file), _mtime(pred_file), _mtime(v.ws.cohort_csv), str(store.folder), v.atlas_name, merge,
        any_metric, absolute, measure_name, tuple(bv.SCAN_GROUPS[scans]), v.split, v.one_per_subject, tuple(covs),
        v.ws, cohort)
    names = list(values.columns)
    try:
        hippo = biomarker.hippocampus_regions(pd.DataFrame({"name": names}))[0]
    except KeyError:
        hippo = names[0]
    region = c[3].selectbox("Region", names, index=names.index(hippo), key=f"bm_region_{merge}",
                            format_func=lambda n: n.replace("_", " "))
    points = biomarker.scan_points(v.preds, values[region], measure, split=v.split, groups=bv.SCAN_GROUPS[scans],
                                   one_per_subject=v.one_per_subject)
    adjusted = bool(covs) and c[0].toggle("Adjusted for the covariates", value=True, key="bm_adjusted",
                                          help="Plot residuals on the covariates (plus the mean): the "
                                               "added-variable plot, whose r is the partial r.")
    plotted = biomarker.adjust_for(points, biomarker.covariate_frame(cohort, points["scan_id"], covs)
                                   if adjusted else None)
    _correlation(v, store, plotted, corr, region, scans, measure_name, covs, adjusted, absolute, any_metric)


def _correlation(v: BiomarkerView, store, plotted, corr, region: str, scans: str, measure_name: str, covs: list,
                 adjusted: bool, absolute: bool, any_metric: str) -> None:
    """The chosen region's scatter beside the table of every region's correlation."""
    row = corr.set_index("region").loc[region]
    label = biomarker.method_label(store.params)
    kind = "partial r" if covs else "r"
    adj = " (adjusted)" if adjusted else ""
    fig = biomarker.scatter_figure(
        plotted, groups=bv.SCAN_GROUPS[scans], fit=bv.SCAN_GROUPS[scans][:1] if scans == "TP" else (),
        x_title=measure_name + adj,
        y_title=f"{region.replace('_', ' ')} {'|relevance|' if absolute else 'relevance'} {any_metric}{adj}",
        title=bv.correlation_title(label, kind, row))
    left, right = st.columns([1.15, 1])
    with left:
        event = st.plotly_chart(fig, key="bm_any_fig", on_select="rerun", selection_mode="points",
                                config={"displaylogo": False})
        st.caption(bv.correlation_caption(covs, adjusted, len(corr)))
        clicked_scan(v.run, event, store, plotted, "any")
    with right:
        st.markdown(f"**Every region** · {kind} with {measure_name}, sorted by p")
        st.dataframe(bv.correlations_shown(corr), hide_index=True, width="stretch", height=420,
                     column_config={"r": st.column_config.NumberColumn(kind, format="%.3f"),
                                    "p_permutation": st.column_config.NumberColumn(
                                        "p", format="%.4f", help=f"two-sided, {bv.PERMUTATIONS:,} permutations"),
                                    "p_fdr": st.column_config.NumberColumn(
                                        "p (FDR)", format="%.4f", help="Benjamini–Hochberg over the regions")})
        st.download_button("CSV of the table", corr.to_csv(index=False).encode(), mime="text/csv",
                           file_name=biomarker.safe_name(f"{v.run.id}_{label}_{measure_name}_regions.csv"),
                           icon=":material/download:", key="bm_any_csv", on_click="ignore")
