"""Heatmaps: a run's group-average and individual relevance maps, as in Böhle et al. 2019 Figs 2, 3 and 8.

Group means come from lib.views.viewer (streamed over the cached heatmap store, cached on disk). A group's map and
a scan's map open in the 3D viewer (NiiVue: volumes sent once as compact 8-bit NIfTI); the other panels,
the fallback and the exports are small PNGs. One crosshair (the sliders on the left, or a click in the 3D
viewer) drives every panel.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from lib.explain import heatmaps
from lib import jobs
from lib.views import overview
from lib.views import viewer
from lib.data.atlas import load_atlas
from lib.analysis.groups import membership
from lib.views.render import Overlay, colorbar, ortho_image, stack, titled, to_png
from pages.common import checkpoint_sha as _checkpoint_sha, cohort_table as _cohort, heatmap_store as _store, predictions_csv as _predictions
from pages.common import (allowed, current_workspace, job_progress, locked, missing_for, require_ready_run,
                          submit_job, template_volume)
from pages.review_panel import review_panel, view_param
from pages import niivue_view
from pages.report_button import report_button

GROUP_HELP = {"AD": "all AD scans", "HC": "all healthy controls", "TP": "AD classified AD",
              "FP": "HC classified AD", "TN": "HC classified HC", "FN": "AD classified HC"}
STYLE_NAMES = {"paper": "Paper (black → red → yellow → white)",
               "threshold": "Thresholded (hot, transparent below)", "diverging": "Diverging (blue − / red +)"}
SPLIT_NAMES = {"test": "test split", "validation": "validation split", "train": "training split",
               "all": "all scans"}
BY_NAMES = {"none": "no subgroups", "site": "site", "sex": "sex", "visit": "visit", "split": "split"}
NORMALISE = {"raw (as in Rieke et al.)": None, "each map ÷ its total |relevance|": "sum",
             "each map ÷ its largest |relevance|": "max"}
ATLAS = "neuromorphometrics"
HEIGHT = 300

ws = current_workspace()
st.title("Heatmaps")
run = require_ready_run(ws)
report_button(ws, run)
grid = run.grid


# --------------------------------------------------------------------------- cached loaders
@st.cache_resource(max_entries=4, show_spinner=False)
def _background(kind: str, resolution: float, key: str):
    """(anatomy, grey window) on the run's grid: the template or the cohort's mean anatomy."""
    from lib.data.templates import Grid

    data = template_volume(resolution) if kind == "template" else viewer.mean_anatomy(ws, Grid(resolution))
    return (None, None) if data is None else (data, viewer.background_range(data))


@st.cache_resource(max_entries=16, show_spinner=False)
def _scan_on_grid(path: str, mtime_ns: int, resolution: float):
    from lib.data.templates import Grid
    from lib.data.validation import load_on_grid

    img, _ = load_on_grid(path, Grid(resolution))
    data = np.asarray(img.dataobj, dtype=np.float32)
    return data, viewer.background_range(data)


def _mtime(path) -> int:
    return path.stat().st_mtime_ns


def _png(img) -> bytes:
    return to_png(img)


# --------------------------------------------------------------------------- the run's heatmap stores
sha = _checkpoint_sha(str(run.best_checkpoint), _mtime(run.best_checkpoint))
stores = [_store(str(s.folder)) for s in viewer.stores_of(ws, sha)]
running = [j for j in jobs.list_jobs(ws, "explain") if j.active and run.id in j.record.get("args", [])]


def _submit_explain(method: str, beta: float | None) -> bool:
    params = {"beta": beta} if beta is not None else {}
    args = ["--run", run.id, "--method", method] + (["--beta", f"{beta:g}"] if beta is not None else [])
    return submit_job(ws, "explain", args, key=heatmaps.job_key(ws, run, method, **params)) is not None


with st.expander("Compute heatmaps of this run", expanded=not stores and not running,
                 icon=":material/calculate:"):
    st.caption("Every scan of the cohort is explained once with the run's best checkpoint, in the background; "
               "the maps are cached, so nobody computes them twice.")
    c1, c2, c3 = st.columns([2, 1, 1])
    method = c1.selectbox("Method to compute", list(viewer.METHOD_NAMES), format_func=viewer.METHOD_NAMES.get,
                          key="hm_new_m")
    beta = c2.number_input("LRP β", 0.0, 5.0, 0.0, 0.25, disabled=method != "lrp", key="hm_new_b",
                           help="β-rule with α = 1 + β; β = 0 is the paper's default")
    c3.write("")
    may_not = locked("compute")
    if c3.button("Compute", type="primary", key="hm_new_go", disabled=may_not) and \
            _submit_explain(method, beta if method == "lrp" else None):
        st.rerun()
    if not stores:
        q1, q2, _ = st.columns([1, 1, 2])
        if q1.button("LRP β = 0 (the paper's)", key="hm_quick_lrp", disabled=may_not) and _submit_explain("lrp", 0.0):
            st.rerun()
        if q2.button("Guided backprop", key="hm_quick_gb", disabled=may_not) and \
                _submit_explain("guided_backprop", None):
            st.rerun()
for job in running:
    job_progress(job.id, ws, rerun_when_done=True, key="explain")
if not stores:
    st.info(f"No heatmaps of run **{run.id}** yet: compute them above (LRP β = 0 and guided backprop are "
            "the paper's methods).")
    st.stop()

# --------------------------------------------------------------------------- what is shown
preds = _predictions(str(run.dir / "predictions.csv"), _mtime(run.dir / "predictions.csv"))
labels = [viewer.store_label(s.params, s.meta.get("target", "AD")) for s in stores]
wanted = view_param("store", "")
c = st.columns([1.6, 1.3, 1, 1.6])
pick = c[0].selectbox("Method", range(len(stores)), format_func=lambda i: labels[i], key="hm_store",
                      index=next((i for i, s in enumerate(stores) if s.folder.name == wanted), 0))
store = stores[pick]
n_split = preds["split"].value_counts()
splits = [s for s in viewer.SPLITS if s == "all" or n_split.get(s, 0) > 0]
split = c[1].selectbox("Scans", splits, key="hm_split",
                       index=splits.index(view_param("split", "test")) if view_param("split", "test") in splits else 0,
                       format_func=lambda s: f"{SPLIT_NAMES[s]} ({len(viewer.selection(preds, s))})",
                       help="The paper's group maps average the test split.")
bys = [b for b in BY_NAMES if b == "none" or (viewer.SUBGROUPS[b] in preds and (b != "split" or split == "all"))]
by = c[2].selectbox("Subgroups", bys, format_func=BY_NAMES.get, key="hm_by",
                    index=bys.index(view_param("by")) if view_param("by") in bys else 0)
style = c[3].selectbox("Colour scale", list(STYLE_NAMES), format_func=STYLE_NAMES.get, key="hm_style",
                       index=list(STYLE_NAMES).index(view_param("style", "paper"))
                       if view_param("style", "paper") in STYLE_NAMES else 0)
table = viewer.selection(preds, split)
by_col = viewer.SUBGROUPS.get(by)   # None: no subgroups


def _means(s: heatmaps.HeatmapStore, by_name: str) -> viewer.CachedGroupMeans:
    """The cached group means of store ``s`` for the current selection. Missing ones are streamed here when
    quick, else by a background job whose progress is shown (and the page stops until it is done)."""
    by_column = viewer.SUBGROUPS.get(by_name)
    folder = s.folder / "group_means" / viewer.grouping_key(s, table, by_column)
    if (folder / "index.json").exists():
        return viewer.CachedGroupMeans(folder)
    name = viewer.store_label(s.params)
    if viewer.is_small(s, table):
        bar = st.progress(0.0, text=f"Averaging the {name} heatmaps of {len(table)} scans")
        out = viewer.cached_group_means(s, table, by=by_column, progress=lambda d, t, m: bar.progress(
            min(d / max(t, 1), 1.0), text=f"Averaging the {name} heatmaps: {d}/{t} scans"))
        bar.empty()
        return out
    args, key = viewer.job_request(run, s, split, by_column and by_name)
    job = jobs.find_active(ws, key)
    if job is None and not allowed("compute"):
        missing_for("compute", f"The {name} group means of these {len(table)} scans are")
        st.stop()
    job = job or submit_job(ws, "group-means", args, key=key)
    if job is None:
        st.stop()
    st.info(f"Averaging the {name} heatmaps of {len(table)} scans in the background (once; cached for everyone).")
    job_progress(job.id, ws, rerun_when_done=True, key="group-means")
    st.stop()


means = _means(store, by)

# --------------------------------------------------------------------------- crosshair and display (left)
shape = grid.shape
atlas = load_atlas(ATLAS, grid.resolution)
if st.session_state.get("hm_grid") != list(shape):
    start = view_param("slices", None, "ints")
    if not start or len(start) != 3:
        start = list(viewer.voxel_of(grid, (-26, -22, -14)))   # the left hippocampus, where AD atrophy starts
    for k, v, n in zip(("hm_x", "hm_y", "hm_z"), start, shape):
        st.session_state[k] = int(min(max(v, 0), n - 1))
    st.session_state["hm_grid"] = list(shape)


def _set_crosshair(ijk) -> None:
    for k, v in zip(("hm_x", "hm_y", "hm_z"), ijk):
        st.session_state[k] = int(v)


def _jump_region() -> None:
    name = st.session_state.get("hm_region")
    if name:
        _set_crosshair(viewer.region_voxel(atlas, name))


def _jump_mni() -> None:
    text = st.session_state.get("hm_mni", "")
    try:
        xyz = [float(v) for v in text.replace("(", " ").replace(")", " ").replace(",", " ").split()]
        if len(xyz) != 3:
            raise ValueError
    except ValueError:
        st.session_state["hm_mni_error"] = f"“{text}” is not three numbers (x, y, z in mm)"
        return
    st.session_state.pop("hm_mni_error", None)
    _set_crosshair(viewer.voxel_of(grid, xyz))


def _jump_peak(folder: str, label: str) -> None:
    _set_crosshair(viewer.peak_voxel(viewer.CachedGroupMeans(folder)[label]))


left, right = st.columns([1, 3.2])
with left:
    i = st.slider("x (sagittal)", 0, shape[0] - 1, key="hm_x")
    j = st.slider("y (coronal)", 0, shape[1] - 1, key="hm_y")
    k = st.slider("z (axial)", 0, shape[2] - 1, key="hm_z")
    ijk = (i, j, k)
    st.text_input("Go to MNI (x, y, z mm)", key="hm_mni", on_change=_jump_mni, placeholder="-26, -22, -14")
    if st.session_state.get("hm_mni_error"):
        st.caption(f":red[{st.session_state['hm_mni_error']}]")
    st.selectbox("Go to region", [""] + sorted(atlas.table["name"]), key="hm_region", on_change=_jump_region,
                 format_func=lambda n: n.replace("_", " ") if n else "—")
    opacity = st.slider("Opacity", 0.0, 1.0, 0.75, 0.05, key="hm_alpha")
    outlines = st.toggle("Atlas outlines", value=view_param("outlines", False, bool), key="hm_outlines",
                         help="Region borders of the Neuromorphometrics atlas (the paper's).")
    use3d = niivue_view.use_3d("hm_3d")
    bg_kind = st.radio("Anatomy under the map", ["template", "cohort mean"], horizontal=True, key="hm_bg",
                       help="The ICBM152 2009c template, or the mean of the cohort's scans (from the Dataset "
                            "overview's mean images).")
    threshold = None
    if style == "threshold":
        q = st.select_slider(f"Hide below this percentile of the average {means.scale_from or 'AD'} map",
                             list(viewer.THRESHOLD_PERCENTILES), value=90, key="hm_thr")
        threshold = means.percentiles[q]

bg_key = ("template",)   # what the anatomy is made from (the 3D viewer's content key)
if bg_kind == "template":
    background, bg_range = _background("template", grid.resolution, "")
else:   # keyed by the overview's means file (a content key) and whether it exists yet
    means_file = overview.group_means_path(ws, _cohort(str(ws.cohort_csv), _mtime(ws.cohort_csv)))
    background, bg_range = _background("mean", grid.resolution, f"{means_file}:{means_file.exists()}")
    bg_key = ("mean", str(means_file))
if background is None:
    with left:
        st.caption("The cohort's mean anatomy is computed on the **Dataset overview** page (tab *Mean AD − HC*); "
                   "the template is shown meanwhile.")
    background, bg_range = _background("template", grid.resolution, "")
    bg_key = ("template",)
outline_labels = atlas.labels if outlines else None


def _readout(volume, unit: str = "") -> str:
    r = viewer.crosshair(grid, ijk, volume, atlas)
    x, y, z = r["mni"]
    value = "" if np.isnan(r["value"]) else f" · value **{r['value']:.3g}**{unit}"
    return (f"MNI ({x:.0f}, {y:.0f}, {z:.0f}) mm · voxel {r['voxel']}{value} · region **{r['region']}**")


def _ortho(volume, ov, *, height=HEIGHT, labels_=None, bg=None, rng=None, outline_color=(60, 190, 255)):
    return ortho_image(background if bg is None else bg, ijk, overlay=ov,
                       labels=outline_labels if labels_ is None else labels_, height=height,
                       bg_range=bg_range if rng is None else rng, outline_color=outline_color)


def _viewer3d(ov, map_key: tuple, key: str, *, bg=None, rng=None, anat_key: tuple | None = None,
              height: int = 560) -> None:
    """``ov`` in the 3D viewer over the page's anatomy (or ``bg``); ``map_key`` names the map's content."""
    anatomy = niivue_view.anatomy_bytes(ws, anat_key or bg_key, background if bg is None else bg, grid,
                                        bg_range if rng is None else rng)
    niivue_view.show(ws, grid, anatomy=anatomy, bg_range=bg_range if rng is None else rng, ijk=ijk,
                     set_crosshair=_set_crosshair, key=key, ov=ov,
                     overlay=niivue_view.overlay_bytes(ws, map_key, ov, grid),
                     atlas=niivue_view.atlas_bytes(ws, ATLAS, atlas.labels, grid),
                     atlas_names=dict(zip(atlas.table["index"].astype(int), atlas.table["name"])), height=height)


def _scale_bar(ov, label: str = ""):
    cut = ov.transparent_below if ov.transparent_below is not None and ov.transparent_below > ov.vmin else None
    return colorbar(ov.cmap, ov.vmin, ov.vmax, transparent_below=ov.transparent_below is not None or
                    ov.threshold is not None, label=label, start=cut)


def _scale_caption(m: viewer.CachedGroupMeans) -> str:
    ref = m.scale_from or "—"
    if style == "paper":
        return (f"Paper's scale (Figs 2–3), shared by all groups: black below **{m.paper.vmin:.3g}** (50th "
                f"percentile of the average {ref} map over the brain), red → yellow, white above "
                f"**{m.paper.vmax:.3g}** (its 99.5th percentile).")
    if style == "threshold":
        return f"Values below **{threshold:.3g}** transparent; the paper's colours above."
    return f"Signed map: blue negative, red positive, ± **{m.diverging.vmax:.3g}** (99.5th percentile of |{ref} map|)."


def _downloads(img, ov, title: str, volume, name: str, key: str) -> None:
    """PNG of the view (with its title and colour bar) and NIfTI of the map, made only when clicked."""
    d1, d2 = st.columns(2)
    make = img if callable(img) else (lambda: img)   # a callable: drawn only when clicked (3D viewer shown)
    export = lambda: _png(titled(stack([make(), _scale_bar(ov)]) if ov is not None else make(), title))
    d1.download_button("PNG of this view", data=export, file_name=f"{name}.png", mime="image/png",
                       icon=":material/image:", key=f"{key}-png", on_click="ignore", width="stretch")
    vol = np.array(volume, dtype=np.float32)
    d2.download_button("NIfTI of this map", data=lambda: viewer.nifti_bytes(vol, grid, title),
                       file_name=f"{name}.nii.gz", mime="application/gzip", icon=":material/download:",
                       key=f"{key}-nii", on_click="ignore", width="stretch")


store_settings = {"page": "pages/heatmaps.py", "run": run.id, "checkpoint": sha, "method": store.params.get("method"),
                  "params": {k: v for k, v in store.params.items() if k != "method"}, "store": store.folder.name,
                  "split": split, "by": by, "style": style, "slices": list(ijk), "outlines": outlines}
method_label = labels[pick]


def _sub_name(value: str) -> str:
    return f"visit {value}" if by == "visit" else value


def _pretty(label: str) -> str:
    """``"AD · 2"`` → ``"AD · visit 2"`` (subgroup labels are the column's values)."""
    group, _, value = label.partition(" · ")
    return f"{group} · {_sub_name(value)}" if value else group


def _group_label(g: str) -> str:
    return f"{_pretty(g)} · n = {means.count(g)}"


# --------------------------------------------------------------------------- views
def groups_view() -> None:
    """One group's mean map large (Fig 2), then every group at the same crosshair (Fig 3)."""
    names = [e.group for e in means.entries if e.subgroup is None]
    default_group = view_param("group", "AD").split(" · ")[0]
    group = st.segmented_control("Group", names, key="hm_group", required=True, format_func=_group_label,
                                 default=default_group if default_group in names else "AD",
                                 help="; ".join(f"{g}: {h}" for g, h in GROUP_HELP.items()))
    label, sub = group, "all"
    if by_col:
        subs = [e.subgroup for e in means.entries if e.group == group and e.subgroup is not None]
        sub = st.columns([1, 2.5])[0].selectbox(
            BY_NAMES[by].capitalize(), ["all"] + subs, key="hm_sub",
            format_func=lambda v: "all" if v == "all" else f"{_sub_name(v)} (n = {means.count(f'{group} · {v}')})")
        label = group if sub == "all" else f"{group} · {sub}"
    entry = means.entry(label)
    ov = None
    if entry.count == 0:
        st.info(f"**{_pretty(label)}** is empty ({SPLIT_NAMES[split]}): {entry.reason}.")
    else:
        vol = means[label]
        ov = viewer.overlay(vol, style, means, alpha=opacity, threshold=threshold)
        if use3d:
            _viewer3d(ov, ("group", means.folder.name, label), "hm_nv_group")
            img = lambda: _ortho(vol, ov)
        else:
            img = _ortho(vol, ov)
            st.image(_png(img), width="stretch")
        st.markdown(_readout(vol))
        c1, c2 = st.columns([1.3, 1])
        c1.image(_png(_scale_bar(ov)))
        c2.button("Go to this map's peak", key="hm_peak", on_click=_jump_peak, args=(str(means.folder), label),
                  icon=":material/my_location:")
        st.caption(_scale_caption(means))
        _downloads(img, ov, f"{method_label} · mean {_pretty(label)} (n={entry.count}) · {SPLIT_NAMES[split]}", vol,
                   f"{run.id}_{store.params.get('method')}_{label.replace(' · ', '_')}_{split}", "grp")
    suffix = f" · {sub}" if sub != "all" else ""
    st.markdown(f"##### All groups at this crosshair{' · ' + _sub_name(sub) if suffix else ''}")
    for pair in (("AD", "HC"), ("TP", "FP"), ("TN", "FN")):   # TP/FP: predicted AD; TN/FN: predicted HC
        for col, g in zip(st.columns(2), pair):
            e = means.entry(g + suffix)
            with col:
                st.markdown(f"**{g}** · n = {e.count} · {GROUP_HELP[g]}")
                if e.count == 0:
                    st.caption(f"Empty: {e.reason}.")
                else:
                    small = viewer.overlay(means[e.label], style, means, alpha=opacity, threshold=threshold)
                    st.image(_png(_ortho(means[e.label], small, height=130)), width="stretch")
    with st.expander("Members per group", icon=":material/groups:"):
        st.dataframe(pd.DataFrame([{"group": e.label, "scans": e.count, "why empty": e.reason}
                                   for e in means.entries]), hide_index=True, width="stretch")
    review_panel(ws, {"kind": "group", "group": label},
                 {**store_settings, "view": "Groups", "group": label,
                  "vmin": ov.vmin if ov else None, "vmax": ov.vmax if ov else None})


def compare_view() -> None:
    """Two groups (with their difference) or two methods side by side, on the same crosshair."""
    mode = st.radio("Compare", ["two groups", "two methods"], horizontal=True, key="hm_cmp_mode")
    available = [e.label for e in means.entries if e.count > 0]
    if not available:
        st.info("No group of this selection has scans.")
        return
    if mode == "two groups":
        a1, a2 = st.columns(2)
        ga = a1.selectbox("A", available, key="hm_cmp_a", format_func=_group_label,
                          index=available.index("TP") if "TP" in available and "FP" in available else 0)
        gb = a2.selectbox("B", available, key="hm_cmp_b", format_func=_group_label,
                          index=available.index("FP") if "TP" in available and "FP" in available
                          else min(1, len(available) - 1))
        pairs = [(ga, means, method_label), (gb, means, method_label)]
    else:
        if len(stores) < 2:
            st.info("Only one method has heatmaps for this run: compute another one above.")
            return
        a1, a2, a3 = st.columns(3)
        ia = a1.selectbox("Method A", range(len(stores)), format_func=lambda x: labels[x], key="hm_cmp_ma", index=pick)
        ib = a2.selectbox("Method B", range(len(stores)), format_func=lambda x: labels[x], key="hm_cmp_mb",
                          index=viewer.other_method_index([s.params.get("method") for s in stores], pick))
        whole = [e.group for e in means.entries if e.subgroup is None and e.count > 0]
        g = a3.selectbox("Group", whole, key="hm_cmp_g", format_func=_group_label)
        pairs = [(g, _means(stores[ia], "none"), labels[ia]), (g, _means(stores[ib], "none"), labels[ib])]
    panels = []
    for col, (g, m, lab) in zip(st.columns(2), pairs):
        with col:
            vol = m[g]
            ov = viewer.overlay(vol, style, m, alpha=opacity, threshold=threshold)
            img = _ortho(vol, ov, height=180)
            panels.append(titled(stack([img, _scale_bar(ov)]), f"{lab} · {_pretty(g)} (n={m.count(g)})"))
            st.markdown(f"**{lab} · {_pretty(g)}** (n = {m.count(g)})")
            st.image(_png(img), width="stretch")
            st.image(_png(_scale_bar(ov)))
            st.caption(_readout(vol))
    if mode == "two groups":
        diff, lim = viewer.difference(means[ga], means[gb])
        ov = viewer.overlay(diff, "diverging", alpha=opacity, limit=lim)
        img = _ortho(diff, ov)
        pa, pb = _pretty(ga), _pretty(gb)
        st.markdown(f"**Difference {pa} − {pb}** · red: more relevance in {pa}, blue: more in {pb}")
        st.image(_png(img), width="stretch")
        st.markdown(_readout(diff))
        st.image(_png(_scale_bar(ov)))
        panels.append(titled(stack([img, _scale_bar(ov)]), f"{method_label} · {pa} − {pb}"))
        target, volume, fname = f"{pa} − {pb}", diff, f"{pa}-minus-{pb}".replace(" · ", "_")
    else:
        st.caption("Each method on its own scale (the paper's rule applied to that method's average AD map). A "
                   "voxel-wise difference of two methods' raw values is not meaningful; the *Distances* view "
                   "compares whole maps.")
        target, volume, fname = pairs[0][0], pairs[0][1][pairs[0][0]], f"{pairs[0][0]}_{labels[ia]}"
    d1, d2 = st.columns(2)
    d1.download_button("PNG of this view", data=_png(stack(panels)), file_name=f"{run.id}_compare_{fname}.png",
                       mime="image/png", icon=":material/image:", key="cmp-png", on_click="ignore", width="stretch")
    vol32 = np.array(volume, dtype=np.float32)
    d2.download_button("NIfTI of " + ("the difference" if mode == "two groups" else "map A"),
                       data=lambda: viewer.nifti_bytes(vol32, grid, f"{method_label} {target}"),
                       file_name=f"{run.id}_{fname}.nii.gz".replace(" ", "_"), mime="application/gzip",
                       icon=":material/download:", key="cmp-nii", on_click="ignore", width="stretch")
    review_panel(ws, {"kind": "group", "group": target}, {**store_settings, "view": "Compare", "compare": mode})


def individual_view() -> None:
    """One scan's map scaled as in Fig 8, its prediction and demographics, top regions, ground truth beside it."""
    mem = membership(table, by_col)
    choices = [g for g in ("AD", "HC", "TP", "FP", "TN", "FN") if mem[(g, None)]]
    if not choices:
        st.info("No scans in this selection.")
        return
    linked = view_param("scan", "")   # a link to one scan opens the group it belongs to
    home = next((x for x in choices if linked in mem[(x, None)]), choices[0])
    s1, s2 = st.columns([1, 2])
    g = s1.selectbox("Scans of group", choices, key="hm_ind_group", index=choices.index(home),
                     format_func=lambda x: f"{x} ({len(mem[(x, None)])}) · {GROUP_HELP[x]}")
    order = preds.set_index("scan_id").loc[mem[(g, None)], "ad_score"].sort_values(ascending=False, kind="stable")
    ids = list(order.index)
    if st.session_state.get("hm_scan") not in ids:
        st.session_state["hm_scan"] = linked if linked in ids else ids[0]
    s2.selectbox("Scan (highest AD score first)", ids, key="hm_scan",
                 format_func=lambda s: f"{s} · AD score {order[s]:.2f}")
    scan = st.session_state["hm_scan"]
    prev_id, next_id = viewer.neighbours(ids, scan)
    n1, n2, n3 = st.columns([1, 1, 2])
    n1.button("◀ Previous", key="hm_prev", disabled=prev_id is None, width="stretch",
              on_click=lambda p=prev_id: st.session_state.update(hm_scan=p))
    n2.button("Next ▶", key="hm_next", disabled=next_id is None, width="stretch",
              on_click=lambda n=next_id: st.session_state.update(hm_scan=n))
    n3.caption(f"Scan {ids.index(scan) + 1} of {len(ids)} in {g}")

    cohort = _cohort(str(ws.cohort_csv), _mtime(ws.cohort_csv))
    facts = viewer.scan_facts(preds, cohort, scan)
    m = st.columns(5)
    m[0].metric("AD score", f"{facts['ad_score']:.2f}", help="The model's probability of AD")
    m[1].metric("Predicted", facts["predicted"])
    m[2].metric("Diagnosis", facts["diagnosis"])
    m[3].metric("Outcome", facts["outcome"], help=GROUP_HELP.get(facts["outcome"]))
    m[4].metric("Split", facts.get("split", "—"))
    st.dataframe(pd.DataFrame([{k: facts[k] for k in ("subject_id", "session", "age", "sex", "site", "mmse", "cdr",
                                                      "hippocampal_volume") if k in facts}]),
                 hide_index=True, width="stretch")

    volume = store.get(scan)
    path = ws.resolve(cohort.set_index("scan_id").loc[scan, "path"])
    anat, anat_rng = _scan_on_grid(str(path), _mtime(path), grid.resolution)
    o1, o2 = st.columns([1.3, 1])
    show_top = o1.toggle("Outline the regions with the most relevance", value=True, key="hm_top_outline")
    rank_by = o2.segmented_control("Rank regions by", ["density", "sum"], default="density", required=True,
                                   key="hm_rank", format_func={"density": "relevance per voxel",
                                                               "sum": "relevance sum"}.get,
                                   help="Per voxel (the paper's size-normalised relevance, Figs 5 and 8) or summed "
                                        "over the region (favours large regions such as the white matter).")
    top = viewer.top_regions(volume, atlas, k=8, metric=rank_by)
    marks = viewer.outline_labels(atlas, top["label"]) if show_top else None
    colour = (0, 230, 255)
    ov = viewer.overlay(volume, "individual", means, alpha=opacity)
    gt = overview.ground_truth(ws, scan) if ws.is_demo else None
    if use3d:
        st.markdown(f"**Relevance · {method_label}** over the scan · 3D viewer")
        _viewer3d(ov, ("scan", store.folder.name, scan), "hm_nv_scan", bg=anat, rng=anat_rng,
                  anat_key=("scan", str(path), _mtime(path)))
    i1, i2 = st.columns(2)
    with i1:   # beside the ground truth, with the top regions outlined (in the 3D viewer's mode too)
        st.markdown(f"**Relevance · {method_label}** (Fig 8 scale)")
        img = _ortho(volume, ov, height=200, labels_=marks, bg=anat, rng=anat_rng, outline_color=colour)
        st.image(_png(img), width="stretch")
        st.image(_png(_scale_bar(ov)))
    with i2:
        if gt is not None:
            amap, _ = _scan_on_grid(str(gt["atrophy_map"]), _mtime(gt["atrophy_map"]), grid.resolution)
            st.markdown("**Ground-truth atrophy** (volume loss applied by the generator)")
            gov = Overlay(amap, 0.0, max(float(amap.max()), 1e-3), cmap="YlOrRd", alpha=0.8, threshold=0.03)
            other = _ortho(amap, gov, height=200, labels_=marks, bg=anat, rng=anat_rng, outline_color=colour)
            st.image(_png(other), width="stretch")
            st.image(_png(colorbar("YlOrRd", 0.0, gov.vmax, label="local volume loss")))
        else:
            st.markdown("**The scan** (on the run's grid)")
            other = _ortho(anat, None, height=200, labels_=marks, bg=anat, rng=anat_rng, outline_color=colour)
            st.image(_png(other), width="stretch")
    st.markdown(_readout(volume))
    st.caption(f"Coloured from the 90th (**{means.individual.vmin:.3g}**) to the 99.5th percentile "
               f"(**{means.individual.vmax:.3g}**) of the average {means.scale_from or 'AD'} map "
               f"({SPLIT_NAMES[split]}); below transparent, above yellow. Over the scan itself"
               + ("; outlined: the regions listed below." if show_top else "."))
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
        if gt is not None:
            units = pd.Series(gt["units_mm"])
            units = units[~units.index.str.contains("Vent")].sort_values(ascending=False).head(8)
            if gt["severity"] > 0:
                st.markdown(f"**Ground truth** · subtype *{gt['subtype']}* · severity {gt['severity']:.2f}"
                            + (" · atypical" if gt["atypical"] else ""))
                shown = pd.DataFrame({"region": units.index.str.replace("_", " "), "mm": units.to_numpy()})
                st.dataframe(shown, hide_index=True, width="stretch", column_config={
                    "mm": st.column_config.NumberColumn("shift", format="%.2f mm",
                                                        help="boundary displacement applied by the generator")})
            else:
                st.markdown("**Ground truth**")
                st.caption("No disease atrophy applied to this scan (ageing and individual anatomy only)"
                           + (", though it is an atypical control." if gt["atypical"] else "."))
    _downloads(stack([img, other], vertical=False), ov,
               f"{method_label} · {scan} ({facts['diagnosis']}, {facts['outcome']}, AD score {facts['ad_score']:.2f})",
               volume, f"{run.id}_{store.params.get('method')}_{scan}", "ind")
    review_panel(ws, {"kind": "scan", "scan_id": scan},
                 {**store_settings, "view": "Individual", "scan": scan, "scale": "fig8",
                  "vmin": ov.vmin, "vmax": ov.vmax})


def distances_view() -> None:
    """Euclidean distances between the methods' average AD and HC maps (Rieke et al. 2018, Table 2)."""
    norm_name = st.radio("Maps compared", list(NORMALISE), horizontal=True, key="hm_dist_norm")
    if len(stores) < 2:
        st.info("The table compares the average maps of several methods: compute heatmaps with a second method "
                "above.")
        return
    maps = {}
    for s, lab in zip(stores, labels):
        m = _means(s, "none")
        maps[lab] = {g: m[g] for g in ("AD", "HC") if g in m}
    tables = viewer.method_distances(maps, normalise=NORMALISE[norm_name])
    if not tables:
        st.info("Neither AD nor HC has scans in this selection.")
        return
    st.markdown(f"**Euclidean distance between the methods' average maps, {' / '.join(tables)}** · "
                f"{SPLIT_NAMES[split]}")
    st.dataframe(viewer.combined_table(tables), width="stretch")
    st.caption("As in Rieke et al. 2018, Table 2: √Σᵢ (Aᵢ − Bᵢ)² over all voxels between two methods' "
               "average heatmaps. Raw distances depend on each method's units; the normalised variants compare "
               "the maps' shapes.")
    for g, t in tables.items():
        with st.expander(f"{g} only"):
            st.dataframe(t.style.format("{:.4g}"), width="stretch")


with right:
    VIEWS = {"Groups": groups_view, "Compare": compare_view, "Individual": individual_view,
             "Distances": distances_view}
    first = view_param("view", "Groups")
    view = st.segmented_control("View", list(VIEWS), key="hm_view", required=True, label_visibility="collapsed",
                                default=first if first in VIEWS else "Groups")
    VIEWS[view]()
