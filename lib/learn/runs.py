"""Run folders: what a run records on disk, its checkpoints, creating a run and shipping a finished one.

A run is one model trained on one split with one seed::

    runs/<run>/config.json     the request (TrainConfig), the grid, the split's subjects, the fitted normaliser
    runs/<run>/state.json      status, epoch, best epoch, early-stopping counter (written atomically every epoch)
    runs/<run>/metrics.jsonl   one line per logged batch ("batch") and per epoch ("epoch", train + validation)
    runs/<run>/last.pt         model + optimiser after the last finished epoch (resume point)
    runs/<run>/best.pt         the model of the best validation epoch (what every analysis uses)
    runs/<run>/predictions.csv every scan: score of the positive class (column ad_score), predicted class, outcome TP/FP/TN/FN, split
    runs/<run>/summary.json    best epoch, validation and test metrics at the best epoch

The training loop is :mod:`lib.learn.training`; predicting with a run's best checkpoint is
:mod:`lib.learn.prediction`.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from lib.core import atomic, cache, memo
from lib.core.process import pid_alive
from lib.data.scans import load_cohort
from lib.data.splits import load_splits
from lib.data.templates import Grid
from lib.data.volumes import Normaliser, cohort_fingerprint
from lib.data.workspace import REPO_ROOT, Workspace
from lib.learn.models import REGISTRY, build_model, default_device
from lib.data.classes import DEFAULT_CLASSES, Classes

CHECKPOINT_FORMAT = "relevance-atlas-checkpoint-1"



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
    init_from: str | None = None         # a run, run folder, shipped model or checkpoint to start from
    freeze: int = 0                      # convolution blocks (from the input) not trained after --init-from

    def __post_init__(self):
        for name in ("max_epochs", "batch_size", "patience"):
            if int(getattr(self, name)) < 1:
                raise TrainingError(f"{name.replace('_', ' ')} must be at least 1, not {getattr(self, name)}")
        if not float(self.lr) > 0:
            raise TrainingError(f"the learning rate must be positive, not {self.lr}")

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

    @property
    def classes(self) -> Classes:
        """The task the run was trained on (recorded at its creation; AD vs HC for older runs)."""
        task = self.config.get("task")
        return Classes.from_json(task) if task else DEFAULT_CLASSES

    @property
    def origin(self) -> dict | None:
        """Where the run's first weights came from (``--init-from``): source run or checkpoint, its task and
        the frozen blocks; None for a run trained from scratch."""
        return self.config.get("init_from")

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
            cache.discard(p)
            return None
        return read_predictions(p)

    def metrics(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(batch losses, epoch metrics) as flat tables; a torn last line (a kill mid-write) is skipped."""
        return read_metrics(self.dir / "metrics.jsonl")

    def load_model(self, device: torch.device | str | None = None) -> tuple[nn.Module, Normaliser]:
        model, normaliser, _ = load_checkpoint(self.best_checkpoint, device)
        return model, normaliser



_PREDICTION_COLUMNS = ("scan_id", "diagnosis", "split", "ad_score", "predicted", "outcome")



@memo.memoized(16)
def read_predictions(path: Path) -> pd.DataFrame:
    """A predictions file, read once per version of it (every analysis page asks on every rerun)."""
    return pd.read_csv(path, dtype={"scan_id": str, "subject_id": str})


def predictions_problem(run_dir: str | os.PathLike) -> str | None:
    """What is wrong with a run's ``predictions.csv`` (a sentence) or None.

    With its checksum marker (:mod:`lib.core.cache`) the file must match it. A file without one (written by an
    older version) must parse, hold every scan of the run exactly once with a score in [0, 1] and agree
    with its predicted classes; it is then sealed as it is, so existing runs keep their predictions.
    """
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
        positive = (Classes.from_json(config["task"]) if config.get("task") else DEFAULT_CLASSES).positive
        if not score.between(0, 1).all() or ((score >= 0.5) != (df["predicted"] == positive)).any():
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



# a checkpoint's hash (the key of every heatmap and analysis of its run) is the SHA-256 of its bytes
file_hash = cache.sha256



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
                    normaliser: Normaliser, epoch: int, extra: dict | None = None,
                    classes: Classes = DEFAULT_CLASSES) -> None:
    """Write a self-contained checkpoint atomically (readable with ``torch.load(weights_only=True)``)."""
    payload = {
        "format": CHECKPOINT_FORMAT, "model": model_name, "input_shape": list(input_shape),
        "resolution": float(resolution), "classes": list(classes.names), "normaliser": normaliser.to_dict(),
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



# --- creating a run ------------------------------------------------------------------------------------------
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



def new_run_id(cfg: TrainConfig) -> str:
    fold = f"-f{cfg.fold}" if cfg.fold is not None else ""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{cfg.model}{fold}-s{cfg.seed}-{secrets.token_hex(2)}"



def create_run(ws: Workspace, cfg: TrainConfig, *, run_id: str | None = None, group: str | None = None) -> Run:
    """Make the run folder with its config (split snapshot included); nothing is trained yet."""
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
    origin = None
    if cfg.init_from:
        from lib.learn import transfer

        try:
            origin = transfer.origin(ws, cfg.init_from, model=cfg.model, input_shape=grid.shape,
                                     classes=ws.classes, freeze=cfg.freeze)
        except transfer.TransferError as exc:
            raise TrainingError(str(exc)) from exc
    elif cfg.freeze:
        raise TrainingError("--freeze needs --init-from: freezing freshly initialised blocks trains nothing there")
    config = {"id": run_id, "group": group, "created": time.time(), "workspace": str(ws.root),
              "train": asdict(cfg), "resolution": grid.resolution, "input_shape": list(grid.shape),
              "cohort_fingerprint": cohort_fingerprint(cohort), "parts": parts,
              "torch": torch.__version__, "task": ws.classes.to_json(), "init_from": origin}
    atomic.write_json(d / "config.json", config)
    atomic.write_json(d / "state.json", {"status": "created", "epoch": -1, "max_epochs": cfg.max_epochs})
    return Run(d, config)



def run_cohort(ws: Workspace, run: Run) -> pd.DataFrame:
    """The workspace's cohort with each scan's part of ``run`` (``run_split``: train / validation / test);
    refuses a cohort whose scans or diagnoses changed since the run was created."""
    cohort = load_cohort(ws)
    if cohort_fingerprint(cohort) != run.config.get("cohort_fingerprint"):
        raise TrainingError(f"run {run.id}: the workspace's cohort changed since the run was created "
                            "(scans or diagnoses differ); start a new run")
    part_of = {s: p for p, subs in run.config["parts"].items() for s in subs}
    cohort = cohort.copy()
    cohort["run_split"] = cohort["subject_id"].astype(str).map(part_of)
    return cohort



# --- the shipped demo model ----------------------------------------------------------------------------------
MODELS_ENV = "RELEVANCE_ATLAS_MODELS"


def shipped_models() -> list[Path]:
    """Run folders shipped in ``models/`` (each a finished run: config, best.pt, metrics, summary), or in the
    folder ``$RELEVANCE_ATLAS_MODELS`` names (a lab's own models for its demo, a test's small one)."""
    root = Path(os.environ[MODELS_ENV]) if os.environ.get(MODELS_ENV) else REPO_ROOT / "models"
    return sorted(d for d in root.iterdir() if (d / "best.pt").exists() and (d / "config.json").exists()) \
        if root.exists() else []



def install_shipped_run(ws: Workspace, folder: Path) -> Run:
    """Copy a shipped run into the workspace (once) so that every page can use it; predictions come after.

    Refuses a workspace whose cohort differs from the one the model was trained on.
    """
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

