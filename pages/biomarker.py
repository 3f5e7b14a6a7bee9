"""Biomarkers: hippocampal relevance against hippocampal volume (Böhle et al. 2019 §3.3, Fig 9), and any atlas
region against any numeric column of the cohort table. Computations live in lib.analysis.biomarker; region tables are the
cached ones of lib.analysis.region_tables (computed here when small, by a regions job when large).
The tabs are drawn by pages.biomarker_tabs and pages.biomarker_any."""

from __future__ import annotations

import streamlit as st

from lib import jobs
from lib.analysis import biomarker, region_tables
from lib.views import biomarker as bv, viewer
from pages.biomarker_any import any_tab, atlas_of
from pages.biomarker_tabs import BiomarkerView, beta_tab, fig9_tab
from pages.job_widgets import job_progress, locked, submit_explain
from pages.loaders import checkpoint_sha, cohort_table, heatmap_store, predictions_csv
from pages.run_picker import require_ready_run
from pages.workspace_sidebar import current_workspace
from pages.report_button import report_button
from pages.review_panel import review_panel
from lib.data.atlases import DEFAULT_ATLAS


def _mtime(path) -> int:
    return path.stat().st_mtime_ns


def follow_jobs(v: BiomarkerView) -> None:
    """Progress of the run's heatmap and region jobs; with no heatmaps yet, the button that starts them."""
    ws, run = v.ws, v.run

    for job in jobs.of_run(ws, run.id, jobs.Explain.kind) + jobs.of_run(ws, run.id, jobs.RegionTables.kind):
        job_progress(job.id, ws, rerun_when_done=True, key="biomarker")
    if not v.lrp_stores and v.gb_store is None:
        st.info(f"No heatmaps of run **{run.id}** yet. The figure needs LRP (β = 0, the paper's) and guided backprop "
                "maps of every scan; they are computed once in the background and cached for every page.")
        if st.button("Compute LRP β = 0 and guided backprop", type="primary", icon=":material/calculate:",
                     disabled=locked("compute")) and submit_explain(ws, run, "lrp", 0.0) and \
                submit_explain(ws, run, "guided_backprop"):
            st.rerun()
        st.stop()


def settings_row(v: BiomarkerView) -> None:
    """The first row of shared settings: scans, atlas, hippocampus side, relevance metric, LRP β."""
    c = st.columns(5)
    splits = bv.split_choices(v.preds)
    v.split = c[0].selectbox("Scans", splits, format_func=lambda s: bv.split_label(v.preds, s),
                             key="bm_split", help="The paper correlates the test split's true positives.")
    v.atlas_name = c[1].selectbox("Atlas", region_tables.list_atlases(v.ws), key="bm_atlas",
                                  help="Neuromorphometrics is the paper's; the region's relevance is summed over its "
                                       "voxels on the run's grid.")
    v.side = c[2].selectbox("Hippocampus", list(biomarker.SIDES), key="bm_side", format_func=bv.SIDE_NAMES.get)
    v.metric = c[3].selectbox("Relevance", list(biomarker.METRICS), key="bm_metric",
                              format_func={"sum": "sum", "density": "density (per voxel)"}.get,
                              help="Density = sum ÷ the region's voxel count. For one region the count is the same "
                                   "in every scan, so r is the same for both.")
    if v.lrp_stores:
        lrp_betas = [bv.beta_of(s) for s in v.lrp_stores]
        v.lrp_pick = c[4].selectbox("LRP β (Fig 9)", range(len(v.lrp_stores)), key="bm_lrp",
                                    format_func=lambda i: f"{lrp_betas[i]:g}",
                                    index=lrp_betas.index(0.0) if 0.0 in lrp_betas else 0,
                                    help="β-rule with α = 1 + β; the paper's figure uses β = 0")


def volume_row(v: BiomarkerView) -> tuple:
    """The second row: where the hippocampal volume comes from; (source, segmentation column, labels, ÷ ICV)."""
    cohort = v.cohort
    c = st.columns(5)
    c[3].write("")
    v.one_per_subject = c[3].toggle("First visit only", key="bm_first",
                                    help="Visits of one person are not independent, which the permutation test "
                                         "assumes; the paper used every scan.")
    sources = biomarker.volume_sources(v.ws, cohort)
    if not sources:
        c[0].warning("No hippocampal volume: add a `hippocampal_volume` column (mm³) or a column of per-scan "
                     "segmentation NIfTI files to the cohort table.")
        source = None
    else:
        source = c[0].selectbox("Volume from", sources, format_func=bv.SOURCE_NAMES.get, key="bm_source")
    seg_column, labels = None, DEFAULT_ATLAS
    if source == "segmentation":
        seg_column = c[1].selectbox("Segmentation column", biomarker.segmentation_columns(cohort), key="bm_seg")
        labels = c[2].selectbox("Hippocampus labels", list(biomarker.SEGMENTATION_LABELS), key="bm_labels",
                                help="Label values: Neuromorphometrics 47/48 (SPM), FreeSurfer aseg 17/53.")
    v.has_icv = biomarker.icv_column(cohort) is not None
    c[4].write("")
    normalise = c[4].toggle("Volume ÷ ICV (%)", key="bm_icv", disabled=not v.has_icv,
                            help="Hippocampal volume ÷ the cohort's intracranial volume (ICV) column" if v.has_icv
                            else "The cohort table has no intracranial volume column (intracranial_volume, ICV, "
                                 "eTIV).")
    return source, seg_column, labels, normalise


def hippocampal_volume(v: BiomarkerView, source: str, seg_column, labels: str, normalise: bool):
    """The hippocampal volume of every scan (with a progress bar while label voxels are counted), or None."""
    volume = None
    bar = st.empty()
    try:
        volume = biomarker.hippocampal_volumes(
            v.ws, v.cohort, source, side=v.side, segmentation_column=seg_column, labels=labels, normalise=normalise,
            progress=lambda d, t, m: bar.progress(min(d / max(t, 1), 1.0), text=f"Counting label voxels: {m}"))
    except (ValueError, KeyError) as exc:
        st.error(str(exc))
    bar.empty()
    if volume is not None and volume.attrs.get("note"):
        st.caption(f"Note: {volume.attrs['note']}.")
    return volume


def main() -> None:
    ws = current_workspace()
    st.title("Biomarkers")
    st.caption("Do the heatmaps track biology? Böhle et al. 2019 (Fig 9) correlate the LRP relevance in the "
               "hippocampus with hippocampal volume in correctly classified Alzheimer's patients: r = −0.560 "
               "(permutation p < 0.001), weaker as β grows, while guided backprop shows none (r = 0.096)."
               + ("" if ws.biomarker_measure == "hippocampal_volume" else
                  f" This workspace's measure is **{ws.biomarker_measure or 'a column you choose'}**: see the tab "
                  "*Any region × any measure*."))
    run = require_ready_run(ws)
    report_button(ws, run)
    sha = checkpoint_sha(str(run.best_checkpoint), _mtime(run.best_checkpoint))
    v = BiomarkerView(ws=ws, run=run, stores=[heatmap_store(str(s.folder)) for s in viewer.stores_of(ws, sha)],
                      preds=predictions_csv(str(run.dir / "predictions.csv"), _mtime(run.dir / "predictions.csv")),
                      cohort=cohort_table(str(ws.cohort_csv), _mtime(ws.cohort_csv)))
    follow_jobs(v)
    with st.container(border=True):
        settings_row(v)
        source, seg_column, labels, normalise = volume_row(v)
    if source is not None:
        v.volume = hippocampal_volume(v, source, seg_column, labels, normalise)
    atlas_obj = atlas_of(v.atlas_name, run.grid.resolution, False, ws)
    try:
        biomarker.hippocampus_regions(atlas_obj.table, v.side)
    except KeyError as exc:
        v.hippo_error = str(exc.args[0])
    names, draws = ["Hippocampus vs volume (Fig 9)", "r across β", "Any region × any measure"], [fig9_tab, beta_tab,
                                                                                                any_tab]
    if ws.biomarker_measure != "hippocampal_volume":   # the workspace's own measure first
        names, draws = names[::-1], draws[::-1]
    # only the open tab is computed and sent (a tab switch reruns the page)
    tabs = st.tabs(names, key="bm_tab", on_change="rerun")
    for tab, draw in zip(tabs, draws):
        with tab:
            if tab.open:
                draw(v)
    review_panel(ws, {"kind": "region", "region": "Hippocampus"},
                 {"page": "pages/biomarker.py", "run": run.id, "checkpoint": sha, "split": v.split,
                  "atlas": v.atlas_name, "side": v.side, "metric": v.metric, "volume": source, "icv": normalise})


main()
