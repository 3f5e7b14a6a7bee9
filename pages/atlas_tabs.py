"""The Atlas metrics page's analysis: what is shown (:class:`AtlasView`), its cached tables, and the tabs
Top regions and Fingerprints (the others are in pages.atlas_compare)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import streamlit as st

from lib import jobs
from lib.analysis import region_analysis as ra
from lib.views import atlas as av, region_figures as rf
from lib.views.selection import StoreSelection
from pages.job_widgets import submit_job
from pages.loaders import checkpoint_sha
from pages.review_panel import review_panel, view_param


def _mtime(path) -> int:
    return Path(path).stat().st_mtime_ns


def sha_of(r) -> str:
    return checkpoint_sha(str(r.best_checkpoint), _mtime(r.best_checkpoint))


def active_job(ws, request: jobs.RegionTables):
    return jobs.for_request(ws, request, active=True) if ws.jobs_dir.exists() else None


def submit(ws, request: jobs.RegionTables) -> bool:
    return submit_job(ws, request) is not None


@dataclass
class AtlasView(StoreSelection):
    """What the page analyses: a run's heatmap store on an atlas, over a split, signed or absolute."""

    atlas_name: str
    split: str
    values: str
    merge: bool
    min_voxels: int
    atlas: object = None
    table_file: Path | None = None
    table: pd.DataFrame | None = None
    truth: set = frozenset()

    @property
    def method(self) -> str:
        return self.store.params.get("method", "")

    @property
    def classes(self):
        return self.ws.classes

    @property
    def absolute(self) -> bool:
        return self.values == "absolute"

    @property
    def settings(self) -> dict:
        return av.settings(self.run, self.sha, self.store, atlas=self.atlas_name, merge=self.merge,
                           split=self.split, values=self.values, min_voxels=self.min_voxels)

    def key_of(self, path: Path, of_run, absolute: bool) -> av.TableKey:
        return av.TableKey(Path(path), of_run.dir / "predictions.csv", self.split, absolute, self.classes)

    @property
    def key(self) -> av.TableKey:
        """The main table's key: its results are shared by every session (lib.core.memo)."""
        return self.key_of(self.table_file, self.run, self.absolute)

    def annotated(self, path: Path, of_run, absolute: bool) -> pd.DataFrame:
        return av.annotated(self.key_of(path, of_run, absolute))

    def distributions(self, metric: str, regions, groups) -> list[dict]:
        """Density estimates of the main table, once per table version and request (never by hashing data)."""
        return av.distributions(self.key, metric, tuple(regions), tuple(groups))

    def truth_line(self, regions, what: str) -> None:
        if self.truth:
            o = ra.truth_overlap(list(regions)[:10], self.truth)
            st.markdown(f"**Ground truth:** {o['hits']} of the top {o['k']} {what} ({o['percent']:.0f} %) are "
                        "regions the demo generator atrophied.")


def figure(fig) -> None:
    st.plotly_chart(fig, width="stretch", config={"displaylogo": False})


# --------------------------------------------------------------------------- Top regions
def top_regions_tab(v: AtlasView) -> None:
    split = v.split
    t1, t2, t3 = st.columns([2, 1.2, 1])
    metric = t1.segmented_control("Metric", list(ra.METRICS), key="at_metric", required=True,
                                  default=view_param("metric", "density") if view_param("metric", "density")
                                  in ra.METRICS else "density", format_func=str.capitalize,
                                  help="; ".join(f"**{m}**: {ra.METRIC_NAMES[m]}" for m in ra.METRICS))
    k = t2.slider("Regions shown", 5, 50, view_param("k", 25, int), key="at_k")
    usable = av.usable_pairs_of(v.key)
    pair_name = t3.radio("Groups", usable, key=f"at_pair_{metric}_{len(usable)}", horizontal=True,
                         index=usable.index(av.preferred_pair(metric, usable, v.classes)),
                         help="Fig 6 shows gain for true positives and true negatives.")
    groups = av.pairs(v.classes)[pair_name]
    if "TP vs TN" not in usable:
        lacking = [g for g in ("TP", "TN") if not av.group_sizes(v.key)[g]]
        t3.caption(f"No {' or '.join(lacking)} scans in the {av.SPLIT_NAMES[split]}.")
    top = av.top_table(v.key, metric, k, tuple(groups), groups[0], v.min_voxels)
    regions = list(top["region"])
    if not regions:
        st.info(f"No region has a value for this metric (a gain needs {v.classes.negative} scans with relevance "
                "there).")
        return
    dists = v.distributions(metric, regions, groups)
    figure(rf.region_figure(
        dists, metric, groups, marked=v.truth, identity=metric == "gain",
        title=f"Top {len(regions)} regions by {groups[0]} mean {ra.METRIC_NAMES[metric].split(' (')[0].lower()}"
              f" · {v.method_label}"))
    st.caption(f"Circles: the group means ({groups[0]} orange, {groups[1]} green); shaded: a density "
               "estimate of the scans' values in each region (above the line " + groups[0] + ", below it "
               + groups[1] + "). " + (f"Gain = the scan's relevance sum ÷ the mean {v.classes.negative} sum in that region; "
                                     "the dashed line is gain 1." if metric == "gain" else ""))
    v.truth_line(regions, f"regions by {metric}")
    with st.expander("The numbers"):
        st.dataframe(top.assign(atrophied=top["region"].isin(v.truth)) if v.truth else top, hide_index=True,
                     width="stretch")
    _one_region(v, top, regions, metric, groups, k)


def _one_region(v: AtlasView, top, regions: list, metric: str, groups, k: int) -> None:
    """The group means, the test between the classes and the size of one of the top regions, and its reviews."""
    st.markdown("#### One region")
    tests = av.region_tests(v.key, metric if metric != "gain" else "sum").set_index("region")
    wanted_region = view_param("region", regions[0])
    region = st.selectbox("Region", regions, key="at_region",
                          index=regions.index(wanted_region) if wanted_region in regions else 0)
    r = tests.loc[region] if region in tests.index else None
    means = top.set_index("region").loc[region, [f"mean_{g}" for g in groups]].astype(float)
    small = means.abs().max() < 1e-2    # the same notation for both, so they compare at a glance
    m = st.columns(4)
    for col, g, value in zip(m, groups, means):
        col.metric(f"{g} mean", f"{value:.3e}" if small else f"{value:.4g}")
    m[2].metric(f"{v.classes.task} p (FDR)", "—" if r is None or pd.isna(r["p_fdr"]) else f"{r['p_fdr']:.3g}",
                help="Mann–Whitney U over the region's values, corrected over all regions "
                     "(Benjamini–Hochberg); gain is tested on the sums it is made of.")
    m[3].metric("Voxels", f"{int(top.set_index('region').loc[region, 'voxels'])}")
    review_panel(v.ws, {"kind": "region", "region": region},
                 {**v.settings, "tab": av.TABS[0], "metric": metric, "k": k, "region": region})


# --------------------------------------------------------------------------- Fingerprints
def fingerprints_tab(v: AtlasView) -> None:
    table = v.table
    f1, f2, f3 = st.columns([1.2, 1, 1.6])
    fp_metric = f1.segmented_control("Metric", ["density", "sum", "gain", "fraction"], default="density",
                                     required=True, key="at_fp_metric")
    fp_k = f2.slider("Regions", 5, 50, 25, key="at_fp_k")
    P = v.classes.positive
    min_score = f3.slider(f"Confident {P} patients: {P} score above", 0.0, 1.0, 0.9, 0.01, key="at_fp_score")
    regions = list(av.ranking(v.key, fp_metric, P, v.min_voxels).head(fp_k).index)
    scans = table.drop_duplicates("scan_id").set_index("scan_id")
    order = av.patient_order(table)
    kept = st.session_state.get("at_fp_scans")
    if kept is None:   # first visit: the link's patients, else the paper's pair
        kept = [s for s in view_param("scans", "").split(",") if s]
        if not kept:
            first = ra.most_different_patients(table, regions, metric=fp_metric, min_score=min_score,
                                               classes=v.classes)
            kept = list(first[:2]) if first else []
    st.session_state["at_fp_scans"] = [s for s in kept if s in order]   # scans of another split drop out

    def pick_pair():
        pair = ra.most_different_patients(table, regions, metric=fp_metric, min_score=min_score, classes=v.classes)
        st.session_state["at_fp_pair"] = pair
        if pair is not None:
            st.session_state["at_fp_scans"] = [pair[0], pair[1]]

    b1, b2 = st.columns([1.3, 2])
    b1.button(f"Two most different confident {P} patients", on_click=pick_pair, type="primary", key="at_fp_pair_btn",
              help=f"Among {P} patients with a {P} score above {min_score:.2f}, the two whose {fp_metric} over "
                   f"these {len(regions)} regions are furthest apart by cosine distance (Figs 5 and 8).")
    pair = st.session_state.get("at_fp_pair", "unset")
    if pair is None:
        n_conf = len(ra.confident_patients(table, min_score, classes=v.classes))
        b2.warning(f"{n_conf} {P} patient(s) of the {av.SPLIT_NAMES[v.split]} have a {P} score above "
                   f"{min_score:.2f}; two are needed. Lower the threshold or pick patients below.")
    elif pair != "unset":
        b2.success(f"**{pair[0]}** and **{pair[1]}**: cosine distance {pair[2]:.3f}")
    chosen = st.multiselect("Patients shown", order, key="at_fp_scans", max_selections=8,
                            format_func=lambda s: f"{s} · {scans.loc[s, 'diagnosis']} · {P} score "
                                                  f"{scans.loc[s, 'ad_score']:.2f}")
    if regions:
        fp = ra.fingerprints(table, chosen, regions, fp_metric) if chosen else None
        figure(rf.region_figure(v.distributions(fp_metric, regions, v.classes.names[::-1]), fp_metric,
                                v.classes.names[::-1],
                                fingerprints=fp, marked=v.truth, identity=fp_metric == "gain",
                                title=f"Individual fingerprints over the top {len(regions)} regions by {P} mean "
                                      f"{fp_metric}"))
    if chosen:
        _patient_links(v, chosen)


def _patient_links(v: AtlasView, chosen: list[str]) -> None:
    links = av.patient_links(v.table, chosen, v.run.id, v.store.folder.name, st.query_params.get("workspace"),
                             v.classes)
    st.dataframe(links, hide_index=True, width="stretch", column_config={
        f"{v.classes.positive} score": st.column_config.NumberColumn(format="%.3f"),
        "heatmap": st.column_config.LinkColumn("Heatmap viewer", display_text="open the scan's map ↗")})
    st.markdown("Open in the heatmap viewer: " + " · ".join(
        f"[{s} ↗]({url})" for s, url in zip(links["scan"], links["heatmap"])))
    st.caption("Each line is one patient's value in each region; the links open the scan's map in the "
               "heatmap viewer (Individual view) in a new tab.")
