"""Plotly figures of this project redrawn with matplotlib, for the PDF and the SVG files (no browser or
image-export service is needed)."""

from __future__ import annotations

import base64
import io
import json
import re

import numpy as np

from lib.views.report.model import Figure

_DASH = {"dash": "--", "dot": ":", "dashdot": "-.", "longdash": "--", "solid": "-", None: "-"}

_SYMBOL = {"circle": "o", "square": "s", "star": "*", "diamond": "D", "x": "x", "cross": "P", "triangle-up": "^"}



def _colour(c, default="#1f77b4"):
    if c is None or not isinstance(c, str):
        return default
    m = re.match(r"rgba?\(([^)]*)\)", c.replace(" ", ""))
    if m:
        v = [float(x) for x in m.group(1).split(",")]
        return (v[0] / 255, v[1] / 255, v[2] / 255, v[3] if len(v) > 3 else 1.0)
    return c



def _plain(v):
    """Plotly's JSON with its base64 typed arrays (``{"dtype", "bdata", "shape"}``) decoded to lists."""
    if isinstance(v, dict):
        if "bdata" in v and "dtype" in v:
            a = np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
            if v.get("shape"):
                a = a.reshape([int(n) for n in str(v["shape"]).split(",")])
            return a.tolist()
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, np.ndarray):
        return v.tolist()
    return v



def to_matplotlib(fig, size: tuple[float, float] | None = None, bottom: float = 0.0):
    """Redraw a plotly figure of this project (scatter, filled shapes, bars, heatmaps, reference lines,
    subplots in one row) with matplotlib, for the PDF and the SVG files. ``size`` in inches (default: from
    the plotly layout); ``bottom``: share of the height left free (for a caption)."""
    import matplotlib

    matplotlib.use("Agg")

    d = _plain(json.loads(fig.to_json()))
    data, layout = d.get("data", []), d.get("layout", {})
    mfig, axes, ax_of = _subplots(data, layout, size)
    for t in data:
        ax = ax_of[(t.get("xaxis", "x"), t.get("yaxis", "y"))]
        kind = t.get("type", "scatter")
        name = t.get("name")
        label = name if t.get("showlegend", True) and name and kind != "heatmap" else None
        if kind == "scatter":
            _scatter(ax, t, label)
        elif kind == "bar":
            mc = (t.get("marker") or {}).get("color")
            ax.bar([str(v) for v in t.get("x", [])], t.get("y", []),
                   color=[_colour(c) for c in mc] if isinstance(mc, (list, tuple)) else _colour(mc), label=label)
        elif kind == "heatmap":
            _heatmap(mfig, ax, t)
    _axis_layout(ax_of, layout)
    _reference_lines(ax_of, axes, layout)
    _titles_and_legend(mfig, axes, layout, bottom)
    return mfig


def _subplots(data: list, layout: dict, size):
    """The matplotlib figure with one axes per plotly (x, y) axis pair, in a row."""
    import matplotlib.pyplot as plt

    pairs = []
    for t in data:
        p = (t.get("xaxis", "x"), t.get("yaxis", "y"))
        if p not in pairs:
            pairs.append(p)
    pairs = pairs or [("x", "y")]
    height = min(max(float(layout.get("height") or 420) / 90, 3.2), 10)
    width = 11 if len(pairs) > 1 or height > 5 else 8
    mfig, axes = plt.subplots(1, len(pairs), figsize=size or (width, height), squeeze=False)
    axes = axes[0]
    return mfig, axes, {p: axes[i] for i, p in enumerate(pairs)}


def _scatter(ax, t: dict, label) -> None:
    """A plotly scatter trace: filled shapes (``fill="toself"``, segments split at None), lines, markers and
    error bars."""
    x, y = list(t.get("x", [])), list(t.get("y", []))
    line, marker = t.get("line", {}) or {}, t.get("marker", {}) or {}
    colour = _colour(line.get("color") or (marker.get("color") if isinstance(marker.get("color"), str) else None))
    mode = t.get("mode", "lines+markers")
    if t.get("fill") == "toself":
        seg_x, seg_y = [], []
        for xv, yv in zip(x + [None], y + [None]):
            if xv is None or yv is None:
                if seg_x:
                    ax.fill(seg_x, seg_y, color=_colour(t.get("fillcolor"), colour), lw=0.5, label=label)
                    label = None
                seg_x, seg_y = [], []
            else:
                seg_x.append(xv)
                seg_y.append(yv)
        return
    xs = [np.nan if v is None else v for v in x]
    ys = np.array([np.nan if v is None else v for v in y], dtype=float)
    if "lines" in mode:
        ax.plot(xs, ys, _DASH.get(line.get("dash"), "-"), color=colour, lw=line.get("width", 1.8) * 0.8,
                marker="o" if "markers" in mode else None, ms=3, label=label)
        label = None
    if "markers" in mode and "lines" not in mode:
        sym = marker.get("symbol", "circle")
        sym = sym if isinstance(sym, str) else "circle"
        filled = "open" not in sym
        mk = _SYMBOL.get(sym.replace("-open", ""), "o")
        ax.scatter(xs, ys, s=(marker.get("size") or 8) ** 2 * 0.5, marker=mk,
                   facecolors=colour if filled else "none", edgecolors=colour if not filled else "white",
                   linewidths=0.6, label=label, zorder=3)
    err = t.get("error_y") or {}
    if err.get("array") is not None:
        up = np.asarray(err["array"], float)
        lo = np.asarray(err.get("arrayminus", err["array"]), float)
        ax.errorbar(xs, ys, yerr=[lo, up], fmt="none", ecolor=colour, lw=1)


def _heatmap(mfig, ax, t: dict) -> None:
    """A plotly heatmap trace with its tick labels, cell texts and colour bar; the axes is marked a heatmap."""
    z = np.asarray(t.get("z"), float)
    im = ax.imshow(z, cmap=t.get("colorscale") if isinstance(t.get("colorscale"), str) else "Blues",
                   vmin=t.get("zmin"), vmax=t.get("zmax"), aspect="auto")
    xl, yl = t.get("x"), t.get("y")
    if xl is not None:
        ax.set_xticks(range(len(xl)), [str(v) for v in xl], rotation=30, ha="right", fontsize=8)
    if yl is not None:
        ax.set_yticks(range(len(yl)), [str(v) for v in yl], fontsize=8)
    text = t.get("text")
    if text is not None:
        for i, row in enumerate(text):
            for j, v in enumerate(row):
                if v not in ("", None):
                    ax.text(j, i, str(v).replace("<br>", "\n"), ha="center", va="center", fontsize=8,
                            color="white" if np.nan_to_num(z[i, j]) > 0.6 * np.nanmax(z) else "black")
    if t.get("showscale", True) is not False and t.get("zmax") is not None:
        mfig.colorbar(im, ax=ax, fraction=0.04)
    ax.heatmap = True


def _axis_layout(ax_of: dict, layout: dict) -> None:
    """Axis titles, ticks, ranges and the grid from the plotly layout (heatmaps keep their own ticks)."""
    def lay(axis_id: str, kind: str) -> dict:
        return layout.get(f"{kind}axis{axis_id[1:]}", {}) or {}

    for (xa, ya), ax in ax_of.items():
        xl, yl = lay(xa, "x"), lay(ya, "y")
        if (xl.get("title") or {}).get("text"):
            ax.set_xlabel(xl["title"]["text"])
        if (yl.get("title") or {}).get("text"):
            ax.set_ylabel(yl["title"]["text"])
        if getattr(ax, "heatmap", False):
            continue
        if yl.get("tickvals") is not None:
            ax.set_yticks(yl["tickvals"], yl.get("ticktext") or yl["tickvals"], fontsize=7)
        if yl.get("range") is not None:
            ax.set_ylim(*yl["range"])
        elif yl.get("autorange") == "reversed":
            ax.invert_yaxis()
        if xl.get("range") is not None:
            ax.set_xlim(*xl["range"])
        if xl.get("tickangle"):
            ax.tick_params(axis="x", labelrotation=-float(xl["tickangle"]), labelsize=7)
        ax.grid(True, color="#eee", lw=0.6)
        ax.set_axisbelow(True)


def _reference_lines(ax_of: dict, axes, layout: dict) -> None:
    """The layout's horizontal and vertical line shapes (e.g. gain 1, a threshold)."""
    for shape in layout.get("shapes", []) or []:
        ax = ax_of.get((str(shape.get("xref", "x")).split(" ")[0], str(shape.get("yref", "y")).split(" ")[0]))
        if ax is None:
            ax = axes[0]
        ls = _DASH.get((shape.get("line") or {}).get("dash"), "-")
        c = _colour((shape.get("line") or {}).get("color"), "#444")
        if shape.get("y0") == shape.get("y1") and "domain" in str(shape.get("xref", "")) + "paper":
            ax.axhline(shape["y0"], ls=ls, color=c, lw=1)
        elif shape.get("x0") == shape.get("x1"):
            ax.axvline(shape["x0"], ls=ls, color=c, lw=1)


def _titles_and_legend(mfig, axes, layout: dict, bottom: float) -> None:
    """Subplot titles, the figure title and one legend below the axes for all of them."""
    titles = [a.get("text") for a in layout.get("annotations", []) or []
              if a.get("xref") == "paper" and a.get("yref") == "paper"]
    if len(titles) == len(axes) and len(axes) > 1:
        for ax, txt in zip(axes, titles):
            ax.set_title(txt, fontsize=10)
    title = layout.get("title")
    title = title.get("text") if isinstance(title, dict) else title
    if title:
        mfig.suptitle(title, fontsize=11, x=0.01, ha="left")
    if any(ax.get_legend_handles_labels()[0] for ax in axes):
        handles, labels = [], []
        for ax in axes:
            h, lab = ax.get_legend_handles_labels()
            for hh, ll in zip(h, lab):
                if ll not in labels:
                    handles.append(hh)
                    labels.append(ll)
        mfig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8, frameon=False,
                    bbox_to_anchor=(0.5, bottom))
        mfig.tight_layout(rect=(0, bottom + 0.06 + 0.03 * ((len(labels) - 1) // 4), 1, 0.95))
    else:
        mfig.tight_layout(rect=(0, bottom, 1, 0.95))


def figure_svg(fig: Figure) -> bytes | None:
    """The figure as SVG (plotly charts only: slices are raster images and stay PNG)."""
    if fig.plotly is None:
        return None
    import matplotlib.pyplot as plt

    m = to_matplotlib(fig.plotly)
    buf = io.BytesIO()
    m.savefig(buf, format="svg")
    plt.close(m)
    return buf.getvalue()

