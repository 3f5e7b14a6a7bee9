"""Training the CNN of Böhle et al. 2019 §2.2 in resumable run folders (:mod:`lib.learn.runs`).

Training follows the paper: Adam (lr 1e-4, weight decay 1e-4), sagittal flip
(p = 0.5) and translation by −2…2 voxels along the left–right axis, early
stopping when validation balanced accuracy has not improved for 8 epochs
(ties broken by lower validation loss), keeping the best epoch. Each epoch's
shuffling, augmentation and dropout are seeded from (seed, epoch), and an epoch
is recorded before its checkpoint is replaced, so a run killed at any point
(SIGKILL included) resumes from its last finished epoch and retraces the same
epochs as an uninterrupted run.

The run records and checkpoints (:mod:`lib.learn.runs`) and prediction (:mod:`lib.learn.prediction`) are
re-exported here, where the pages and the command line have always found them.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lib.core import atomic
from lib.core.progress import Cancelled, Progress
from lib.data.volumes import Normaliser, batches, load_batch, volume_store
from lib.data.workspace import Workspace
from lib.learn.metrics import classification_metrics
from lib.learn.models import POSITIVE_INDEX, build_model, default_device
from lib.learn.prediction import evaluate, finish_run, predict_scores, predictions_table  # noqa: F401
from lib.learn.runs import (CHECKPOINT_FORMAT, Run, TrainConfig, TrainingError, create_run, export_run,  # noqa: F401
                            file_hash, install_shipped_run, list_runs, load_checkpoint, load_run, new_run_id,
                            predictions_problem, read_metrics, run_cohort, run_parts, runs_dir, save_checkpoint,
                            shipped_models)


def augment(x: np.ndarray, rng: np.random.Generator, flip_p: float, shift_voxels: int) -> np.ndarray:
    """Sagittal flip and left–right translation of a batch ``(N, X, Y, Z)`` (X = left→right), in place.

    Translation moves each volume by an integer in ``[-shift_voxels, shift_voxels]`` along X,
    filling the uncovered slab with the volume's background (its minimum).
    """
    for i in range(len(x)):
        if rng.random() < flip_p:
            x[i] = x[i, ::-1].copy()
        if shift_voxels:
            s = int(rng.integers(-shift_voxels, shift_voxels + 1))
            if s:
                fill = x[i].min()
                x[i] = np.roll(x[i], s, axis=0)
                if s > 0:
                    x[i, :s] = fill
                else:
                    x[i, s:] = fill
    return x


def _truncate_metrics(path: Path, last_epoch: int) -> None:
    """Drop records of epochs after ``last_epoch`` (an epoch interrupted before its checkpoint)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if rec.get("epoch", -1) <= last_epoch:
            keep.append(line)
    atomic.write_text(path, "".join(k + "\n" for k in keep))


def _append(path: Path, rec: dict) -> None:
    with open(path, "a") as fh:
        fh.write(json.dumps(rec, default=atomic._json_default) + "\n")
        fh.flush()


def _epoch_seed(seed: int, epoch: int) -> int:
    return (int(seed) * 1_000_003 + int(epoch)) % (2 ** 63)


def validation_score(val: dict) -> tuple[float, float]:
    """What early stopping maximises: validation balanced accuracy, ties broken by lower validation loss."""
    bacc = val.get("balanced_accuracy")
    bacc = -1.0 if bacc is None or (isinstance(bacc, float) and math.isnan(bacc)) else float(bacc)
    return (bacc, -float(val["loss"]))


@dataclass
class EarlyStopping:
    """Patience counter over validation scores; remembers the best epoch."""

    patience: int
    best_epoch: int | None = None
    best_score: list | None = None
    bad_epochs: int = 0

    def update(self, epoch: int, score) -> bool:
        """Record ``epoch``'s score; True if it is the best so far (then keep its checkpoint)."""
        if self.best_score is None or tuple(score) > tuple(self.best_score):
            self.best_epoch, self.best_score, self.bad_epochs = epoch, list(score), 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.patience


def train_run(ws: Workspace, run: Run, progress: Progress | None = None, *,
              device: torch.device | None = None, label: str = "") -> dict:
    """Train (or continue) ``run`` until early stopping or ``max_epochs``; return its summary.

    Resumes from ``last.pt`` when present. Writes predictions and the summary at the end.
    Only one process trains a run at a time (a second one gets a :class:`TrainingError`).
    """
    import fcntl

    with open(run.dir / ".training.lock", "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TrainingError(f"run {run.id} is being trained by another process") from None
        return _Trainer(ws, run, progress, device=device, label=label).train()


class _Trainer:
    """One training of a run: its data, model and optimiser, and the steps of the epoch loop."""

    def __init__(self, ws: Workspace, run: Run, progress: Progress | None, *, device: torch.device | None,
                 label: str):
        self.ws, self.run, self.progress, self.label = ws, run, progress, label
        self.cfg = cfg = run.train_config
        self.device = device = device or default_device()
        self.use_amp = cfg.amp and device.type == "cuda"
        self.cohort = cohort = run_cohort(ws, run)
        self.grid = run.grid
        self.store = volume_store(ws, cohort, self.grid, progress=lambda d, t, m: self.tick(0, 1, f"{m} {d}/{t}"))
        # scans of other groups (labels outside the task) are kept in the cohort but never trained on
        in_task = cohort["diagnosis"].isin(run.classes.names)
        train = cohort[(cohort["run_split"] == "train") & in_task]
        val = cohort[(cohort["run_split"] == "validation") & in_task]
        self.train_ids, self.val_ids = train["scan_id"].tolist(), val["scan_id"].tolist()
        positive = run.classes.positive
        self.y_train = (train["diagnosis"] == positive).to_numpy()
        self.y_val = (val["diagnosis"] == positive).to_numpy()

        torch.manual_seed(_epoch_seed(cfg.seed, -1))
        self.model = build_model(cfg.model, tuple(run.config["input_shape"]))
        if run.origin and not run.last_checkpoint.exists():   # a resumed run has its weights in last.pt
            self._start_from_source()
        self.model.to(device)
        self.optimiser = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.state = {"status": "running", "epoch": -1, "best_epoch": None, "best_score": None, "bad_epochs": 0,
                      "elapsed": 0.0, "max_epochs": cfg.max_epochs}
        self.normaliser = self._resume() if run.last_checkpoint.exists() else self._fit_normaliser()
        self.loss_fn, self.eval_loss_fn = self._losses()
        self.train_rows = self.store.rows(self.train_ids)
        self.shift = cfg.shift_voxels if cfg.shift_voxels is not None else max(1, round(2.0 / self.grid.resolution))
        self.n_batches = max(1, math.ceil(len(self.train_rows) / cfg.batch_size))
        self.total = cfg.max_epochs * self.n_batches
        self.metrics_path = run.dir / "metrics.jsonl"

    def _start_from_source(self) -> None:
        """Transfer learning: the source's convolution weights (and head, for the same classes), frozen blocks."""
        from lib.learn import transfer

        payload = torch.load(self.run.origin["checkpoint"], map_location="cpu", weights_only=True)
        try:
            transfer.initialise(self.model, payload, self.run.classes, freeze=self.cfg.freeze)
        except transfer.TransferError as exc:
            raise TrainingError(f"run {self.run.id}: {exc}") from exc

    def tick(self, done, total, msg):
        if self.progress:
            self.progress(done, total, f"{self.label}{msg}")

    def _resume(self) -> Normaliser:
        """Model, optimiser, scaler and loop state from ``last.pt``; records of a later epoch are dropped."""
        ck = torch.load(self.run.last_checkpoint, map_location="cpu", weights_only=True)
        self.model.load_state_dict(ck["state_dict"])
        self.optimiser.load_state_dict(ck["optimiser"])
        if self.use_amp and ck.get("scaler"):
            self.scaler.load_state_dict(ck["scaler"])
        self.state.update(ck["state"])
        _truncate_metrics(self.run.dir / "metrics.jsonl", self.state["epoch"])
        return Normaliser.from_dict(ck["normaliser"])

    def _fit_normaliser(self) -> Normaliser:
        """A fresh start: the intensity normalisation fitted on the training split, stored in the config."""
        cfg, run = self.cfg, self.run
        normaliser = Normaliser(cfg.normalisation, cfg.scan_scaling).fit(self.store, self.train_ids)
        (run.dir / "metrics.jsonl").unlink(missing_ok=True)
        run.config["normaliser"] = normaliser.to_dict()
        atomic.write_json(run.dir / "config.json", run.config)
        return normaliser

    def _losses(self) -> tuple[nn.Module, nn.Module]:
        """Cross-entropy for training (weighted by inverse class frequency if asked) and for validation."""
        y = self.y_train
        n_ad = max(int(y.sum()), 1)
        n_hc = max(int((~y).sum()), 1)
        weight = (torch.tensor([len(y) / (2 * n_hc), len(y) / (2 * n_ad)], dtype=torch.float32)
                  if self.cfg.class_weighted else None)
        loss_fn = nn.CrossEntropyLoss(weight=weight.to(self.device) if weight is not None else None)
        return loss_fn, nn.CrossEntropyLoss(weight=loss_fn.weight)

    def train(self) -> dict:
        """The epoch loop, then predictions and the summary; the state file says how it ended."""
        state, run = self.state, self.run
        state.update(status="running", pid=os.getpid(), device=str(self.device), n_batches=self.n_batches)
        atomic.write_json(run.dir / "state.json", state)
        self.t_start = time.monotonic() - float(state["elapsed"])
        try:
            stopped = self._epochs()
        except BaseException as exc:
            state["status"] = "cancelled" if isinstance(exc, (Cancelled, KeyboardInterrupt)) else "failed"
            if state["status"] == "failed":
                state["error"] = f"{type(exc).__name__}: {exc}"
            atomic.write_json(run.dir / "state.json", state)
            raise
        self.tick(self.total, self.total, "predicting every scan")
        summary = finish_run(self.ws, run, store=self.store, cohort=self.cohort, device=self.device)
        summary.update(stopped=stopped, epochs_run=state["epoch"] + 1)
        atomic.write_json(run.dir / "summary.json", summary)
        state.update(status="done", finished=time.time(), stopped=stopped)
        atomic.write_json(run.dir / "state.json", state)
        return summary

    def _epochs(self) -> str:
        """Train epoch after epoch until early stopping or ``max_epochs``; how it stopped."""
        cfg, state = self.cfg, self.state
        for epoch in range(state["epoch"] + 1, cfg.max_epochs):
            stopper = EarlyStopping(cfg.patience, state["best_epoch"], state["best_score"], state["bad_epochs"])
            if stopper.should_stop:
                return "early"
            train_m = self._train_epoch(epoch)
            val_m = self._validate()
            improved = stopper.update(epoch, validation_score(val_m))
            state.update(best_epoch=stopper.best_epoch, best_score=stopper.best_score, bad_epochs=stopper.bad_epochs)
            self._record_epoch(epoch, improved, train_m, val_m)
        return "early" if state["bad_epochs"] >= cfg.patience else "max_epochs"

    def _train_epoch(self, epoch: int) -> dict:
        """One pass over the training split in the epoch's seeded order; its loss and metrics."""
        cfg, model, device = self.cfg, self.model, self.device
        torch.manual_seed(_epoch_seed(cfg.seed, epoch))
        rng = np.random.default_rng([cfg.seed, epoch])
        order = self.train_rows[rng.permutation(len(self.train_rows))]
        y_of_row = dict(zip(self.train_rows.tolist(), self.y_train.tolist()))
        model.train()
        if cfg.freeze:
            from lib.learn.transfer import keep_frozen_statistics

            keep_frozen_statistics(model, cfg.freeze)
        losses, scores, labels = [], [], []
        for b, rows in enumerate(batches(order, cfg.batch_size)):
            x = augment(load_batch(self.store, rows, self.normaliser), rng, cfg.flip_p, self.shift)
            y = torch.tensor([int(y_of_row[r]) for r in rows.tolist()], device=device)
            xt = torch.from_numpy(x).unsqueeze(1).to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.float16, enabled=self.use_amp):
                logits = model(xt)
                loss = self.loss_fn(logits.float(), y)
            self.optimiser.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimiser)
            self.scaler.update()
            losses.append((float(loss.detach()), len(rows)))
            scores.append(torch.softmax(logits.detach().float(), 1)[:, POSITIVE_INDEX].cpu().numpy())
            labels.append(y.cpu().numpy().astype(bool))
            step = epoch * self.n_batches + b
            if b % cfg.log_every == 0 or b == self.n_batches - 1:
                _append(self.metrics_path, {"kind": "batch", "epoch": epoch, "step": step,
                                            "loss": losses[-1][0], "time": time.monotonic() - self.t_start})
            self.tick(step + 1, self.total, f"epoch {epoch + 1}/{cfg.max_epochs} batch {b + 1}/{self.n_batches}")
        train_loss = sum(l * n for l, n in losses) / sum(n for _, n in losses)
        return {**classification_metrics(np.concatenate(labels), np.concatenate(scores)), "loss": train_loss}

    def _validate(self) -> dict:
        scores, logits = predict_scores(self.model, self.normaliser, self.store, self.val_ids,
                                        batch_size=self.cfg.batch_size, device=self.device)
        loss = float(self.eval_loss_fn(torch.from_numpy(logits).to(self.device),
                                       torch.from_numpy(self.y_val.astype(np.int64)).to(self.device)))
        return {**classification_metrics(self.y_val, scores), "loss": loss}

    def _record_epoch(self, epoch: int, improved: bool, train_m: dict, val_m: dict) -> None:
        """Keep the best checkpoint, log the epoch, then move the resume point past it (see module docstring)."""
        cfg, run, state = self.cfg, self.run, self.state
        if improved:
            save_checkpoint(run.best_checkpoint, self.model, model_name=cfg.model,
                            input_shape=run.config["input_shape"], resolution=self.grid.resolution,
                            normaliser=self.normaliser, epoch=epoch, extra={"run": run.id},
                            classes=run.classes)
        state["epoch"] = epoch
        state["elapsed"] = time.monotonic() - self.t_start
        _append(self.metrics_path, {"kind": "epoch", "epoch": epoch, "step": (epoch + 1) * self.n_batches - 1,
                                    "time": state["elapsed"], "lr": self.optimiser.param_groups[0]["lr"],
                                    "best": improved, "train": train_m, "validation": val_m})
        with atomic.atomic_path(run.last_checkpoint) as tmp:
            torch.save({"state_dict": self.model.state_dict(), "optimiser": self.optimiser.state_dict(),
                        "scaler": self.scaler.state_dict() if self.use_amp else {},
                        "normaliser": self.normaliser.to_dict(),
                        "state": {k: state[k] for k in ("epoch", "best_epoch", "best_score", "bad_epochs",
                                                        "elapsed")}}, tmp)
        atomic.write_json(run.dir / "state.json", state)


def plan(cfg: TrainConfig, *, seeds: list[int] | None = None, folds: list[int] | None = None) -> list[TrainConfig]:
    """One config per (fold, seed): k-fold and repeated runs as one request (Eitel's robustness study)."""
    seeds = seeds or [cfg.seed]
    fold_list: list[int | None] = list(folds) if folds else [cfg.fold]
    return [TrainConfig.from_dict({**asdict(cfg), "seed": s, "fold": f}) for f in fold_list for s in seeds]


def train_many(ws: Workspace, runs: list[Run], progress: Progress | None = None,
               device: torch.device | None = None) -> list[dict]:
    """Train ``runs`` one after the other, reporting progress over all of them."""
    total_epochs = sum(r.train_config.max_epochs for r in runs)
    out = []
    done_epochs = 0
    for i, run in enumerate(runs):
        cfg = run.train_config
        label = f"run {i + 1}/{len(runs)} · " if len(runs) > 1 else ""
        scale = 1000  # progress units per epoch, so early stopping jumps ahead cleanly

        def prog(done, total, msg, _off=done_epochs, _cfg=cfg):
            frac_epochs = done / max(total, 1) * _cfg.max_epochs
            if progress:
                progress(int((_off + frac_epochs) * scale), total_epochs * scale, msg)

        out.append(train_run(ws, run, prog, device=device, label=label))
        done_epochs += cfg.max_epochs
    return out
