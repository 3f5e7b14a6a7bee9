"""Training the CNN of Böhle et al. 2019 §2.2 in resumable run folders.

A run is one model trained on one split with one seed::

    runs/<run>/config.json     the request (TrainConfig), the grid, the split's subjects, the fitted normaliser
    runs/<run>/state.json      status, epoch, best epoch, early-stopping counter (written atomically every epoch)
    runs/<run>/metrics.jsonl   one line per logged batch ("batch") and per epoch ("epoch", train + validation)
    runs/<run>/last.pt         model + optimiser after the last finished epoch (resume point)
    runs/<run>/best.pt         the model of the best validation epoch (what every analysis uses)
    runs/<run>/predictions.csv every scan: AD score, predicted class, outcome TP/FP/TN/FN, split
    runs/<run>/summary.json    best epoch, validation and test metrics at the best epoch

Training follows the paper: Adam (lr 1e-4, weight decay 1e-4), sagittal flip
(p = 0.5) and translation by −2…2 voxels along the left–right axis, early
stopping when validation balanced accuracy has not improved for 8 epochs
(ties broken by lower validation loss), keeping the best epoch. Each epoch's
shuffling, augmentation and dropout are seeded from (seed, epoch), and an epoch
is recorded before its checkpoint is replaced, so a run killed at any point
(SIGKILL included) resumes from its last finished epoch and retraces the same
epochs as an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch import nn

from lib.core import atomic, cache
from lib.core.process import pid_alive
from lib.learn.metrics import classification_metrics, outcome
from lib.learn.models import CLASSES, build_model, default_device
from lib.data.templates import Grid
from lib.data.volumes import Normaliser, VolumeStore, cohort_fingerprint, volume_store
from lib.data.workspace import Workspace
from lib.core.progress import Cancelled, Progress

CHECKPOINT_FORMAT = "relevance-atlas-checkpoint-1"
AD = CLASSES.index("AD")


@dataclass
class TrainConfig:
    """What to train. Defaults are the paper's (§2.2) where it states them."""

    model: str = "boehle2019"
    resolution: float | None = None      # mm; None = the workspace grid
    max_epochs: int = 100
    batch_size: int = 8
    lr: float = 1e-4
    weight_decay: float = 1e-4
    patience: int = 8                    # epochs without validation improvement before stopping
    flip_p: float = 0.5                  # sagittal (left–right) flip probability
    shift_voxels: int | None = None      # left–right translation range; None = 2 mm (the paper's 2 voxels at 1 mm)
    normalisation: str = "zscore"        # fitted on the training split only
    scan_scaling: str = "brain_mean"
    class_weighted: bool = True          # cross-entropy weighted by inverse class frequency in training
    seed: int = 0
    fold: int | None = None              # None: the saved train/validation split; k: fold k validates
    log_every: int = 5                   # batches between loss records
    amp: bool = True                     # mixed precision, on CUDA only

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


class TrainingError(ValueError):
    """A run cannot start or continue (bad split, unknown run, changed cohort …); the message says why."""


# --- runs on disk ------------------------------------------------------------------------------------------
def runs_dir(ws: Workspace) -> Path:
    return ws.runs_dir


@dataclass
class Run:
    """A run folder and what it records so far."""

    dir: Path
    config: dict = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.dir.name

    @property
    def train_config(self) -> TrainConfig:
        return TrainConfig.from_dict(self.config.get("train", {}))

    @property
    def state(self) -> dict:
        return atomic.read_json(self.dir / "state.json", default={}) or {}

    @property
    def status(self) -> str:
        """created / running / done / cancelled / failed / interrupted (a dead process left it running)."""
        st = self.state
        status = st.get("status", "created")
        if status == "running" and not pid_alive(st.get("pid")):
            return "interrupted"
        return status

    @property
    def best_checkpoint(self) -> Path:
        return self.dir / "best.pt"

    @property
    def last_checkpoint(self) -> Path:
        return self.dir / "last.pt"

    @property
    def grid(self) -> Grid:
        return Grid(float(self.config["resolution"]))

    def checkpoint_hash(self) -> str:
        return file_hash(self.best_checkpoint)

    def summary(self) -> dict | None:
        return atomic.read_json(self.dir / "summary.json")

    def predictions(self) -> pd.DataFrame | None:
        """Every scan's prediction, or None when there are none yet, or when the file is corrupted (then it
        is removed, so ``python -m lib predict --run RUN`` or the page's job recomputes it)."""
        p = self.dir / "predictions.csv"
        if not p.exists():
            return None
        if predictions_problem(self.dir) is not None:
            from lib.core import cache

            cache.discard(p)
            return None
        return pd.read_csv(p, dtype={"scan_id": str, "subject_id": str})

    def metrics(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(batch losses, epoch metrics) as flat tables; a torn last line (a kill mid-write) is skipped."""
        return read_metrics(self.dir / "metrics.jsonl")

    def load_model(self, device: torch.device | str | None = None) -> tuple[nn.Module, Normaliser]:
        model, normaliser, _ = load_checkpoint(self.best_checkpoint, device)
        return model, normaliser


_PREDICTION_COLUMNS = ("scan_id", "diagnosis", "split", "ad_score", "predicted", "outcome")


def predictions_problem(run_dir: str | os.PathLike) -> str | None:
    """What is wrong with a run's ``predictions.csv`` (a sentence) or None.

    With its checksum marker (:mod:`lib.core.cache`) the file must match it. A file without one (written by an
    older version) must parse, hold every scan of the run exactly once with a score in [0, 1] and agree
    with its predicted classes; it is then sealed as it is, so existing runs keep their predictions.
    """
    from lib.core import cache

    run_dir = Path(run_dir)
    path = run_dir / "predictions.csv"
    if cache.marker_of(path).exists():
        return cache.problem(path)
    if not path.exists():
        return "missing"
    try:
        df = pd.read_csv(path, dtype={"scan_id": str, "subject_id": str})
        if any(c not in df for c in _PREDICTION_COLUMNS):
            return "not a predictions table (columns missing)"
        score = pd.to_numeric(df["ad_score"], errors="coerce")
        config = atomic.read_json(run_dir / "config.json") or {}
        scans = {str(x) for part in (config.get("parts") or {}).values() for x in part}
        if scans and (set(df["scan_id"]) != scans or df["scan_id"].duplicated().any()):
            return "does not hold every scan of the run once (partial or altered)"
        if not score.between(0, 1).all() or ((score >= 0.5) != (df["predicted"] == "AD")).any():
            return "scores or predicted classes are altered"
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        return f"unreadable ({type(exc).__name__})"
    with contextlib.suppress(OSError):   # a read-only run folder keeps its checked file unsealed
        cache.seal(path, kind="predictions")
    return None


def list_runs(ws: Workspace) -> list[Run]:
    """Every run of the workspace, newest first."""
    if not ws.runs_dir.exists():
        return []
    out = []
    for d in ws.runs_dir.iterdir():
        cfg = atomic.read_json(d / "config.json") if d.is_dir() else None
        if cfg:
            out.append(Run(d, cfg))
    return sorted(out, key=lambda r: r.config.get("created", 0), reverse=True)


def load_run(ws: Workspace, run_id: str | os.PathLike) -> Run:
    """The run called ``run_id`` in the workspace (or a run folder given by path)."""
    d = Path(run_id)
    if not (d / "config.json").exists():
        d = ws.runs_dir / str(run_id)
    cfg = atomic.read_json(d / "config.json")
    if not cfg:
        known = ", ".join(r.id for r in list_runs(ws)[:8]) or "none"
        raise TrainingError(f"no run {str(run_id)!r} in {ws.runs_dir} (runs: {known})")
    return Run(d, cfg)


def file_hash(path: str | os.PathLike) -> str:
    return cache.sha256(path)


def read_metrics(path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    batches, epochs = [], []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if rec.get("kind") == "batch":
                batches.append(rec)
            elif rec.get("kind") == "epoch":
                flat = {k: v for k, v in rec.items() if not isinstance(v, dict)}
                for part in ("train", "validation"):
                    for k, v in (rec.get(part) or {}).items():
                        flat[f"{part}_{k}"] = v
                epochs.append(flat)
    return pd.DataFrame(batches), pd.DataFrame(epochs)


# --- checkpoints ---------------------------------------------------------------------------------------------
def save_checkpoint(path: Path, model: nn.Module, *, model_name: str, input_shape, resolution: float,
                    normaliser: Normaliser, epoch: int, extra: dict | None = None) -> None:
    """Write a self-contained checkpoint atomically (readable with ``torch.load(weights_only=True)``)."""
    payload = {
        "format": CHECKPOINT_FORMAT, "model": model_name, "input_shape": list(input_shape),
        "resolution": float(resolution), "classes": list(CLASSES), "normaliser": normaliser.to_dict(),
        "epoch": int(epoch), "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        **(extra or {}),
    }
    with atomic.atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | os.PathLike, device: torch.device | str | None = None
                    ) -> tuple[nn.Module, Normaliser, dict]:
    """``(model in eval mode on device, normaliser, metadata)`` from a checkpoint file."""
    path = Path(path)
    if not path.exists():
        raise TrainingError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise TrainingError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise TrainingError(f"{path}: not a relevance-atlas checkpoint (format {CHECKPOINT_FORMAT} expected)")
    device = torch.device(device) if device is not None else default_device()
    model = build_model(payload["model"], tuple(payload["input_shape"]))
    model.load_state_dict(payload["state_dict"])
    model.to(device).eval()
    meta = {k: v for k, v in payload.items() if k != "state_dict"}
    return model, Normaliser.from_dict(payload["normaliser"]), meta


# --- data ---------------------------------------------------------------------------------------------------
def run_parts(cohort: pd.DataFrame, splits: dict, fold: int | None) -> dict[str, list[str]]:
    """Subject IDs per part for a run: the saved split, or fold ``fold`` as validation (test unchanged)."""
    subjects = sorted(cohort["subject_id"].astype(str).unique())
    parts = splits["parts"]
    if fold is None:
        out = {p: [s for s in subjects if parts.get(s) == p] for p in ("train", "validation", "test")}
    else:
        k = int(splits.get("k_folds", 5))
        if not 0 <= fold < k:
            raise TrainingError(f"fold {fold} does not exist: the split has {k} folds (0…{k - 1})")
        folds = splits["folds"]
        rest = [s for s in subjects if parts.get(s) != "test"]
        out = {"train": [s for s in rest if folds.get(s) != fold],
               "validation": [s for s in rest if folds.get(s) == fold],
               "test": [s for s in subjects if parts.get(s) == "test"]}
    for part in ("train", "validation"):
        if not out[part]:
            raise TrainingError(f"the {part} split has no subjects; recompute the split with more subjects")
    return out


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


def _batches(rows: np.ndarray, size: int) -> list[np.ndarray]:
    return [rows[i:i + size] for i in range(0, len(rows), size)]


def _load_batch(store: VolumeStore, rows: np.ndarray, normaliser: Normaliser) -> np.ndarray:
    # memmap fancy indexing reads in row order fastest; restore the requested order after
    order = np.argsort(rows, kind="stable")
    x = np.empty((len(rows), *store.shape), dtype=np.float32)
    x[order] = store.array[rows[order]]
    return normaliser.transform(x)


@torch.no_grad()
def predict_scores(model: nn.Module, normaliser: Normaliser, store: VolumeStore, scan_ids, *,
                   batch_size: int = 8, device: torch.device | None = None,
                   progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Softmax AD probability and the logits ``(N, 2)`` for ``scan_ids`` (model in eval mode)."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    rows = store.rows(scan_ids)
    logits = []
    for i, b in enumerate(_batches(rows, batch_size)):
        x = torch.from_numpy(_load_batch(store, b, normaliser)).unsqueeze(1).to(device)
        logits.append(model(x).float().cpu())
        if progress:
            progress(min((i + 1) * batch_size, len(rows)), len(rows))
    model.train(was_training)
    z = torch.cat(logits) if logits else torch.zeros((0, 2))
    return torch.softmax(z, 1)[:, AD].numpy(), z.numpy()


# --- training ------------------------------------------------------------------------------------------------
def new_run_id(cfg: TrainConfig) -> str:
    fold = f"-f{cfg.fold}" if cfg.fold is not None else ""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{cfg.model}{fold}-s{cfg.seed}-{secrets.token_hex(2)}"


def create_run(ws: Workspace, cfg: TrainConfig, *, run_id: str | None = None, group: str | None = None) -> Run:
    """Make the run folder with its config (split snapshot included); nothing is trained yet."""
    from lib.data.overview import load_cohort
    from lib.data.splits import load_splits

    from lib.learn.models import REGISTRY

    if cfg.model not in REGISTRY:
        raise TrainingError(f"unknown model {cfg.model!r}; choose one of {', '.join(sorted(REGISTRY))}")
    cohort = load_cohort(ws)
    splits = load_splits(ws, cohort)
    parts = run_parts(cohort, splits, cfg.fold)
    grid = Grid(float(cfg.resolution or ws.grid.resolution))
    run_id = run_id or new_run_id(cfg)
    d = ws.runs_dir / run_id
    if (d / "config.json").exists():
        raise TrainingError(f"run {run_id} already exists")
    config = {"id": run_id, "group": group, "created": time.time(), "workspace": str(ws.root),
              "train": asdict(cfg), "resolution": grid.resolution, "input_shape": list(grid.shape),
              "cohort_fingerprint": cohort_fingerprint(cohort), "parts": parts,
              "torch": torch.__version__}
    atomic.write_json(d / "config.json", config)
    atomic.write_json(d / "state.json", {"status": "created", "epoch": -1, "max_epochs": cfg.max_epochs})
    return Run(d, config)


def _scan_table(ws: Workspace, run: Run) -> pd.DataFrame:
    from lib.data.overview import load_cohort

    cohort = load_cohort(ws)
    if cohort_fingerprint(cohort) != run.config.get("cohort_fingerprint"):
        raise TrainingError(f"run {run.id}: the workspace's cohort changed since the run was created "
                            "(scans or diagnoses differ); start a new run")
    part_of = {s: p for p, subs in run.config["parts"].items() for s in subs}
    cohort = cohort.copy()
    cohort["run_split"] = cohort["subject_id"].astype(str).map(part_of)
    return cohort


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
        return _train_run(ws, run, progress, device=device, label=label)


def _train_run(ws: Workspace, run: Run, progress: Progress | None, *, device: torch.device | None,
               label: str) -> dict:
    cfg = run.train_config
    device = device or default_device()
    use_amp = cfg.amp and device.type == "cuda"
    cohort = _scan_table(ws, run)
    grid = run.grid

    def tick(done, total, msg):
        if progress:
            progress(done, total, f"{label}{msg}")

    store = volume_store(ws, cohort, grid, progress=lambda d, t, m: tick(0, 1, f"{m} {d}/{t}"))
    train = cohort[cohort["run_split"] == "train"]
    val = cohort[cohort["run_split"] == "validation"]
    train_ids, val_ids = train["scan_id"].tolist(), val["scan_id"].tolist()
    y_train = (train["diagnosis"] == "AD").to_numpy()
    y_val = (val["diagnosis"] == "AD").to_numpy()

    torch.manual_seed(_epoch_seed(cfg.seed, -1))
    model = build_model(cfg.model, tuple(run.config["input_shape"])).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    state = {"status": "running", "epoch": -1, "best_epoch": None, "best_score": None, "bad_epochs": 0,
             "elapsed": 0.0, "max_epochs": cfg.max_epochs}

    if run.last_checkpoint.exists():
        ck = torch.load(run.last_checkpoint, map_location="cpu", weights_only=True)
        model.load_state_dict(ck["state_dict"])
        optimiser.load_state_dict(ck["optimiser"])
        if use_amp and ck.get("scaler"):
            scaler.load_state_dict(ck["scaler"])
        normaliser = Normaliser.from_dict(ck["normaliser"])
        state.update(ck["state"])
        _truncate_metrics(run.dir / "metrics.jsonl", state["epoch"])
    else:
        normaliser = Normaliser(cfg.normalisation, cfg.scan_scaling).fit(store, train_ids)
        (run.dir / "metrics.jsonl").unlink(missing_ok=True)
        run.config["normaliser"] = normaliser.to_dict()
        atomic.write_json(run.dir / "config.json", run.config)

    n_ad = max(int(y_train.sum()), 1)
    n_hc = max(int((~y_train).sum()), 1)
    weight = (torch.tensor([len(y_train) / (2 * n_hc), len(y_train) / (2 * n_ad)], dtype=torch.float32)
              if cfg.class_weighted else None)
    loss_fn = nn.CrossEntropyLoss(weight=weight.to(device) if weight is not None else None)
    eval_loss_fn = nn.CrossEntropyLoss(weight=loss_fn.weight)
    train_rows = store.rows(train_ids)
    shift = cfg.shift_voxels if cfg.shift_voxels is not None else max(1, round(2.0 / grid.resolution))
    n_batches = max(1, math.ceil(len(train_rows) / cfg.batch_size))
    total = cfg.max_epochs * n_batches

    state.update(status="running", pid=os.getpid(), device=str(device), n_batches=n_batches)
    atomic.write_json(run.dir / "state.json", state)
    metrics_path = run.dir / "metrics.jsonl"
    t_start = time.monotonic() - float(state["elapsed"])
    stopped = "max_epochs"
    try:
        for epoch in range(state["epoch"] + 1, cfg.max_epochs):
            stopper = EarlyStopping(cfg.patience, state["best_epoch"], state["best_score"], state["bad_epochs"])
            if stopper.should_stop:
                stopped = "early"
                break
            torch.manual_seed(_epoch_seed(cfg.seed, epoch))
            rng = np.random.default_rng([cfg.seed, epoch])
            order = train_rows[rng.permutation(len(train_rows))]
            y_of_row = dict(zip(train_rows.tolist(), y_train.tolist()))
            model.train()
            losses, scores, labels = [], [], []
            for b, rows in enumerate(_batches(order, cfg.batch_size)):
                x = augment(_load_batch(store, rows, normaliser), rng, cfg.flip_p, shift)
                y = torch.tensor([int(y_of_row[r]) for r in rows.tolist()], device=device)
                xt = torch.from_numpy(x).unsqueeze(1).to(device, non_blocking=True)
                with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                    logits = model(xt)
                    loss = loss_fn(logits.float(), y)
                optimiser.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimiser)
                scaler.update()
                losses.append((float(loss.detach()), len(rows)))
                scores.append(torch.softmax(logits.detach().float(), 1)[:, AD].cpu().numpy())
                labels.append(y.cpu().numpy().astype(bool))
                step = epoch * n_batches + b
                if b % cfg.log_every == 0 or b == n_batches - 1:
                    _append(metrics_path, {"kind": "batch", "epoch": epoch, "step": step,
                                           "loss": losses[-1][0], "time": time.monotonic() - t_start})
                tick(epoch * n_batches + b + 1, total,
                     f"epoch {epoch + 1}/{cfg.max_epochs} batch {b + 1}/{n_batches}")
            train_loss = sum(l * n for l, n in losses) / sum(n for _, n in losses)
            train_m = {**classification_metrics(np.concatenate(labels), np.concatenate(scores)), "loss": train_loss}
            val_scores, val_logits = predict_scores(model, normaliser, store, val_ids,
                                                    batch_size=cfg.batch_size, device=device)
            val_loss = float(eval_loss_fn(torch.from_numpy(val_logits).to(device),
                                          torch.from_numpy(y_val.astype(np.int64)).to(device)))
            val_m = {**classification_metrics(y_val, val_scores), "loss": val_loss}
            improved = stopper.update(epoch, validation_score(val_m))
            state.update(best_epoch=stopper.best_epoch, best_score=stopper.best_score, bad_epochs=stopper.bad_epochs)
            if improved:
                save_checkpoint(run.best_checkpoint, model, model_name=cfg.model,
                                input_shape=run.config["input_shape"], resolution=grid.resolution,
                                normaliser=normaliser, epoch=epoch, extra={"run": run.id})
            state["epoch"] = epoch
            state["elapsed"] = time.monotonic() - t_start
            # the epoch is logged before the resume point moves past it (see module docstring)
            _append(metrics_path, {"kind": "epoch", "epoch": epoch, "step": (epoch + 1) * n_batches - 1,
                                   "time": state["elapsed"], "lr": optimiser.param_groups[0]["lr"],
                                   "best": improved, "train": train_m, "validation": val_m})
            with atomic.atomic_path(run.last_checkpoint) as tmp:
                torch.save({"state_dict": model.state_dict(), "optimiser": optimiser.state_dict(),
                            "scaler": scaler.state_dict() if use_amp else {}, "normaliser": normaliser.to_dict(),
                            "state": {k: state[k] for k in ("epoch", "best_epoch", "best_score", "bad_epochs",
                                                            "elapsed")}}, tmp)
            atomic.write_json(run.dir / "state.json", state)
        else:
            stopped = "early" if state["bad_epochs"] >= cfg.patience else "max_epochs"
    except BaseException as exc:
        state["status"] = "cancelled" if isinstance(exc, (Cancelled, KeyboardInterrupt)) else "failed"
        if state["status"] == "failed":
            state["error"] = f"{type(exc).__name__}: {exc}"
        atomic.write_json(run.dir / "state.json", state)
        raise

    tick(total, total, "predicting every scan")
    summary = finish_run(ws, run, store=store, cohort=cohort, device=device)
    summary.update(stopped=stopped, epochs_run=state["epoch"] + 1)
    atomic.write_json(run.dir / "summary.json", summary)
    state.update(status="done", finished=time.time(), stopped=stopped)
    atomic.write_json(run.dir / "state.json", state)
    return summary


def finish_run(ws: Workspace, run: Run, *, store: VolumeStore | None = None, cohort: pd.DataFrame | None = None,
               device: torch.device | None = None, progress: Progress | None = None) -> dict:
    """Predict every scan with the best checkpoint; write predictions.csv; return the metrics summary."""
    cohort = cohort if cohort is not None else _scan_table(ws, run)
    model, normaliser, meta = load_checkpoint(run.best_checkpoint, device)
    store = store or volume_store(ws, cohort, Grid(float(meta["resolution"])), progress=progress)
    scores, _ = predict_scores(model, normaliser, store, cohort["scan_id"].tolist(), device=device,
                               progress=(lambda d, t: progress(d, t, "predicting every scan")) if progress else None)
    preds = predictions_table(cohort, scores)
    atomic.write_csv(run.dir / "predictions.csv", preds)
    from lib.core import cache

    cache.seal(run.dir / "predictions.csv", kind="predictions", run=run.id)
    summary = {"run": run.id, "best_epoch": meta["epoch"], "checkpoint_sha256": run.checkpoint_hash()}
    for part in ("train", "validation", "test"):
        sel = preds[preds["split"] == part]
        if len(sel):
            summary[part] = classification_metrics(sel["diagnosis"] == "AD", sel["ad_score"])
    return summary


def predictions_table(cohort: pd.DataFrame, ad_score: np.ndarray, threshold: float = 0.5) -> pd.DataFrame:
    """Per scan: AD score, predicted class and outcome (TP/FP/TN/FN, positive class AD) with its split."""
    keep = [c for c in ("scan_id", "subject_id", "session", "diagnosis", "age", "sex", "site") if c in cohort]
    out = cohort[keep].copy()
    out["split"] = cohort["run_split"].to_numpy() if "run_split" in cohort else cohort.get("split")
    out["ad_score"] = np.round(np.asarray(ad_score, float), 6)
    pred_ad = out["ad_score"].to_numpy() >= threshold
    out["predicted"] = np.where(pred_ad, "AD", "HC")
    out["outcome"] = outcome(out["diagnosis"].to_numpy() == "AD", pred_ad)
    return out


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


def evaluate(ws: Workspace, *, run: Run | None = None, checkpoint: str | os.PathLike | None = None,
             split: str = "test", device: torch.device | None = None) -> dict:
    """Metrics of the best checkpoint of ``run`` (or of ``checkpoint``) on ``split``, recomputed from scans."""
    from lib.data.overview import load_cohort

    if run is not None:
        cohort = _scan_table(ws, run)
        path = run.best_checkpoint
    elif checkpoint is not None:
        cohort = load_cohort(ws)
        cohort["run_split"] = cohort["split"]
        path = Path(checkpoint)
    else:
        raise TrainingError("give a run or a checkpoint to evaluate")
    model, normaliser, meta = load_checkpoint(path, device)
    sel = cohort[cohort["run_split"] == split]
    if sel.empty:
        raise TrainingError(f"the {split} split has no scans")
    store = volume_store(ws, cohort, Grid(float(meta["resolution"])))
    scores, _ = predict_scores(model, normaliser, store, sel["scan_id"].tolist(), device=device)
    m = classification_metrics(sel["diagnosis"] == "AD", scores)
    return {"checkpoint": str(path), "checkpoint_sha256": file_hash(path), "split": split, "scans": len(sel),
            **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in m.items()}}


# --- the shipped demo model ----------------------------------------------------------------------------------
def shipped_models() -> list[Path]:
    """Run folders shipped in ``models/`` (each a finished run: config, best.pt, metrics, summary)."""
    from lib.data.workspace import REPO_ROOT

    root = REPO_ROOT / "models"
    return sorted(d for d in root.iterdir() if (d / "best.pt").exists() and (d / "config.json").exists()) \
        if root.exists() else []


def install_shipped_run(ws: Workspace, folder: Path) -> Run:
    """Copy a shipped run into the workspace (once) so that every page can use it; predictions come after.

    Refuses a workspace whose cohort differs from the one the model was trained on.
    """
    import shutil

    from lib.data.overview import load_cohort

    config = atomic.read_json(folder / "config.json")
    target = ws.runs_dir / folder.name
    if (target / "config.json").exists():
        return Run(target, atomic.read_json(target / "config.json"))
    if cohort_fingerprint(load_cohort(ws)) != config.get("cohort_fingerprint"):
        raise TrainingError(f"{folder.name} was trained on a different cohort than {ws.root}")
    tmp = ws.runs_dir / f".{folder.name}.installing"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(folder, tmp)
    config.update(workspace=str(ws.root), shipped=True)
    atomic.write_json(tmp / "config.json", config)
    state = atomic.read_json(tmp / "state.json") or {}
    state.pop("pid", None)
    atomic.write_json(tmp / "state.json", state)
    try:
        os.rename(tmp, target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # someone else installed it first
    return Run(target, atomic.read_json(target / "config.json"))


def export_run(run: Run, dest: str | os.PathLike) -> Path:
    """Copy what another machine needs to use a finished run (no resume point, no predictions) to ``dest/<run>``."""
    import shutil

    if run.status != "done":
        raise TrainingError(f"run {run.id} is {run.status}; only finished runs can be shipped")
    target = Path(dest) / run.id
    tmp = Path(dest) / f".{run.id}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in ("config.json", "state.json", "metrics.jsonl", "best.pt", "summary.json"):
        shutil.copy2(run.dir / name, tmp / name)
    config = atomic.read_json(tmp / "config.json")
    config.pop("workspace", None)
    config.pop("job_id", None)
    atomic.write_json(tmp / "config.json", config)
    state = atomic.read_json(tmp / "state.json")
    state.pop("pid", None)
    atomic.write_json(tmp / "state.json", state)
    shutil.rmtree(target, ignore_errors=True)
    os.rename(tmp, target)
    return target
