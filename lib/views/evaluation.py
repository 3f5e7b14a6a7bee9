"""The Evaluation page's choices and figures: the methods offered, their colours, the AOPC curves and bars,
the sanity check's curves and maps, and the localisation scores. The numbers are
:mod:`lib.analysis.evaluation`'s."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from lib.analysis import evaluation as ev
from lib.analysis.evaluation.settings import method_choices

PALETTE = ["#1f77b4", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#2ca02c", "#ff7f0e"]
CHOICES = method_choices()
"""Every catalogued method's evaluation presets."""
LABELS = {ev.parse_method(s).label: s for s in CHOICES}
"""A method's label on the page → its specification."""
CHECK_NAMES = {"aopc": "region perturbation (AOPC)", "sanity": "sanity check", "localisation": "localisation"}
TABS = ["Ranking", "Region perturbation (AOPC)", "Sanity check", "Localisation"]
MARGIN = dict(l=10, r=10, t=40, b=10)


def default_labels() -> list[str]:
    return [ev.parse_method(s).label for s in ev.DEFAULT_METHODS]


def colours(labels: list[str]) -> dict[str, str]:
    return {lab: PALETTE[i % len(PALETTE)] for i, lab in enumerate(labels)}


def missing_names(missing, methods) -> list[str]:
    """The methods (and the random-order baseline) with a check still to compute, in the page's order."""
    wanted = {x for _, x in missing}
    names = [lab for lab in ["random order", *(m.label for m in methods)] if lab in wanted]
    return ["the random-order baseline" if n == "random order" else n for n in names]


def aopc_figure(curves: pd.DataFrame, colour: dict, target: str, n_regions: int) -> go.Figure:
    """The mean output drop per perturbation step, each method against the random order (dashed)."""
    fig = go.Figure()
    for lab, g in curves.groupby("label", sort=False):
        random = lab == "random order"
        line = dict(color="#7f7f7f", dash="dash", width=2) if random else dict(color=colour.get(lab), width=2)
        fig.add_trace(go.Scatter(x=g["k"], y=g["drop"], mode="lines", name=lab, line=line,
                                 error_y=None, hovertemplate="step %{x}: %{y:.3f}<extra>" + lab + "</extra>"))
    fig.update_xaxes(tickformat="d", dtick=max(1, int(curves["k"].max()) // 10))
    fig.update_layout(height=420, margin=MARGIN,
                      title=f"Mean drop of the {target} probability, f(x⁽⁰⁾) − f(x⁽ᵏ⁾)",
                      xaxis_title=f"regions perturbed, k (of {n_regions})",
                      yaxis_title="output drop", legend_title_text="")
    return fig


def aopc_bars(table: pd.DataFrame, colour: dict, random: dict | None) -> go.Figure:
    """AOPC per method (most relevant first), the random order's as a dashed line."""
    bar = go.Figure(go.Bar(x=table["method"], y=table["AOPC"], marker_color=[colour[m] for m in table["method"]],
                           text=[f"{v:.3f}" for v in table["AOPC"]], textposition="outside", name="MoRF"))
    if random:
        bar.add_hline(y=float(np.mean(random["aopc"])), line_dash="dash", line_color="#7f7f7f",
                      annotation_text="random order", annotation_position="top left")
    bar.update_layout(height=340, margin=MARGIN, title="AOPC (most relevant first)",
                      yaxis_title="AOPC", showlegend=False)
    return bar


def aopc_caption(settings: ev.Settings) -> str:
    return (f"{settings.regions.capitalize()}"
            + (f" of {settings.cube_mm:g} mm" if settings.regions == "cubes" else f" of {settings.atlas}")
            + f" are replaced ({settings.replacement}) cumulatively, most relevant first by the sum of "
            f"their relevance; AOPC = mean over k = 0…L of the drop (Samek et al. 2017). The dashed line "
            "perturbs the same regions in random order: a map earns its AOPC only above it.")


def sanity_figure(table: pd.DataFrame, colour: dict, threshold: float, top_fraction: float) -> go.Figure:
    """Spearman ρ, SSIM and top-k overlap with the trained model's map per randomisation step."""
    fig = make_subplots(rows=1, cols=3, subplot_titles=("Spearman ρ", "SSIM (|maps|)",
                                                        f"top-{top_fraction:.0%} overlap"))
    for lab, g in table.groupby("label", sort=False):
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
    fig.update_layout(height=430, margin=MARGIN, legend_title_text="")
    return fig


def sanity_verdicts(summary: pd.DataFrame, threshold: float) -> str:
    """One Markdown line per method with a sanity verdict."""
    verdict = summary[summary["sanity"] != ""]
    return "\n".join(
        f"- **{row['method']}**: ρ = {row['ρ randomised']:.2f} with every layer randomised → "
        + ("passes" if row["sanity"] == "pass" else "**fails**") + f" (|ρ| < {threshold:g} needed)"
        for row in verdict.to_dict("records"))


def peak_slice(maps) -> int:
    """The axial slice of the original map's strongest voxel."""
    return int(np.unravel_index(int(np.argmax(np.abs(np.asarray(maps[0], np.float32)))), maps.shape[1:])[2])


def sanity_maps_figure(maps, steps: list, brain: np.ndarray, z: int) -> go.Figure:
    """Axial slice ``z`` of the map at every randomisation step, each scaled to its own 99.5th percentile."""
    panels = make_subplots(rows=1, cols=len(steps), subplot_titles=steps, horizontal_spacing=0.01)
    outline = brain[:, :, z].T.astype(np.float32)
    for i in range(len(steps)):
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
    return panels


def localisation_figure(loc: pd.DataFrame, colour: dict, chance: dict) -> go.Figure:
    """Mass accuracy and voxel AUC per scan (boxes) and the pointing game's hit rate, against chance."""
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
    fig.update_layout(height=460, margin=MARGIN)
    return fig


def truth_text(settings: ev.Settings) -> str:
    return ("local volume loss ≥ " + f"{settings.min_loss:.0%}" if settings.truth == "atrophy"
            else f"regions displaced by ≥ {settings.min_mm:g} mm")
