"""What the training monitor shows, computed from run folders: run table, learning curves, ROC, confusion.

Everything here reads the files a training job writes (``metrics.jsonl``,
``state.json``, ``predictions.csv``), so any number of browsers can watch a run
that another process is training.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lib.learn.metrics import classification_metrics, confusion_matrix, roc_curve
from lib.learn.runs import Run

METRICS = ("loss", "balanced_accuracy", "accuracy", "auc", "sensitivity", "specificity")
X_AXES = {"epoch": "epoch", "step": "step", "wall time": "time"}


def runs_table(runs: list[Run]) -> pd.DataFrame:
    """One row per run: status, progress, best epoch and its scores, and the settings that differ."""
    rows = []
    for r in runs:
        st, cfg, summ = r.state, r.config.get("train", {}), r.summary() or {}
        rows.append({
            "run": r.id, "status": r.status, "epoch": f"{st.get('epoch', -1) + 1}/{st.get('max_epochs', '?')}",
            "best epoch": (st.get("best_epoch") + 1) if st.get("best_epoch") is not None else None,
            "val bal. acc": (st.get("best_score") or [None])[0],
            "test bal. acc": summ.get("test", {}).get("balanced_accuracy"),
            "test AUC": summ.get("test", {}).get("auc"),
            "model": cfg.get("model"), "grid mm": r.config.get("resolution"), "lr": cfg.get("lr"),
            "weight decay": cfg.get("weight_decay"), "batch": cfg.get("batch_size"), "seed": cfg.get("seed"),
            "fold": cfg.get("fold"), "patience": cfg.get("patience"), "group": r.config.get("group"),
            "started from": origin_text(r, short=True),
        })
    table = pd.DataFrame(rows)
    # no run of a fold or a group: those columns would only push others out of a 1400 px page
    return table.drop(columns=[c for c in ("fold", "group") if c in table and table[c].isna().all()])


def transfer_sources(ws, runs: list[Run]) -> list[str]:
    """What a new run may start from: the workspace's finished runs, then the models shipped in ``models/``."""
    from lib.learn.runs import shipped_models

    own = [r.id for r in runs if r.status == "done" and r.best_checkpoint.exists()]
    return own + [d.name for d in shipped_models() if d.name not in own]


def origin_text(run: Run, *, short: bool = False) -> str | None:
    """Where a transferred run's first weights came from (None for a run trained from scratch)."""
    o = run.origin
    if not o:
        return None
    source = o.get("run") or o.get("source")
    if short:
        return source
    task = " vs ".join(reversed(o.get("classes") or [])) or "unknown classes"
    frozen = f", the first {o['freeze']} convolution block(s) frozen" if o.get("freeze") else ""
    return (f"Started from **{source}** ({task}; checkpoint {str(o.get('checkpoint_sha256', ''))[:12]}…): "
            f"convolution weights copied, the head {o.get('head', 're-initialised')}{frozen}.")


def smooth(values: pd.Series | np.ndarray, weight: float) -> np.ndarray:
    """Exponential moving average with bias correction (TensorBoard's smoothing); weight 0 = raw."""
    v = np.asarray(values, float)
    if weight <= 0 or v.size == 0:
        return v
    out = np.empty_like(v)
    acc, norm = 0.0, 0.0
    for i, x in enumerate(v):
        acc = weight * acc + (1 - weight) * x
        norm = weight * norm + (1 - weight)
        out[i] = acc / norm
    return out


def curves(runs: list[Run], metric: str = "loss", x: str = "epoch", smoothing: float = 0.0) -> pd.DataFrame:
    """Long table ``run, series, x, value, best`` for plotting train vs validation of ``metric``.

    For ``loss`` the per-batch training loss is included as series ``train (batches)``.
    ``x`` is ``epoch`` (1-based), ``step`` (optimiser steps) or ``wall time`` (seconds of training).
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    xcol = X_AXES[x]
    frames = []
    for r in runs:
        batches, epochs = r.metrics()
        if not epochs.empty:
            best = r.state.get("best_epoch")
            for part in ("train", "validation"):
                col = f"{part}_{metric}"
                if col not in epochs:
                    continue
                xs = epochs["epoch"] + 1 if xcol == "epoch" else epochs[xcol]
                frames.append(pd.DataFrame({"run": r.id, "series": part, "x": xs.to_numpy(float),
                                            "value": smooth(epochs[col], smoothing),
                                            "best": (epochs["epoch"] == best).to_numpy()}))
        if metric == "loss" and not batches.empty:
            n_batches = r.state.get("n_batches") or 1
            xs = (batches["step"] + 1) / n_batches if xcol == "epoch" else batches[xcol]
            frames.append(pd.DataFrame({"run": r.id, "series": "train (batches)", "x": xs.to_numpy(float),
                                        "value": smooth(batches["loss"], smoothing), "best": False}))
    if not frames:
        return pd.DataFrame(columns=["run", "series", "x", "value", "best"])
    return pd.concat(frames, ignore_index=True)


def evaluation(run: Run, split: str = "test") -> dict | None:
    """Metrics, confusion matrix and ROC points of a finished run on ``split``; None before predictions exist."""
    preds = run.predictions()
    if preds is None:
        return None
    sel = preds[preds["split"] == split]
    if sel.empty:
        return {"n": 0}
    sel = sel[sel["diagnosis"].isin(run.classes.names)]   # scans of other groups have no outcome
    y = (sel["diagnosis"] == run.classes.positive).to_numpy()
    fpr, tpr, thr = roc_curve(y, sel["ad_score"])
    return {"n": len(sel), "metrics": classification_metrics(y, sel["ad_score"]),
            "confusion": confusion_matrix(y, sel["predicted"] == run.classes.positive),
            "roc": pd.DataFrame({"fpr": fpr, "tpr": tpr, "threshold": thr})}
