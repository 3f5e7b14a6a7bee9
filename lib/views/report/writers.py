"""The report as one self-contained HTML file and as a PDF."""

from __future__ import annotations

import base64
import html
import io
import json
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd

from lib.core import atomic
from lib.views.report.figures import to_matplotlib
from lib.views.report.model import Figure, Report, _fmt


# --------------------------------------------------------------------------------------------- HTML
_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}h1{margin-bottom:.2em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0 1em}td,th{border:1px solid #ddd;padding:3px 7px;
text-align:right}th{background:#f5f5f5}td:first-child,th:first-child{text-align:left}.missing{background:#fff6e0;
border-left:4px solid #f0a000;padding:.5em 1em;margin:.5em 0}.caption{color:#555;font-size:.9em}
figure{margin:1em 0}figure img{max-width:100%}code{background:#f3f3f3;padding:1px 4px;font-size:.85em}
nav a{margin-right:1em}.methods{background:#f7f9fc;padding:1em;border-left:4px solid #4e79a7}
.dl{font-size:.8em;margin-left:1em}
"""



def _inline(text: str) -> str:
    """Plain text with `code` spans, escaped."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))



def to_html(report: Report, svgs: dict[str, bytes] | None = None) -> str:
    import plotly.io as pio
    from plotly.offline import get_plotlyjs

    svgs = svgs or {}
    out = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Report · {html.escape(report.run_id)}"
           f"</title><style>{_CSS}</style><script>{get_plotlyjs()}</script></head><body>",
           f"<h1>Run report · {html.escape(report.run_id)}</h1>",
           f"<p class='caption'>Workspace {html.escape(report.workspace)} · generated "
           f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(report.created))} · content key {report.key}</p>",
           "<nav>" + "".join(f"<a href='#{s.key}'>{html.escape(s.title)}</a>" for s in report.sections) + "</nav>",
           "<h2 id='methods'>Methods</h2>",
           f"<p class='methods' id='methods-paragraph'>{html.escape(report.methods)}</p>",
           "<script type='application/json' id='report-settings'>"
           + json.dumps(report.settings, default=str).replace("</", "<\\/") + "</script>"]
    for s in report.sections:
        state = "filled" if s.filled else "missing"
        out.append(f"<section id='{s.key}' data-section='{s.key}' data-state='{state}'><h2>{html.escape(s.title)}</h2>")
        for m in s.missing:
            out.append(f"<div class='missing'>Not computed yet. {_inline(m)}</div>")
        for p in s.text:
            out.append(f"<p>{_inline(p)}</p>")
        for caption, t in s.tables:
            out.append(f"<p class='caption'><b>{html.escape(caption)}</b></p>"
                       + t.to_html(index=False, border=0, na_rep="—", float_format=lambda v: _fmt(v)))
        for f in s.figures:
            out.append(f"<figure data-figure='{f.name}'>")
            if f.plotly is not None:
                out.append(pio.to_html(f.plotly, include_plotlyjs=False, full_html=False,
                                       config={"displaylogo": False}, div_id=f"fig-{f.name}"))
            else:
                out.append(f"<img alt='{html.escape(f.name)}' src='data:image/png;base64,"
                           f"{base64.b64encode(f.png).decode()}'>")
            link = ""
            if f.name in svgs:
                link = (f"<a class='dl' download='{f.name}.svg' href='data:image/svg+xml;base64,"
                        f"{base64.b64encode(svgs[f.name]).decode()}'>SVG</a>")
            elif f.png is not None:
                link = (f"<a class='dl' download='{f.name}.png' href='data:image/png;base64,"
                        f"{base64.b64encode(f.png).decode()}'>PNG</a>")
            out.append(f"<figcaption class='caption'>{html.escape(f.caption)}{link}</figcaption></figure>")
        out.append("</section>")
    out.append("</body></html>")
    return "\n".join(out)



# --------------------------------------------------------------------------------------------- PDF
A4_PORTRAIT = (8.27, 11.69)

A4_LANDSCAPE = (11.69, 8.27)



def _text_page(pdf, title: str, blocks: list[tuple[str, str]]) -> None:
    """Pages of wrapped text (``("h"|"p"|"mono", text)`` blocks), A4 portrait."""
    import matplotlib.pyplot as plt

    lines: list[tuple[str, str]] = [("title", title)]
    for kind, text in blocks:
        if kind == "mono":
            lines += [("mono", ln) for ln in text.splitlines()] + [("p", "")]
        elif kind == "h":
            lines += [("h", ln) for ln in textwrap.wrap(text, 95)]
        else:
            lines += [("p", ln) for ln in textwrap.wrap(text, 105)] + [("p", "")]
    per_page = 60
    for start in range(0, max(len(lines), 1), per_page):
        fig = plt.figure(figsize=A4_PORTRAIT)
        y = 0.95
        for kind, ln in lines[start:start + per_page]:
            style = {"title": dict(fontsize=15, weight="bold"), "h": dict(fontsize=9.5, weight="bold"),
                     "mono": dict(fontsize=6.3, family="monospace"), "p": dict(fontsize=8.5)}[kind]
            fig.text(0.07, y, ln, va="top", **style)
            y -= 0.028 if kind == "title" else 0.0145
        pdf.savefig(fig)
        plt.close(fig)



def _table_text(t: pd.DataFrame) -> str:
    shown = t.copy()
    for c in shown.columns:
        if pd.api.types.is_float_dtype(shown[c]):
            shown[c] = shown[c].map(_fmt)
    shown.columns = [str(c)[:18] for c in shown.columns]
    return shown.astype(str).map(lambda v: v if len(v) <= 34 else v[:33] + "…").to_string(index=False)



def _figure_page(f: Figure, heading: str):
    """One figure on an A4 page (portrait for tall charts, landscape otherwise) with its caption below."""
    import matplotlib.pyplot as plt
    from PIL import Image

    if f.plotly is not None:
        tall = float(f.plotly.layout.height or 420) > 560
        size = A4_PORTRAIT if tall else A4_LANDSCAPE
        fig = to_matplotlib(f.plotly, size=size, bottom=0.08)
    else:
        img = Image.open(io.BytesIO(f.png))
        size = A4_PORTRAIT if img.height > img.width * 1.2 else A4_LANDSCAPE
        fig = plt.figure(figsize=size)
        ax = fig.add_axes((0.04, 0.1, 0.92, 0.86))
        ax.imshow(np.asarray(img.convert("RGB")), interpolation="lanczos")
        ax.axis("off")
    width = 135 if size == A4_PORTRAIT else 190
    fig.text(0.04, 0.012, "\n".join(textwrap.wrap(f"{heading} · {f.caption}", width)[:5]), fontsize=7,
             va="bottom", color="#333")
    return fig



def to_pdf(report: Report, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    with atomic.atomic_path(path) as tmp, PdfPages(tmp) as pdf:
        _text_page(pdf, f"Run report · {report.run_id}", [
            ("p", f"Workspace {report.workspace} · generated "
                  f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(report.created))} · content key {report.key}"),
            ("h", "Methods"), ("p", report.methods),
            ("h", "Contents"), ("p", " · ".join(s.title for s in report.sections))])
        for s in report.sections:
            blocks = [("p", "Not computed yet. " + m.replace("`", "")) for m in s.missing]
            blocks += [("p", p.replace("`", "")) for p in s.text]
            for caption, t in s.tables:
                blocks += [("h", caption), ("mono", _table_text(t))]
            if blocks or not s.figures:
                _text_page(pdf, s.title, blocks or [("p", "Nothing to show.")])
            for f in s.figures:
                fig = _figure_page(f, s.title)
                pdf.savefig(fig)
                plt.close(fig)
        meta = pdf.infodict()
        meta["Title"] = f"Run report {report.run_id}"

