"""Subject-level splits: train/validation/test and k folds, stratified by diagnosis.

A subject's scans (all visits) always stay in one part, so no test subject
leaks into training. The default follows Böhle et al. 2019: a held-out test set
with equally many AD and HC subjects; the remaining subjects are split into
training and validation stratified by diagnosis. ``check_leakage`` runs on
every load.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lib.core import atomic
from lib.data.workspace import Workspace

PARTS = ("train", "validation", "test")


class LeakageError(ValueError):
    pass


def _subject_table(cohort: pd.DataFrame) -> pd.DataFrame:
    # a subject of another group (no task diagnosis) forms its own stratum ""
    subj = cohort.groupby("subject_id", sort=True)["diagnosis"].agg(
        lambda d: d.mode().iat[0] if d.notna().any() else "").reset_index()
    return subj


def make_splits(cohort: pd.DataFrame, *, test_fraction: float = 0.2, validation_fraction: float = 0.15,
                k_folds: int = 5, seed: int = 0, balanced_test: bool = True) -> dict:
    """Assign every subject to train/validation/test and to one of ``k_folds`` folds.

    Returns a JSON-serialisable dict ``{"seed", "parts": {subject: part}, "folds": {subject: fold}, ...}``.
    ``balanced_test`` takes the same number of AD and HC subjects into the test set
    (the smaller class's share decides). Folds are stratified over all subjects.
    """
    rng = np.random.default_rng(seed)
    subj = _subject_table(cohort)
    by_dx = {dx: list(rng.permutation(g["subject_id"].to_numpy())) for dx, g in subj.groupby("diagnosis")}
    classes = [dx for dx in by_dx if dx != ""]
    n_total = sum(len(by_dx[dx]) for dx in classes)
    parts: dict[str, str] = {}
    n_test = {dx: int(round(test_fraction * len(v))) for dx, v in by_dx.items()}
    if balanced_test and len(classes) == 2:
        n_test_each = max(1, int(round(test_fraction * n_total / 2)))
        n_test_each = min(n_test_each, min(len(by_dx[dx]) for dx in classes) - 1)
        n_test.update({dx: max(n_test_each, 0) for dx in classes})
    for dx, subjects in by_dx.items():
        rest = subjects[n_test[dx]:]
        n_val = max(1, int(round(validation_fraction * len(subjects)))) if len(rest) > 2 else 0
        for s in subjects[: n_test[dx]]:
            parts[s] = "test"
        for s in rest[:n_val]:
            parts[s] = "validation"
        for s in rest[n_val:]:
            parts[s] = "train"
    folds: dict[str, int] = {}
    for dx, subjects in by_dx.items():
        for i, s in enumerate(subjects):
            folds[s] = int(i % k_folds)
    return {"seed": seed, "test_fraction": test_fraction, "validation_fraction": validation_fraction,
            "k_folds": k_folds, "balanced_test": balanced_test,
            "parts": {str(k): v for k, v in sorted(parts.items())},
            "folds": {str(k): v for k, v in sorted(folds.items())}}


def save_splits(ws: Workspace, splits: dict) -> None:
    atomic.write_json(ws.splits_json, splits)


def check_leakage(cohort: pd.DataFrame, splits: dict | None = None) -> None:
    """Raise ``LeakageError`` if a subject's scans fall into two parts or a scan has no part.

    With ``splits`` the parts come from the saved split; without, from the
    cohort's own ``split`` column (a lab's predefined split).
    """
    subjects = cohort["subject_id"].astype(str)
    assigned = subjects.map(splits["parts"]) if splits is not None else cohort["split"]
    missing = sorted(subjects[assigned.isna()].unique())
    if missing:
        raise LeakageError(f"subjects without a split: {', '.join(missing[:10])}"
                           f"{' …' if len(missing) > 10 else ''}; recompute the split")
    unknown = sorted(set(assigned.dropna()) - set(PARTS))
    if unknown:
        raise LeakageError(f"unknown split names {unknown}; use {', '.join(PARTS)}")
    per_subject = assigned.groupby(subjects).nunique()
    leaking = per_subject[per_subject > 1].index.tolist()
    if leaking:
        raise LeakageError(f"subjects in more than one part: {', '.join(leaking[:10])}")


def load_splits(ws: Workspace, cohort: pd.DataFrame) -> dict:
    """The workspace's saved split, checked for leakage against ``cohort``."""
    splits = atomic.read_json(ws.splits_json)
    if splits is None:
        raise FileNotFoundError(f"{ws.splits_json} does not exist; run `python -m lib split`")
    check_leakage(cohort, splits)
    return splits


def assign(cohort: pd.DataFrame, splits: dict) -> pd.DataFrame:
    """``cohort`` with columns ``split`` and ``fold`` added."""
    out = cohort.copy()
    out["split"] = out["subject_id"].astype(str).map(splits["parts"])
    out["fold"] = out["subject_id"].astype(str).map(splits["folds"]).astype("Int64")
    return out
