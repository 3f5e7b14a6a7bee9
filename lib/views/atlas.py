"""The Atlas metrics page's choices and tables: splits, value readings, group pairs, the fingerprint
patients' links, the settings a review stores and the CSV's name. The metrics themselves are
:mod:`lib.analysis.region_analysis`'s; the figures :mod:`lib.views.region_figures`'."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lib.analysis import region_analysis as ra, region_tables as rt
from lib.core import memo
from lib.learn.runs import read_predictions
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


# --- the page's tables, computed once per table version and shared by every session -----------------------
@dataclass(frozen=True)
class TableKey:
    """What the page's annotated table is made of: the region table, the run's predictions, the split and
    whether values are absolute. Its memo key is the two files' stamps, so the frame is never hashed."""

    table_file: Path
    preds_file: Path
    split: str
    absolute: bool
    classes: Classes = DEFAULT_CLASSES

    def memo_key(self) -> tuple:
        return (memo.stamp(self.table_file), memo.stamp(self.preds_file), self.split, self.absolute,
                memo.fingerprint(self.classes))


@memo.memoized(16)
def annotated(key: TableKey) -> pd.DataFrame:
    """:func:`lib.analysis.region_analysis.annotate` of the key's table and predictions."""
    return ra.annotate(rt.read_table(key.table_file), read_predictions(key.preds_file), split=key.split,
                       absolute=key.absolute, classes=key.classes)


@memo.memoized(32)
def group_sizes(key: TableKey) -> dict[str, int]:
    """Scans per group (the two classes, TP, FP, TN, FN) of the annotated table."""
    table = annotated(key)
    return {g: len(ra.group_scans(table, g)) for g in (key.classes.positive, key.classes.negative, "TP", "FP", "TN", "FN")}


def usable_pairs_of(key: TableKey) -> list[str]:
    """:func:`usable_pairs` from the cached group sizes."""
    sizes = group_sizes(key)
    return [p for p, gs in pairs(key.classes).items() if all(sizes[g] for g in gs)] or [key.classes.task]


@memo.memoized(64)
def top_table(key: TableKey, metric: str, k: int, groups: tuple, rank_group: str, min_voxels: int) -> pd.DataFrame:
    return ra.top_table(annotated(key), metric, k, groups=groups, rank_group=rank_group, min_voxels=min_voxels,
                        classes=key.classes)


@memo.memoized(32)
def region_tests(key: TableKey, metric: str) -> pd.DataFrame:
    return ra.region_tests(annotated(key), metric, classes=key.classes)


@memo.memoized(64)
def ranking(key: TableKey, metric: str, group: str, min_voxels: int) -> pd.Series:
    return ra.ranking(annotated(key), metric, group, min_voxels=min_voxels, classes=key.classes)


@memo.memoized(64)
def distributions(key: TableKey, metric: str, regions: tuple, groups: tuple) -> list[dict]:
    """Density estimates of the regions (the ridge plots' shapes)."""
    return ra.distributions(annotated(key), metric, list(regions), groups)
