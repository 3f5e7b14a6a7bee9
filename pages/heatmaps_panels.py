"""The Heatmaps page's drawing: the view being shown (selection, crosshair, anatomy) and its Groups view.

:class:`HeatmapView` holds what the page's controls chose; its methods draw slices, the 3D viewer, colour
bars and downloads at the shared crosshair. Compare, Individual and Distances are in pages.heatmaps_compare
and pages.heatmaps_scan.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import streamlit as st

from lib.views import heatmaps as hv, viewer
from lib.views.render import colorbar, ortho_image, overlay_key, shared_png, stack, titled, to_png
from lib.views.selection import StoreSelection
from pages import niivue_view
from pages.review_panel import review_panel, view_param


HEIGHT = 300


@dataclass
class HeatmapView(StoreSelection):
    """What the page shows: the run, its stores and the chosen one, the scans, the crosshair and anatomy."""

    preds: pd.DataFrame
    split: str
    by: str
    style: str
    table: pd.DataFrame
    means_of: Callable   # (store, subgrouping) → CachedGroupMeans, or stops the page while they are computed
    atlas: object = None
    ijk: tuple = (0, 0, 0)
    opacity: float = 0.75
    outlines: bool = False
    use3d: bool = False
    threshold: float | None = None
    background: np.ndarray | None = None
    bg_range: tuple | None = None
    bg_key: tuple = ("template",)
    means: viewer.CachedGroupMeans | None = None

    @property
    def grid(self):
        return self.run.grid

    @property
    def by_col(self) -> str | None:
        return viewer.SUBGROUPS.get(self.by)   # None: no subgroups

    @property
    def outline_labels(self):
        return self.atlas.labels if self.outlines else None

    @property
    def settings(self) -> dict:
        return hv.store_settings(self.run, self.sha, self.store, split=self.split, by=self.by, style=self.style,
                                 ijk=self.ijk, outlines=self.outlines)

    def set_crosshair(self, ijk) -> None:
        for k, v in zip(("hm_x", "hm_y", "hm_z"), ijk):
            st.session_state[k] = int(v)

    def set_crosshair_from_viewer(self, ijk) -> None:
        # a click in a viewer inside a fragment reruns only the fragment: ask it to rerun the page instead,
        # so the crosshair sliders and every panel follow
        self.set_crosshair(ijk)
        st.session_state["hm_crosshair_clicked"] = True

    def readout(self, volume, unit: str = "") -> str:
        return hv.readout(viewer.crosshair(self.grid, self.ijk, volume, self.atlas), unit)

    def ortho(self, volume, ov, *, height=HEIGHT, labels_=None, bg=None, rng=None, outline_color=(60, 190, 255),
              **outline):
        return ortho_image(self.background if bg is None else bg, self.ijk, overlay=ov,
                           labels=self.outline_labels if labels_ is None else labels_, height=height,
                           bg_range=self.bg_range if rng is None else rng, outline_color=outline_color, **outline)

    def group_png(self, label: str, ov, height: int = HEIGHT) -> bytes:
        """A group mean's slices as PNG, drawn once per map, crosshair and look for every session."""
        key = ("group", self.means.folder, label, self.ijk, height, self.bg_key, tuple(self.bg_range or ()),
               self.outlines, overlay_key(ov))
        return shared_png(key, lambda: self.ortho(self.means[label], ov, height=height))

    def viewer3d(self, ov, map_key: tuple, key: str, *, bg=None, rng=None, anat_key: tuple | None = None,
                 height: int = 560) -> None:
        """``ov`` in the 3D viewer over the page's anatomy (or ``bg``); ``map_key`` names the map's content."""
        ws, grid, atlas = self.ws, self.grid, self.atlas
        rng = self.bg_range if rng is None else rng
        anatomy = niivue_view.anatomy_bytes(ws, anat_key or self.bg_key, self.background if bg is None else bg,
                                            grid, rng)
        niivue_view.show(ws, grid, anatomy=anatomy, bg_range=rng, ijk=self.ijk,
                         set_crosshair=self.set_crosshair_from_viewer, key=key, ov=ov,
                         overlay=niivue_view.overlay_bytes(ws, map_key, ov, grid),
                         atlas=niivue_view.atlas_bytes(ws, hv.ATLAS, atlas.labels, grid),
                         atlas_names=dict(zip(atlas.table["index"].astype(int), atlas.table["name"])),
                         height=height)

    def overlay(self, volume, m=None):
        return viewer.overlay(volume, self.style, self.means if m is None else m, alpha=self.opacity,
                              threshold=self.threshold)

    def pretty(self, label: str) -> str:
        return hv.pretty(label, self.by)

    def group_label(self, g: str) -> str:
        return f"{self.pretty(g)} · n = {self.means.count(g)}"

    def downloads(self, img, ov, title: str, volume, name: str, key: str) -> None:
        """PNG of the view (with its title and colour bar) and NIfTI of the map, made only when clicked."""
        d1, d2 = st.columns(2)
        make = img if callable(img) else (lambda: img)   # a callable: drawn only when clicked (3D viewer shown)
        export = lambda: to_png(titled(stack([make(), scale_bar(ov)]) if ov is not None else make(), title))
        d1.download_button("PNG of this view", data=export, file_name=f"{name}.png", mime="image/png",
                           icon=":material/image:", key=f"{key}-png", on_click="ignore", width="stretch")
        vol = np.array(volume, dtype=np.float32)
        d2.download_button("NIfTI of this map", data=lambda: viewer.nifti_bytes(vol, self.grid, title),
                           file_name=f"{name}.nii.gz", mime="application/gzip", icon=":material/download:",
                           key=f"{key}-nii", on_click="ignore", width="stretch")


def scale_bar(ov, label: str = ""):
    cut = ov.transparent_below if ov.transparent_below is not None and ov.transparent_below > ov.vmin else None
    return colorbar(ov.cmap, ov.vmin, ov.vmax, transparent_below=ov.transparent_below is not None or
                    ov.threshold is not None, label=label, start=cut)


def _jump_peak(v: HeatmapView, folder: str, label: str) -> None:
    v.set_crosshair(viewer.peak_voxel(viewer.CachedGroupMeans(folder)[label]))


# --------------------------------------------------------------------------- views
def groups_view(v: HeatmapView) -> None:
    """One group's mean map large (Fig 2), then every group at the same crosshair (Fig 3)."""
    means = v.means
    names = [e.group for e in means.entries if e.subgroup is None]
    P, help_ = v.ws.classes.positive, hv.group_help(v.ws.classes)
    default_group = view_param("group", P).split(" · ")[0]
    group = st.segmented_control("Group", names, key="hm_group", required=True, format_func=v.group_label,
                                 default=default_group if default_group in names else P,
                                 help="; ".join(f"{g}: {h}" for g, h in help_.items()))
    label, sub = group, "all"
    if v.by_col:
        subs = [e.subgroup for e in means.entries if e.group == group and e.subgroup is not None]
        sub = st.columns([1, 2.5])[0].selectbox(
            hv.BY_NAMES[v.by].capitalize(), ["all"] + subs, key="hm_sub",
            format_func=lambda s: "all" if s == "all" else
            f"{hv.subgroup_name(s, v.by)} (n = {means.count(f'{group} · {s}')})")
        label = group if sub == "all" else f"{group} · {sub}"
    ov = _group_map(v, label)
    _all_groups(v, sub)
    review_panel(v.ws, {"kind": "group", "group": label},
                 {**v.settings, "view": "Groups", "group": label,
                  "vmin": ov.vmin if ov else None, "vmax": ov.vmax if ov else None})


def _group_map(v: HeatmapView, label: str):
    """The group's map large, its read-out, scale and downloads; its overlay (None for an empty group)."""
    means, split = v.means, v.split
    entry = means.entry(label)
    if entry.count == 0:
        st.info(f"**{v.pretty(label)}** is empty ({hv.SPLIT_NAMES[split]}): {entry.reason}.")
        return None
    vol = means[label]
    ov = v.overlay(vol)
    if v.use3d:
        v.viewer3d(ov, ("group", means.folder.name, label), "hm_nv_group")
        img = lambda: v.ortho(vol, ov)
    else:
        img = lambda: v.ortho(vol, ov)   # the PNG export draws it again only when clicked
        st.image(v.group_png(label, ov), width="stretch")
    st.markdown(v.readout(vol))
    c1, c2 = st.columns([1.3, 1])
    c1.image(to_png(scale_bar(ov)))
    c2.button("Go to this map's peak", key="hm_peak", on_click=_jump_peak, args=(v, str(means.folder), label),
              icon=":material/my_location:")
    st.caption(hv.scale_caption(v.style, means, v.threshold))
    v.downloads(img, ov, f"{v.method_label} · mean {v.pretty(label)} (n={entry.count}) · {hv.SPLIT_NAMES[split]}",
                vol, f"{v.run.id}_{v.store.params.get('method')}_{label.replace(' · ', '_')}_{split}", "grp")
    return ov


def _all_groups(v: HeatmapView, sub: str) -> None:
    """Every group (of the chosen subgroup) small, at the same crosshair, and who is in each."""
    means = v.means
    suffix = f" · {sub}" if sub != "all" else ""
    st.markdown(f"##### All groups at this crosshair{' · ' + hv.subgroup_name(sub, v.by) if suffix else ''}")
    help_ = hv.group_help(v.ws.classes)
    for pair in hv.group_pairs(v.ws.classes):
        for col, g in zip(st.columns(2), pair):
            e = means.entry(g + suffix)
            with col:
                st.markdown(f"**{g}** · n = {e.count} · {help_[g]}")
                if e.count == 0:
                    st.caption(f"Empty: {e.reason}.")
                else:
                    st.image(v.group_png(e.label, v.overlay(means[e.label]), height=130), width="stretch")
    with st.expander("Members per group", icon=":material/groups:"):
        st.dataframe(hv.members_table(means), hide_index=True, width="stretch")
