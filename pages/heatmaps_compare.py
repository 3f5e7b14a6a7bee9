"""The Heatmaps page's Compare view: two groups (with their difference) or two methods side by side."""

from __future__ import annotations

import numpy as np
import streamlit as st

from lib.views import viewer
from lib.views.render import stack, titled, to_png
from pages.heatmaps_panels import HeatmapView, scale_bar
from pages.review_panel import review_panel


def compare_view(v: HeatmapView) -> None:
    """Two groups (with their difference) or two methods side by side, on the same crosshair."""
    means, stores, labels = v.means, v.stores, v.labels
    mode = st.radio("Compare", ["two groups", "two methods"], horizontal=True, key="hm_cmp_mode")
    available = [e.label for e in means.entries if e.count > 0]
    if not available:
        st.info("No group of this selection has scans.")
        return
    if mode == "two groups":
        a1, a2 = st.columns(2)
        ga = a1.selectbox("A", available, key="hm_cmp_a", format_func=v.group_label,
                          index=available.index("TP") if "TP" in available and "FP" in available else 0)
        gb = a2.selectbox("B", available, key="hm_cmp_b", format_func=v.group_label,
                          index=available.index("FP") if "TP" in available and "FP" in available
                          else min(1, len(available) - 1))
        pairs = [(ga, means, v.method_label), (gb, means, v.method_label)]
    else:
        if len(stores) < 2:
            st.info("Only one method has heatmaps for this run: compute another one above.")
            return
        a1, a2, a3 = st.columns(3)
        ia = a1.selectbox("Method A", range(len(stores)), format_func=lambda x: labels[x], key="hm_cmp_ma",
                          index=v.pick)
        ib = a2.selectbox("Method B", range(len(stores)), format_func=lambda x: labels[x], key="hm_cmp_mb",
                          index=viewer.other_method_index([s.params.get("method") for s in stores], v.pick))
        whole = [e.group for e in means.entries if e.subgroup is None and e.count > 0]
        g = a3.selectbox("Group", whole, key="hm_cmp_g", format_func=v.group_label)
        pairs = [(g, v.means_of(stores[ia], "none"), labels[ia]), (g, v.means_of(stores[ib], "none"), labels[ib])]
    panels = _side_by_side(v, pairs)
    if mode == "two groups":
        target, volume, fname = _difference(v, ga, gb, panels)
    else:
        st.caption("Each method on its own scale (the paper's rule applied to that method's average "
                   f"{v.ws.classes.positive} map). A "
                   "voxel-wise difference of two methods' raw values is not meaningful; the *Distances* view "
                   "compares whole maps.")
        target, volume, fname = pairs[0][0], pairs[0][1][pairs[0][0]], f"{pairs[0][0]}_{labels[ia]}"
    d1, d2 = st.columns(2)
    d1.download_button("PNG of this view", data=to_png(stack(panels)), file_name=f"{v.run.id}_compare_{fname}.png",
                       mime="image/png", icon=":material/image:", key="cmp-png", on_click="ignore", width="stretch")
    vol32 = np.array(volume, dtype=np.float32)
    d2.download_button("NIfTI of " + ("the difference" if mode == "two groups" else "map A"),
                       data=lambda: viewer.nifti_bytes(vol32, v.grid, f"{v.method_label} {target}"),
                       file_name=f"{v.run.id}_{fname}.nii.gz".replace(" ", "_"), mime="application/gzip",
                       icon=":material/download:", key="cmp-nii", on_click="ignore", width="stretch")
    review_panel(v.ws, {"kind": "group", "group": target}, {**v.settings, "view": "Compare", "compare": mode})


def _side_by_side(v: HeatmapView, pairs) -> list:
    """Two (group, means, method label) maps in two columns; their titled images for the export."""
    panels = []
    for col, (g, m, lab) in zip(st.columns(2), pairs):
        with col:
            vol = m[g]
            ov = v.overlay(vol, m)
            img = v.ortho(vol, ov, height=180)
            panels.append(titled(stack([img, scale_bar(ov)]), f"{lab} · {v.pretty(g)} (n={m.count(g)})"))
            st.markdown(f"**{lab} · {v.pretty(g)}** (n = {m.count(g)})")
            st.image(to_png(img), width="stretch")
            st.image(to_png(scale_bar(ov)))
            st.caption(v.readout(vol))
    return panels


def _difference(v: HeatmapView, ga: str, gb: str, panels: list) -> tuple:
    """Group A − group B on a diverging scale; (what it shows, the volume, a file name)."""
    diff, lim = viewer.difference(v.means[ga], v.means[gb])
    ov = viewer.overlay(diff, "diverging", alpha=v.opacity, limit=lim)
    img = v.ortho(diff, ov)
    pa, pb = v.pretty(ga), v.pretty(gb)
    st.markdown(f"**Difference {pa} − {pb}** · red: more relevance in {pa}, blue: more in {pb}")
    st.image(to_png(img), width="stretch")
    st.markdown(v.readout(diff))
    st.image(to_png(scale_bar(ov)))
    panels.append(titled(stack([img, scale_bar(ov)]), f"{v.method_label} · {pa} − {pb}"))
    return f"{pa} − {pb}", diff, f"{pa}-minus-{pb}".replace(" · ", "_")
