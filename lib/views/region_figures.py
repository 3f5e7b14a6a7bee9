"""Plotly figures of the Atlas metrics page, from the outputs of :mod:`lib.analysis.region_analysis`.

The region figures (Böhle et al. 2019 Figs 4–6) are drawn as ridges: one row per region, best at the
top, the metric along x; above each row's baseline the first group's density estimate (AD or TP,
orange), below it the second's (HC or TN, green), each scaled to the row's larger peak so the two
compare; the group means as circles on the baseline. Fingerprints are lines through the rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from lib.core import memo
from lib.analysis.region_analysis import GROUP_COLOURS, METRIC_NAMES
from lib.data.classes import DEFAULT_CLASSES

FINGERPRINT_COLOURS = ("#1f77b4", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22")
HALF_HEIGHT = 0.45   # a density's peak reaches this far from its row's baseline (rows are 1 apart)


def _rgba(hex_colour: str, alpha: float) -> str:
    h = hex_colour.lstrip("#")
    r, g, b = (int(h[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def ridge_polygons(dists: Sequence[dict], group: str, side: int) -> tuple[list, list]:
    """x and y of the filled density shapes of one group, rows separated by None (one trace for all).

    Row ``i`` (0 = best) has its baseline at y = ``i``; ``side`` −1 draws above it (the y axis is
    reversed), +1 below. Each row is scaled by the larger peak of its groups.
    """
    xs: list = []
    ys: list = []
    for i, d in enumerate(dists):
        peak = max((float(np.max(e["density"])) for e in d["groups"].values() if e["n"]), default=0.0)
        e = d["groups"].get(group)
        if e is None or not e["n"] or peak <= 0:
            continue
        grid, dens = np.asarray(e["grid"]), np.asarray(e["density"])
        keep = dens > peak * 1e-3   # trim the flat tails so rows do not run into each other's labels
        if not keep.any():
            continue
        lo, hi = np.flatnonzero(keep)[[0, -1]]
        g, h = grid[lo:hi + 1], dens[lo:hi + 1] / peak * HALF_HEIGHT
        xs += [g[0], *g, g[-1], None]
        ys += [i, *(i + side * h), i, None]
    return xs, ys


@memo.memoized(32)
def region_figure(dists: Sequence[dict], metric: str, groups: Sequence[str] = DEFAULT_CLASSES.names[::-1], *,
                  fingerprints: pd.DataFrame | None = None, marked: set[str] | None = None,
                  identity: bool = False, title: str = "", height: int | None = None) -> go.Figure:
    """Ridge plot of the regions in ``dists`` (:func:`lib.analysis.region_analysis.distributions`).

    ``fingerprints``: scans × regions of the same metric, drawn as lines (customdata = scan id).
    ``marked``: region names whose labels get a ★ (the demo's atrophied regions). ``identity``: a
    dashed line at 1 (gain).
    """
    regions = [d["region"] for d in dists]
    fig = go.Figure()
    for g, side in zip(groups, (-1, 1)):
        colour = GROUP_COLOURS.get(g, "#7f7f7f")
        xs, ys = ridge_polygons(dists, g, side)
        fig.add_trace(go.Scatter(x=xs, y=ys, fill="toself", mode="lines", line={"width": 0.6, "color": colour},
                                 fillcolor=_rgba(colour, 0.35), name=f"{g} distribution", hoverinfo="skip",
                                 legendgroup=g))
    for g, off in zip(groups, (-0.12, 0.12)):
        colour = GROUP_COLOURS.get(g, "#7f7f7f")
        means = [d["groups"][g]["mean"] if g in d["groups"] else np.nan for d in dists]
        ns = [d["groups"][g]["n"] if g in d["groups"] else 0 for d in dists]
        fig.add_trace(go.Scatter(
            x=means, y=[i + off for i in range(len(dists))], mode="markers", name=f"{g} mean",
            marker={"color": colour, "size": 9, "line": {"color": "white", "width": 1}}, legendgroup=g,
            customdata=np.column_stack([regions, ns]) if regions else None,
            hovertemplate=f"%{{customdata[0]}}<br>{g} mean %{{x:.4g}} (n = %{{customdata[1]}})<extra></extra>"))
    if fingerprints is not None and len(fingerprints):
        for j, (scan, row) in enumerate(fingerprints.reindex(columns=regions).iterrows()):
            fig.add_trace(go.Scatter(
                x=row.to_numpy(dtype=float), y=np.arange(len(regions)), mode="lines+markers", name=str(scan),
                line={"color": FINGERPRINT_COLOURS[j % len(FINGERPRINT_COLOURS)], "width": 2},
                marker={"size": 5}, customdata=[[scan, r] for r in regions],
                hovertemplate="%{customdata[0]}<br>%{customdata[1]}: %{x:.4g}<extra></extra>"))
    if identity:
        fig.add_vline(x=1.0, line={"dash": "dash", "color": "#444", "width": 1.2},
                      annotation_text="gain 1", annotation_position="bottom right")
    marked = marked or set()
    labels = [f"★ {r}" if r in marked else r for r in regions]
    fig.update_yaxes(tickmode="array", tickvals=list(range(len(regions))), ticktext=labels,
                     range=[len(regions) - 0.4, -0.6], showgrid=True, gridcolor="#eee", zeroline=False)
    fig.update_xaxes(title_text=METRIC_NAMES.get(metric, metric), zeroline=True, zerolinecolor="#bbb")
    fig.update_layout(title={"text": title, "y": 0.995, "yanchor": "top", "x": 0.0, "xanchor": "left",
                             "font": {"size": 15}} if title else None,
                      height=height or max(320, 26 * len(regions) + 170),
                      margin={"l": 10, "r": 10, "t": 90 if title else 50, "b": 40}, plot_bgcolor="white",
                      legend={"orientation": "h", "y": 1.0, "yanchor": "bottom", "x": 0, "font": {"size": 11}},
                      hovermode="closest")
    return fig


def overlap_figure(matrices: Mapping[str, pd.DataFrame], *, title: str = "", axis_title: str = "") -> go.Figure:
    """One annotated heatmap per metric of pairwise top-k overlap in % (Fig 7)."""
    names = list(matrices)
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=[METRIC_NAMES.get(m, m).split(" (")[0] for m in names],
                        horizontal_spacing=0.04, shared_yaxes=True)
    for c, m in enumerate(names, start=1):
        mat = matrices[m]
        z = mat.to_numpy(dtype=float)
        text = [[("" if np.isnan(v) else f"{v:.0f}") for v in row] for row in z]
        fig.add_trace(go.Heatmap(z=z, x=[str(x) for x in mat.columns], y=[str(y) for y in mat.index], zmin=0, zmax=100,
                                 colorscale="Blues", text=text, texttemplate="%{text}", showscale=c == len(names),
                                 colorbar={"title": "%", "len": 0.9},
                                 hovertemplate="%{y} vs %{x}: %{z:.0f} %<extra></extra>"), row=1, col=c)
        fig.update_yaxes(autorange="reversed", row=1, col=c, title_text=axis_title if c == 1 else None,
                         showticklabels=c == 1)
        fig.update_xaxes(title_text=axis_title, row=1, col=c)
    n = max((len(m) for m in matrices.values()), default=1)
    fig.update_layout(title=title or None, height=max(300, 60 * n + 160), margin={"l": 10, "r": 10, "t": 70, "b": 40})
    return fig


def volcano_figure(tests: pd.DataFrame, *, alpha: float = 0.05, marked: set[str] | None = None,
                   positive: str = DEFAULT_CLASSES.positive) -> go.Figure:
    """Effect size against −log10(FDR-corrected p) per region; regions below ``alpha`` in orange."""
    t = tests.dropna(subset=["p_fdr"])
    y = -np.log10(np.clip(t["p_fdr"].to_numpy(dtype=float), 1e-300, 1))
    sig = t["p_fdr"].to_numpy() < alpha
    marked = marked or set()
    fig = go.Figure()
    for flag, colour, name in ((False, "#9e9e9e", f"not significant (FDR ≥ {alpha:g})"),
                               (True, GROUP_COLOURS["TP"], f"significant (FDR < {alpha:g})")):
        sel = sig == flag
        fig.add_trace(go.Scatter(
            x=t["effect"].to_numpy()[sel], y=y[sel], mode="markers", name=name,
            marker={"color": colour, "size": 8, "symbol": ["star" if r in marked else "circle"
                                                          for r in t["region"].to_numpy()[sel]]},
            customdata=np.column_stack([t["region"].to_numpy()[sel], t["p"].to_numpy()[sel],
                                        t["p_fdr"].to_numpy()[sel]]) if sel.any() else None,
            hovertemplate="%{customdata[0]}<br>effect %{x:.2f}<br>p %{customdata[1]:.2g}, FDR %{customdata[2]:.2g}"
                          "<extra></extra>"))
    fig.add_hline(y=-np.log10(alpha), line={"dash": "dot", "color": "#444"})
    effect = t["effect_name"].iat[0] if len(t) else "effect"
    fig.update_xaxes(title_text=f"{effect} (> 0: more in {positive})", zeroline=True, zerolinecolor="#bbb")
    fig.update_yaxes(title_text="−log10 FDR-corrected p")
    fig.update_layout(height=440, margin={"l": 10, "r": 10, "t": 60, "b": 40}, plot_bgcolor="white", showlegend=True,
                      legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 0})
    return fig
