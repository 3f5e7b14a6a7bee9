"""The Training page's form: defaults that finish on this machine and the duration they take, measured.

On a CPU the form proposes the shipped demo model's settings (3 mm grid, lr 1e-3, patience 15, 80 epochs:
``models/README.md``), which train the demo in about 40 min on 2 cores; on a GPU the paper's (the workspace's
grid, lr 1e-4, patience 8, 100 epochs). The duration comes from a few timed optimiser steps of the chosen model
on the chosen grid, measured once per machine, device and grid and kept in the workspace's cache.
"""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass

from lib.core import atomic
from lib.data.workspace import REPO_ROOT, Workspace

NICENESS = 10   # the jobs' (lib.jobs.worker): below the server's page renders
RETRY_S = 600   # a failed measurement is tried again after this many seconds
_measuring: list[subprocess.Popen] = []

PAPER = {"lr": 1e-4, "patience": 8, "epochs": 100}
"""Böhle et al. 2019's settings (what a GPU trains in minutes)."""
DEMO_MODEL = {"resolution": 3.0, "lr": 1e-3, "patience": 15, "epochs": 80}
"""The shipped demo model's settings (models/README.md): what makes CPU training practical."""


@dataclass(frozen=True)
class FormDefaults:
    resolution: float
    lr: float
    patience: int
    epochs: int
    why: str


def form_defaults(ws: Workspace, device: str) -> FormDefaults:
    """The form's first values on ``device`` ("cpu" or "cuda") and one sentence saying where they come from."""
    if device == "cpu":
        return FormDefaults(DEMO_MODEL["resolution"], DEMO_MODEL["lr"], DEMO_MODEL["patience"], DEMO_MODEL["epochs"],
                            "No GPU here: the form proposes the shipped demo model's settings (3 mm grid, learning "
                            "rate 1e-3, patience 15), which finish on a CPU; the paper's are 1 mm, 1e-4 and 8.")
    return FormDefaults(float(ws.grid.resolution), PAPER["lr"], PAPER["patience"], PAPER["epochs"],
                        "GPU found: the form proposes the paper's settings (learning rate 1e-4, patience 8).")


def split_sizes(ws: Workspace) -> dict[str, int]:
    """Scans per part of the workspace's split (train, validation, test)."""
    from lib.data.scans import load_cohort
    from lib.data.splits import assign, load_splits

    cohort = load_cohort(ws)
    return assign(cohort, load_splits(ws, cohort))["split"].value_counts().to_dict()


def measure(model: str, shape: tuple[int, int, int], device: str, *, batch: int = 2, steps: int = 2) -> dict:
    """Seconds per scan of a training step and of an evaluation pass of ``model`` on volumes of ``shape``,
    timed after one warm-up step (random data: the time does not depend on the values)."""
    import torch

    from lib.learn.models import build_model

    dev = torch.device(device)
    net = build_model(model, shape).to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    x = torch.randn(batch, 1, *shape, device=dev)
    y = torch.zeros(batch, dtype=torch.long, device=dev)

    def train_step():
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()

    def timed(fn) -> float:
        fn()   # warm-up: allocations, kernels chosen
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(steps):
            fn()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - t0) / (steps * batch)

    net.train()
    train = timed(train_step)
    net.eval()
    with torch.no_grad():
        evaluate = timed(lambda: net(x))
    return {"train_s_per_scan": train, "eval_s_per_scan": evaluate, "measured": time.time()}


def _key(model: str, resolution: float, device: str) -> str:
    # a job's process uses torch's default threads (one per core), whatever the server process set
    return f"{platform.node()}|{device}|{os.cpu_count()} cores|{model}|{resolution:g} mm"


def throughput(ws: Workspace, model: str, resolution: float, device: str) -> dict:
    """The measured rate of ``model`` on the ``resolution`` grid here (measured now unless cached per machine,
    device and cores)."""
    from lib.data.templates import Grid

    path, key = ws.cache_dir / "throughput.json", _key(model, resolution, device)
    known = atomic.read_json(path) or {}
    if key not in known:
        known = {**(atomic.read_json(path) or {}), key: measure(model, Grid(resolution).shape, device)}
        atomic.write_json(path, known)
    return known[key]


def known_throughput(ws: Workspace, model: str, resolution: float, device: str) -> dict | None:
    """The cached rate, or None (never measures: a page calls this)."""
    return (atomic.read_json(ws.cache_dir / "throughput.json") or {}).get(_key(model, resolution, device))


def start_measuring(ws: Workspace, model: str, resolution: float, device: str) -> bool:
    """Measure the rate in a process of its own at the jobs' niceness, not in the server's, where a few
    training steps would hold the cores while other users' pages render. One measurement per key at a time
    (a marker holds its process id). True while one runs; False when the last one ended without a rate
    (tried again after :data:`RETRY_S`)."""
    for proc in _measuring:   # reap the finished ones (a zombie would still answer os.kill)
        proc.poll()
    ws.cache_dir.mkdir(parents=True, exist_ok=True)
    marker = ws.cache_dir / f".throughput-{hashlib.sha256(_key(model, resolution, device).encode()).hexdigest()[:12]}"
    try:
        pid, age = int(marker.read_text()), time.time() - marker.stat().st_mtime
    except (FileNotFoundError, ValueError):
        pid, age = None, None
    if pid is not None:
        try:
            os.kill(pid, 0)
            return True   # still measuring
        except ProcessLookupError:
            if age < RETRY_S:
                return False
        except PermissionError:   # another user's process of that id: not ours, measure again
            pass
    proc = subprocess.Popen(
        [sys.executable, "-m", "lib.views.training_form", str(ws.root), model, f"{resolution:g}", device],
        cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, preexec_fn=lambda: os.nice(NICENESS))
    _measuring.append(proc)
    atomic.write_text(marker, str(proc.pid))
    return True


def estimate(rate: dict, sizes: dict[str, int], epochs: int) -> tuple[float, str]:
    """(seconds per epoch, one line): an epoch trains on the train scans and evaluates the validation scans."""
    per_epoch = sizes.get("train", 0) * rate["train_s_per_scan"] + sizes.get("validation", 0) * rate["eval_s_per_scan"]
    most = per_epoch * epochs
    return per_epoch, (f"Estimated from a measured step on this machine: about {format_seconds(per_epoch)} per epoch "
                       f"({sizes.get('train', 0)} training, {sizes.get('validation', 0)} validation scans), so at "
                       f"most {format_seconds(most)} for {epochs} epochs; early stopping usually ends sooner.")


def format_seconds(s: float) -> str:
    return f"{s:.0f} s" if s < 90 else f"{s / 60:.0f} min" if s < 5400 else f"{s / 3600:.1f} h"


if __name__ == "__main__":   # the measuring process of start_measuring: WORKSPACE MODEL RESOLUTION DEVICE
    root, model_name, res, dev = sys.argv[1:5]
    throughput(Workspace.open(root), model_name, float(res), dev)
