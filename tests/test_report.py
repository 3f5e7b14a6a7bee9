"""The run report: its sections, its methods paragraph against the run's stored settings, its files
(self-contained HTML, PDF, SVG) and its cache keyed by content."""

from __future__ import annotations

import html
import json
import re
import shutil
import xml.etree.ElementTree as ET

import plotly.graph_objects as go
import pytest

from lib.reviews import auth
from lib.views import report
from lib.cli import main


@pytest.fixture(scope="module")
def analysed(demo_ws, demo_run):
    """The fixture run with LRP β=0 heatmaps and their region table (what most sections read)."""
    assert main(["--workspace", str(demo_ws.root), "regions", "--run", demo_run.id, "--method", "lrp",
                 "--beta", "0"]) == 0
    return demo_ws, demo_run


@pytest.fixture(scope="module")
def built(analysed, tmp_path_factory):
    ws, run = analysed
    out = tmp_path_factory.mktemp("report") / "run.html"
    assert main(["--workspace", str(ws.root), "report", "--run", run.id, "--out", str(out), "--pdf"]) == 0
    return ws, run, out


def _sections(text: str) -> dict[str, str]:
    return dict(re.findall(r"data-section='(\w+)' data-state='(\w+)'", text))


def test_every_section_is_there_and_filled_where_computed(built):
    ws, run, out = built
    text = out.read_text()
    states = _sections(text)
    assert list(states) == list(report.SECTIONS)
    for key in ("cohort", "training", "group_maps", "top_regions", "biomarker", "reviews"):
        assert states[key] == "filled", key
    # computed here: LRP β=0 maps and regions; their figures are in the report
    assert "data-figure='learning_curves'" in text and "data-figure='top_density_" in text
    assert re.search(r"data-figure='group_maps_[^']+'>\s*<img alt=[^>]+src='data:image/png;base64,", text)
    # not computed: the evaluation says so and names the command that computes it
    evaluation = text.split("data-section='evaluation'")[1].split("</section>")[0]
    assert "Not computed yet" in evaluation and f"evaluate-maps --run {run.id}" in evaluation
    robustness = text.split("data-section='robustness'")[1].split("</section>")[0]
    # the β values the paper compares that have no region table yet (other tests may have added some)
    listed = re.search(r"--beta((?: [0-9.]+)+)", robustness)
    assert "regions --run" in robustness and listed
    assert set(listed.group(1).split()) <= {"0.25", "0.5", "0.75", "1"}


def test_html_is_self_contained(built):
    _, _, out = built
    text = out.read_text()
    head, body = text.split("</head>", 1)
    library = re.findall(r"<script>(.*?)</script>", head, re.S)
    assert len(library) == 1 and "plotly.js v" in library[0]   # plotly.js embedded once, in the head
    # nothing outside the embedded library loads from elsewhere
    assert not re.search(r"<script[^>]*\bsrc=|<link |<img[^>]+src=['\"]http|https?://", body)
    assert "plotly.js v" not in body and body.count("Plotly.newPlot") >= 3


def test_methods_paragraph_matches_the_stored_settings(built):
    ws, run, out = built
    text = out.read_text()
    stored = json.loads((run.dir / "config.json").read_text())
    settings = json.loads(re.search(r"<script type='application/json' id='report-settings'>(.*?)</script>",
                                    text, re.S).group(1))
    assert settings["train"] == stored["train"] and settings["resolution_mm"] == stored["resolution"]
    paragraph = html.unescape(re.search(r"<p class='methods' id='methods-paragraph'>(.*?)</p>", text, re.S).group(1))
    t, parts = stored["train"], stored["parts"]
    for needle in (f"the {t['model']} 3D CNN", f"{stored['resolution']:g} mm MNI grid",
                   "×".join(str(v) for v in stored["input_shape"]),
                   f"{len(parts['train'])} training, {len(parts['validation'])} validation and "
                   f"{len(parts['test'])} test subjects",
                   f"learning rate {t['lr']:g}", f"weight decay {t['weight_decay']:g}", f"batch size {t['batch_size']}",
                   f"at most {t['max_epochs']} epochs", f"after {t['patience']} epochs", f"seed {t['seed']}",
                   f"(p = {t['flip_p']:g})", run.checkpoint_hash()[:16],
                   "neuromorphometrics atlas", f"{report.PERMUTATIONS:,} permutations"):
        assert needle in paragraph, needle
    split = json.loads(ws.splits_json.read_text())
    assert (f"holds out {split['test_fraction']:g} of the subjects for testing and {split['validation_fraction']:g} "
            f"for validation" in paragraph and f"{split['k_folds']} folds, seed {split['seed']})" in paragraph)
    demo = ws.config["demo_config"]
    assert f"n_subjects = {demo['n_subjects']}" in paragraph and f"seed = {demo['seed']}" in paragraph
    # every heatmap store the report shows: its label and every parameter it recorded on disk, as stored
    # (other tests may add stores of other methods to the shared fixture run)
    assert "LRP β=0 (" in paragraph and settings["heatmaps"]
    for shown in settings["heatmaps"]:
        params = json.loads((ws.cache_dir / "heatmaps" / shown["store"] / "index.json").read_text())["params"]
        assert shown["method"] == params["method"] and shown["label"] in paragraph
        for k, v in params.items():
            assert k == "method" or f"{k} = {v}" in paragraph, (shown["label"], k, v)
    # the run's own numbers, not the defaults: a changed setting changes the paragraph
    changed = {**settings, "train": {**settings["train"], "lr": 0.0123, "patience": 77}}
    other = report.methods_paragraph(changed)
    assert "learning rate 0.0123" in other and "after 77 epochs" in other and "learning rate 0.0123" not in paragraph
    # where it trained, as the run's state recorded it; mixed precision is said only where it applied
    assert f", on the {settings['device'].upper()}" in paragraph or ", on a CUDA GPU" in paragraph
    cpu = report.methods_paragraph({**settings, "device": "cpu", "train": {**settings["train"], "amp": True}})
    assert "on the CPU" in cpu and "mixed precision" not in cpu
    gpu = report.methods_paragraph({**settings, "device": "cuda:0", "train": {**settings["train"], "amp": True}})
    assert "on a CUDA GPU with mixed precision" in gpu
    # a transferred run names the run it started from, what that run told apart and what was re-initialised
    assert "transfer learning" not in paragraph
    moved = report.methods_paragraph({**settings, "init_from": {
        "run": "demo-boehle2019", "classes": ["HC", "AD"], "checkpoint_sha256": "f238c1017718dd36981388652163f1d8",
        "head": "re-initialised", "freeze": 2}})
    assert ("started from the weights of demo-boehle2019 (trained to tell AD from HC), checkpoint SHA-256 "
            "f238c1017718dd36…; its classifier head was re-initialised and its first 2 convolution blocks kept "
            "frozen (transfer learning)." in moved)


def test_pdf_and_svg_figures(built):
    _, _, out = built
    pdf = out.with_suffix(".pdf").read_bytes()
    assert pdf.startswith(b"%PDF")
    text = out.read_text()
    charts = re.findall(r"<div id=\"fig-([^\"]+)\"", text)
    images = re.findall(r"data-figure='([^']+)'>\s*<img", text)
    assert charts and images
    n_pages = len(re.findall(rb"/Type\s*/Page[^s]", pdf))
    assert n_pages >= len(charts) + len(images)
    folder = out.parent / f"{out.stem}_figures"
    for name in charts:
        ET.parse(folder / f"{name}.svg")   # well-formed SVG
    for name in images:
        assert (folder / f"{name}.png").read_bytes().startswith(b"\x89PNG")


def test_cached_by_content_and_rebuilt_when_a_review_changes_it(built):
    from lib.reviews import ReviewStore

    ws, run, _ = built
    for folder in ws.cache_dir.glob("heatmaps/*/group_means"):   # the build averages them again itself
        shutil.rmtree(folder)
    first = report.write(ws, run, pdf=False)
    mtime = first["html"].stat().st_mtime_ns
    # same content, and what the build cached on the way does not change its key: not rebuilt
    assert report.write(ws, run, pdf=False)["html"].stat().st_mtime_ns == mtime
    key = report.content_key(ws, run)
    store = ReviewStore.for_workspace(ws)
    try:
        scan = run.predictions()["scan_id"].iloc[0]
        store.create(auth.Identity("alice", "reviewer"), {"kind": "scan", "scan_id": scan},
                     {"run": run.id, "page": "pages/heatmaps.py"}, verdict="plausible", text="hippocampus")
    finally:
        store.close()
    assert report.content_key(ws, run) != key
    again = report.write(ws, run, pdf=False)
    reviews = again["html"].read_text().split("data-section='reviews'")[1].split("</section>")[0]
    assert "1 reviews of run" in reviews and "plausible 1" in reviews


def test_matplotlib_redraws_subplots_lines_and_heatmaps():
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("a", "b"))
    fig.add_trace(go.Scatter(x=[0, 1, None, 2], y=[1, 2, None, 3], mode="lines", name="l", line=dict(dash="dash")),
                  row=1, col=1)
    fig.add_trace(go.Heatmap(z=[[0, 50], [100, 25]], x=["p", "q"], y=["r", "s"], zmin=0, zmax=100,
                             text=[["0", "50"], ["100", "25"]]), row=1, col=2)
    fig.add_hline(y=0.5, line_dash="dot", row=1, col=1)
    m = report.to_matplotlib(fig)
    axes = m.get_axes()
    assert [a.get_title() for a in axes[:2]] == ["a", "b"]
    assert axes[0].get_lines()[0].get_linestyle() == "--"
    assert len(axes[1].images) == 1 and [t.get_text() for t in axes[1].texts] == ["0", "50", "100", "25"]
