"""Evaluating explanations: which method to trust for this model (region perturbation, sanity check, localisation).

The figures are made by lib.views.evaluation from the results of lib.analysis.evaluation."""

import time

import numpy as np
import streamlit as st

from lib import jobs
from lib.analysis import evaluation as ev
from lib.cli.requests import command_line
from lib.views import evaluation as evv
from pages.job_widgets import job_progress, locked, submit_job
from pages.run_picker import require_ready_run
from pages.workspace_sidebar import current_workspace
from pages.report_button import report_button
from pages.review_panel import review_panel, view_param

DEFAULTS = ev.Settings()
SUMMARY_COLUMNS = {
    "rank": dict(format="%d", help="Mean rank over AOPC gain, mass accuracy, voxel AUC and pointing game; methods "
                                   "failing the sanity check rank last"),
    "AOPC": dict(format="%.3f", help="Most relevant regions first"),
    "AOPC random": dict(format="%.3f", help="Random order of the same regions"),
    "AOPC gain": dict(format="%.3f", help="AOPC − AOPC random: higher = more faithful"),
    "ρ randomised": dict(format="%.2f", help="Spearman ρ with the original map after every layer is randomised"),
    "mass accuracy": dict(format="%.3f", help="Share of positive relevance inside the atrophy"),
    "voxel AUC": dict(format="%.3f"),
    "pointing game": dict(format="%.2f", help="Share of scans whose most relevant voxel lies in the atrophy")}


def request_form():
    """The settings form; (methods chosen, checks, settings, submitted)."""
    with st.expander("Settings and run", expanded=True), st.form("evaluation"):
        chosen = st.multiselect("Methods", list(evv.LABELS), default=evv.default_labels(),
                                help="LRP with the β-rule of Böhle et al. 2019 (α = 1 + β), the baselines of "
                                     "Rieke et al. 2018 and Grad-CAM, each with its default parameters.")
        checks = st.pills("Checks", list(ev.CHECKS), selection_mode="multi", default=list(ev.CHECKS),
                          format_func=evv.CHECK_NAMES.get)
        c = st.columns(4)
        split = c[0].selectbox("Scans from", ["test", "validation", "train", "all"],
                               help="The run's part the scans are chosen from (positive and negative class "
                                    "alternating).")
        n_scans = c[1].number_input("Scans", 1, 500, DEFAULTS.n_scans,
                                    help="Scans for region perturbation; localisation takes as many scans "
                                         "with known atrophy.")
        sanity_scans = c[2].number_input("Scans for the sanity check", 1, 50, DEFAULTS.sanity_scans,
                                         help="Every map is recomputed once per randomised layer.")
        steps = c[3].number_input("Perturbation steps L", 1, 500, DEFAULTS.steps)
        c = st.columns(4)
        regions = c[0].selectbox("Perturbed regions", ["cubes", "atlas"],
                                 help="A uniform grid of cubes touching the brain, or the regions of the "
                                      f"{DEFAULTS.atlas} atlas.")
        cube_mm = c[1].number_input("Cube edge (mm)", 3.0, 60.0, DEFAULTS.cube_mm, step=3.0, format="%.0f")
        replacement = c[2].selectbox("Replacement", list(ev.REPLACEMENTS),
                                     index=list(ev.REPLACEMENTS).index(DEFAULTS.replacement),
                                     help="zero: 0 in the normalised input (the training scans' mean intensity); "
                                          "mean: the scan's brain mean; uniform: noise between the scan's brain "
                                          "minimum and maximum (Samek et al. 2017); blur: the scan smoothed with "
                                          f"σ = {DEFAULTS.blur_mm:g} mm.")
        submitted = st.form_submit_button("Run evaluation", type="primary", disabled=locked("compute"))
    settings = ev.Settings(split=split, n_scans=int(n_scans), sanity_scans=int(sanity_scans), regions=regions,
                           cube_mm=float(cube_mm), steps=int(steps), replacement=replacement)
    return chosen, checks or list(ev.CHECKS), settings, submitted


def follow(ws, request, checks, submitted: bool) -> None:
    """Submit the evaluation when asked (and not all computed), then show the jobs' progress."""
    if submitted:
        if request.missing(checks):
            job = submit_job(ws, jobs.EvaluateMaps.of(request, checks))
            if job is not None:
                st.session_state["evaluation_job"] = job.id
                time.sleep(1.0)
                st.rerun()
        else:
            st.success("Everything asked for is already computed for these settings: shown below.")
    for job in [j for j in jobs.list_jobs(ws, jobs.EvaluateMaps.kind) if j.active]:
        job_progress(job.id, ws, rerun_when_done=True, key="evaluation")
    last = st.session_state.get("evaluation_job")
    if last and (job := jobs.get(ws, last)) is not None and job.state in ("failed", "cancelled"):
        job_progress(last, ws, key="evaluation-last")


def missing_note(ws, request, checks, have_any: bool) -> None:
    missing = request.missing(checks)
    if not missing:
        return
    names = evv.missing_names(missing, request.methods)
    if jobs.find_active(ws, request.job_key(checks)):
        st.info("Being computed in the background (progress above): " + ", ".join(names) + ". The results "
                "appear here when the job finishes; you can leave the page meanwhile.")
    else:
        st.info(("Not computed yet for these settings: " if have_any else "No results for these settings yet: ")
                + ", ".join(names) + ". **Run evaluation** computes them in the background (the random-order "
                "baseline once for all methods; occlusion is the slowest, many forward passes per scan), or from "
                f"a terminal: `{command_line(jobs.EvaluateMaps.of(request, checks))}`.")


def ranking_tab(results, labels, threshold: float) -> None:
    table = ev.summary(results, labels, threshold)
    st.markdown(ev.ranking_rule(threshold))
    st.dataframe(table, hide_index=True, width="stretch", column_config={
        k: st.column_config.NumberColumn(**cfg) for k, cfg in SUMMARY_COLUMNS.items()})
    chance = ev.chance_levels(results)
    notes = [f"sanity check passes when |ρ| < {threshold:g}"]
    if chance:
        notes.append("chance: " + ", ".join(f"{k} {v:.3f}" for k, v in chance.items()))
    st.caption("; ".join(notes) + ". Scores not computed for a method are empty and leave it unranked.")


def aopc_tab(results, labels, colour, settings, threshold: float) -> None:
    curves = ev.aopc_curves(results)
    if curves.empty:
        st.info("Region perturbation has not been computed for these settings.")
        return
    r0 = results["random"] or next(iter(results["aopc"].values()))
    st.plotly_chart(evv.aopc_figure(curves, colour, settings.target, r0.get("n_regions", 0)), width="stretch")
    table = ev.summary(results, labels, threshold).dropna(subset=["AOPC"])
    st.plotly_chart(evv.aopc_bars(table, colour, results["random"]), width="stretch")
    st.caption(evv.aopc_caption(settings))


def sanity_tab(ws, run, results, labels, colour, settings, threshold: float) -> None:
    st_table = ev.sanity_table(results)
    if st_table.empty:
        st.info("The sanity check has not been computed for these settings.")
        return
    st.plotly_chart(evv.sanity_figure(st_table, colour, threshold, settings.top_fraction), width="stretch")
    st.caption("Weights re-initialised cumulatively from the output layer (left) down to the first convolution "
               f"(right); each map compared with the trained model's map within the brain. Dotted: ±{threshold:g}, "
               "the pass threshold for ρ after the last step (Adebayo et al. 2018).")
    st.markdown(evv.sanity_verdicts(ev.summary(results, labels, threshold), threshold))
    st.markdown("**The map at every step**")
    have_maps = [lab for lab in labels if lab in results["sanity"] and results["sanity"][lab].get("maps_path")]
    c_method, c_slice = st.columns([1, 2])
    wanted = view_param("sanity_method", "")
    lab = c_method.selectbox("Method", have_maps, key="sanity_maps_method",
                             index=have_maps.index(wanted) if wanted in have_maps else 0)
    if lab:
        _sanity_maps(ws, run, results["sanity"][lab], lab, c_slice, settings)


def _sanity_maps(ws, run, r: dict, lab: str, c_slice, settings) -> None:
    """One method's map of the example scan at every randomisation step, and the reviews of that scan."""
    maps = np.load(r["maps_path"], mmap_mode="r")
    z = min(max(view_param("z", evv.peak_slice(maps), int), 0), maps.shape[3] - 1)
    z = c_slice.slider("Axial slice", 0, maps.shape[3] - 1, z, key="sanity_maps_z",
                       help="Starts at the original map's strongest voxel.")
    st.plotly_chart(evv.sanity_maps_figure(maps, r["steps"], ev.brain_mask(run.grid), z), width="stretch")
    st.caption(f"Scan {r['example_scan']}, axial slice {z} (MNI z = {run.grid.voxel_to_mni((0, 0, z))[2]:.0f} "
               "mm, left on the left), brain outline in grey; each map scaled by the 99.5th percentile of its "
               "|values| in the brain and clipped "
               f"(red: evidence for {settings.target}, blue: against).")
    # a judgement of how the map degrades is a judgement of this method's maps of this scan
    scan_md = r["example_scan"].replace("_", "\\_")   # shown as Markdown
    review_panel(ws, {"kind": "scan", "scan_id": r["example_scan"]},
                 {"page": "pages/evaluation.py", "run": run.id, "check": "sanity", "sanity_method": lab,
                  "z": z, "steps": list(r["steps"])}, key=f"sanity-{lab}",
                 title=f"Reviews of scan {scan_md} · sanity check")


def localisation_tab(run, request, results, colour, settings) -> None:
    loc = ev.localisation_table(results)
    if not request.has_truth():
        st.info("Localisation needs known atrophy: only the demo cohort has a ground truth.")
        return
    if loc.empty:
        st.info("Localisation has not been computed for these settings.")
        return
    st.plotly_chart(evv.localisation_figure(loc, colour, ev.chance_levels(results)), width="stretch")
    truth = ("the lesion mask the demo generator drew" if request.ws.config.get("disease") == "ms" else
             f"the voxels the demo generator atrophied ({evv.truth_text(settings)})")
    st.caption(f"Ground truth per scan: {truth}, on the "
               f"run's {run.grid.resolution:g} mm grid. Mass accuracy: positive relevance inside ÷ all positive "
               "relevance in the brain; AUC: voxel relevance against the mask; pointing game: the most relevant "
               f"voxel inside the mask ({loc.groupby('label').size().max()} scans). Dashed: chance.")
    with st.expander("Per scan"):
        st.dataframe(loc.drop(columns=["chance_hit"]), hide_index=True, width="stretch",
                     column_config={k: st.column_config.NumberColumn(format="%.3f")
                                    for k in ("mass", "auc", "chance_mass")})


def main() -> None:
    ws = current_workspace()
    st.title("Evaluating explanations")
    st.caption("Heatmaps have no ground truth on real data. Three measurements stand in for one: **region "
               "perturbation** (does removing what a map calls relevant change the model's output faster than "
               "removing random regions?), the **sanity check** (does the map change when the model's weights are "
               "randomised?) and, on the demo cohort, **localisation** of the atrophy the generator put in.")
    run = require_ready_run(ws)
    report_button(ws, run)
    chosen, checks, settings, submitted = request_form()
    if not chosen:
        st.info("Choose at least one method.")
        st.stop()
    request = ev.Evaluation(ws, run, [evv.LABELS[label] for label in chosen], settings)
    settings = request.settings   # the explained class filled in: the run's positive class
    follow(ws, request, checks, submitted)
    results = request.results()
    labels = [m.label for m in request.methods]
    colour = evv.colours(labels)
    have_any = any(results[c] for c in ev.CHECKS)
    missing_note(ws, request, checks, have_any)
    if not have_any:
        st.stop()
    st.caption(f"Run **{run.id}** · {len(request.scans['aopc'])} scans of the {settings.split} split for region "
               f"perturbation, {len(request.scans['sanity'])} for the sanity check, "
               f"{len(request.scans['localisation'])} with known atrophy for localisation · explained class "
               f"{settings.target}.")
    threshold = st.columns([1, 2])[0].slider(
        "Sanity-check threshold", 0.05, 0.95, DEFAULTS.sanity_threshold, 0.05,
        help="A method passes when the rank correlation |ρ| between its map from the trained model "
             "and from the fully randomised model (mean over scans) is below this value.")
    # a review's link (``?check=sanity``) opens the tab it was written on
    tab_rank, tab_aopc, tab_sanity, tab_loc = st.tabs(
        evv.TABS, default="Sanity check" if view_param("check") == "sanity" else None)
    with tab_rank:
        ranking_tab(results, labels, threshold)
    with tab_aopc:
        aopc_tab(results, labels, colour, settings, threshold)
    with tab_sanity:
        sanity_tab(ws, run, results, labels, colour, settings, threshold)
    with tab_loc:
        localisation_tab(run, request, results, colour, settings)


main()
