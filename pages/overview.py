"""Dataset overview: who is in the cohort, how good the scans are, and what one scan looks like."""

import numpy as np
import pandas as pd
import plotly.express as px
import streamlit as st

from lib.core import cache
from lib import jobs
from lib.views import overview
from lib.views.render import Overlay, ortho_image
from pages.job_widgets import job_progress, locked, submit_job
from pages.loaders import atlas_labels, group_means, volume
from pages.workspace_sidebar import current_workspace, require_ready_workspace
from pages.review_panel import review_panel, view_param
from pages import niivue_view
from lib.data.atlases import DEFAULT_ATLAS

COLOURS = ("#f28e2b", "#59a14f")  # the paper's orange (positive class, AD) and green (negative, HC)

HIPPOCAMPUS_MNI = (-26, -22, -14)   # slices open through the left hippocampus, where AD atrophy is expected first


def counts_tab(cohort, classes) -> None:
    tables = overview.counts(cohort)
    cols = st.columns(len(tables))
    for col, (name, table) in zip(cols, tables.items()):
        with col:
            st.markdown(f"**By {name}**")
            st.table(table)
    if "split" in cohort:
        st.caption("Splits are by subject (all visits of a subject stay in one part) and stratified by "
                   f"diagnosis; the test set holds equally many {classes.positive} and {classes.negative} subjects.")


def demographics_tab(cohort, classes) -> None:
    st.table(overview.demographics(cohort))
    plots = overview.demographic_histograms(cohort, dict(zip((classes.positive, classes.negative), COLOURS)))
    cols = st.columns(max(len(plots), 1))
    for col, (_name, fig) in zip(cols, plots):
        col.plotly_chart(fig, width="stretch")
    st.caption("One row per subject (first visit).")


def qc_tab(cohort) -> None:
    qc_cols = [c for c in ("scan_id", "diagnosis", "split", "site", "mean", "std", "nonzero_fraction",
                           "template_corr", "on_grid", "n_errors", "n_warnings", "flags") if c in cohort]
    if "template_corr" not in cohort:
        st.info("No quality-control table yet: run the validation on the **Cohort & validation** page.")
    else:
        low = cohort["template_corr"] < 0.5
        st.markdown(f"Sort by any column. **{int(low.sum())}** scans correlate below 0.5 with the template; "
                    f"**{int((cohort.get('n_warnings', 0) > 0).sum())}** have warnings.")
        qc_view = cohort[qc_cols].copy()
        if "flags" in qc_view:
            qc_view["flags"] = qc_view["flags"].astype(object).fillna("")  # all-NaN reads as float64
        number = st.column_config.NumberColumn
        st.dataframe(qc_view, width="stretch", hide_index=True, height=360,
                     column_config={"template_corr": st.column_config.ProgressColumn(
                         "corr. with template", min_value=0.0, max_value=1.0, format="%.3f"),
                         "mean": number("mean", format="%.1f"), "std": number("std", format="%.1f"),
                         "nonzero_fraction": number("non-zero", format="%.3f"),
                         "on_grid": st.column_config.CheckboxColumn("on grid"),
                         "n_errors": number("errors"), "n_warnings": number("warnings")})


def _scan_controls(ws, cohort, labels, hippocampus) -> tuple:
    """The scan, the crosshair and what is drawn over it; (row, volume, ijk, outlines, ground truth, shown, 3D)."""
    # a review's link (?scan=…&slices=…) reopens the viewer where the review was written
    linked = np.flatnonzero(cohort["scan_id"].to_numpy() == view_param("scan", ""))
    pick = st.selectbox("Scan", range(len(cohort)), format_func=lambda i: labels.iat[i],
                        index=int(linked[0]) if len(linked) else 0)
    row = cohort.iloc[pick]
    data = volume(ws, row["path"])
    shape = data.shape
    if st.session_state.get("ov_grid") != list(shape):   # first visit (or another grid): where to open
        start = view_param("slices", None, "ints") or [int(v) for v in hippocampus]
        start = [min(max(v, 0), n - 1) for v, n in zip(start, shape)] if len(start) == 3 else list(hippocampus)
        for key_, v in zip(("ov_x", "ov_y", "ov_z"), start):
            st.session_state[key_] = int(v)
        st.session_state["ov_grid"] = list(shape)
    # keyed, so a click in the 3D viewer can move them
    i = st.slider("x (sagittal)", 0, shape[0] - 1, key="ov_x")
    j = st.slider("y (coronal)", 0, shape[1] - 1, key="ov_y")
    k = st.slider("z (axial)", 0, shape[2] - 1, key="ov_z")
    outlines = st.toggle("Atlas outlines (Neuromorphometrics)", value=view_param("outlines", False, bool))
    gt = overview.ground_truth(ws, row["scan_id"]) if ws.is_demo else None
    show_gt = st.toggle("Ground-truth atrophy", value=gt is not None, disabled=gt is None,
                        help="Demo cohort only: local volume loss applied by the generator.")
    use3d = niivue_view.use_3d("ov_3d")
    return row, data, (i, j, k), outlines, gt, show_gt, use3d


def _scan_picture(ws, row, data, ijk, outlines: bool, overlay, gt, use3d: bool, atlas, atlas_table) -> None:
    """The scan in the 3D viewer or as slices, with the atlas outlines and the ground truth over it."""
    i, j, k = ijk
    brain = data
    if use3d:
        scan_path = ws.resolve(row["path"])
        bg_range = (0.0, float(np.percentile(data[data > 0], 99.5)) if np.any(data > 0) else 1.0)

        def _to_voxel(ijk) -> None:
            for key_, v in zip(("ov_x", "ov_y", "ov_z"), ijk):
                st.session_state[key_] = int(v)

        gt_path = ws.resolve(str(gt["atrophy_map"])) if overlay is not None else None
        niivue_view.show(
            ws, ws.grid, key="ov_nv", ijk=(i, j, k), set_crosshair=_to_voxel, bg_range=bg_range,
            anatomy=niivue_view.anatomy_bytes(ws, ("scan", str(scan_path), scan_path.stat().st_mtime_ns),
                                              data, ws.grid, bg_range),
            ov=overlay, overlay=niivue_view.overlay_bytes(
                ws, ("atrophy", str(gt_path), gt_path.stat().st_mtime_ns), overlay, ws.grid)
            if overlay is not None else None,
            atlas=niivue_view.atlas_bytes(ws, DEFAULT_ATLAS, atlas, ws.grid),
            atlas_names=dict(zip(atlas_table["index"].astype(int), atlas_table["name"])))
        if outlines:
            st.caption("Atlas outlines are drawn in the slice images (3D viewer off).")
    else:
        st.image(ortho_image(brain, (i, j, k), overlay=overlay, labels=atlas if outlines else None),
                 width="stretch")


def _scan_facts(ws, row, data, ijk, gt, atlas, atlas_table) -> None:
    """The crosshair's read-out, the scan's facts and, on the demo cohort, its ground truth."""
    i, j, k = ijk
    mni = ws.grid.voxel_to_mni((i, j, k))
    st.markdown(f"MNI **({mni[0]:.0f}, {mni[1]:.0f}, {mni[2]:.0f}) mm** · voxel ({i}, {j}, {k}) · "
                f"intensity {data[i, j, k]:.0f} · region **{overview.region_at(atlas, atlas_table, (i, j, k))}**")
    facts = {k_: row[k_] for k_ in ("subject_id", "session", "diagnosis", "age", "sex", "mmse", "cdr", "site",
                                    "hippocampal_volume", "lesion_load", "edss", "split")
             if k_ in row and pd.notna(row[k_])}
    st.dataframe(pd.DataFrame([facts]), hide_index=True, width="stretch")
    if gt is not None:
        units = pd.Series(gt["units_mm"])
        units = units[~units.index.str.contains("Vent")].sort_values(ascending=False)
        subtype = f" · subtype *{gt['subtype']}*" if gt["severity"] > 0 else ""
        st.markdown(f"**Ground truth**{subtype} · severity {gt['severity']:.2f}"
                    + (f" · atypical (mild {ws.classes.positive} or atrophic control)" if gt["atypical"] else ""))
        if units.max() > 0:
            fig = px.bar(units.head(12)[::-1], orientation="h", height=300,
                         labels={"value": "boundary displacement (mm)", "index": ""})
            fig.update_layout(showlegend=False, margin=dict(l=10, r=10, t=10, b=10))
            st.plotly_chart(fig, width="stretch")
        else:
            st.caption("No disease atrophy applied to this scan (only ageing and individual anatomy).")


def scan_viewer_tab(ws, cohort, hippocampus) -> None:
    """One scan in slices or the 3D viewer, with its facts, ground truth and reviews."""
    labels = cohort["scan_id"] + "  ·  " + cohort["diagnosis"]
    left, right = st.columns([1, 2.6])
    with left:
        row, data, (i, j, k), outlines, gt, show_gt, use3d = _scan_controls(ws, cohort, labels, hippocampus)
    atlas, atlas_table = atlas_labels(DEFAULT_ATLAS, ws.grid.resolution)
    overlay = None
    if show_gt and gt is not None:
        amap = volume(ws, str(gt["atrophy_map"]))
        overlay = Overlay(amap, 0.0, max(float(amap.max()), 1e-3), cmap="YlOrRd", alpha=0.75, threshold=0.03)
    with right:
        _scan_picture(ws, row, data, (i, j, k), outlines, overlay, gt, use3d, atlas, atlas_table)
        _scan_facts(ws, row, data, (i, j, k), gt, atlas, atlas_table)
    review_panel(ws, {"kind": "scan", "scan_id": row["scan_id"]},
                 {"page": "pages/overview.py", "tab": "Scan viewer", "slices": [i, j, k], "outlines": outlines,
                  "ground_truth": bool(show_gt)})


def mean_tab(ws, cohort, hippocampus) -> None:
    means_file = overview.group_means_path(ws, cohort)
    P, N = ws.classes.positive, ws.classes.negative
    means = group_means(str(means_file), P, N) if cache.ok(means_file) else None   # a bad file counts as absent
    if means is None:
        running = jobs.for_request(ws, jobs.CohortMeans(), active=True)
        if running is None:
            st.info(f"The mean images of {P} and {N} scans are computed once in the background (one pass over "
                    "all scans) and then cached.")
            if st.button(f"Compute mean {P} and {N} images", disabled=locked("compute")):
                running = submit_job(ws, jobs.CohortMeans())
        if running is not None:
            job_progress(running.id, ws, rerun_when_done=True, key="means")
    else:
        diff = means[f"{P} - {N}"]
        lim = float(np.percentile(np.abs(diff[means[N] > 0.2]), 99.5))
        cols = st.columns([1, 2.6])
        with cols[0]:
            mi = st.slider("x", 0, diff.shape[0] - 1, int(hippocampus[0]), key="mx")
            mj = st.slider("y", 0, diff.shape[1] - 1, int(hippocampus[1]), key="my")
            mk = st.slider("z", 0, diff.shape[2] - 1, int(hippocampus[2]), key="mz")
            thr = st.slider("hide |difference| below", 0.0, lim, lim * 0.25, format="%.3f")
        with cols[1]:
            st.image(ortho_image(means[N], (mi, mj, mk),
                                 overlay=Overlay(diff, -lim, lim, cmap="RdBu_r", alpha=0.8, threshold=thr)),
                     width="stretch")
            st.caption(f"Mean brain-normalised intensity, {P} minus {N}, over the mean {N} image. Blue: darker in "
                       f"{P} (tissue loss, larger CSF spaces, lesions); red: brighter in {P}.")


def main() -> None:
    ws = current_workspace()
    st.title("Dataset overview")
    if not require_ready_workspace(ws):
        st.stop()
    cohort = overview.load_cohort(ws)
    hippocampus = ws.grid.mni_to_voxel(HIPPOCAMPUS_MNI)
    P, N = ws.classes.positive, ws.classes.negative
    n_ad, n_hc = (cohort["diagnosis"] == P).sum(), (cohort["diagnosis"] == N).sum()
    c = st.columns(5)
    c[0].metric("Scans", len(cohort))
    c[1].metric("Subjects", cohort["subject_id"].nunique())
    c[2].metric(f"{P} scans", int(n_ad))
    c[3].metric(f"{N} scans", int(n_hc))
    c[4].metric("Grid", f"{ws.grid.resolution:g} mm", help=f"{ws.grid.shape} voxels, MNI (ICBM152 2009c)")
    if ws.is_demo:
        st.caption("Synthetic demo cohort: the ICBM152 2009c template deformed per subject, with known "
                   + ("white-matter lesions and atrophy in MS" if ws.config.get("disease") == "ms"
                      else f"temporal-lobe atrophy in {P}") + " (see the ground truth in the scan viewer).")
    names = ["Counts", "Demographics", "Quality control", "Scan viewer", f"Mean {P} − {N}"]
    # a review's link reopens its tab; only the open tab is computed and sent (a tab switch reruns the page)
    first = view_param("tab") if view_param("tab") in names else "Scan viewer" if view_param("scan") else names[0]
    tabs = st.tabs(names, key="ov_tab", on_change="rerun", default=first)
    draws = (lambda: counts_tab(cohort, ws.classes), lambda: demographics_tab(cohort, ws.classes),
             lambda: qc_tab(cohort), lambda: scan_viewer_tab(ws, cohort, hippocampus),
             lambda: mean_tab(ws, cohort, hippocampus))
    for tab, draw in zip(tabs, draws):
        with tab:
            if tab.open:
                draw()


main()
