"""The Atlas metrics page's choices and tables: splits, value readings, group pairs, the fingerprint
patients' links, the settings a review stores and the CSV's name. The metrics themselves are
:mod:`lib.analysis.region_analysis`'s; the figures :mod:`lib.views.region_figures`'."""

from __future__ import annotations

import pandas as pd

from lib.analysis import region_analysis as ra, region_tables as rt
from lib.data.atlases import ATLASES
from lib.explain.catalogue import absolute_by_default
from lib.data.classes import DEFAULT_CLASSES, Classes

SPLIT_NAMES = {"test": "test split", "validation": "validation split", "train": "training split", "all": "all scans"}
VALUES = {"signed": "signed relevance", "absolute": "|relevance| (absolute)"}


def tabs(classes: Classes = DEFAULT_CLASSES) -> list[str]:
    """The page's tabs; the tests tab is named by the task ("AD vs HC tests")."""
    return ["Top regions", "Fingerprints", "Robustness", "Methods", f"{classes.task} tests", "Table"]


def pairs(classes: Classes = DEFAULT_CLASSES) -> dict[str, tuple[str, str]]:
    """The group pairs the Top regions tab compares: the two classes, and TP vs TN."""
    return {classes.task: (classes.positive, classes.negative), "TP vs TN": ("TP", "TN")}


TABS = tabs()
METHOD_VALUES = ("each method's usual", "all signed", "all absolute")


def atlas_name(name: str) -> str:
    return ATLASES[name].display if name in ATLASES else f"{name} (yours)"


def split_choices(predictions: pd.DataFrame) -> list[str]:
    """The splits that have scans (``all`` always)."""
    n_split = predictions["split"].value_counts()
    return [s for s in SPLIT_NAMES if s == "all" or n_split.get(s, 0) > 0]


def split_label(predictions: pd.DataFrame, split: str) -> str:
    n = len(predictions) if split == "all" else int((predictions["split"] == split).sum())
    return f"{SPLIT_NAMES[split]} ({n})"


def default_values(method: str) -> str:
    """Gradient maps are read as |values| (the paper's 'susceptibility'), relevance keeps its sign."""
    return "absolute" if absolute_by_default(method) else "signed"


def usable_pairs(table: pd.DataFrame, classes: Classes = DEFAULT_CLASSES) -> list[str]:
    """The group pairs whose groups both have scans (the two classes always offered)."""
    return [p for p, gs in pairs(classes).items() if all(ra.group_scans(table, g) for g in gs)] or [classes.task]


def preferred_pair(metric: str, usable: list[str], classes: Classes = DEFAULT_CLASSES) -> str:
    """Fig 6 shows gain for true positives and true negatives."""
    return "TP vs TN" if metric == "gain" and "TP vs TN" in usable else classes.task


def uses_absolute(mode: str, method: str) -> bool:
    """Whether the Methods tab reads ``method`` as |values| in ``mode`` (one of :data:`METHOD_VALUES`)."""
    return {"each method's usual": absolute_by_default(method), "all signed": False,
            "all absolute": True}[mode]


def patient_links(table: pd.DataFrame, chosen: list[str], run_id: str, store: str,
                  workspace: str | None, classes: Classes = DEFAULT_CLASSES) -> pd.DataFrame:
    """The chosen scans with their diagnosis, outcome, score (of the positive class) and a link to their map in
    the heatmap viewer."""
    scans = table.drop_duplicates("scan_id").set_index("scan_id")
    return pd.DataFrame({
        "scan": chosen, "diagnosis": [scans.loc[s, "diagnosis"] for s in chosen],
        "outcome": [scans.loc[s, "outcome"] for s in chosen],
        f"{classes.positive} score": [scans.loc[s, "ad_score"] for s in chosen],
        "heatmap": [ra.viewer_link(run_id, store, s, workspace) for s in chosen]})


def patient_order(table: pd.DataFrame) -> list[str]:
    """Scans by diagnosis, then highest score first."""
    scans = table.drop_duplicates("scan_id").set_index("scan_id")
    return scans.sort_values(["diagnosis", "ad_score"], ascending=[True, False]).index.tolist()


def settings(run, sha: str, store, *, atlas: str, merge: bool, split: str, values: str, min_voxels: int) -> dict:
    """The page's settings as a review stores them (and a link reopens them)."""
    return {"page": "pages/atlas.py", "run": run.id, "checkpoint": sha, "method": store.params.get("method", ""),
            "params": rt.store_params(store), "store": store.folder.name, "atlas": atlas, "merge": merge,
            "split": split, "values": values, "min_voxels": int(min_voxels)}


def csv_name(run_id: str, method: str, atlas: str, merge: bool, split: str, values: str) -> str:
    return f"{run_id}_{method}_{atlas}{'_merged' if merge else ''}_{split}_{values}.csv"
