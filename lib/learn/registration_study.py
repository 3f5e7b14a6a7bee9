"""Eitel's study 4 on the raw demo: does registering the scans to the template help the CNN?

The raw demo (``raw/participants.csv``: scans in scanner space) is preprocessed three ways with the
preprocessing pipeline, as in the thesis: ``none`` (pad/crop to the template's dimensions), ``linear``
(ANTs affine) and ``nonlinear`` (affine + SyN). The same model is trained on each with the same subjects in
the same train/validation/test parts (the demo's split) and the same seeds; the table gives the test
balanced accuracy and AUC, mean ± sd over seeds, beside the thesis's numbers, and a probe that needs no training
(:func:`hippocampus_probe`: is the demo's hippocampal atrophy where the template's hippocampus is?).

Layout, inside the demo workspace::

    registration_study/<registration>/      the preprocessed workspace (its runs: regstudy-<registration>-s<seed>)
    registration_study/results.csv          one row per registration type
    registration_study/results.json         the settings the table was made with
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from lib.core import atomic
from lib.core.progress import Progress
from lib.data.splits import save_splits
from lib.data.workspace import Workspace

REGISTRATIONS = ("none", "linear", "nonlinear")
# Eitel's thesis, study 4 (Klingenberg, Stark et al.; ADNI 3 T, 10 splits × 5 trainings), test set:
# balanced accuracy % and ROC AUC, mean ± standard error over all runs
THESIS = {
    "none": {"balanced_accuracy": 76.2, "balanced_accuracy_se": 1.1, "auc": 0.850, "auc_se": 0.011},
    "linear": {"balanced_accuracy": 82.6, "balanced_accuracy_se": 0.9, "auc": 0.904, "auc_se": 0.008},
    "nonlinear": {"balanced_accuracy": 83.3, "balanced_accuracy_se": 0.9, "auc": 0.910, "auc_se": 0.008},
}
THESIS_SOURCE = ("Eitel, PhD thesis, study 4 (Klingenberg, Stark et al.): balanced accuracy and ROC AUC on the "
                 "test set, mean ± standard error over 10 splits × 5 trainings")


class StudyError(ValueError):
    """The study cannot run (no raw demo, no preprocessing pipeline, nothing left after QC); the message says
    what to do."""


@dataclass(frozen=True)
class StudySettings:
    """The demo model's CPU settings (models/README.md) on the 3 mm grid, a few seeds. No early stopping by
    default (``patience`` None: every epoch trained, the best validation checkpoint kept): on the demo's few
    validation scans balanced accuracy can sit at 0.5 for many epochs while the model is learning, and a
    patience of 15 stopped runs on registered scans at epoch 17 with the first epoch's checkpoint, at chance.
    Batch 4, not the demo model's 8: the raw demo's train part (about 40 scans) then gives 10 optimiser steps
    per epoch. The demo model began to separate the classes only after about 300 steps of 8 scans; at batch 8
    30 epochs were 150 steps, and every arm stayed at chance on the training scans too."""

    registrations: tuple[str, ...] = REGISTRATIONS
    seeds: tuple[int, ...] = (0, 1, 2)
    resolution: int = 3
    model: str = "boehle2019"
    epochs: int = 80
    lr: float = 1e-3
    patience: int | None = None
    batch_size: int = 4
    workers: int = 2

    def __post_init__(self):   # before hours of preprocessing, not at the first training
        for name in ("epochs", "batch_size", "workers"):
            if int(getattr(self, name)) < 1:
                raise StudyError(f"{name.replace('_', ' ')} must be at least 1, not {getattr(self, name)}")
        if self.patience is not None and self.patience < 1:
            raise StudyError(f"patience must be at least 1, not {self.patience}")


def study_dir(ws: Workspace) -> Path:
    return ws.root / "registration_study"


def results_csv(ws: Workspace) -> Path:
    return study_dir(ws) / "results.csv"


def _pipeline() -> Callable:
    """The preprocessing pipeline's ``preprocess_table`` as ``(table, registration, resolution, out, progress,
    workers) → workspace folder``."""
    try:
        from lib.data.preprocess import Settings, preprocess_table
    except ImportError as exc:
        raise StudyError(f"the preprocessing pipeline (lib.data.preprocess) is not installed: {exc}") from exc

    def run(table, registration, resolution, out, progress, workers):
        return preprocess_table(table, Settings(registration=registration, resolution=resolution), out,
                                progress=progress, workers=workers)
    return run


def _same_split(source: Workspace, target: Workspace) -> None:
    """The demo's split, restricted to the subjects the preprocessed table kept (failed scans are left out)."""
    splits = atomic.read_json(source.splits_json)
    if splits is None:
        raise StudyError(f"{source.splits_json} does not exist: the demo has no split")
    kept = set(pd.read_csv(target.cohort_csv, dtype={"subject_id": str})["subject_id"])
    restricted = {**splits, **{k: {s: v for s, v in splits[k].items() if s in kept}
                               for k in ("parts", "folds") if k in splits}}
    save_splits(target, restricted)


def _train(ws: Workspace, registration: str, seed: int, settings: StudySettings, progress: Progress) -> dict:
    """One training (resumed if interrupted, reused if finished); its summary."""
    from lib.learn.runs import TrainConfig, create_run, load_run
    from lib.learn.training import train_run

    run_id = f"regstudy-{registration}-s{seed}"
    if (ws.runs_dir / run_id / "config.json").exists():
        run = load_run(ws, run_id)
        if run.status == "done" and run.summary():
            return run.summary()
    else:
        cfg = TrainConfig(model=settings.model, resolution=float(settings.resolution), max_epochs=settings.epochs,
                          batch_size=settings.batch_size, lr=settings.lr, patience=settings.patience or settings.epochs, seed=seed)
        run = create_run(ws, cfg, run_id=run_id, group="registration-study")
    return train_run(ws, run, progress, label=f"{registration} · seed {seed} · ")


def hippocampus_probe(volumes, positive, resolution: float) -> float:
    """How well one number separates the classes in scans on the template grid: the mean intensity in the
    template atlas's hippocampus over the brain's mean (the template brain mask), as ROC AUC in whichever
    direction separates (0.5 = not at all, 1 = perfectly). Nothing is fitted, so every scan counts.

    It tells a CNN at chance on a preprocessing (too few scans, too few epochs) from a preprocessing that
    lost the signal: the demo's atrophy sits in the hippocampus only after the scans are aligned to the
    template."""
    from lib.data.atlases import DEFAULT_ATLAS
    from lib.data.raw_demo import hippocampus_labels
    from lib.data.templates import atlas, brain_mask
    from lib.learn.metrics import roc_auc

    hippocampus = np.isin(np.asarray(atlas(DEFAULT_ATLAS, resolution)[0].dataobj), hippocampus_labels())
    brain = brain_mask(resolution)
    ratios = []
    for volume in volumes:
        brain_mean = float(volume[brain].mean())
        ratios.append(float(volume[hippocampus].mean()) / brain_mean if brain_mean > 0 else np.nan)
    auc = roc_auc(np.asarray(positive, bool), np.nan_to_num(np.asarray(ratios), nan=0.0))
    return float(max(auc, 1 - auc)) if np.isfinite(auc) else float("nan")


def workspace_probe(ws: Workspace) -> float:
    """:func:`hippocampus_probe` over every scan of a (preprocessed) workspace, on its grid."""
    from lib.data.validation import load_on_grid

    cohort = pd.read_csv(ws.cohort_csv)
    volumes = (np.asarray(load_on_grid(ws.resolve(path), ws.grid)[0].dataobj, dtype=np.float32)
               for path in cohort["path"])
    return hippocampus_probe(volumes, cohort["diagnosis"] == ws.classes.positive, ws.grid.resolution)


def _row(registration: str, summaries: list[dict], probe: float = float("nan")) -> dict:
    bacc = [100 * s["test"]["balanced_accuracy"] for s in summaries if "test" in s]
    auc = [s["test"].get("auc", np.nan) for s in summaries if "test" in s]
    thesis = THESIS[registration]
    return {"registration": registration, "runs": len(bacc),
            "balanced_accuracy": float(np.mean(bacc)) if bacc else np.nan,
            "balanced_accuracy_sd": float(np.std(bacc, ddof=1)) if len(bacc) > 1 else np.nan,
            "auc": float(np.nanmean(auc)) if auc else np.nan,
            "auc_sd": float(np.nanstd(auc, ddof=1)) if len(auc) > 1 else np.nan,
            "probe_auc": probe,
            **{f"thesis_{k}": v for k, v in thesis.items()}}


def run_study(ws: Workspace, settings: StudySettings = StudySettings(), progress: Progress | None = None,
              preprocess: Callable | None = None) -> Path:
    """Preprocess the raw demo each way, train every seed on each, write ``registration_study/results.csv``.

    ``preprocess`` stands in for the pipeline (same signature as :func:`_pipeline`'s function). Each step is
    cached (the pipeline per scan, each training as a run), so a re-run redoes only what is missing."""
    progress = progress or (lambda done, total, msg: None)
    table = ws.root / "raw" / "participants.csv"
    if not table.exists():
        raise StudyError(f"{table} does not exist: build the raw demo first (python -m lib demo --raw)")
    unknown = sorted(set(settings.registrations) - set(REGISTRATIONS))
    if unknown:
        raise StudyError(f"unknown registration type(s) {', '.join(unknown)}; use {', '.join(REGISTRATIONS)}")
    preprocess = preprocess or _pipeline()
    steps = len(settings.registrations) * (1 + len(settings.seeds))
    rows = []
    for i, registration in enumerate(settings.registrations):
        base = i * (1 + len(settings.seeds))

        def step(done, total, msg, _at=base):
            progress(int(1000 * (_at + done / max(total, 1))), 1000 * steps, f"{registration}: {msg}")

        try:
            out = Path(preprocess(table, registration, settings.resolution, study_dir(ws) / registration, step,
                                  settings.workers))
        except ValueError as exc:   # the pipeline's refusals (no usable scan, bad table) name the arm that failed
            raise StudyError(f"preprocessing with {registration} registration: {exc}") from exc
        target = Workspace.open(out)
        if not target.cohort_csv.exists() or pd.read_csv(target.cohort_csv).empty:
            raise StudyError(f"preprocessing with {registration} registration left no usable scan in {out} "
                             "(see its preprocessed/qc.csv)")
        _same_split(ws, target)
        summaries = []
        for j, seed in enumerate(settings.seeds):
            def tick(done, total, msg, _at=base + 1 + j):
                progress(int(1000 * (_at + done / max(total, 1))), 1000 * steps, msg)
            summaries.append(_train(target, registration, seed, settings, tick))
        rows.append(_row(registration, summaries, workspace_probe(target)))
    atomic.write_json(study_dir(ws) / "results.json", {"settings": asdict(settings), "thesis": THESIS_SOURCE})
    atomic.write_csv(results_csv(ws), pd.DataFrame(rows))
    progress(1000 * steps, 1000 * steps, "done")
    return results_csv(ws)


def load_results(ws: Workspace) -> tuple[pd.DataFrame, dict] | None:
    """The study's table and its settings, or None when it has not run in this workspace."""
    path = results_csv(ws)
    if not path.exists():
        return None
    return pd.read_csv(path), atomic.read_json(study_dir(ws) / "results.json", default={}) or {}
