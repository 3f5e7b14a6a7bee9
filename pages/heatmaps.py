"""Heatmaps: a run's group-average and individual relevance maps, as in Böhle et al. 2019 Figs 2, 3 and 8.

Group means come from lib.views.viewer (streamed over the cached heatmap store, cached on disk). A group's map and
a scan's map open in the 3D viewer (NiiVue: volumes sent once as compact 8-bit NIfTI); the other panels,
the fallback and the exports are small PNGs. One crosshair (the sliders on the left, or a click in the 3D
viewer) drives every panel. The views are drawn by pages.heatmaps_panels and pages.heatmaps_scan.
"""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from lib import jobs
from lib.views import overview
from lib.data.atlas import load_atlas
from lib.explain import METHODS, heatmaps
from lib.views import heatmaps as hv, viewer
from pages import niivue_view
from pages.job_widgets import automatic_job, job_progress, locked, submit_explain
from pages.method_controls import method_params
from pages.loaders import checkpoint_sha, cohort_table, heatmap_store, predictions_csv, template_volume
from pages.run_picker import require_ready_run
from pages.workspace_sidebar import current_workspace
from pages.heatmaps_compare import compare_view
from pages.heatmaps_panels import HeatmapView, groups_view
from pages.heatmaps_scan import distances_view, individual_view
from pages.report_button import report_button
from pages.review_panel import view_param


VIEWS = {"Groups": groups_view, "Compare": compare_view, "Individual": individual_view,
         "Distances": distances_view}


@st.cache_resource(max_entries=4, show_spinner=False)
def _background(kind: str, resolution: float, key: str, _ws):
    """(anatomy, grey window) on the run's grid: the template or the cohort's mean anatomy."""
    from lib.data.templates import Grid

    data = template_volume(resolution) if kind == "template" else viewer.mean_anatomy(_ws, Grid(resolution))
    return (None, None) if data is None else (data, viewer.background_range(data))


def _mtime(path) -> int:
    return path.stat().st_mtime_ns


def compute_panel(ws, run, stores: list) -> None:
    """Start heatmaps of the run (any method) and follow the running ones; stops the page while there are none."""
    running = jobs.of_run(ws, run.id, jobs.Explain.kind)
    with st.expander("Compute heatmaps of this run", expanded=not stores and not running,
                     icon=":material/calculate:"):
        st.caption("Every scan of the cohort is explained once with the run's best checkpoint, in the background; "
                   "the maps are cached, so nobody computes them twice.")
        c1, c2, c3 = st.columns([2, 1, 1])
        method = c1.selectbox("Method to compute", list(METHODS), format_func=lambda m: METHODS[m].label,
                              key="hm_new_m")
        params = method_params(c2, METHODS[method], "hm_new")
        c3.write("")
        may_not = locked("compute")
        if c3.button("Compute", type="primary", key="hm_new_go", disabled=may_not) and \
                submit_explain(ws, run, method, params=params):
            st.rerun()
        if not stores:
            q1, q2, _ = st.columns([1, 1, 2])
            if q1.button("LRP β = 0 (the paper's)", key="hm_quick_lrp", disabled=may_not) and \
                    submit_explain(ws, run, "lrp", 0.0):
                st.rerun()
            if q2.button("Guided backprop", key="hm_quick_gb", disabled=may_not) and \
                    submit_explain(ws, run, "guided_backprop"):
                st.rerun()
    for job in running:
        job_progress(job.id, ws, rerun_when_done=True, key="explain")
    if not stores:
        st.info(f"No heatmaps of run **{run.id}** yet: compute them above (LRP β = 0 and guided backprop are "
                "the paper's methods).")
        st.stop()


def group_means(ws, run, split: str, table) -> Callable:
    """The cached group means of a store for the current selection. Missing ones are streamed here when quick,
    else by a background job whose progress is shown (and the page stops until it is done)."""
    def means_of(s: heatmaps.HeatmapStore, by_name: str) -> viewer.CachedGroupMeans:
        by_column = viewer.SUBGROUPS.get(by_name)
        folder = s.folder / "group_means" / viewer.grouping_key(s, table, by_column, run.classes)
        if (folder / "index.json").exists():
            return viewer.CachedGroupMeans(folder)
        name = viewer.store_label(s.params)
        if viewer.is_small(s, table):
            bar = st.progress(0.0, text=f"Averaging the {name} heatmaps of {len(table)} scans")
            out = viewer.cached_group_means(s, table, by=by_column, progress=lambda d, t, m: bar.progress(
                min(d / max(t, 1), 1.0), text=f"Averaging the {name} heatmaps: {d}/{t} scans"), classes=run.classes)
            bar.empty()
            return out
        request = jobs.GroupMeans(run_id=run.id, store=s.folder.name, split=split, by=by_column and by_name)
        job = automatic_job(ws, request, f"The {name} group means of these {len(table)} scans are")
        if job is None:
            st.stop()
        st.info(f"Averaging the {name} heatmaps of {len(table)} scans in the background (once; cached for everyone).")
        job_progress(job.id, ws, rerun_when_done=True, key="group-means")
        st.stop()

    return means_of


def selection(ws, run, sha: str, stores: list) -> HeatmapView:
    """The row of pickers: heatmap store, scans, subgroups, colour scale."""
    preds = predictions_csv(str(run.dir / "predictions.csv"), _mtime(run.dir / "predictions.csv"))
    labels = [viewer.label_of(s) for s in stores]
    wanted = view_param("store", "")
    c = st.columns([1.6, 1.3, 1, 1.6])
    pick = c[0].selectbox("Method", range(len(stores)), format_func=lambda i: labels[i], key="hm_store",
                          index=next((i for i, s in enumerate(stores) if s.folder.name == wanted), 0))
    splits = hv.split_choices(preds)
    split = c[1].selectbox("Scans", splits, key="hm_split",
                           index=splits.index(view_param("split", "test"))
                           if view_param("split", "test") in splits else 0,
                           format_func=lambda s: f"{hv.SPLIT_NAMES[s]} ({len(viewer.selection(preds, s))})",
                           help="The paper's group maps average the test split.")
    bys = hv.subgroup_choices(preds, split)
    by = c[2].selectbox("Subgroups", bys, format_func=hv.BY_NAMES.get, key="hm_by",
                        index=bys.index(view_param("by")) if view_param("by") in bys else 0)
    style = c[3].selectbox("Colour scale", list(hv.STYLE_NAMES), format_func=hv.STYLE_NAMES.get, key="hm_style",
                           index=list(hv.STYLE_NAMES).index(view_param("style", "paper"))
                           if view_param("style", "paper") in hv.STYLE_NAMES else 0)
    table = viewer.selection(preds, split)
    return HeatmapView(ws=ws, run=run, sha=sha, stores=stores, labels=labels, pick=pick, preds=preds, split=split,
                       by=by, style=style, table=table, means_of=group_means(ws, run, split, table))


def _start_crosshair(v: HeatmapView) -> None:
    """The crosshair of a new grid: a link's slices, else the left hippocampus (where AD atrophy starts)."""
    shape = v.grid.shape
    if st.session_state.get("hm_grid") != list(shape):
        start = view_param("slices", None, "ints")
        if not start or len(start) != 3:
            start = list(viewer.voxel_of(v.grid, hv.START_MNI))
        for k, n, s in zip(("hm_x", "hm_y", "hm_z"), shape, start):
            st.session_state[k] = int(min(max(s, 0), n - 1))
        st.session_state["hm_grid"] = list(shape)


def _jump_region(v: HeatmapView) -> None:
    name = st.session_state.get("hm_region")
    if name:
        v.set_crosshair(viewer.region_voxel(v.atlas, name))


def _jump_mni(v: HeatmapView) -> None:
    text = st.session_state.get("hm_mni", "")
    try:
        xyz = hv.parse_mni(text)
    except ValueError:
        st.session_state["hm_mni_error"] = f"“{text}” is not three numbers (x, y, z in mm)"
        return
    st.session_state.pop("hm_mni_error", None)
    v.set_crosshair(viewer.voxel_of(v.grid, xyz))


def crosshair_panel(v: HeatmapView) -> str:
    """The left column: crosshair, jumps, opacity, outlines, 3D toggle, anatomy, threshold. The anatomy kind."""
    shape = v.grid.shape
    i = st.slider("x (sagittal)", 0, shape[0] - 1, key="hm_x")
    j = st.slider("y (coronal)", 0, shape[1] - 1, key="hm_y")
    k = st.slider("z (axial)", 0, shape[2] - 1, key="hm_z")
    v.ijk = (i, j, k)
    st.text_input("Go to MNI (x, y, z mm)", key="hm_mni", on_change=_jump_mni, args=(v,),
                  placeholder="-26, -22, -14")
    if st.session_state.get("hm_mni_error"):
        st.caption(f":red[{st.session_state['hm_mni_error']}]")
    st.selectbox("Go to region", [""] + sorted(v.atlas.table["name"]), key="hm_region", on_change=_jump_region,
                 args=(v,), format_func=lambda n: n.replace("_", " ") if n else "—")
    v.opacity = st.slider("Opacity", 0.0, 1.0, 0.75, 0.05, key="hm_alpha")
    v.outlines = st.toggle("Atlas outlines", value=view_param("outlines", False, bool), key="hm_outlines",
                           help="Region borders of the Neuromorphometrics atlas (the paper's).")
    v.use3d = niivue_view.use_3d("hm_3d")
    bg_kind = st.radio("Anatomy under the map", ["template", "cohort mean"], horizontal=True, key="hm_bg",
                       help="The ICBM152 2009c template, or the mean of the cohort's scans (from the Dataset "
                            "overview's mean images).")
    if v.style == "threshold":
        q = st.select_slider(f"Hide below this percentile of the average {v.means.scale_from or v.ws.classes.positive} map",
                             list(viewer.THRESHOLD_PERCENTILES), value=90, key="hm_thr")
        v.threshold = v.means.percentiles[q]
    return bg_kind


def anatomy(v: HeatmapView, bg_kind: str, left) -> None:
    """The anatomy under the maps; the template while the cohort's mean anatomy is not computed."""
    ws, resolution = v.ws, v.grid.resolution
    v.bg_key = ("template",)   # what the anatomy is made from (the 3D viewer's content key)
    if bg_kind == "template":
        v.background, v.bg_range = _background("template", resolution, "", ws)
    else:   # keyed by the overview's means file (a content key) and whether it exists yet
        means_file = overview.group_means_path(ws, cohort_table(str(ws.cohort_csv), _mtime(ws.cohort_csv)))
        v.background, v.bg_range = _background("mean", resolution, f"{means_file}:{means_file.exists()}", ws)
        v.bg_key = ("mean", str(means_file))
    if v.background is None:
        with left:
            st.caption("The cohort's mean anatomy is computed on the **Dataset overview** page (tab *Mean "
                       f"{ws.classes.positive} − {ws.classes.negative}*); "
                       "the template is shown meanwhile.")
        v.background, v.bg_range = _background("template", resolution, "", ws)
        v.bg_key = ("template",)


def main() -> None:
    st.session_state.pop("hm_crosshair_clicked", None)   # this run is the page's: every panel follows
    ws = current_workspace()
    st.title("Heatmaps")
    run = require_ready_run(ws)
    report_button(ws, run)
    sha = checkpoint_sha(str(run.best_checkpoint), _mtime(run.best_checkpoint))
    stores = [heatmap_store(str(s.folder)) for s in viewer.stores_of(ws, sha)]
    compute_panel(ws, run, stores)
    v = selection(ws, run, sha, stores)
    v.means = v.means_of(v.store, v.by)
    v.atlas = load_atlas(hv.ATLAS, v.grid.resolution)
    _start_crosshair(v)
    left, right = st.columns([1, 3.2])
    with left:
        bg_kind = crosshair_panel(v)
    anatomy(v, bg_kind, left)
    with right:
        first = view_param("view", "Groups")
        view = st.segmented_control("View", list(VIEWS), key="hm_view", required=True, label_visibility="collapsed",
                                    default=first if first in VIEWS else "Groups")
        VIEWS[view](v)


main()
