"""The report's model (sections of text, tables and figures), its constants and the small helpers every
section uses."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from lib.data.workspace import Workspace
from lib.views.render import to_png
from lib.views.viewer import label_of
from lib.data.atlases import DEFAULT_ATLAS


REPORT_VERSION = 2   # 2: the methods name the device trained on and a transferred run's origin
ATLAS = DEFAULT_ATLAS
SPLIT = "test"
CROSSHAIR_MNI = (-26, -22, -14)   # the left hippocampus, where AD atrophy starts (the Heatmaps page's default)
TOP_K = 25
OVERLAP_K = 10
PERMUTATIONS = 10_000
FINGERPRINT_MIN_SCORE = 0.9
PALETTE = ["#1f77b4", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#2ca02c", "#ff7f0e"]
SECTIONS = {
    "cohort": "Cohort",
    "training": "Training and test metrics",
    "group_maps": "Group maps (Fig 3)",
    "top_regions": "Top regions: density and gain (Figs 4, 6)",
    "fingerprints": "Individual fingerprints (Figs 5, 8)",
    "robustness": "Robustness across β and retrainings (Fig 7)",
    "biomarker": "Hippocampal relevance vs volume (Fig 9)",
    "evaluation": "Evaluation of the explanation methods",
    "reviews": "Reviews",
}




# --------------------------------------------------------------------------------------------- the model
@dataclass
class Figure:
    """One figure: a plotly chart (interactive in HTML, redrawn by matplotlib for PDF/SVG) or a PNG image."""

    name: str
    caption: str = ""
    plotly: object | None = None
    png: bytes | None = None



@dataclass
class Section:
    key: str
    title: str
    text: list[str] = field(default_factory=list)          # paragraphs (plain text)
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)       # what is not computed yet, with its command

    @property
    def filled(self) -> bool:
        return bool(self.text or self.tables or self.figures)



@dataclass
class Report:
    run_id: str
    workspace: str
    key: str
    created: float
    methods: str
    settings: dict
    sections: list[Section]



# --------------------------------------------------------------------------------------------- helpers
def _fmt(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "—"
    if isinstance(v, (float, np.floating)):
        return f"{v:.{digits}g}" if abs(v) < 1e-2 or abs(v) >= 1e4 else f"{v:.{digits}f}"
    return str(v)



def _cmd(ws: Workspace, args: str) -> str:
    return f"python -m lib --workspace {ws.root} {args}"



def _store_label(store) -> str:
    return label_of(store)



def _png_of(img) -> bytes:
    return to_png(img)



def fig9_stores(stores: list) -> list:
    """The heatmap stores Fig 9 correlates: LRP β=0 (else the first LRP store) and guided backprop, those present."""
    lrp = [s for s in stores if s.params.get("method") == "lrp"]
    lrp0 = next((s for s in lrp if float(s.params.get("beta", 0) or 0) == 0.0), lrp[0] if lrp else None)
    gb = next((s for s in stores if s.params.get("method") == "guided_backprop"), None)
    return [x for x in (lrp0, gb) if x is not None]
