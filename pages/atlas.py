"""Atlas metrics: relevance per brain region — sum, density, gain — for a run's heatmaps (Böhle et al. 2019
§2.5, Figs 4–7; Rieke et al. 2018 Table 1; Eitel, study 3).

Region tables are computed once per (heatmap store, atlas) by ``python -m lib regions`` in the background
and cached; everything shown is computed by lib.analysis.region_analysis and drawn by lib.views.region_figures.
The tabs are drawn by pages.atlas_tabs and pages.atlas_compare.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import streamlit as st

from lib import jobs
from lib.analysis import region_analysis as ra, region_tables as rt
from lib.data.atlas import AtlasError
from lib.reviews import auth
from lib.views import atlas as av, viewer
from pages.atlas_compare import methods_tab, robustness_tab, table_tab, tests_tab
from pages.atlas_tabs import AtlasView, active_job, fingerprints_tab, sha_of, submit, top_regions_tab
from pages.job_widgets import allowed, job_progress, locked, missing_for
from pages.run_picker import require_ready_run
from pages.workspace_sidebar import current_workspace
from pages.login import current_actor
from pages.report_button import report_button
from pages.review_panel import view_param
from lib.data.atlases import DEFAULT_ATLAS

TAB_VIEWS = (top_regions_tab, fingerprints_tab, robustness_tab, methods_tab, tests_tab, table_tab)


def _mtime(path) -> int:
    return Path(path).stat().st_mtime_ns


@st.cache_resource(max_entries=8, show_spinner=False)
def _atlas(name: str, res: float, merge: bool, root: str, version: int, _ws):
    """An atlas on the run's grid; ``root`` and ``version`` key a workspace's own atlas (its files' times)."""
    return rt.get_atlas(_ws, name, res, merge)


def atlas_version(ws, name: str) -> tuple[str, int]:
    """(workspace, modification time) of a workspace atlas, ("", 0) for shipped ones: a replaced atlas reloads."""
    folder = rt.user_atlas_dir(ws) / name
    if name in rt.ATLAS_FILES or not folder.is_dir():
        return "", 0
    return str(ws.root), max((_mtime(p) for p in folder.iterdir()), default=0)


def first_heatmaps(ws, run) -> None:
    """No heatmaps of the run yet: offer LRP β = 0 with its region metrics, follow the job, stop the page."""
    running = jobs.of_run(ws, run.id, jobs.RegionTables.kind)
    st.info(f"No heatmaps of run **{run.id}** yet. The region metrics need them: compute LRP β = 0 (the paper's "
            "method) here, or any method on the **Heatmaps** page.")
    request = jobs.RegionTables(run_ids=(run.id,), method="lrp", betas=(0.0,))
    if not running and st.button("Compute LRP β = 0 heatmaps and their region metrics", type="primary",
                                 disabled=locked("compute")) and submit(ws, request):
        st.rerun()
    for job in running:
        job_progress(job.id, ws, rerun_when_done=True, key="regions")
    st.stop()


def selection(ws, run, sha: str, stores: list) -> AtlasView:
    """The row of pickers: heatmaps, atlas, scans, values, merging and the smallest region."""
    labels = [viewer.label_of(s) for s in stores]
    atlases = rt.list_atlases(ws)
    wanted_store = view_param("store", "")
    c = st.columns([1.5, 1.5, 1.1, 1.2, 1.2])
    pick = c[0].selectbox("Heatmaps", range(len(stores)), format_func=lambda i: labels[i], key="at_store",
                          index=next((i for i, s in enumerate(stores) if s.folder.name == wanted_store), 0))
    method = stores[pick].params.get("method", "")
    # an atlas just added is already in the session state: no default then (it would be overridden anyway)
    first_atlas = {} if "at_atlas" in st.session_state else {
        "index": atlases.index(view_param("atlas")) if view_param("atlas") in atlases else 0}
    atlas_name = c[1].selectbox("Atlas", atlases, key="at_atlas", format_func=av.atlas_name, **first_atlas)
    preds_all = run.predictions()
    splits = av.split_choices(preds_all)
    first_split = view_param("split", "test")
    split = c[2].selectbox("Scans", splits, key="at_split",
                           index=splits.index(first_split) if first_split in splits else 0,
                           format_func=lambda s: av.split_label(preds_all, s),
                           help="The paper's figures use the test split.")
    default_values = av.default_values(method)
    values = c[3].selectbox("Values", list(av.VALUES), format_func=av.VALUES.get, key=f"at_values_{method}",
                            index=list(av.VALUES).index(view_param("values", default_values))
                            if view_param("values", default_values) in av.VALUES else 0,
                            help="Gradient maps are read as absolute values (the paper's guided-backprop "
                                 "'susceptibility'); LRP relevance keeps its sign (positive = evidence for "
                                 f"{ws.classes.positive}).")
    with c[4]:
        merge = st.toggle("Merge left and right", value=view_param("merge", False, bool), key="at_merge")
        min_voxels = st.number_input("Smallest region (voxels)", 0, 10_000, view_param("min_voxels", 0, int), 5,
                                     key="at_minvox", help="Regions smaller than this on the run's grid are left "
                                                           "out of rankings; a region of a few voxels has a noisy "
                                                           "density.")
    return AtlasView(ws=ws, run=run, sha=sha, stores=stores, labels=labels, pick=pick, atlas_name=atlas_name,
                     split=split, values=values, merge=merge, min_voxels=min_voxels)


def add_atlas(ws, resolution: float) -> None:
    """Check the uploaded atlas, keep it in the workspace and switch to it (a callback: before the selectbox)."""
    ss = st.session_state
    up_labels, up_names, name = ss.get("at_up_labels"), ss.get("at_up_names"), (ss.get("at_up_name") or "").strip()
    with tempfile.TemporaryDirectory() as tmp:
        lab, nam = Path(tmp) / Path(up_labels.name).name, Path(tmp) / Path(up_names.name).name
        lab.write_bytes(up_labels.getvalue())
        nam.write_bytes(up_names.getvalue())
        try:
            # the identity as the account database says at the click (a callback runs before app.py)
            added = rt.save_user_atlas(ws, name, lab, nam, resolution, who=current_actor())
        except (AtlasError, auth.PermissionDenied) as exc:
            ss["at_atlas_msg"] = ("error", str(exc), [])
            return
    ss["at_atlas"] = added.name
    ss["at_atlas_msg"] = ("success", f"Atlas {added.name} added: {added.n_regions} regions on the {resolution:g} mm "
                                     "grid; it is selected above.", added.warnings)


def atlas_upload(ws, resolution: float) -> None:
    with st.expander("Add your own atlas", icon=":material/upload_file:"):
        st.caption(f"A labels NIfTI in MNI space (any grid; resampled to the run's {resolution:g} mm grid with "
                   "nearest neighbour) and a CSV/TSV table with an `index` (label value) and a `name` column.")
        may_not = locked("change_atlas")
        u1, u2, u3 = st.columns([1, 1, 1])
        up_labels = u1.file_uploader("Labels (.nii / .nii.gz)", type=["nii", "gz"], key="at_up_labels",
                                     disabled=may_not)
        up_names = u2.file_uploader("Names (.csv / .tsv)", type=["csv", "tsv", "txt"], key="at_up_names",
                                    disabled=may_not)
        up_name = u3.text_input("Atlas name", key="at_up_name", placeholder="e.g. my_parcellation", disabled=may_not)
        u3.button("Check and add", disabled=may_not or not (up_labels and up_names and up_name.strip()),
                  on_click=add_atlas, args=(ws, resolution))
    if "at_atlas_msg" in st.session_state:
        kind, text, notes = st.session_state.pop("at_atlas_msg")
        (st.success if kind == "success" else st.error)(text)
        for note in notes:
            st.caption(note)


def region_table(v: AtlasView) -> Path:
    """The store's region table on the atlas; else its job's progress (started here) and the page stops."""
    ws, atlas = v.ws, v.atlas
    table_file = rt.find_table(ws, v.store, atlas)
    if table_file is not None:
        return table_file
    request = jobs.RegionTables(run_ids=(v.run.id,), stores=(v.store.folder.name,), atlas=v.atlas_name,
                                merge=v.merge)
    store_key = request.key(ws)
    failed = jobs.find(ws, store_key) if ws.jobs_dir.exists() else None
    job = active_job(ws, request)
    if job is None and failed is not None and failed.state in ("failed", "cancelled") \
            and not st.session_state.get(f"retry-{store_key}"):
        job_progress(failed.id, ws, key="regions-failed")
        if st.button("Try again"):
            st.session_state[f"retry-{store_key}"] = True
            st.rerun()
        st.stop()
    if job is None and not allowed("compute"):
        missing_for("compute", f"The region metrics of these heatmaps on **{atlas.name}** are")
        st.stop()
    if job is None:
        # reading a finished store is quick and needs no model: start at once
        submit(ws, request)
        job = active_job(ws, request)
    st.info(f"Summing the relevance of every scan per region of **{atlas.name}** ({atlas.n_regions} regions) "
            "in the background; the table is cached for everyone.")
    if job is not None:
        job_progress(job.id, ws, rerun_when_done=True, key="regions")
    st.stop()


def main() -> None:
    ws = current_workspace()
    st.title("Atlas metrics")
    run = require_ready_run(ws)
    report_button(ws, run)
    resolution = run.grid.resolution
    sha = sha_of(run)
    stores = viewer.stores_of(ws, sha)
    if not stores:
        first_heatmaps(ws, run)
    v = selection(ws, run, sha, stores)
    atlas_upload(ws, resolution)
    try:
        v.atlas = _atlas(v.atlas_name, resolution, v.merge, *atlas_version(ws, v.atlas_name), ws)
    except (AtlasError, KeyError) as exc:
        st.error(f"The atlas {v.atlas_name} cannot be used: {exc.args[0] if exc.args else exc}")
        st.stop()
    v.table_file = region_table(v)
    v.table = v.annotated(v.table_file, run, v.absolute)
    if v.table.empty:
        st.warning(f"No scan of the {av.SPLIT_NAMES[v.split]} has both a heatmap and a prediction.")
        st.stop()
    P, N = ws.classes.positive, ws.classes.negative
    n_ad, n_hc = av.group_sizes(v.key)[P], av.group_sizes(v.key)[N]
    v.truth = ra.atrophied_regions(ws, merged=v.merge) if ws.is_demo and v.atlas_name == DEFAULT_ATLAS \
        else set()
    st.caption(f"**{v.method_label}** · {v.atlas.name}, {v.atlas.n_regions} regions on the {resolution:g} mm grid · "
               f"{av.SPLIT_NAMES[v.split]}: {n_ad} {P}, {n_hc} {N} · {av.VALUES[v.values]}"
               + (f" · ★ = a region the demo generator shrank in {P}" if v.truth else ""))
    names = av.tabs(ws.classes)
    default_tab = view_param("tab", names[0])
    tabs = st.tabs(names, key="at_tab", on_change="rerun", default=default_tab if default_tab in names else names[0])
    for tab, draw in zip(tabs, TAB_VIEWS):
        with tab:
            if tab.open:
                draw(v)


main()
