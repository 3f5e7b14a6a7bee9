"""Evaluating explanations: which method to trust for this model (region perturbation, sanity check, localisation)."""

import shlex
import time

import numpy as np
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from lib.analysis import evaluation as ev
from lib import jobs
from pages.common import current_workspace, job_progress, locked, require_ready_run, submit_job
from pages.review_panel import review_panel, view_param
from pages.report_button import report_button

PALETTE = ["#1f77b4", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#2ca02c", "#ff7f0e"]
CHOICES = ["lrp:beta=0", "lrp:beta=0.25", "lrp:beta=0.5", "lrp:beta=0.75", "lrp:beta=1", "guided_backprop",
           "gradient_x_input", "sensitivity", "occlusion", "gradcam"]
LABELS = {ev.parse_method(s).label: s for s in CHOICES}
DEFAULTS = ev.Settings()
CHECK_NAMES = {"aopc": "region perturbation (AOPC)", "sanity": "sanity check", "localisation": "localisation"}

ws = current_workspace()
st.title("Evaluating explanations")
st.caption("Heatmaps have no ground truth on real data. Three measurements stand in for one: **region "
           "perturbation** (does removing what a map calls relevant change the model's output faster than "
           "removing random regions?), the **sanity check** (does the map change when the model's weights are "
           "randomised?) and, on the demo cohort, **localisation** of the atrophy the generator put in.")
run = require_ready_run(ws)
report_button(ws, run)

# --- the request ---------------------------------------------------------------------------------------------------
with st.expander("Settings and run", expanded=True):
    with st.form("evaluation"):
        chosen = st.multiselect("Methods", list(LABELS),
                                default=[ev.parse_method(s).label for s in ev.DEFAULT_METHODS],
                                help="LRP with the β-rule of Böhle et al. 2019 (α = 1 + β), the baselines of "
                                     "Rieke et al. 2018 and Grad-CAM, each with its default parameters.")
        checks = st.pills("Checks", list(ev.CHECKS), selection_mode="multi", default=list(ev.CHECKS),
                          format_func=CHECK_NAMES.get)
        c = st.columns(4)
        split = c[0].selectbox("Scans from", ["test", "validation", "train", "all"],
                               help="The run's part the scans are chosen from (AD and HC alternating).")
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

if not chosen:
    st.info("Choose at least one method.")
    st.stop()
settings = ev.Settings(split=split, n_scans=int(n_scans), sanity_scans=int(sanity_scans), regions=regions,
                       cube_mm=float(cube_mm), steps=int(steps), replacement=replacement)
request = ev.Evaluation(ws, run, [LABELS[label] for label in chosen], settings)
checks = checks or list(ev.CHECKS)

if submitted:
    if request.missing(checks):
        job = submit_job(ws, "evaluate-maps", request.cli_args(checks), key=request.job_key(checks))
        if job is not None:
            st.session_state["evaluation_job"] = job.id
            time.sleep(1.0)
            st.rerun()
    else:
        st.success("Everything asked for is already computed for these settings: shown below.")

for job in [j for j in jobs.list_jobs(ws, "evaluate-maps") if j.active]:
    job_progress(job.id, ws, rerun_when_done=True, key="evaluation")
last = st.session_state.get("evaluation_job")
if last and (job := jobs.get(ws, last)) is not None and job.state in ("failed", "cancelled"):
    job_progress(last, ws, key="evaluation-last")

results = request.results()
labels = [m.label for m in request.methods]
colour = {lab: PALETTE[i % len(PALETTE)] for i, lab in enumerate(labels)}
missing = request.missing(checks)
have_any = any(results[c] for c in ev.CHECKS)
if missing:
    names = [lab for lab in ["random order", *(m.label for m in request.methods)] if lab in {x for _, x in missing}]
    names = ["the random-order baseline" if n == "random order" else n for n in names]
    if jobs.find_active(ws, request.job_key(checks)):
        st.info("Being computed in the background (progress above): " + ", ".join(names) + ". The results "
                "appear here when the job finishes; you can leave the page meanwhile.")
    else:
        st.info(("Not computed yet for these settings: " if have_any else "No results for these settings yet: ")
                + ", ".join(names) + ". **Run evaluation** computes them in the background (the random-order "
                "baseline once for all methods; occlusion is the slowest, many forward passes per scan), or from "
                "a terminal: `python -m lib evaluate-maps " + shlex.join(request.cli_args(checks)) + "`.")
if not have_any:
    st.stop()

st.caption(f"Run **{run.id}** · {len(request.scans['aopc'])} scans of the {settings.split} split for region "
           f"perturbation, {len(request.scans['sanity'])} for the sanity check, "
           f"{len(request.scans['localisation'])} with known atrophy for localisation · explained class "
           f"{settings.target}.")
threshold = st.columns([1, 2])[0].slider("Sanity-check threshold", 0.05, 0.95, DEFAULTS.sanity_threshold, 0.05,
                      help="A method passes when the rank correlation |ρ| between its map from the trained model "
                           "and from the fully randomised model (mean over scans) is below this value.")

# a review's link (``?check=sanity``) opens the tab it was written on
tab_rank, tab_aopc, tab_sanity, tab_loc = st.tabs(["Ranking", "Region perturbation (AOPC)", "Sanity check",
                                                   "Localisation"],
                                                  default="Sanity check" if view_param("check") == "sanity" else None)

# --- ranking -------------------------------------------------------------------------------------------------------
with tab_rank:
    table = ev.summary(results, labels, threshold)
    st.dataframe(table, hide_index=True, width="stretch", column_config={
        "rank": st.column_config.NumberColumn(format="%d", help="Mean rank over AOPC gain, mass accuracy, voxel "
                                              "AUC and pointing game; methods failing the sanity check rank last"),
        "AOPC": st.column_config.NumberColumn(format="%.3f", help="Most relevant regions first"),
        "AOPC random": st.column_config.NumberColumn(format="%.3f", help="Random order of the same regions"),
        "AOPC gain": st.column_config.NumberColumn(format="%.3f", help="AOPC − AOPC random: higher = more faithful"),
        "ρ randomised": st.column_config.NumberColumn(format="%.2f", help="Spearman ρ with the original map "
                                                      "after every layer is randomised"),
        "mass accuracy": st.column_config.NumberColumn(format="%.3f", help="Share of positive relevance inside "
                                                       "the atrophy"),
        "voxel AUC": st.column_config.NumberColumn(format="%.3f"),
        "pointing game": st.column_config.NumberColumn(format="%.2f", help="Share of scans whose most relevant "
                                                       "voxel lies in the atrophy")})
    chance = ev.chance_levels(results)
    notes = [f"sanity check passes when |ρ| < {threshold:g}"]
    if chance:
        notes.append("chance: " + ", ".join(f"{k} {v:.3f}" for k, v in chance.items()))
    st.caption("; ".join(notes) + ". Scores not computed for a method are empty and leave it unranked.")

# --- region perturbation -------------------------------------------------------------------------------------------
with tab_aopc:
    curves = ev.aopc_curves(results)
    if curves.empty:
        st.info("Region perturbation has not been computed for these settings.")
    else:
        r0 = results["random"] or next(iter(results["aopc"].values()))
        n_regions = r0.get("n_regions", 0)
        fig = go.Figure()
        for lab, g in curves.groupby("label", sort=False):
            random = lab == "random order"
            line = dict(color="#7f7f7f", dash="dash", width=2) if random else dict(color=colour.get(lab), width=2)
            fig.add_trace(go.Scatter(x=g["k"], y=g["drop"], mode="lines", name=lab, line=line,
                                     error_y=None, hovertemplate="step %{x}: %{y:.3f}<extra>" + lab + "</extra>"))
        fig.update_xaxes(tickformat="d", dtick=max(1, int(curves["k"].max()) // 10))
        fig.update_layout(height=420, margin=dict(l=10, r=10, t=40, b=10),
                          title=f"Mean drop of the {settings.target} probability, f(x⁽⁰⁾) − f(x⁽ᵏ⁾)",
                          xaxis_title=f"regions perturbed, k (of {n_regions})",
                          yaxis_title="output drop", legend_title_text="")
        st.plotly_chart(fig, width="stretch")
        table = ev.summary(results, labels, threshold).dropna(subset=["AOPC"])
        bar = go.Figure(go.Bar(x=table["method"], y=table["AOPC"], marker_color=[colour[m] for m in table["method"]],
                               text=[f"{v:.3f}" for v in table["AOPC"]], textposition="outside", name="MoRF"))
        if results["random"]:
            bar.add_hline(y=float(np.mean(results["random"]["aopc"])), line_dash="dash", line_color="#7f7f7f",
                          annotation_text="random order", annotation_position="top left")
        bar.update_layout(height=340, margin=dict(l=10, r=10, t=40, b=10), title="AOPC (most relevant first)",
                          yaxis_title="AOPC", showlegend=False)
        st.plotly_chart(bar, width="stretch")
        st.caption(f"{settings.regions.capitalize()}"
                   + (f" of {settings.cube_mm:g} mm" if settings.regions == "cubes" else f" of {settings.atlas}")
                   + f" are replaced ({settings.replacement}) cumulatively, most relevant first by the sum of "
                   f"their relevance; AOPC = mean over k = 0…L of the drop (Samek et al. 2017). The dashed line "
                   "perturbs the same regions in random order: a map earns its AOPC only above it.")

# --- sanity check --------------------------------------------------------------------------------------------------
with tab_sanity:
    st_table = ev.sanity_table(results)
    if st_table.empty:
        st.info("The sanity check has not been computed for these settings.")
    else:
        fig = make_subplots(rows=1, cols=3, subplot_titles=("Spearman ρ", "SSIM (|maps|)",
                                                            f"top-{settings.top_fraction:.0%} overlap"))
        for lab, g in st_table.groupby("label", sort=False):
            for col, metric in enumerate(("spearman", "ssim", "topk"), start=1):
                fig.add_trace(go.Scatter(x=g["step"], y=g[metric], mode="lines+markers", name=lab,
                                         legendgroup=lab, showlegend=col == 1, line=dict(color=colour.get(lab))),
                              row=1, col=col)
        for sign in (1, -1):
            fig.add_hline(y=sign * threshold, line_dash="dot", line_color="#d62728", row=1, col=1)
        fig.update_xaxes(tickangle=-40)
        fig.update_yaxes(range=[-1.05, 1.05], row=1, col=1)
        fig.update_yaxes(range=[-0.2, 1.05], row=1, col=2)
        fig.update_yaxes(range=[-0.05, 1.05], row=1, col=3)
        fig.update_layout(height=430, margin=dict(l=10, r=10, t=40, b=10), legend_title_text="")
        st.plotly_chart(fig, width="stretch")
        st.caption("Weights re-initialised cumulatively from the output layer (left) down to the first convolution "
                   f"(right); each map compared with the trained model's map within the brain. Dotted: ±{threshold:g}, "
                   "the pass threshold for ρ after the last step (Adebayo et al. 2018).")
        verdict = ev.summary(results, labels, threshold)
        verdict = verdict[verdict["sanity"] != ""]
        st.markdown("\n".join(
            f"- **{row['method']}**: ρ = {row['ρ randomised']:.2f} with every layer randomised → "
            + ("passes" if row["sanity"] == "pass" else "**fails**") + f" (|ρ| < {threshold:g} needed)"
            for row in verdict.to_dict("records")))

        st.markdown("**The map at every step**")
        have_maps = [lab for lab in labels if lab in results["sanity"] and results["sanity"][lab].get("maps_path")]
        c_method, c_slice = st.columns([1, 2])
        wanted = view_param("sanity_method", "")
        lab = c_method.selectbox("Method", have_maps, key="sanity_maps_method",
                                 index=have_maps.index(wanted) if wanted in have_maps else 0)
        if lab:
            r = results["sanity"][lab]
            maps = np.load(r["maps_path"], mmap_mode="r")
            z = int(np.unravel_index(int(np.argmax(np.abs(np.asarray(maps[0], np.float32)))), maps.shape[1:])[2])
            z = min(max(view_param("z", z, int), 0), maps.shape[3] - 1)
            z = c_slice.slider("Axial slice", 0, maps.shape[3] - 1, z, key="sanity_maps_z",
                          help="Starts at the original map's strongest voxel.")
            panels = make_subplots(rows=1, cols=len(r["steps"]), subplot_titles=r["steps"],
                                   horizontal_spacing=0.01)
            brain = ev.brain_mask(run.grid)
            outline = brain[:, :, z].T.astype(np.float32)
            for i in range(len(r["steps"])):
                m = np.asarray(maps[i], np.float32)
                # a few extreme voxels would wash everything else out: scale by a high percentile and clip
                scale = float(np.percentile(np.abs(m[brain]), 99.5)) or 1.0
                panels.add_trace(go.Heatmap(z=np.clip(m[:, :, z] / scale, -1, 1).T, zmin=-1, zmax=1,
                                            colorscale="RdBu_r", showscale=i == 0, hoverinfo="skip"),
                                 row=1, col=i + 1)
                panels.add_trace(go.Contour(z=outline, showscale=False, hoverinfo="skip", contours_coloring="lines",
                                            contours=dict(start=0.5, end=0.5, size=1), line=dict(width=1),
                                            colorscale=[[0, "#888888"], [1, "#888888"]]),
                                 row=1, col=i + 1)
            panels.update_xaxes(visible=False)
            panels.update_yaxes(visible=False, scaleanchor="x")
            panels.update_annotations(font_size=11)
            panels.update_layout(height=300, margin=dict(l=5, r=5, t=40, b=5), plot_bgcolor="white")
            st.plotly_chart(panels, width="stretch")
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

# --- localisation --------------------------------------------------------------------------------------------------
with tab_loc:
    loc = ev.localisation_table(results)
    if not request.has_truth():
        st.info("Localisation needs known atrophy: only the demo cohort has a ground truth.")
    elif loc.empty:
        st.info("Localisation has not been computed for these settings.")
    else:
        chance = ev.chance_levels(results)
        fig = make_subplots(rows=1, cols=3, subplot_titles=("Relevance mass accuracy", "Voxel AUC",
                                                            "Pointing game (hit rate)"))
        for lab, g in loc.groupby("label", sort=False):
            for col, metric in ((1, "mass"), (2, "auc")):
                fig.add_trace(go.Box(y=g[metric], name=lab, marker_color=colour.get(lab), boxpoints="all",
                                     jitter=0.4, pointpos=0, showlegend=False), row=1, col=col)
            fig.add_trace(go.Bar(x=[lab], y=[g["hit"].mean()], marker_color=colour.get(lab), showlegend=False,
                                 text=[f"{g['hit'].mean():.2f}"], textposition="outside", textfont_size=12,
                                 cliponaxis=False), row=1, col=3)
        for col, key in ((1, "mass accuracy"), (2, "voxel AUC"), (3, "pointing game")):
            fig.add_hline(y=chance[key], line_dash="dash", line_color="#7f7f7f", row=1, col=col,
                          annotation_text="chance", annotation_position="top left")
        fig.update_xaxes(tickangle=-40)
        fig.update_yaxes(range=[0, 1.05])
        fig.update_layout(height=460, margin=dict(l=10, r=10, t=40, b=10))
        st.plotly_chart(fig, width="stretch")
        truth = ("local volume loss ≥ " + f"{settings.min_loss:.0%}" if settings.truth == "atrophy"
                 else f"regions displaced by ≥ {settings.min_mm:g} mm")
        st.caption(f"Ground truth per scan: the voxels the demo generator atrophied ({truth}), on the run's "
                   f"{run.grid.resolution:g} mm grid. Mass accuracy: positive relevance inside ÷ all positive "
                   "relevance in the brain; AUC: voxel relevance against the mask; pointing game: the most relevant "
                   f"voxel inside the mask ({loc.groupby('label').size().max()} scans). Dashed: chance.")
        with st.expander("Per scan"):
            st.dataframe(loc.drop(columns=["chance_hit"]), hide_index=True, width="stretch",
                         column_config={k: st.column_config.NumberColumn(format="%.3f")
                                        for k in ("mass", "auc", "chance_mass")})
