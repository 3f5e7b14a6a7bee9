"""The biomarker analyses' figures and captions (Fig 9's scatter, r across β) and the links from a point to
the scan's map in the viewer."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from lib.core import memo

# Böhle et al. 2019 §3.3 (ADNI, true positives of the test split): hippocampal relevance vs hippocampal volume.
PAPER_R = {"lrp": {0.0: -0.560, 0.25: -0.562, 0.5: -0.525, 0.75: -0.457, 1.0: -0.361}, "guided_backprop": 0.096}
GROUP_STYLE = {  # the paper's AD orange for true positives; false positives are controls (HC green)
    "TP": {"color": "#f28e2b", "symbol": "circle"},
    "FP": {"color": "#59a14f", "symbol": "diamond-open"},
    "TN": {"color": "#59a14f", "symbol": "circle"},
    "FN": {"color": "#f28e2b", "symbol": "diamond-open"},
}


def format_r(r: float, digits: int = 3) -> str:
    """``−0.560`` (a true minus sign), ``n/a`` for NaN."""
    return "n/a" if not np.isfinite(r) else f"{r:.{digits}f}".replace("-", "−")



def format_p(p: float, n_permutations: int | None = None) -> str:
    """``0.004``, ``3.2e-4``, or ``< 1e-4`` at the floor of a permutation test with ``n_permutations``."""
    if not np.isfinite(p):
        return "n/a"
    if n_permutations and p <= 1.0 / (1 + n_permutations) + 1e-15:
        return f"< {1.0 / n_permutations:.0e}".replace("e-0", "e-")
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"



def p_text(p: float, n_permutations: int | None = None) -> str:
    """``p = 0.004`` or ``p < 1e-4`` (see :func:`format_p`)."""
    text = format_p(p, n_permutations)
    return f"p {text}" if text.startswith("<") else f"p = {text}"



def stats_caption(row: Mapping, n_permutations: int | None = None) -> str:
    """``r = −0.56 (95 % CI −0.80 … −0.20), permutation p = 0.004, ρ = −0.51, n = 24``."""
    if not np.isfinite(row.get("r", np.nan)):
        return f"n = {int(row.get('n', 0))}: too few scans for a correlation"
    p = p_text(row["p_permutation"], n_permutations or row.get("n_permutations"))
    return (f"r = {row['r']:.3f} (95 % CI {row['ci_low']:.2f} … {row['ci_high']:.2f}), permutation {p}, "
            f"ρ = {row['rho']:.3f}, n = {int(row['n'])}").replace("-", "−")



@memo.memoized(32)
def scatter_figure(points: pd.DataFrame, *, x: str = "measure", y: str = "relevance", x_title: str = "",
                   y_title: str = "", title: str = "", groups: Sequence[str] = ("TP", "FP"),
                   fit: Sequence[str] = ("TP",), height: int = 430):
    """A plotly scatter of ``y`` against ``x``, one trace per outcome group, with a least-squares line per
    group in ``fit``. Every point carries ``customdata = [scan_id, subject_id, outcome, ad_score, split]``
    so a click can be traced back to its scan."""
    import plotly.graph_objects as go

    fig = go.Figure()
    lines = []
    for g in groups:
        sub = points[(points["outcome"] == g) & points[x].notna() & points[y].notna()]
        style = GROUP_STYLE.get(g, {"color": "#4e79a7", "symbol": "circle"})
        custom = np.column_stack([sub["scan_id"].astype(str), sub.get("subject_id", sub["scan_id"]).astype(str),
                                  sub["outcome"].astype(str), sub.get("ad_score", pd.Series(np.nan, sub.index)),
                                  sub.get("split", pd.Series("", sub.index)).astype(str)]) if len(sub) else None
        fig.add_trace(go.Scatter(
            x=sub[x], y=sub[y], mode="markers", name=f"{g} (n = {len(sub)})", customdata=custom,
            marker=dict(color=style["color"], symbol=style["symbol"], size=10,
                        line=dict(width=1.5 if "open" in style["symbol"] else 0.5,
                                  color=style["color"] if "open" in style["symbol"] else "white")),
            hovertemplate=("<b>%{customdata[0]}</b> (" + g + ")<br>score %{customdata[3]:.2f}<br>"
                           f"{x_title or x}: %{{x:.4g}}<br>{y_title or y}: %{{y:.4g}}<extra></extra>")))
        if g in fit and len(sub) >= 3 and sub[x].nunique() > 1:
            slope, intercept = np.polyfit(sub[x].to_numpy(float), sub[y].to_numpy(float), 1)
            xs = np.array([sub[x].min(), sub[x].max()], float)
            lines.append(go.Scatter(x=xs, y=slope * xs + intercept, mode="lines", name=f"{g} least-squares fit",
                                    line=dict(color=style["color"], width=2, dash="dash"), hoverinfo="skip"))
    for line in lines:   # after the points, so traces 0 … k-1 are the groups in order
        fig.add_trace(line)
    fig.update_layout(
        title=dict(text=title, font=dict(size=15)), height=height, margin=dict(l=10, r=10, t=60 if title else 20, b=10),
        legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0),
        xaxis_title=x_title or x, yaxis_title=y_title or y, clickmode="event+select", hovermode="closest")
    fig.update_yaxes(zeroline=True, zerolinecolor="#bbbbbb", exponentformat="power")
    return fig



@memo.memoized(32)
def beta_figure(table: pd.DataFrame, *, title: str = "", height: int = 320):
    """r (with its bootstrap interval) against β, and the paper's values for comparison."""
    import plotly.graph_objects as go

    fig = go.Figure()
    if len(table):
        fig.add_trace(go.Scatter(
            x=table["beta"], y=table["r"], mode="lines+markers", name="this run",
            line=dict(color="#f28e2b", width=2), marker=dict(size=9),
            error_y=dict(type="data", symmetric=False, array=table["ci_high"] - table["r"],
                         arrayminus=table["r"] - table["ci_low"], color="#f28e2b", thickness=1)))
    paper = pd.Series(PAPER_R["lrp"])
    fig.add_trace(go.Scatter(x=paper.index, y=paper.values, mode="lines+markers", name="Böhle et al. 2019 (ADNI)",
                             line=dict(color="#7f7f7f", dash="dot"), marker=dict(symbol="square-open", size=8)))
    fig.add_hline(y=0, line_color="#bbbbbb")
    fig.update_layout(title=dict(text=title, font=dict(size=14)), height=height,
                      margin=dict(l=10, r=10, t=50 if title else 20, b=10), xaxis_title="LRP β",
                      yaxis_title="Pearson r (TP)", yaxis_range=[-1, 1],
                      legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0))
    return fig



def viewer_params(run_id: str, store_key: str, point: Mapping) -> dict[str, str]:
    """Query parameters that open one scan in the heatmap viewer (``pages/heatmaps.py``): its individual view
    of ``store_key`` (a store folder name), the scan, its split and outcome group."""
    params = {"run": str(run_id), "view": "Individual", "store": str(store_key), "scan": str(point["scan_id"])}
    if point.get("split"):
        params["split"] = str(point["split"])
    if point.get("outcome"):
        params["group"] = str(point["outcome"])
    return params



def selected_scan(event) -> dict | None:
    """The scan of the first clicked point of a plotly selection event (``customdata`` of
    :func:`scatter_figure`): ``{"scan_id", "subject_id", "outcome", "ad_score", "split"}`` or None."""
    try:
        points = event["selection"]["points"]
    except (KeyError, TypeError):
        points = getattr(getattr(event, "selection", None), "points", None)
    for pt in points or []:
        cd = pt.get("customdata")
        if cd and len(cd) >= 5:
            score = pd.to_numeric(pd.Series([cd[3]]), errors="coerce").iat[0]
            return {"scan_id": str(cd[0]), "subject_id": str(cd[1]), "outcome": str(cd[2]),
                    "ad_score": float(score), "split": str(cd[4])}
    return None



def safe_name(text: str) -> str:
    """A file-name-safe version of ``text``."""
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text).strip("_")

