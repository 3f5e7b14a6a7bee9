"""A heatmap store computed in chunks of scans on a cluster's workers, into the same store as a local run.

The job's process (the driver) holds the store's lock and its work in progress (``<key>.partial/``: maps,
scale, done); each worker explains a chunk of rows and writes them atomically to
``<key>.partial/chunks/<first>-<last>.npz`` on the shared workspace. The driver copies each arrived chunk into
the maps, marks its rows done (the local run's resume record), then deletes the chunk file. So:

* a chunk retried after its worker died rewrites the same file in one rename: nothing half written, nothing
  counted twice;
* chunks that arrived before the driver stopped (cancel, head gone) are absorbed by the next attempt, which
  submits only the rows still missing (locally or on a cluster);
* chunk boundaries are multiples of the batch size, so every batch is the batch a local run computes.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import numpy as np

from lib.core import atomic, distribute
from lib.data.workspace import Workspace

_MODEL: dict = {}   # the last checkpoint a worker process loaded: chunks of one job reuse it


def chunk_dir(partial: Path) -> Path:
    return partial / "chunks"


def explain_chunk(ws_root: str, run_id: str, method: str, target: str, params: dict, rows: list[int],
                  batch_size: int, store_name: str) -> str:
    """Explain the scans at ``rows`` of run ``run_id``'s cohort and write them to the chunk file of store
    ``store_name`` (whose key the worker checks against what it sees: another checkpoint is an error).
    Runs on a worker that mounts the workspace; returns the chunk file's name."""
    from lib.explain.heatmaps import _lookup, explain_rows
    from lib.learn.runs import load_checkpoint, load_run

    ws = Workspace.open(ws_root)
    run = load_run(ws, run_id)
    _cohort, volumes, call, _canonical, folder = _lookup(ws, run, method, params, target)
    if folder.name != store_name:
        raise RuntimeError(f"run {run_id} on this worker gives heatmap store {folder.name}, the job computes "
                           f"{store_name}: does this worker see the same workspace and checkpoint?")
    sha = run.checkpoint_hash()
    if _MODEL.get("sha") != sha:
        _MODEL.clear()
        _MODEL.update(sha=sha, loaded=load_checkpoint(run.best_checkpoint))
    model, normaliser, _meta = _MODEL["loaded"]
    rows = np.asarray(rows, dtype=np.int64)
    parts = [explain_rows(model, normaliser, volumes, rows[i:i + batch_size], method, target, call, run.classes)
             for i in range(0, len(rows), batch_size)]
    out = chunk_dir(folder.with_name(folder.name + ".partial"))
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{rows[0]:07d}-{rows[-1]:07d}.npz"
    with atomic.atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, rows=rows, maps=np.concatenate([p[0] for p in parts]),
                     scale=np.concatenate([p[1] for p in parts]))
    return path.name


def _absorb_file(path: Path, absorb, note: str = "") -> int:
    with np.load(path) as z:
        rows = z["rows"]
        absorb(rows, z["maps"], z["scale"], note)
    path.unlink()
    return len(rows)


def compute_distributed(dist: distribute.Distributor, ws: Workspace, run, method: str, target: str, params: dict,
                        partial: Path, todo: np.ndarray, batch_size: int, absorb) -> None:
    """Explain rows ``todo`` on ``dist``'s workers; ``absorb(rows, maps, scale, note)`` stores each chunk."""
    folder = chunk_dir(partial)
    left = set(int(r) for r in todo)
    # chunks that arrived before the last attempt stopped (".name": a write a killed worker left unfinished)
    for path in sorted(p for p in folder.glob("*.npz") if not p.name.startswith(".")) if folder.exists() else []:
        try:
            with np.load(path) as z:
                rows = [int(r) for r in z["rows"]]
        except (OSError, ValueError, KeyError):
            path.unlink()
            continue
        if set(rows) <= left:
            _absorb_file(path, absorb)
            left -= set(rows)
        else:
            path.unlink()
    gpu = True
    chunks = distribute.chunk_rows(sorted(left), batch_size, dist.workers(gpu))
    calls = [distribute.Call(explain_chunk, (str(ws.root), run.id, method, target, dict(params), rows, batch_size,
                                             partial.name.removesuffix(".partial")),
                             gpu=gpu, label=f"heatmaps {rows[0]}-{rows[-1]}") for rows in chunks]
    finished = 0
    with contextlib.closing(dist.run(calls)) as results:   # closed early (cancel, error): its tasks are cancelled
        for _i, name in results:
            finished += 1
            busy = distribute.busy(min(dist.workers(gpu), len(calls) - finished))
            _absorb_file(folder / name, absorb, f" · chunk {finished}/{len(calls)} · {busy}")
    shutil.rmtree(folder, ignore_errors=True)
