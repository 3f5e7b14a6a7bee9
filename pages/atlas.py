"""Atlas metrics: relevance per brain region — sum, density, gain — for a run's heatmaps (Böhle et al. 2019
§2.5, Figs 4–7; Rieke et al. 2018 Table 1; Eitel, study 3).

Region tables are computed once per (heatmap store, atlas) by ``python -m lib regions`` in the background
and cached; everything shown is computed by lib.analysis.region_analysis and drawn by lib.views.region_figures.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd
import streamlit as st

from lib.reviews import auth
from lib import jobs
from lib.analysis import region_analysis as ra, region_tables as rt
from lib.views import region_figures as rf, viewer
from lib.data.atlas import AtlasError
from pages.common import allowed, current_workspace, job_progress, locked, missing_for, require_ready_run, submit_job
from pages.login import current_actor
from pages.review_panel import review_panel, view_param
from pages.report_button import report_button

SPLIT_NAMES = {"test": "test split", "validation": "validation split", "train": "training split", "all": "all scans"}
ATLAS_NAMES = {"neuromorphometrics": "Neuromorphometrics (the paper's)", "aal": "AAL2",
               "harvard_oxford": "Harvard-Oxford (max. probability)"}
VALUES = {"signed": "signed relevance", "absolute": "|relevance| (absolute)"}
TABS = ["Top regions", "Fingerprints", "Robustness", "Methods", "AD vs HC tests", "Table"]

ws = current_workspace()
st.title("Atlas metrics")
run = require_ready_run(ws)
report_button(ws, run)
resolution = run.grid.resolution


# --------------------------------------------------------------------------- cached loaders (keyed by files)
def _mtime(path) -> int:
    return Path(path).stat().st_mtime_ns


@st.cache_data(max_entries=16, show_spinner=False)
def _checkpoint_sha(path: str, mtime_ns: int) -> str:
    from lib.learn.training import file_hash

    return file_hash(path)


@st.cache_resource(max_entries=8, show_spinner=False)
def _atlas(name: str, res: float, merge: bool, root: str, version: int):
    """An atlas on the run's grid; ``root`` and ``version`` key a workspace's own atlas (its files' times)."""
    return rt.get_atlas(ws, name, res, merge)


@st.cache_data(max_entries=32, show_spinner=False)
def _annotated(table: str, table_mtime: int, preds: str, preds_mtime: int, split: str, absolute: bool) -> pd.DataFrame:
    return ra.annotate(rt.read_table(table), pd.read_csv(preds, dtype={"scan_id": str, "subject_id": str}),
                       split=split, absolute=absolute)


@st.cache_data(max_entries=64, show_spinner=False)
def _distributions(table: str, table_mtime: int, preds: str, preds_mtime: int, split_: str, absolute_: bool,
                   metric: str, regions: tuple, groups: tuple) -> list[dict]:
    t = _annotated(table, table_mtime, preds, preds_mtime, split_, absolute_)
    return ra.distributions(t, metric, list(regions), groups)


def distributions(path: Path, metric: str, regions, groups) -> list[dict]:
    """Density estimates of the main table, cached by its file and the request (never by hashing data)."""
    preds = run.dir / "predictions.csv"
    return _distributions(str(path), _mtime(path), str(preds), _mtime(preds), split, absolute, metric,
                          tuple(regions), tuple(groups))


def annotated(path: Path, of_run, absolute: bool) -> pd.DataFrame:
    preds = of_run.dir / "predictions.csv"
    return _annotated(str(path), _mtime(path), str(preds), _mtime(preds), split, absolute)


def sha_of(r) -> str:
    return _checkpoint_sha(str(r.best_checkpoint), _mtime(r.best_checkpoint))


def atlas_version(name: str) -> tuple[str, int]:
    """(workspace, modification time) of a workspace atlas, ("", 0) for shipped ones: a replaced atlas reloads."""
    folder = rt.user_atlas_dir(ws) / name
    if name in rt.ATLAS_FILES or not folder.is_dir():
        return "", 0
    return str(ws.root), max((_mtime(p) for p in folder.iterdir()), default=0)


def active_job(key: str):
    return jobs.find_active(ws, key) if ws.jobs_dir.exists() else None


def submit(args: list[str], key: str) -> bool:
    return submit_job(ws, "regions", args, key=key) is not None


# --------------------------------------------------------------------------- what is analysed
sha = sha_of(run)
stores = viewer.stores_of(ws, sha)
running = [j for j in jobs.list_jobs(ws, "regions") if j.active and run.id in j.record.get("args", [])] \
    if ws.jobs_dir.exists() else []
if not stores:
    st.info(f"No heatmaps of run **{run.id}** yet. The region metrics need them: compute LRP β = 0 (the paper's "
            "method) here, or any method on the **Heatmaps** page.")
    args, key = rt.request([run.id], method="lrp", betas=[0.0])
    if not running and st.button("Compute LRP β = 0 heatmaps and their region metrics", type="primary",
                                 disabled=locked("compute")) and submit(args, key):
        st.rerun()
    for job in running:
        job_progress(job.id, ws, rerun_when_done=True, key="regions")
    st.stop()

labels = [viewer.store_label(s.params, s.meta.get("target", "AD")) for s in stores]
atlases = rt.list_atlases(ws)
wanted_store = view_param("store", "")
c = st.columns([1.5, 1.5, 1.1, 1.2, 1.2])
pick = c[0].selectbox("Heatmaps", range(len(stores)), format_func=lambda i: labels[i], key="at_store",
                      index=next((i for i, s in enumerate(stores) if s.folder.name == wanted_store), 0))
store = stores[pick]
method = store.params.get("method", "")
# an atlas just added is already in the session state: no default then (it would be overridden anyway)
first_atlas = {} if "at_atlas" in st.session_state else {
    "index": atlases.index(view_param("atlas")) if view_param("atlas") in atlases else 0}
atlas_name = c[1].selectbox("Atlas", atlases, key="at_atlas", format_func=lambda a: ATLAS_NAMES.get(a, f"{a} (yours)"),
                            **first_atlas)
preds_all = run.predictions()
n_split = preds_all["split"].value_counts()
splits = [s for s in SPLIT_NAMES if s == "all" or n_split.get(s, 0) > 0]
first_split = view_param("split", "test")
split = c[2].selectbox("Scans", splits, key="at_split", index=splits.index(first_split) if first_split in splits else 0,
                       format_func=lambda s: f"{SPLIT_NAMES[s]} ({len(preds_all) if s == 'all' else n_split.get(s, 0)})",
                       help="The paper's figures use the test split.")
default_values = "absolute" if method in ra.ABSOLUTE_BY_DEFAULT else "signed"
values = c[3].selectbox("Values", list(VALUES), format_func=VALUES.get, key=f"at_values_{method}",
                        index=list(VALUES).index(view_param("values", default_values))
                        if view_param("values", default_values) in VALUES else 0,
                        help="Gradient maps are read as absolute values (the paper's guided-backprop "
                             "'susceptibility'); LRP relevance keeps its sign (positive = evidence for AD).")
absolute = values == "absolute"
with c[4]:
    merge = st.toggle("Merge left and right", value=view_param("merge", False, bool), key="at_merge")
    min_voxels = st.number_input("Smallest region (voxels)", 0, 10_000, view_param("min_voxels", 0, int), 5,
                                 key="at_minvox", help="Regions smaller than this on the run's grid are left out of "
                                                       "rankings; a region of a few voxels has a noisy density.")


def add_atlas() -> None:
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


with st.expander("Add your own atlas", icon=":material/upload_file:"):
    st.caption(f"A labels NIfTI in MNI space (any grid; resampled to the run's {resolution:g} mm grid with nearest "
               "neighbour) and a CSV/TSV table with an `index` (label value) and a `name` column.")
    may_not = locked("change_atlas")
    u1, u2, u3 = st.columns([1, 1, 1])
    up_labels = u1.file_uploader("Labels (.nii / .nii.gz)", type=["nii", "gz"], key="at_up_labels", disabled=may_not)
    up_names = u2.file_uploader("Names (.csv / .tsv)", type=["csv", "tsv", "txt"], key="at_up_names",
                                disabled=may_not)
    up_name = u3.text_input("Atlas name", key="at_up_name", placeholder="e.g. my_parcellation", disabled=may_not)
    u3.button("Check and add", disabled=may_not or not (up_labels and up_names and up_name.strip()),
              on_click=add_atlas)
if "at_atlas_msg" in st.session_state:
    kind, text, notes = st.session_state.pop("at_atlas_msg")
    (st.success if kind == "success" else st.error)(text)
    for note in notes:
        st.caption(note)

try:
    atlas = _atlas(atlas_name, resolution, merge, *atlas_version(atlas_name))
except (AtlasError, KeyError) as exc:
    st.error(f"The atlas {atlas_name} cannot be used: {exc.args[0] if exc.args else exc}")
    st.stop()

table_file = rt.find_table(ws, store, atlas)
store_args, store_key = rt.request([run.id], stores=[store.folder.name], atlas=atlas_name, merge=merge)
if table_file is None:
    failed = next((j for j in jobs.list_jobs(ws, "regions") if j.record.get("key") == store_key), None) \
        if ws.jobs_dir.exists() else None
    job = active_job(store_key)
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
        submit(store_args, store_key)
        job = active_job(store_key)
    st.info(f"Summing the relevance of every scan per region of **{atlas.name}** ({atlas.n_regions} regions) "
            "in the background; the table is cached for everyone.")
    if job is not None:
        job_progress(job.id, ws, rerun_when_done=True, key="regions")
    st.stop()

table = annotated(table_file, run, absolute)
if table.empty:
    st.warning(f"No scan of the {SPLIT_NAMES[split]} has both a heatmap and a prediction.")
    st.stop()
n_ad, n_hc = len(ra.group_scans(table, "AD")), len(ra.group_scans(table, "HC"))
truth = ra.atrophied_regions(ws, merged=merge) if ws.is_demo and atlas_name == "neuromorphometrics" else set()
method_label = labels[pick]
st.caption(f"**{method_label}** · {atlas.name}, {atlas.n_regions} regions on the {resolution:g} mm grid · "
           f"{SPLIT_NAMES[split]}: {n_ad} AD, {n_hc} HC · {VALUES[values]}"
           + (" · ★ = a region the demo generator shrank in AD" if truth else ""))
settings = {"page": "pages/atlas.py", "run": run.id, "checkpoint": sha, "method": method,
            "params": rt.store_params(store), "store": store.folder.name, "atlas": atlas_name, "merge": merge,
            "split": split, "values": values, "min_voxels": int(min_voxels)}


def _figure(fig) -> None:
    st.plotly_chart(fig, width="stretch", config={"displaylogo": False})


def _truth_line(regions, what: str) -> None:
    if truth:
        o = ra.truth_overlap(list(regions)[:10], truth)
        st.markdown(f"**Ground truth:** {o['hits']} of the top {o['k']} {what} ({o['percent']:.0f} %) are regions "
                    "the demo generator atrophied.")


# --------------------------------------------------------------------------- tabs
default_tab = view_param("tab", TABS[0])
tabs = st.tabs(TABS, key="at_tab", on_change="rerun", default=default_tab if default_tab in TABS else TABS[0])

with tabs[0]:
    if tabs[0].open:
        t1, t2, t3 = st.columns([2, 1.2, 1])
        metric = t1.segmented_control("Metric", list(ra.METRICS), key="at_metric", required=True,
                                      default=view_param("metric", "density") if view_param("metric", "density")
                                      in ra.METRICS else "density", format_func=str.capitalize,
                                      help="; ".join(f"**{m}**: {ra.METRIC_NAMES[m]}" for m in ra.METRICS))
        k = t2.slider("Regions shown", 5, 50, view_param("k", 25, int), key="at_k")
        pairs = {"AD vs HC": ("AD", "HC"), "TP vs TN": ("TP", "TN")}
        usable = [p for p, gs in pairs.items() if all(ra.group_scans(table, g) for g in gs)] or ["AD vs HC"]
        preferred = "TP vs TN" if metric == "gain" and "TP vs TN" in usable else "AD vs HC"
        pair_name = t3.radio("Groups", usable, key=f"at_pair_{metric}_{len(usable)}", horizontal=True,
                             index=usable.index(preferred),
                             help="Fig 6 shows gain for true positives and true negatives.")
        groups = pairs[pair_name]
        if "TP vs TN" not in usable:
            lacking = [g for g in ("TP", "TN") if not ra.group_scans(table, g)]
            t3.caption(f"No {' or '.join(lacking)} scans in the {SPLIT_NAMES[split]}.")
        top = ra.top_table(table, metric, k, groups=groups, rank_group=groups[0], min_voxels=min_voxels)
        regions = list(top["region"])
        if not regions:
            st.info("No region has a value for this metric (a gain needs HC scans with relevance there).")
        else:
            dists = distributions(table_file, metric, regions, groups)
            _figure(rf.region_figure(
                dists, metric, groups, marked=truth, identity=metric == "gain",
                title=f"Top {len(regions)} regions by {groups[0]} mean {ra.METRIC_NAMES[metric].split(' (')[0].lower()}"
                      f" · {method_label}"))
            st.caption(f"Circles: the group means ({groups[0]} orange, {groups[1]} green); shaded: a density "
                       "estimate of the scans' values in each region (above the line " + groups[0] + ", below it "
                       + groups[1] + "). " + ("Gain = the scan's relevance sum ÷ the mean HC sum in that region; "
                                             "the dashed line is gain 1." if metric == "gain" else ""))
            _truth_line(regions, f"regions by {metric}")
            with st.expander("The numbers"):
                st.dataframe(top.assign(atrophied=top["region"].isin(truth)) if truth else top, hide_index=True,
                             width="stretch")
            st.markdown("#### One region")
            tests = ra.region_tests(table, metric if metric != "gain" else "sum").set_index("region")
            wanted_region = view_param("region", regions[0])
            region = st.selectbox("Region", regions, key="at_region",
                                  index=regions.index(wanted_region) if wanted_region in regions else 0)
            r = tests.loc[region] if region in tests.index else None
            means = top.set_index("region").loc[region, [f"mean_{g}" for g in groups]].astype(float)
            small = means.abs().max() < 1e-2    # the same notation for both, so they compare at a glance
            m = st.columns(4)
            for col, g, v in zip(m, groups, means):
                col.metric(f"{g} mean", f"{v:.3e}" if small else f"{v:.4g}")
            m[2].metric("AD vs HC p (FDR)", "—" if r is None or pd.isna(r["p_fdr"]) else f"{r['p_fdr']:.3g}",
                        help="Mann–Whitney U over the region's values, corrected over all regions "
                             "(Benjamini–Hochberg); gain is tested on the sums it is made of.")
            m[3].metric("Voxels", f"{int(top.set_index('region').loc[region, 'voxels'])}")
            review_panel(ws, {"kind": "region", "region": region},
                         {**settings, "tab": TABS[0], "metric": metric, "k": k, "region": region})

with tabs[1]:
    if tabs[1].open:
        f1, f2, f3 = st.columns([1.2, 1, 1.6])
        fp_metric = f1.segmented_control("Metric", ["density", "sum", "gain", "fraction"], default="density",
                                         required=True, key="at_fp_metric")
        fp_k = f2.slider("Regions", 5, 50, 25, key="at_fp_k")
        min_score = f3.slider("Confident AD patients: AD score above", 0.0, 1.0, 0.9, 0.01, key="at_fp_score")
        regions = list(ra.ranking(table, fp_metric, "AD", min_voxels=min_voxels).head(fp_k).index)
        scans = table.drop_duplicates("scan_id").set_index("scan_id")
        order = scans.sort_values(["diagnosis", "ad_score"], ascending=[True, False]).index.tolist()
        kept = st.session_state.get("at_fp_scans")
        if kept is None:   # first visit: the link's patients, else the paper's pair
            kept = [s for s in view_param("scans", "").split(",") if s]
            if not kept:
                first = ra.most_different_patients(table, regions, metric=fp_metric, min_score=min_score)
                kept = list(first[:2]) if first else []
        st.session_state["at_fp_scans"] = [s for s in kept if s in order]   # scans of another split drop out

        def pick_pair():
            pair = ra.most_different_patients(table, regions, metric=fp_metric, min_score=min_score)
            st.session_state["at_fp_pair"] = pair
            if pair is not None:
                st.session_state["at_fp_scans"] = [pair[0], pair[1]]

        b1, b2 = st.columns([1.3, 2])
        b1.button("Two most different confident AD patients", on_click=pick_pair, type="primary", key="at_fp_pair_btn",
                  help=f"Among AD patients with an AD score above {min_score:.2f}, the two whose {fp_metric} over "
                       f"these {len(regions)} regions are furthest apart by cosine distance (Figs 5 and 8).")
        pair = st.session_state.get("at_fp_pair", "unset")
        if pair is None:
            n_conf = len(ra.confident_patients(table, min_score))
            b2.warning(f"{n_conf} AD patient(s) of the {SPLIT_NAMES[split]} have an AD score above {min_score:.2f}; "
                       "two are needed. Lower the threshold or pick patients below.")
        elif pair != "unset":
            b2.success(f"**{pair[0]}** and **{pair[1]}**: cosine distance {pair[2]:.3f}")
        chosen = st.multiselect("Patients shown", order, key="at_fp_scans", max_selections=8,
                                format_func=lambda s: f"{s} · {scans.loc[s, 'diagnosis']} · AD score "
                                                      f"{scans.loc[s, 'ad_score']:.2f}")
        if regions:
            fp = ra.fingerprints(table, chosen, regions, fp_metric) if chosen else None
            _figure(rf.region_figure(distributions(table_file, fp_metric, regions, ("AD", "HC")), fp_metric,
                                     fingerprints=fp, marked=truth, identity=fp_metric == "gain",
                                     title=f"Individual fingerprints over the top {len(regions)} regions by AD mean "
                                           f"{fp_metric}"))
        if chosen:
            links = pd.DataFrame({
                "scan": chosen, "diagnosis": [scans.loc[s, "diagnosis"] for s in chosen],
                "outcome": [scans.loc[s, "outcome"] for s in chosen],
                "AD score": [scans.loc[s, "ad_score"] for s in chosen],
                "heatmap": [ra.viewer_link(run.id, store.folder.name, s, st.query_params.get("workspace"))
                            for s in chosen]})
            st.dataframe(links, hide_index=True, width="stretch", column_config={
                "AD score": st.column_config.NumberColumn(format="%.3f"),
                "heatmap": st.column_config.LinkColumn("Heatmap viewer", display_text="open the scan's map ↗")})
            st.markdown("Open in the heatmap viewer: " + " · ".join(
                f"[{s} ↗]({url})" for s, url in zip(links["scan"], links["heatmap"])))
            st.caption("Each line is one patient's value in each region; the links open the scan's map in the "
                       "heatmap viewer (Individual view) in a new tab.")

with tabs[2]:
    if tabs[2].open:
        k_top = st.number_input("Top regions compared", 3, 50, 10, key="at_rob_k", width=220,
                                help="The overlap is the share of regions two top lists have in common.")
        st.markdown("#### Across LRP β values (Fig 7)")
        r1, _ = st.columns([2, 1])
        wanted_betas = [b for b in view_param("betas", list(rt.BETAS), "floats") if b in rt.BETAS]
        betas = r1.multiselect("β values", list(rt.BETAS), default=wanted_betas or list(rt.BETAS), key="at_betas",
                               format_func=lambda b: f"β = {b:g}")
        base = rt.store_params(store) if method == "lrp" else {}
        found, missing = {}, []
        for b in sorted(betas):
            s = rt.matching_store(ws, sha, "lrp", {**base, "beta": float(b)}, store.meta.get("target", "AD"))
            path = rt.find_table(ws, s, atlas) if s is not None else None
            if path is None:
                missing.append(b)
            else:
                found[f"β={b:g}"] = annotated(path, run, absolute)
        if missing:
            args, key = rt.request([run.id], method="lrp", betas=missing, params=base, atlas=atlas_name, merge=merge)
            job = active_job(key)
            if job is not None:
                job_progress(job.id, ws, rerun_when_done=True, key="betas")
            else:
                st.caption(f"Missing: {', '.join(f'β = {b:g}' for b in missing)} (heatmaps of every scan with the "
                           "run's model, then their region metrics).")
                if st.button(f"Compute the missing β values ({len(missing)})", key="at_betas_go",
                             disabled=locked("compute")) and submit(args, key):
                    st.rerun()
        if len(found) >= 2:
            _figure(rf.overlap_figure(ra.overlap_matrices(found, k=int(k_top), min_voxels=min_voxels),
                                      title=f"Overlap of the top {int(k_top)} regions between β values (%)"))
        else:
            st.info("The overlap needs at least two β values with region metrics.")

        st.markdown("#### Across retrainings (Eitel, study 3)")
        members = rt.group_runs(ws, run)
        if len(members) < 2:
            st.info(f"Run **{run.id}** was trained alone. Runs trained together (several seeds or folds on the "
                    "**Training** page) are compared here: the mean pairwise overlap of their top regions.")
        else:
            params = rt.store_params(store)
            have, lacking = {}, []
            for r in members:
                s = rt.matching_store(ws, sha_of(r), method, params, store.meta.get("target", "AD"))
                path = rt.find_table(ws, s, atlas) if s is not None else None
                if path is None:
                    lacking.append(r.id)
                elif r.predictions() is not None:
                    have[r.id] = annotated(path, r, absolute)
            if lacking:
                args, key = rt.request(lacking, method=method, params=params, atlas=atlas_name, merge=merge)
                job = active_job(key)
                if job is not None:
                    job_progress(job.id, ws, rerun_when_done=True, key="runs")
                else:
                    st.caption(f"{len(lacking)} of the group's {len(members)} runs have no {method_label} region "
                               "metrics yet.")
                    if st.button(f"Compute them ({len(lacking)} runs)", key="at_runs_go",
                                 disabled=locked("compute")) and submit(args, key):
                        st.rerun()
            if len(have) >= 2:
                mo = ra.mean_overlaps(have, k=int(k_top), min_voxels=min_voxels)
                cols = st.columns(len(mo))
                for col, row in zip(cols, mo.itertuples()):
                    col.metric(f"{ra.METRIC_NAMES[row.metric].split(' (')[0]}", f"{row.mean_overlap:.0f} %",
                               help=f"Mean over the {row.pairs} pairs of {row.tables} runs")
                _figure(rf.overlap_figure(ra.overlap_matrices(have, k=int(k_top), min_voxels=min_voxels),
                                          title=f"Overlap of the top {int(k_top)} regions between runs of group "
                                                f"{run.config.get('group')} (%)"))

with tabs[3]:
    if tabs[3].open:
        m1, m2 = st.columns([1, 2])
        k_m = m1.slider("Regions per method", 1, 15, 4, key="at_m_k")
        mode = m2.radio("Values", ["each method's usual", "all signed", "all absolute"], horizontal=True,
                        key="at_m_mode", help="Gradient methods are usually read as |gradient|.")
        have, lacking = {}, []
        for s, lab in zip(stores, labels):
            path = rt.find_table(ws, s, atlas)
            if path is None:
                lacking.append(s.folder.name)
                continue
            m = s.params.get("method", "")
            use_abs = {"each method's usual": m in ra.ABSOLUTE_BY_DEFAULT, "all signed": False,
                       "all absolute": True}[mode]
            have[lab + (" |·|" if use_abs else "")] = annotated(path, run, use_abs)
        if lacking:
            args, key = rt.request([run.id], stores=lacking, atlas=atlas_name, merge=merge)
            job = active_job(key)
            if job is not None:
                job_progress(job.id, ws, rerun_when_done=True, key="methods")
            elif st.button(f"Compute region metrics of the other {len(lacking)} method(s)", key="at_methods_go",
                           disabled=locked("compute")) and submit(args, key):
                st.rerun()
        long = ra.method_top_regions(have, k=k_m, min_voxels=min_voxels)
        for g, name in (("AD", "AD patients"), ("HC", "healthy controls")):
            st.markdown(f"**Most relevant regions, averaged over {name}** (fraction of the scan's summed relevance)")
            wide_t = ra.method_table(long, g)
            if wide_t.empty:
                st.caption(f"No {g} scans in the {SPLIT_NAMES[split]}.")
            else:
                st.dataframe(wide_t, width="stretch")
        st.caption("As in Rieke et al. 2018, Table 1: each method's regions with the largest share of the scan's "
                   "relevance (region sum ÷ whole-volume sum, averaged over the group). |·|: of absolute values. "
                   "Compute heatmaps of other methods on the **Heatmaps** page to add columns.")

with tabs[4]:
    if tabs[4].open:
        s1, s2, s3 = st.columns([1.5, 1, 1])
        t_metric = s1.segmented_control("Metric", ["density", "sum", "fraction"], default="density", required=True,
                                        key="at_t_metric")
        test = s2.radio("Test", ["mannwhitney", "welch"], horizontal=True, key="at_test",
                        format_func={"mannwhitney": "Mann–Whitney U", "welch": "Welch's t"}.get)
        alpha = s3.number_input("FDR level", 0.001, 0.5, 0.05, 0.01, key="at_alpha")
        res = ra.region_tests(table, t_metric, test=test, alpha=alpha)
        n_sig = int(res["significant"].sum())
        st.markdown(f"**{n_sig} of {res['p'].notna().sum()} regions** differ between AD ({n_ad}) and HC ({n_hc}) "
                    f"at a false discovery rate of {alpha:g} (Benjamini–Hochberg over all regions).")
        _figure(rf.volcano_figure(res, alpha=alpha, marked=truth))
        if method == "lrp" and t_metric != "fraction":
            st.caption("LRP relevance adds up to the model's AD score, so scans the model calls AD carry more relevance "
                       "in almost every region. Test the **fraction** to ask where AD relevance is concentrated "
                       "beyond that.")
        show = res[["region", "n_AD", "n_HC", "mean_AD", "mean_HC", "effect", "p", "p_fdr", "significant"]]
        st.dataframe(show, hide_index=True, width="stretch", column_config={
            "mean_AD": st.column_config.NumberColumn(format="%.3e"), "mean_HC": st.column_config.NumberColumn(format="%.3e"),
            "effect": st.column_config.NumberColumn(res["effect_name"].iat[0] if len(res) else "effect", format="%.2f"),
            "p": st.column_config.NumberColumn(format="%.2e"), "p_fdr": st.column_config.NumberColumn("p (FDR)", format="%.2e")})

with tabs[5]:
    if tabs[5].open:
        st.markdown(f"One row per scan and region ({table['scan_id'].nunique()} scans × {table['region'].nunique()} "
                    f"regions): `sum`, `density` (sum ÷ voxels), `fraction` (of the scan's whole-volume sum), `gain` "
                    "(÷ the mean HC sum of this selection), with the scan's diagnosis, prediction and score.")
        name = f"{run.id}_{method}_{atlas_name}{'_merged' if merge else ''}_{split}_{values}.csv"
        st.download_button("Download CSV", data=lambda: table.to_csv(index=False), file_name=name, mime="text/csv",
                           icon=":material/download:", type="primary", on_click="ignore")
        st.dataframe(table.head(2000), hide_index=True, width="stretch", column_config={
            c: st.column_config.NumberColumn(format="%.3e") for c in ("sum", "density")} | {
            c: st.column_config.NumberColumn(format="%.4f") for c in ("fraction", "gain", "ad_score")})
        if len(table) > 2000:
            st.caption(f"The first 2,000 of {len(table):,} rows; the CSV holds them all.")
