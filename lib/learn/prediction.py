"""Predicting with a run's best checkpoint: positive-class scores of scans, the predictions table and its metrics."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch import nn

from lib.core import atomic, cache
from lib.core.progress import Progress
from lib.data.scans import load_cohort
from lib.data.templates import Grid
from lib.data.volumes import Normaliser, VolumeStore, batches, load_batch, volume_store
from lib.data.workspace import Workspace
from lib.learn.metrics import classification_metrics, outcome
from lib.learn.models import POSITIVE_INDEX
from lib.learn.runs import Run, TrainingError, file_hash, load_checkpoint, run_cohort
from lib.data.classes import DEFAULT_CLASSES, Classes


@torch.no_grad()
def predict_scores(model: nn.Module, normaliser: Normaliser, store: VolumeStore, scan_ids, *,
                   batch_size: int = 8, device: torch.device | None = None,
                   progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Softmax probability of the positive class and the logits ``(N, 2)`` for ``scan_ids`` (model in eval mode)."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    rows = store.rows(scan_ids)
    logits = []
    for i, b in enumerate(batches(rows, batch_size)):
        x = torch.from_numpy(load_batch(store, b, normaliser)).unsqueeze(1).to(device)
        logits.append(model(x).float().cpu())
        if progress:
            progress(min((i + 1) * batch_size, len(rows)), len(rows))
    model.train(was_training)
    z = torch.cat(logits) if logits else torch.zeros((0, 2))
    return torch.softmax(z, 1)[:, POSITIVE_INDEX].numpy(), z.numpy()



def finish_run(ws: Workspace, run: Run, *, store: VolumeStore | None = None, cohort: pd.DataFrame | None = None,
               device: torch.device | None = None, progress: Progress | None = None) -> dict:
    """Predict every scan with the best checkpoint; write predictions.csv; return the metrics summary."""
    cohort = cohort if cohort is not None else run_cohort(ws, run)
    model, normaliser, meta = load_checkpoint(run.best_checkpoint, device)
    store = store or volume_store(ws, cohort, Grid(float(meta["resolution"])), progress=progress)
    scores, _ = predict_scores(model, normaliser, store, cohort["scan_id"].tolist(), device=device,
                               progress=(lambda d, t: progress(d, t, "predicting every scan")) if progress else None)
    preds = predictions_table(cohort, scores, classes=run.classes)
    atomic.write_csv(run.dir / "predictions.csv", preds)
    cache.seal(run.dir / "predictions.csv", kind="predictions", run=run.id)
    summary = {"run": run.id, "best_epoch": meta["epoch"], "checkpoint_sha256": run.checkpoint_hash()}
    for part in ("train", "validation", "test"):
        sel = preds[(preds["split"] == part) & preds["diagnosis"].isin(run.classes.names)]
        if len(sel):
            summary[part] = classification_metrics(sel["diagnosis"] == run.classes.positive, sel["ad_score"])
    return summary



def predictions_table(cohort: pd.DataFrame, ad_score: np.ndarray, threshold: float = 0.5, *,
                      classes: Classes = DEFAULT_CLASSES) -> pd.DataFrame:
    """Per scan: score of the positive class (``ad_score``), predicted class and outcome (TP/FP/TN/FN, TP =
    correctly called positive) with its split."""
    keep = [c for c in ("scan_id", "subject_id", "session", "diagnosis", "age", "sex", "site") if c in cohort]
    out = cohort[keep].copy()
    out["split"] = cohort["run_split"].to_numpy() if "run_split" in cohort else cohort.get("split")
    out["ad_score"] = np.round(np.asarray(ad_score, float), 6)
    pred_ad = out["ad_score"].to_numpy() >= threshold
    out["predicted"] = np.where(pred_ad, classes.positive, classes.negative)
    out["outcome"] = outcome(out["diagnosis"].to_numpy() == classes.positive, pred_ad)
    # scans of other groups (MCI in an AD vs HC task) are predicted but have no outcome
    out.loc[~out["diagnosis"].isin(classes.names), "outcome"] = pd.NA
    return out



def evaluate(ws: Workspace, *, run: Run | None = None, checkpoint: str | os.PathLike | None = None,
             split: str = "test", device: torch.device | None = None) -> dict:
    """Metrics of the best checkpoint of ``run`` (or of ``checkpoint``) on ``split``, recomputed from scans."""
    classes = run.classes if run is not None else ws.classes
    if run is not None:
        cohort = run_cohort(ws, run)
        path = run.best_checkpoint
    elif checkpoint is not None:
        cohort = load_cohort(ws)
        cohort["run_split"] = cohort["split"]
        path = Path(checkpoint)
    else:
        raise TrainingError("give a run or a checkpoint to evaluate")
    model, normaliser, meta = load_checkpoint(path, device)
    sel = cohort[(cohort["run_split"] == split) & cohort["diagnosis"].isin(classes.names)]
    if sel.empty:
        raise TrainingError(f"the {split} split has no scans")
    store = volume_store(ws, cohort, Grid(float(meta["resolution"])))
    scores, _ = predict_scores(model, normaliser, store, sel["scan_id"].tolist(), device=device)
    m = classification_metrics(sel["diagnosis"] == classes.positive, scores)
    return {"checkpoint": str(path), "checkpoint_sha256": file_hash(path), "split": split, "scans": len(sel),
            **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in m.items()}}

