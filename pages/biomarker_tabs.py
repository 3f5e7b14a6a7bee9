"""The Biomarkers page's analysis: what is chosen (:class:`BiomarkerView`), region tables (read, computed
here, or by a job), and the tabs Fig 9 and r across β (the any-region tab is pages.biomarker_any)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

import numpy as np
import pandas as pd
import streamlit as st

from lib import jobs
from lib.analysis import biomarker
from lib.views import biomarker as bv
from pages.job_widgets import automatic_job, job_progress, locked, submit_explain, submit_job
from pages.loaders import heatmap_store

STATS_HELP = {"permutation p": st.column_config.TextColumn(help=f"two-sided, {bv.PERMUTATIONS:,} permutations"),
              "95 % CI of r": st.column_config.TextColumn(help=f"percentile bootstrap, {bv.PERMUTATIONS:,} resamples")}


@dataclass
class BiomarkerView:
    """The run, its heatmap stores, and the shared settings of the page's tabs."""

    ws: object
    run: object
    stores: list
    preds: pd.DataFrame
    cohort: pd.DataFrame
    split: str = "test"
    atlas_name: str = ""
    side: str = "both"
    metric: str = "sum"
    lrp_pick: int | None = None
    one_per_subject: bool = False
    has_icv: bool = False
    volume: pd.Series | None = None
    hippo_error: str | None = None   # why the atlas has no hippocampus (None: it has one)

    @property
    def lrp_stores(self) -> list:
        return [s for s in self.stores if s.params.get("method") == "lrp"]

    @property
    def gb_store(self):
        return next((s for s in self.stores if s.params.get("method") == "guided_backprop"), None)


@st.cache_data(max_entries=32, show_spinner=False)
def cached_region_table(folder: str, atlas: str, _ws) -> pd.DataFrame | None:
    # a table's key names its store and atlas, so once it exists it never changes
    return biomarker.find_region_table(_ws, heatmap_store(folder), atlas)


def region_table(v: BiomarkerView, store, atlas: str) -> pd.DataFrame | None:
    """The store's region table: read, computed here when small, or requested from a background job (None)."""
    ws = v.ws
    table = cached_region_table(str(store.folder), atlas, ws)
    if table is not None:
        return table
    if len(store) * float(np.prod(store.grid.shape)) <= bv.INLINE_LIMIT:
        label = biomarker.method_label(store.params)
        bar = st.progress(0.0, text=f"Relevance per region of the {label} maps ({len(store)} scans, once)")
        biomarker.region_table(ws, store, atlas, progress=lambda d, t, m: bar.progress(
            min(d / max(t, 1), 1.0), text=f"Relevance per region of the {label} maps: {d}/{t} scans"))
        bar.empty()
        cached_region_table.clear()
        return cached_region_table(str(store.folder), atlas, ws)
    request = jobs.RegionTables(run_ids=(v.run.id,), stores=(store.folder.name,), atlas=atlas)
    job = automatic_job(ws, request, f"The {atlas} region table of the {biomarker.method_label(store.params)} maps is")
    if job is None:
        return None
    job_progress(job.id, ws, rerun_when_done=True, key=f"regions-{store.folder.name}")
    return None


def viewer_url(run, store, point: dict) -> str:
    params = biomarker.viewer_params(run.id, store.folder.name, point)
    if st.query_params.get("workspace"):
        params["workspace"] = st.query_params["workspace"]
    return "heatmaps?" + urlencode(params)   # relative: resolves next to this page, behind any proxy prefix


def clicked_scan(run, event, store, points: pd.DataFrame, key: str) -> None:
    """Facts of a clicked point and a link that opens its heatmap in the viewer (a new tab, this page stays)."""
    pick = biomarker.selected_scan(event)
    if pick is None:
        st.caption("Click a point to open that scan's heatmap in the viewer.")
        return
    row = points.set_index("scan_id").loc[pick["scan_id"]]
    st.markdown(f"**{pick['scan_id']}** · {pick['outcome']} · {run.classes.positive} score {pick['ad_score']:.2f} · "
                f"{row.get('split', '')} split · x = {row['measure']:.4g}, y = {row['relevance']:.4g}")
    st.link_button("Open in the heatmap viewer", viewer_url(run, store, pick), icon=":material/open_in_new:",
                   help=f"The individual view of {pick['scan_id']} on the Heatmaps page, "
                        f"{biomarker.method_label(store.params)} (opens a new tab)")


def _unavailable(v: BiomarkerView) -> bool:
    """True (and why) when there is no volume or no hippocampus in the atlas."""
    if v.volume is None or v.hippo_error is not None:
        st.info(v.hippo_error if v.hippo_error is not None else "Choose where the hippocampal volumes come from above.")
        return True
    return False


# --------------------------------------------------------------------------- the paper's figure
def fig9_panel(v: BiomarkerView, store, key: str) -> None:
    table = region_table(v, store, v.atlas_name)
    if table is None:
        return
    absolute = biomarker.default_absolute(store.params.get("method", ""))
    rel = biomarker.hippocampal_relevance(table, v.side, v.metric, absolute=absolute)
    points = biomarker.scan_points(v.preds, rel, v.volume, split=v.split, one_per_subject=v.one_per_subject)
    res = biomarker.group_stats(points, n_permutations=bv.PERMUTATIONS, n_boot=bv.PERMUTATIONS)
    label = biomarker.method_label(store.params)
    y_title, title = bv.fig9_texts(label, v.side, v.metric, absolute, res.loc["TP"])
    fig = biomarker.scatter_figure(points, x_title=v.volume.attrs["label"], y_title=y_title, title=title)
    event = st.plotly_chart(fig, key=f"bm_fig9_{key}", on_select="rerun", selection_mode="points",
                            config={"displaylogo": False})
    st.dataframe(bv.stats_table(res), hide_index=True, width="stretch", column_config=STATS_HELP)
    notes = bv.fig9_notes(store.params, absolute)
    if notes:
        st.caption(notes)
    clicked_scan(v.run, event, store, points, key)
    st.download_button("CSV of these points", points.to_csv(index=False).encode(), icon=":material/download:",
                       file_name=biomarker.safe_name(f"{v.run.id}_{label}_hippocampus_{v.split}.csv"),
                       mime="text/csv", key=f"bm_csv_{key}", on_click="ignore")


def fig9_tab(v: BiomarkerView) -> None:
    if _unavailable(v):
        return
    left, right = st.columns(2)
    with left:
        if v.lrp_pick is not None:
            fig9_panel(v, v.lrp_stores[v.lrp_pick], "lrp")
        else:
            st.info("No LRP heatmaps of this run yet.")
            if st.button("Compute LRP β = 0", key="bm_do_lrp", disabled=locked("compute")) and \
                    submit_explain(v.ws, v.run, "lrp", 0.0):
                st.rerun()
    with right:
        if v.gb_store is not None:
            fig9_panel(v, v.gb_store, "gb")
        else:
            st.info("No guided backprop heatmaps of this run yet.")
            if st.button("Compute guided backprop", key="bm_do_gb", disabled=locked("compute")) and \
                    submit_explain(v.ws, v.run, "guided_backprop"):
                st.rerun()
    P = v.ws.classes.positive
    st.caption(f"True positives ({P} classified {P}) with a least-squares line; false positives (controls classified "
               f"{P}) drawn as well, as in the paper, to see whether they are outliers. Relevance is summed over "
               f"the {v.atlas_name} hippocampus on the run's {v.run.grid.resolution:g} mm grid; p from "
               f"{bv.PERMUTATIONS:,} permutations (two-sided), CI from {bv.PERMUTATIONS:,} bootstrap resamples.")


# --------------------------------------------------------------------------- r across β
def beta_tab(v: BiomarkerView) -> None:
    if _unavailable(v):
        return
    have = {bv.beta_of(s) for s in v.lrp_stores}
    missing = [b for b in bv.PAPER_BETAS if b not in have]
    ready = [s for s in v.lrp_stores if region_table(v, s, v.atlas_name) is not None]
    if ready:
        bt = biomarker.beta_table(v.ws, ready, v.preds, v.volume, atlas=v.atlas_name, side=v.side, metric=v.metric,
                                  split=v.split, one_per_subject=v.one_per_subject, n_permutations=bv.PERMUTATIONS,
                                  n_boot=bv.PERMUTATIONS)
        c1, c2 = st.columns([1.6, 1])
        c1.plotly_chart(biomarker.beta_figure(bt, title="Hippocampal relevance vs volume, true positives"),
                        config={"displaylogo": False}, key="bm_beta_fig")
        c2.markdown(f"**True positives, {bv.SPLIT_NAMES[v.split]}**: one LRP heatmap store per β.")
        c2.caption("The paper: the correlation weakens as β grows (−0.560, −0.562, −0.525, −0.457, −0.361 for "
                   "β = 0, 0.25, 0.5, 0.75, 1; dotted). Error bars: 95 % bootstrap intervals of r.")
        st.dataframe(bv.beta_stats_table(bt), hide_index=True, width="stretch",
                     column_config={**STATS_HELP, "paper r": st.column_config.TextColumn(
                         help="Böhle et al. 2019 (ADNI, test split, true positives)")})
    if missing:
        st.caption(f"No heatmaps yet for β = {', '.join(f'{b:g}' for b in missing)}.")
        if st.button(f"Compute LRP β = {', '.join(f'{b:g}' for b in missing)}", key="bm_do_betas",
                     icon=":material/calculate:",
                     help="One background job computes the missing heatmaps and their region tables.",
                     disabled=locked("compute")):
            request = jobs.RegionTables(run_ids=(v.run.id,), method="lrp", betas=tuple(missing), atlas=v.atlas_name)
            if jobs.for_request(v.ws, request, active=True) or submit_job(v.ws, request):
                st.rerun()
