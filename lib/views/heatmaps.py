"""The Heatmaps page's choices and texts: which splits and subgroups can be picked, the labels of groups,
the crosshair read-out, the colour-scale captions, and the tables beside a scan's map.

Arrays, group means and exports come from :mod:`lib.views.viewer`; this module only words and arranges them.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from lib.data.atlases import DEFAULT_ATLAS
from lib.views import viewer
from lib.data.classes import DEFAULT_CLASSES, Classes


def group_help(classes: Classes = DEFAULT_CLASSES) -> dict[str, str]:
    """Every group of the task with what it holds, in the page's order (TP = correctly called positive)."""
    p, n = classes.positive, classes.negative
    return {p: f"all {p} scans", n: f"all {n} scans ({classes.title(n)})", "TP": f"{p} classified {p}",
            "FP": f"{n} classified {p}", "TN": f"{n} classified {n}", "FN": f"{p} classified {n}"}


def group_pairs(classes: Classes = DEFAULT_CLASSES) -> tuple[tuple[str, str], ...]:
    """Rows of the all-groups panel: the two classes; TP/FP (the scans called positive), TN/FN (negative)."""
    return (classes.positive, classes.negative), ("TP", "FP"), ("TN", "FN")


GROUP_HELP = group_help()
STYLE_NAMES = {"paper": "Paper (black → red → yellow → white)",
               "threshold": "Thresholded (hot, transparent below)", "diverging": "Diverging (blue − / red +)"}
SPLIT_NAMES = {"test": "test split", "validation": "validation split", "train": "training split",
               "all": "all scans"}
BY_NAMES = {"none": "no subgroups", "site": "site", "sex": "sex", "visit": "visit", "split": "split"}
NORMALISE = {"raw (as in Rieke et al.)": None, "each map ÷ its total |relevance|": "sum",
             "each map ÷ its largest |relevance|": "max"}
ATLAS = DEFAULT_ATLAS
START_MNI = (-26, -22, -14)
"""The crosshair's first position: the left hippocampus, where AD atrophy starts."""
GROUP_PAIRS = group_pairs()


def split_choices(predictions: pd.DataFrame) -> list[str]:
    """The splits that have scans (``all`` always)."""
    n_split = predictions["split"].value_counts()
    return [s for s in viewer.SPLITS if s == "all" or n_split.get(s, 0) > 0]


def subgroup_choices(predictions: pd.DataFrame, split: str) -> list[str]:
    """The subgroupings the predictions can make (by split only when all scans are shown)."""
    return [b for b in BY_NAMES
            if b == "none" or (viewer.SUBGROUPS[b] in predictions and (b != "split" or split == "all"))]


def parse_mni(text: str) -> tuple[float, float, float]:
    """``"(-26, -22, -14)"`` → MNI millimetres; ValueError when it is not three numbers."""
    xyz = [float(v) for v in text.replace("(", " ").replace(")", " ").replace(",", " ").split()]
    if len(xyz) != 3:
        raise ValueError(f"{len(xyz)} numbers")
    return xyz[0], xyz[1], xyz[2]


def readout(r: Mapping, unit: str = "") -> str:
    """One crosshair read-out (:func:`lib.views.viewer.crosshair`) as Markdown."""
    x, y, z = r["mni"]
    value = "" if np.isnan(r["value"]) else f" · value **{r['value']:.3g}**{unit}"
    return f"MNI ({x:.0f}, {y:.0f}, {z:.0f}) mm · voxel {r['voxel']}{value} · region **{r['region']}**"


def scale_caption(style: str, m: viewer.CachedGroupMeans, threshold: float | None) -> str:
    """What the colours of a group map mean in ``style``."""
    ref = m.scale_from or "—"
    if style == "paper":
        return (f"Paper's scale (Figs 2–3), shared by all groups: black below **{m.paper.vmin:.3g}** (50th "
                f"percentile of the average {ref} map over the brain), red → yellow, white above "
                f"**{m.paper.vmax:.3g}** (its 99.5th percentile).")
    if style == "threshold":
        return f"Values below **{threshold:.3g}** transparent; the paper's colours above."
    return f"Signed map: blue negative, red positive, ± **{m.diverging.vmax:.3g}** (99.5th percentile of |{ref} map|)."


def subgroup_name(value: str, by: str) -> str:
    return f"visit {value}" if by == "visit" else value


def pretty(label: str, by: str) -> str:
    """``"AD · 2"`` → ``"AD · visit 2"`` (subgroup labels are the column's values)."""
    group, _, value = label.partition(" · ")
    return f"{group} · {subgroup_name(value, by)}" if value else group


def members_table(means: viewer.CachedGroupMeans) -> pd.DataFrame:
    return pd.DataFrame([{"group": e.label, "scans": e.count, "why empty": e.reason} for e in means.entries])


def store_settings(run, sha: str, store, *, split: str, by: str, style: str, ijk, outlines: bool) -> dict:
    """The view's settings as a review stores them (and a link reopens them)."""
    return {"page": "pages/heatmaps.py", "run": run.id, "checkpoint": sha, "method": store.params.get("method"),
            "params": {k: v for k, v in store.params.items() if k != "method"}, "store": store.folder.name,
            "split": split, "by": by, "style": style, "slices": list(ijk), "outlines": outlines}


def scan_choices(membership: Mapping, classes: Classes = DEFAULT_CLASSES) -> list[str]:
    """The whole groups that have scans, in the page's order."""
    return [g for g in group_help(classes) if membership.get((g, None))]


def scan_order(predictions: pd.DataFrame, scan_ids) -> pd.Series:
    """Score of the positive class of the scans, highest first (stable for ties)."""
    return predictions.set_index("scan_id").loc[scan_ids, "ad_score"].sort_values(ascending=False, kind="stable")


FACT_COLUMNS = ("subject_id", "session", "age", "sex", "site", "mmse", "cdr", "hippocampal_volume", "lesion_load",
                "edss")


def facts_table(facts: Mapping) -> pd.DataFrame:
    return pd.DataFrame([{k: facts[k] for k in FACT_COLUMNS if k in facts}])


def truth_units(gt: Mapping, k: int = 8) -> pd.DataFrame:
    """The regions the demo generator displaced most (ventricles left out: they grow), in mm."""
    units = pd.Series(gt["units_mm"])
    units = units[~units.index.str.contains("Vent")].sort_values(ascending=False).head(k)
    return pd.DataFrame({"region": units.index.str.replace("_", " "), "mm": units.to_numpy()})



GROUND_TRUTH_LABEL = "local volume loss (%) = 100 * (det J - 1)"   # ASCII: drawn with the bitmap font
LESION_LABEL = "lesion mask"


def ground_truth_overlay(truth: np.ndarray, alpha: float = 0.8, *, lesions: bool = False) -> viewer.Overlay:
    """A demo scan's ground truth as an overlay. The AD demo's (the generator's det J − 1 where tissue was
    compressed) in percent of local volume loss, coloured up to the 99th percentile of the atrophic voxels (a few
    voxels of several hundred percent at region borders would leave the rest pale), transparent below 3 %;
    the MS demo's lesion mask (``lesions``) as it is."""
    if lesions:
        return viewer.Overlay(np.asarray(truth, dtype=np.float32), 0.0, 1.0, cmap="YlOrRd", alpha=alpha, threshold=0.5)
    percent = np.asarray(truth, dtype=np.float32) * 100.0
    lost = percent[percent > 0]
    top = float(np.percentile(lost, 99)) if lost.size else 1.0
    return viewer.Overlay(percent, 0.0, max(top, 1.0), cmap="YlOrRd", alpha=alpha, threshold=3.0)
