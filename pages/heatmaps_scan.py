"""The Heatmaps page's Individual view (one scan's map as in Fig 8, beside its ground truth) and its Distances
view (Rieke et al. 2018, Table 2)."""

from __future__ import annotations

import numpy as np
import streamlit as st

from lib.analysis.groups import membership
from lib.views import overview
from lib.views import heatmaps as hv, viewer
from lib.views.render import colorbar, stack, to_png
from pages.loaders import cohort_table
from pages.heatmaps_panels import HeatmapView, scale_bar
from pages.review_panel import review_panel, view_param


OUTLINE = (0, 230, 255)
PANEL_HEIGHT = 330   # pixels of a slice before the page scales the row to its width


def _mtime(path) -> int:
    return path.stat().st_mtime_ns


@st.cache_resource(max_entries=16, show_spinner=False)
def scan_on_grid(path: str, mtime_ns: int, resolution: float):
    from lib.data.templates import Grid
    from lib.data.validation import load_on_grid

    img, _ = load_on_grid(path, Grid(resolution))
    data = np.asarray(img.dataobj, dtype=np.float32)
    return data, viewer.background_range(data)


@st.fragment   # "Next ▶" and the scan pickers rerun this view only, not the page around it
def individual_view(v: HeatmapView) -> None:
    """One scan's map scaled as in Fig 8, its prediction and demographics, top regions, ground truth beside it."""
    if st.session_state.pop("hm_crosshair_clicked", False):
        st.rerun()   # scope "app": the crosshair lives outside this fragment
    scan = _pick_scan(v)
    if scan is None:
        return
    ws, preds = v.ws, v.preds
    cohort = cohort_table(str(ws.cohort_csv), _mtime(ws.cohort_csv))
    facts = viewer.scan_facts(preds, cohort, scan)
    m, P = st.columns(5), ws.classes.positive
    m[0].metric(f"{P} score", f"{facts['ad_score']:.2f}", help=f"The model's probability of {P}")
    m[1].metric("Predicted", facts["predicted"])
    m[2].metric("Diagnosis", facts["diagnosis"])
    m[3].metric("Outcome", facts["outcome"], help=hv.group_help(ws.classes).get(facts["outcome"]))
    m[4].metric("Split", facts.get("split", "—"))
    st.dataframe(hv.facts_table(facts), hide_index=True, width="stretch")

    volume = v.store.get(scan)
    path = ws.resolve(cohort.set_index("scan_id").loc[scan, "path"])
    o1, o2 = st.columns([1.3, 1])
    show_top = o1.toggle("Outline the regions with the most relevance", value=True, key="hm_top_outline")
    rank_by = o2.segmented_control("Rank regions by", ["density", "sum"], default="density", required=True,
                                   key="hm_rank", format_func={"density": "relevance per voxel",
                                                               "sum": "relevance sum"}.get,
                                   help="Per voxel (the paper's size-normalised relevance, Figs 5 and 8) or summed "
                                        "over the region (favours large regions such as the white matter).")
    top = viewer.top_regions(volume, v.atlas, k=8, metric=rank_by)
    marks = viewer.outline_labels(v.atlas, top["label"]) if show_top else None
    gt = overview.ground_truth(ws, scan) if ws.is_demo else None
    ov, images = _scan_maps(v, scan, volume, path, marks, gt)
    st.markdown(v.readout(volume))
    st.caption(f"Coloured from the 90th (**{v.means.individual.vmin:.3g}**) to the 99.5th percentile "
               f"(**{v.means.individual.vmax:.3g}**) of the average {v.means.scale_from or P} map "
               f"({hv.SPLIT_NAMES[v.split]}); below transparent, above yellow. Over the scan itself"
               + ("; outlined: the regions listed below." if show_top else "."))
    _region_tables(top, rank_by, gt)
    v.downloads(stack(images, vertical=True), ov,
                f"{v.method_label} · {scan} ({facts['diagnosis']}, {facts['outcome']}, {P} score "
                f"{facts['ad_score']:.2f})", volume, f"{v.run.id}_{v.store.params.get('method')}_{scan}", "ind")
    review_panel(ws, {"kind": "scan", "scan_id": scan},
                 {**v.settings, "view": "Individual", "scan": scan, "scale": "fig8",
                  "vmin": ov.vmin, "vmax": ov.vmax})


def _pick_scan(v: HeatmapView) -> str | None:
    """The group and scan pickers with previous/next buttons; the scan shown (None: no scans)."""
    k = v.ws.classes
    mem = membership(v.table, v.by_col, classes=k)
    choices, help_ = hv.scan_choices(mem, k), hv.group_help(k)
    if not choices:
        st.info("No scans in this selection.")
        return None
    linked = view_param("scan", "")   # a link to one scan opens the group it belongs to
    home = next((x for x in choices if linked in mem[(x, None)]), choices[0])
    s1, s2 = st.columns([1, 2])
    g = s1.selectbox("Scans of group", choices, key="hm_ind_group", index=choices.index(home),
                     format_func=lambda x: f"{x} ({len(mem[(x, None)])}) · {help_[x]}")
    order = hv.scan_order(v.preds, mem[(g, None)])
    ids = list(order.index)
    if st.session_state.get("hm_scan") not in ids:
        st.session_state["hm_scan"] = linked if linked in ids else ids[0]
    s2.selectbox(f"Scan (highest {k.positive} score first)", ids, key="hm_scan",
                 format_func=lambda s: f"{s} · {k.positive} score {order[s]:.2f}")
    scan = st.session_state["hm_scan"]
    prev_id, next_id = viewer.neighbours(ids, scan)
    n1, n2, n3 = st.columns([1, 1, 2])
    n1.button("◀ Previous", key="hm_prev", disabled=prev_id is None, width="stretch",
              on_click=lambda p=prev_id: st.session_state.update(hm_scan=p))
    n2.button("Next ▶", key="hm_next", disabled=next_id is None, width="stretch",
              on_click=lambda n=next_id: st.session_state.update(hm_scan=n))
    n3.caption(f"Scan {ids.index(scan) + 1} of {len(ids)} in {g}")
    return scan


def _scan_maps(v: HeatmapView, scan: str, volume, path, marks, gt) -> tuple:
    """The scan's map over the scan (3D viewer and slices) beside its ground truth; (overlay, the two images)."""
    anat, anat_rng = scan_on_grid(str(path), _mtime(path), v.grid.resolution)
    ov = viewer.overlay(volume, "individual", v.means, alpha=v.opacity)
    if v.use3d:
        st.markdown(f"**Relevance · {v.method_label}** over the scan · 3D viewer")
        v.viewer3d(ov, ("scan", v.store.folder.name, scan), "hm_nv_scan", bg=anat, rng=anat_rng,
                   anat_key=("scan", str(path), _mtime(path)))
    # one panel per row at the page's width: larger, and both rows share the grid, scale and slices (aligned);
    # the top regions' outlines are opaque and 2 px wide, drawn over the colour (in the 3D viewer's mode too)
    lines = dict(labels_=marks, bg=anat, rng=anat_rng, outline_color=OUTLINE, outline_alpha=1.0, outline_width=2)
    st.markdown(f"**Relevance · {v.method_label}** (Fig 8 scale)")
    img = v.ortho(volume, ov, height=PANEL_HEIGHT, **lines)
    st.image(to_png(img), width="stretch")
    st.image(to_png(scale_bar(ov)))
    if gt is not None:
        amap, _ = scan_on_grid(str(gt["atrophy_map"]), _mtime(gt["atrophy_map"]), v.grid.resolution)
        lesions = v.ws.config.get("disease") == "ms"   # the MS demo's ground truth is its lesion mask
        st.markdown("**Ground-truth lesions** (same slices)" if lesions else
                    "**Ground-truth atrophy** (local volume loss applied by the generator, same slices)")
        gov = hv.ground_truth_overlay(amap, lesions=lesions)
        other = v.ortho(gov.volume, gov, height=PANEL_HEIGHT, **lines)
        st.image(to_png(other), width="stretch")
        st.image(to_png(colorbar(gov.cmap, gov.vmin, gov.vmax,
                                 label=hv.LESION_LABEL if lesions else hv.GROUND_TRUTH_LABEL)))
    else:
        st.markdown("**The scan** (on the run's grid, same slices)")
        other = v.ortho(anat, None, height=PANEL_HEIGHT, **lines)
        st.image(to_png(other), width="stretch")
    return ov, [img, other]


def _region_tables(top, rank_by: str, gt) -> None:
    """The scan's most relevant regions beside the regions the demo generator displaced."""
    t1, t2 = st.columns([1.25, 1])
    with t1:
        st.markdown("**Regions with the most relevance** (Neuromorphometrics)")
        st.dataframe(top[["region", rank_by, "share"]], hide_index=True, width="stretch",
                     column_config={"share": st.column_config.NumberColumn(
                                        "share", format="percent",
                                        help="the region's share of the scan's positive relevance"),
                                    "sum": st.column_config.NumberColumn("sum", format="%.3g"),
                                    "density": st.column_config.NumberColumn("per voxel", format="%.3g")})
    with t2:
        if gt is None:
            return
        if gt["severity"] > 0:
            st.markdown(f"**Ground truth** · subtype *{gt['subtype']}* · severity {gt['severity']:.2f}"
                        + (" · atypical" if gt["atypical"] else ""))
            st.dataframe(hv.truth_units(gt), hide_index=True, width="stretch", column_config={
                "mm": st.column_config.NumberColumn("shift", format="%.2f mm",
                                                    help="boundary displacement applied by the generator")})
        else:
            st.markdown("**Ground truth**")
            st.caption("No disease atrophy applied to this scan (ageing and individual anatomy only)"
                       + (", though it is an atypical control." if gt["atypical"] else "."))


def distances_view(v: HeatmapView) -> None:
    """Euclidean distances between the methods' average maps of the two classes (Rieke et al. 2018, Table 2)."""
    norm_name = st.radio("Maps compared", list(hv.NORMALISE), horizontal=True, key="hm_dist_norm")
    if len(v.stores) < 2:
        st.info("The table compares the average maps of several methods: compute heatmaps with a second method "
                "above.")
        return
    maps = {}
    for s, lab in zip(v.stores, v.labels):
        m = v.means_of(s, "none")
        maps[lab] = {g: m[g] for g in v.ws.classes.names[::-1] if g in m}
    tables = viewer.method_distances(maps, v.ws.classes.names[::-1], normalise=hv.NORMALISE[norm_name])
    if not tables:
        st.info(f"Neither {v.ws.classes.positive} nor {v.ws.classes.negative} has scans in this selection.")
        return
    st.markdown(f"**Euclidean distance between the methods' average maps, {' / '.join(tables)}** · "
                f"{hv.SPLIT_NAMES[v.split]}")
    st.dataframe(viewer.combined_table(tables), width="stretch")
    st.caption("As in Rieke et al. 2018, Table 2: √Σᵢ (Aᵢ − Bᵢ)² over all voxels between two methods' "
               "average heatmaps. Raw distances depend on each method's units; the normalised variants compare "
               "the maps' shapes.")
    for g, t in tables.items():
        with st.expander(f"{g} only"):
            st.dataframe(t.style.format("{:.4g}"), width="stretch")
