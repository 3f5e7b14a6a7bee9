"""The scans an evaluation uses (chosen from the run's split, AD and HC alternating), maps
computed for them, and the cache of results (one folder per check and method, sealed with checksums)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lib.analysis.evaluation.settings import CACHE_VERSION, Settings
from lib.core import atomic, cache
from lib.learn.runs import run_cohort
from lib.data.classes import DEFAULT_CLASSES, Classes


def _interleave(cohort: pd.DataFrame, seed: int, classes: Classes = DEFAULT_CLASSES) -> list[str]:
    """Scan IDs shuffled within diagnosis, then positive, negative, positive, … (AD, HC, AD, … by default)."""
    rng = np.random.default_rng(seed)
    groups = []
    for dx in (classes.positive, classes.negative):
        ids = sorted(cohort.loc[cohort["diagnosis"] == dx, "scan_id"].astype(str))
        groups.append([ids[i] for i in rng.permutation(len(ids))])
    out = []
    for i in range(max(map(len, groups), default=0)):
        out += [g[i] for g in groups if i < len(g)]
    return out


def run_part(ws, run, split: str) -> pd.DataFrame:
    cohort = run_cohort(ws, run)
    return cohort if split == "all" else cohort[cohort["run_split"] == split]


def truth_table(ws) -> pd.DataFrame | None:
    path = ws.ground_truth_dir / "atrophy.csv"
    return pd.read_csv(path, dtype={"scan_id": str}) if path.exists() else None


def _atrophied(table: pd.DataFrame | None, settings: Settings) -> set[str]:
    if table is None:
        return set()
    mm = table[[c for c in table.columns if c.startswith("mm_")]]
    return set(table.loc[(mm >= settings.min_mm).any(axis=1) if settings.truth == "regions"
                         else (mm > 0).any(axis=1), "scan_id"])


def select_scans(ws, run, settings: Settings, classes: Classes = DEFAULT_CLASSES) -> dict[str, list[str]]:
    """``{"aopc": [...], "sanity": [...], "localisation": [...]}`` scan IDs from the run's ``settings.split``.

    Region perturbation: ``n_scans`` scans, positive and negative alternating (seeded). Sanity check: the first
    ``sanity_scans`` of them. Localisation: up to ``n_scans`` scans with ground-truth atrophy (those already
    chosen first), none without a ground truth.
    """
    part = run_part(ws, run, settings.split)
    order = _interleave(part, settings.seed, classes)
    chosen = order[:settings.n_scans]
    atrophied = _atrophied(truth_table(ws), settings)
    loc = [s for s in chosen if s in atrophied] + [s for s in order[settings.n_scans:] if s in atrophied]
    return {"aopc": chosen, "sanity": chosen[:settings.sanity_scans], "localisation": loc[:settings.n_scans]}


def explain_batches(model, x: torch.Tensor, method: str, call: dict, target: str, batch_size: int) -> np.ndarray:
    from lib.explain import explain

    out = []
    for i in range(0, x.shape[0], batch_size):
        out.append(explain(model, x[i:i + batch_size], method=method, target=target, **call)[:, 0].float().cpu())
    return torch.cat(out).numpy()


# --- cache ---------------------------------------------------------------------------------------------------------
def result_key(payload: dict) -> str:
    blob = json.dumps({"v": CACHE_VERSION, **payload}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def read_result(folder: Path) -> dict | None:
    """A cached result, or None when absent or bad (no marker, truncated, altered: recomputed)."""
    if not cache.ok(folder):
        return None
    try:
        res = atomic.read_json(folder / "result.json")
    except ValueError:
        return None
    if res is not None and (folder / "maps.npy").exists():
        res["maps_path"] = str(folder / "maps.npy")
    return res


def write_result(folder: Path, result: dict, maps: np.ndarray | None = None) -> None:
    """A result folder appears whole: written in a temporary folder, then renamed into place."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        if maps is not None:
            np.save(tmp / "maps.npy", maps)
        atomic.write_json(tmp / "result.json", result)
        cache.seal(tmp, kind="evaluation")
        if folder.exists() and not cache.ok(folder):   # corrupted or of an older version: replaced
            cache.discard(folder)
        if folder.exists():  # an identical result written by a concurrent job
            shutil.rmtree(tmp)
            return
        os.rename(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
