"""A run's report: one self-contained HTML file and a PDF with every result computed for the run.

The report gathers what the analysis pages show, from the same library calls and the same caches:
cohort summary, training curves and test metrics, group maps of each heatmap method (Böhle et al. 2019
Fig 3), top regions with density estimates and gain (Figs 4, 6), fingerprints, robustness across β and
retrainings (Fig 7), hippocampal relevance against volume (Fig 9), the evaluation of the methods and the
reviews. It computes nothing heavy: a section whose results are missing says so and names the command
that computes them. A methods paragraph lists every setting, read from the run's stored configuration and
the caches' stored parameters.

Formats: the HTML embeds plotly.js once and each figure as an interactive plotly chart, slices as PNG data
URIs, and each chart's SVG as a download link, so it opens offline. The PDF and the SVG files are drawn
with matplotlib (a dependency already: atlasreader needs it) from the same plotly figures
(:func:`to_matplotlib`), so no browser or image-export service is needed; slices stay raster images.

Reports are cached under ``cache/reports/<content key>/``: the key hashes what the report shows (the
run's checkpoint, its predictions, the cache entries read and the reviews' latest change), so an unchanged
run is never rebuilt and any new result gives a new report.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import time
import zipfile
from pathlib import Path

from lib.analysis import region_tables as rt
from lib.analysis.region_analysis import atrophied_regions
from lib.core import atomic
from lib.core.progress import Progress
from lib.data.workspace import Workspace
from lib.views import viewer
from lib.views.report.figures import figure_svg, to_matplotlib  # noqa: F401
from lib.views.report.methods import methods_paragraph, stored_settings
from lib.views.report.measure import section_title
from lib.views.report.model import (ATLAS, CROSSHAIR_MNI, FINGERPRINT_MIN_SCORE, OVERLAP_K, PALETTE,  # noqa: F401
                                    PERMUTATIONS, REPORT_VERSION, SECTIONS, SPLIT, TOP_K, Figure, Report, Section,
                                    _cmd)
from lib.views.report.sections import (_biomarker_section, _cohort_section, _evaluation_section,
                                       _fingerprints_section, _group_maps_section, _region_tables,
                                       _reviews_section, _robustness_section, _top_regions_section,
                                       _training_section)
from lib.views.report.writers import to_html, to_pdf


# --------------------------------------------------------------------------------------------- content key
def _stamp(path: Path) -> str:
    try:
        s = path.stat()
    except FileNotFoundError:
        return "-"
    return f"{s.st_size}:{s.st_mtime_ns}"



def reviews_stamp(ws: Workspace) -> str:
    """The reviews' latest change (count and newest update time), or why it is unknown."""
    try:
        from sqlalchemy import func, select

        from lib.reviews import ReviewStore
        from lib.reviews.models import Review

        store = ReviewStore.for_workspace(ws)
        try:
            n, last = store.run(lambda s: s.execute(select(func.count(), func.max(Review.updated_at))
                                                    .where(Review.workspace == store.workspace)).one(), write=False)
        finally:
            store.close()
        return f"{n}:{last}"
    except Exception as exc:  # noqa: BLE001 - an unreachable database leaves the reviews section empty
        return f"unavailable:{type(exc).__name__}"



def content_key(ws: Workspace, run) -> str:
    """Hash of everything the report shows; equal keys mean an identical report."""
    sha = run.checkpoint_hash() if run.best_checkpoint.exists() else "-"
    parts = {"v": REPORT_VERSION, "run": run.id, "checkpoint": sha, "config": _stamp(run.dir / "config.json"),
             "metrics": _stamp(run.dir / "metrics.jsonl"), "predictions": _stamp(run.dir / "predictions.csv"),
             "cohort": _stamp(ws.cohort_csv), "splits": _stamp(ws.splits_json), "reviews": reviews_stamp(ws),
             "measure": ws.biomarker_measure}
    stores = viewer.stores_of(ws, sha) if sha != "-" else []
    parts["stores"] = [s.folder.name for s in stores]
    # group means are not keyed: they follow from the stores and the predictions, and the report averages
    # missing small ones itself (keying them would change the key by building the report)
    regions = ws.cache_dir / "regions"
    parts["regions"] = sorted(p.name for p in regions.glob("*.json")) if regions.exists() else []
    evaluation = ws.cache_dir / "evaluation"
    parts["evaluation"] = sorted(p.parent.name for p in evaluation.glob("*/result.json")) if evaluation.exists() else []
    parts["group_runs"] = [r.id + _stamp(r.best_checkpoint) for r in rt.group_runs(ws, run)]
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]



def cache_folder(ws: Workspace, key: str) -> Path:
    return ws.cache_dir / "reports" / key



def cached(ws: Workspace, run, key: str | None = None) -> dict[str, Path] | None:
    """The cached report files of ``run`` for its current content, or None."""
    folder = cache_folder(ws, key or content_key(ws, run))
    html_file = folder / f"{run.id}_report.html"
    if not html_file.exists():
        return None
    out = {"html": html_file}
    for kind, name in (("pdf", f"{run.id}_report.pdf"), ("figures", "figures")):
        if (folder / name).exists():
            out[kind] = folder / name
    return out


def job_key(ws: Workspace, run, key: str | None = None) -> str:
    return f"report:{run.id}:{key or content_key(ws, run)}"


# --------------------------------------------------------------------------------------------- building
def build(ws: Workspace, run, progress: Progress | None = None) -> Report:
    """Gather every section of ``run``'s report from the caches (nothing heavy is computed)."""
    tick = progress or (lambda d, t, m: None)
    total = 10
    tick(0, total, "content key")
    key = content_key(ws, run)
    preds = run.predictions()
    sha = run.checkpoint_hash() if run.best_checkpoint.exists() else "-"
    stores = viewer.stores_of(ws, sha) if sha != "-" else []
    atlas = rt.get_atlas(ws, ATLAS, run.grid.resolution)
    truth = atrophied_regions(ws) if ws.is_demo else set()
    sections = []
    tick(1, total, "cohort")
    sections.append(_cohort_section(ws, run, preds))
    tick(2, total, "training")
    sections.append(_training_section(ws, run))
    if preds is None:
        for k in list(SECTIONS)[2:-1]:
            sections.append(Section(k, section_title(ws, k), missing=[f"No predictions of run {run.id} yet: "
                                                              f"`{_cmd(ws, f'predict --run {run.id}')}`."]))
        ev_settings, bm = {}, {}
    else:
        tick(3, total, "group maps")
        sections.append(_group_maps_section(ws, run, stores, preds))
        tick(4, total, "region tables")
        tables, missing = _region_tables(ws, run, stores, atlas)
        by_store = {s.folder.name: t for s, _, t in tables}
        tick(5, total, "top regions")
        sections.append(_top_regions_section(ws, run, tables, missing, truth))
        sections.append(_fingerprints_section(ws, run, tables, missing, truth))
        tick(6, total, "robustness")
        sections.append(_robustness_section(ws, run, sha, atlas, by_store))
        tick(7, total, "Fig 9")
        bsec, bm = _biomarker_section(ws, run, stores, preds)
        sections.append(bsec)
        tick(8, total, "evaluation")
        esec, ev_settings = _evaluation_section(ws, run)
        sections.append(esec)
    tick(9, total, "reviews")
    sections.append(_reviews_section(ws, run))
    settings = stored_settings(ws, run, stores, atlas, ev_settings, bm)
    tick(total, total, "gathered")
    return Report(run.id, ws.name, key, time.time(), methods_paragraph(settings), settings, sections)



# --------------------------------------------------------------------------------------------- files
def write(ws: Workspace, run, *, pdf: bool = True, progress: Progress | None = None) -> dict[str, Path]:
    """Build the report into the cache (unless the same content is cached already) and return its files:
    ``html``, ``pdf`` (if asked) and ``figures`` (SVG of every chart, PNG of every slice panel)."""
    tick = progress or (lambda d, t, m: None)
    key = content_key(ws, run)
    have = cached(ws, run, key)
    if have is not None and (not pdf or "pdf" in have):
        tick(1, 1, "cached")
        return have
    report = build(ws, run, progress=lambda d, t, m: tick(d, t + 4, m))
    folder = cache_folder(ws, report.key)
    figures = folder / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    tick(10, 14, "SVG figures")
    svgs = {}
    for s in report.sections:
        for f in s.figures:
            svg = figure_svg(f)
            if svg is not None:
                svgs[f.name] = svg
                atomic.write_text(figures / f"{f.name}.svg", svg.decode())
            elif f.png is not None:
                with atomic.atomic_path(figures / f"{f.name}.png") as tmp:
                    tmp.write_bytes(f.png)
    atomic.write_json(folder / "settings.json", report.settings)
    if pdf:
        tick(12, 14, "PDF")
        to_pdf(report, folder / f"{run.id}_report.pdf")
    tick(13, 14, "HTML")
    # the HTML last: its presence marks the cached report complete (see cached())
    atomic.write_text(folder / f"{run.id}_report.html", to_html(report, svgs))
    tick(14, 14, "done")
    return cached(ws, run, report.key)



def figures_zip(files: dict[str, Path]) -> bytes:
    """The report's figures folder (SVG charts, PNG slice panels) as one zip, for a download."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(Path(files["figures"]).iterdir()) if "figures" in files else []:
            z.write(f, f.name)
    return buf.getvalue()



def export(files: dict[str, Path], out: Path) -> list[Path]:
    """Copy a cached report to ``out`` (the HTML; the PDF and the figures folder beside it)."""
    out = Path(out)
    written = []
    with atomic.atomic_path(out) as tmp:
        shutil.copyfile(files["html"], tmp)
    written.append(out)
    if "pdf" in files:
        target = out.with_suffix(".pdf")
        with atomic.atomic_path(target) as tmp:
            shutil.copyfile(files["pdf"], tmp)
        written.append(target)
    if "figures" in files:
        target = out.parent / f"{out.stem}_figures"
        tmp = out.parent / f".{out.stem}_figures.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(files["figures"], tmp)
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
        written.append(target)
    return written

