"""The Atlas metrics page's comparisons: Robustness (across β values and retrainings), Methods, class
tests, and the Table."""

from __future__ import annotations

import streamlit as st

from lib import jobs
from lib.analysis import region_analysis as ra, region_tables as rt
from lib.views import atlas as av, region_figures as rf
from pages.atlas_tabs import AtlasView, active_job, figure, sha_of, submit
from pages.job_widgets import job_progress, locked
from pages.review_panel import view_param


def _missing_button(v: AtlasView, request: jobs.RegionTables, progress_key: str, label: str, button_key: str,
                    caption: str | None = None) -> None:
    """Progress of the job computing what is missing, or (with a caption) the button that starts it."""
    job = active_job(v.ws, request)
    if job is not None:
        job_progress(job.id, v.ws, rerun_when_done=True, key=progress_key)
        return
    if caption:
        st.caption(caption)
    if st.button(label, key=button_key, disabled=locked("compute")) and submit(v.ws, request):
        st.rerun()


def robustness_tab(v: AtlasView) -> None:
    k_top = st.number_input("Top regions compared", 3, 50, 10, key="at_rob_k", width=220,
                            help="The overlap is the share of regions two top lists have in common.")
    st.markdown("#### Across LRP β values (Fig 7)")
    r1, _ = st.columns([2, 1])
    wanted_betas = [b for b in view_param("betas", list(rt.BETAS), "floats") if b in rt.BETAS]
    betas = r1.multiselect("β values", list(rt.BETAS), default=wanted_betas or list(rt.BETAS), key="at_betas",
                           format_func=lambda b: f"β = {b:g}")
    base = rt.store_params(v.store) if v.method == "lrp" else {}
    found, missing = {}, []
    for b in sorted(betas):
        s = rt.matching_store(v.ws, v.sha, "lrp", {**base, "beta": float(b)}, v.store.meta.get("target"))
        path = rt.find_table(v.ws, s, v.atlas) if s is not None else None
        if path is None:
            missing.append(b)
        else:
            found[f"β={b:g}"] = v.annotated(path, v.run, v.absolute)
    if missing:
        request = jobs.RegionTables(run_ids=(v.run.id,), method="lrp", betas=tuple(missing), params=base,
                                    atlas=v.atlas_name, merge=v.merge)
        _missing_button(v, request, "betas", f"Compute the missing β values ({len(missing)})", "at_betas_go",
                        f"Missing: {', '.join(f'β = {b:g}' for b in missing)} (heatmaps of every scan with the "
                        "run's model, then their region metrics).")
    if len(found) >= 2:
        figure(rf.overlap_figure(ra.overlap_matrices(found, k=int(k_top), min_voxels=v.min_voxels, classes=v.classes),
                                 title=f"Overlap of the top {int(k_top)} regions between β values (%)"))
    else:
        st.info("The overlap needs at least two β values with region metrics.")
    _retrainings(v, int(k_top))


def _retrainings(v: AtlasView, k_top: int) -> None:
    """The mean pairwise overlap of the top regions of runs trained together (Eitel, study 3)."""
    st.markdown("#### Across retrainings (Eitel, study 3)")
    members = rt.group_runs(v.ws, v.run)
    if len(members) < 2:
        st.info(f"Run **{v.run.id}** was trained alone. Runs trained together (several seeds or folds on the "
                "**Training** page) are compared here: the mean pairwise overlap of their top regions.")
        return
    params = rt.store_params(v.store)
    have, lacking = {}, []
    for r in members:
        s = rt.matching_store(v.ws, sha_of(r), v.method, params, v.store.meta.get("target"))
        path = rt.find_table(v.ws, s, v.atlas) if s is not None else None
        if path is None:
            lacking.append(r.id)
        elif r.predictions() is not None:
            have[r.id] = v.annotated(path, r, v.absolute)
    if lacking:
        request = jobs.RegionTables(run_ids=tuple(lacking), method=v.method, params=params, atlas=v.atlas_name,
                                    merge=v.merge)
        _missing_button(v, request, "runs", f"Compute them ({len(lacking)} runs)", "at_runs_go",
                        f"{len(lacking)} of the group's {len(members)} runs have no {v.method_label} region "
                        "metrics yet.")
    if len(have) >= 2:
        mo = ra.mean_overlaps(have, k=k_top, min_voxels=v.min_voxels, classes=v.classes)
        cols = st.columns(len(mo))
        for col, row in zip(cols, mo.itertuples()):
            col.metric(f"{ra.METRIC_NAMES[row.metric].split(' (')[0]}", f"{row.mean_overlap:.0f} %",
                       help=f"Mean over the {row.pairs} pairs of {row.tables} runs")
        figure(rf.overlap_figure(ra.overlap_matrices(have, k=k_top, min_voxels=v.min_voxels, classes=v.classes),
                                 title=f"Overlap of the top {k_top} regions between runs of group "
                                       f"{v.run.config.get('group')} (%)"))


def methods_tab(v: AtlasView) -> None:
    m1, m2 = st.columns([1, 2])
    k_m = m1.slider("Regions per method", 1, 15, 4, key="at_m_k")
    mode = m2.radio("Values", list(av.METHOD_VALUES), horizontal=True,
                    key="at_m_mode", help="Gradient methods are usually read as |gradient|.")
    have, lacking = {}, []
    for s, lab in zip(v.stores, v.labels):
        path = rt.find_table(v.ws, s, v.atlas)
        if path is None:
            lacking.append(s.folder.name)
            continue
        use_abs = av.uses_absolute(mode, s.params.get("method", ""))
        have[lab + (" |·|" if use_abs else "")] = v.annotated(path, v.run, use_abs)
    if lacking:
        request = jobs.RegionTables(run_ids=(v.run.id,), stores=tuple(lacking), atlas=v.atlas_name, merge=v.merge)
        _missing_button(v, request, "methods", f"Compute region metrics of the other {len(lacking)} method(s)",
                        "at_methods_go")
    k = v.classes
    long = ra.method_top_regions(have, k=k_m, min_voxels=v.min_voxels, groups=k.names[::-1])
    for g, name in ((k.positive, f"{k.positive} patients"), (k.negative, k.title(k.negative))):
        st.markdown(f"**Most relevant regions, averaged over {name}** (fraction of the scan's summed relevance)")
        wide_t = ra.method_table(long, g)
        if wide_t.empty:
            st.caption(f"No {g} scans in the {av.SPLIT_NAMES[v.split]}.")
        else:
            st.table(wide_t)   # a static table wraps its cells: every method's column stays in view
    st.caption("As in Rieke et al. 2018, Table 1: each method's regions with the largest share of the scan's "
               "relevance (region sum ÷ whole-volume sum, averaged over the group). |·|: of absolute values. "
               "Compute heatmaps of other methods on the **Heatmaps** page to add columns.")


def tests_tab(v: AtlasView) -> None:
    s1, s2, s3 = st.columns([1.5, 1, 1])
    t_metric = s1.segmented_control("Metric", ["density", "sum", "fraction"], default="density", required=True,
                                    key="at_t_metric")
    test = s2.radio("Test", ["mannwhitney", "welch"], horizontal=True, key="at_test",
                    format_func={"mannwhitney": "Mann–Whitney U", "welch": "Welch's t"}.get)
    alpha = s3.number_input("FDR level", 0.001, 0.5, 0.05, 0.01, key="at_alpha")
    P, N = v.classes.positive, v.classes.negative
    res = ra.region_tests(v.table, t_metric, test=test, alpha=alpha, classes=v.classes)
    n_sig = int(res["significant"].sum())
    n_ad, n_hc = len(ra.group_scans(v.table, P)), len(ra.group_scans(v.table, N))
    st.markdown(f"**{n_sig} of {res['p'].notna().sum()} regions** differ between {P} ({n_ad}) and {N} ({n_hc}) "
                f"at a false discovery rate of {alpha:g} (Benjamini–Hochberg over all regions).")
    figure(rf.volcano_figure(res, alpha=alpha, marked=v.truth, positive=P))
    if v.method == "lrp" and t_metric != "fraction":
        st.caption(f"LRP relevance adds up to the model's {P} score, so scans the model calls {P} carry more "
                   f"relevance in almost every region. Test the **fraction** to ask where {P} relevance is concentrated "
                   "beyond that.")
    show = res[["region", f"n_{P}", f"n_{N}", f"mean_{P}", f"mean_{N}", "effect", "p", "p_fdr", "significant"]]
    st.dataframe(show, hide_index=True, width="stretch", column_config={
        f"mean_{P}": st.column_config.NumberColumn(format="%.3e"), f"mean_{N}": st.column_config.NumberColumn(format="%.3e"),
        "effect": st.column_config.NumberColumn(res["effect_name"].iat[0] if len(res) else "effect", format="%.2f"),
        "p": st.column_config.NumberColumn(format="%.2e"), "p_fdr": st.column_config.NumberColumn("p (FDR)", format="%.2e")})


def table_tab(v: AtlasView) -> None:
    table = v.table
    st.markdown(f"One row per scan and region ({table['scan_id'].nunique()} scans × {table['region'].nunique()} "
                f"regions): `sum`, `density` (sum ÷ voxels), `fraction` (of the scan's whole-volume sum), `gain` "
                f"(÷ the mean {v.classes.negative} sum of this selection), with the scan's diagnosis, prediction and score.")
    name = av.csv_name(v.run.id, v.method, v.atlas_name, v.merge, v.split, v.values)
    st.download_button("Download CSV", data=lambda: table.to_csv(index=False), file_name=name, mime="text/csv",
                       icon=":material/download:", type="primary", on_click="ignore")
    st.dataframe(table.head(2000), hide_index=True, width="stretch", column_config={
        c: st.column_config.NumberColumn(format="%.3e") for c in ("sum", "density")} | {
        c: st.column_config.NumberColumn(format="%.4f") for c in ("fraction", "gain", "ad_score")})
    if len(table) > 2000:
        st.caption(f"The first 2,000 of {len(table):,} rows; the CSV holds them all.")
