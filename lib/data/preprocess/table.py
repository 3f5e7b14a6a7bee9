"""A raw cohort table into a new workspace: every scan preprocessed (in parallel processes, each cached by
content), the QC of all in ``OUT/preprocessed/qc.csv``, and a workspace whose table points at the registered
scans and keeps every other column of the raw table.

Scans whose status is "flagged" or "failed" are not passed on: the new workspace's ``cohort.csv`` lists the
usable scans ("ok", "passed_through") and ``preprocessed/excluded.csv`` keeps the others' rows with the
reason, so training, splits and every page see only scans that reached the template.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import shutil
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

import pandas as pd

from lib.core import atomic
from lib.core.progress import Progress
from lib.data.preprocess import qc
from lib.data.preprocess.pipeline import ScanResult, Settings, preprocess_scan

THREADS_ENV = ("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


class PreprocessError(ValueError):
    """The table cannot be preprocessed at all (unreadable, duplicate scan ids, nothing usable)."""


def set_threads(threads: int) -> None:
    """ITK's (and BLAS') thread count for this process; takes effect when ANTsPy is first imported."""
    for name in THREADS_ENV:
        os.environ[name] = str(int(threads))


def folder_name(scan_id: str) -> str:
    """A scan id as a folder name (path separators and odd characters become ``_``)."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", str(scan_id)).lstrip(".")
    return name or "scan"


def _one(task: tuple) -> ScanResult:
    src, settings, folder, labels = task
    return preprocess_scan(src, settings, folder, labels=labels)


def _read(table: Path, classes=None) -> pd.DataFrame:
    from lib.data.classes import DEFAULT_CLASSES
    from lib.data.cohort import CohortError, read_table

    try:
        cohort = read_table(table, classes or DEFAULT_CLASSES)
    except CohortError as exc:
        raise PreprocessError(str(exc)) from exc
    names = cohort["scan_id"].astype(str).map(folder_name)
    dup = sorted(names[names.duplicated()].unique())
    if dup:
        raise PreprocessError(f"{table}: scan ids repeat ({', '.join(dup[:5])}); each row needs its own scan_id")
    base = table if table.is_dir() else table.parent
    cohort["path"] = [str(p if Path(p).is_absolute() else (base / p).resolve()) for p in cohort["path"]]
    return cohort


def run_scans(tasks: list[tuple], workers: int, threads: int, progress: Progress | None) -> list[ScanResult]:
    """Every task's result in order; separate (spawned) processes when ``workers`` > 1. On cancel the pool's
    waiting scans are dropped and finished ones stay cached."""
    done: dict[int, ScanResult] = {}

    def report(result: ScanResult):
        if progress:
            note = "cached" if result.cached else f"{result.seconds:.0f} s"
            progress(len(done), len(tasks), f"{result.scan_id}: {result.status} ({note})")

    if progress:
        progress(0, len(tasks), f"{len(tasks)} scans, {min(workers, len(tasks))} at a time")
    if workers <= 1 or len(tasks) <= 1:
        set_threads(threads)
        for i, task in enumerate(tasks):
            done[i] = _one(task)
            report(done[i])
        return [done[i] for i in range(len(tasks))]
    ctx = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=set_threads, initargs=(threads,))
    try:
        futures = {pool.submit(_one, t): i for i, t in enumerate(tasks)}
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in finished:
                done[futures[f]] = f.result()
                report(done[futures[f]])
    except BaseException:   # cancelled (SIGTERM, Ctrl-C): stop the running scans too, their folders stay whole
        for process in list(getattr(pool, "_processes", {}).values()):
            process.terminate()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return [done[i] for i in range(len(tasks))]


def preprocess_table(table: str | os.PathLike, settings: Settings, out: str | os.PathLike,
                     progress: Progress | None = None, workers: int = 2, classes=None,
                     task: dict | None = None) -> Path:
    """Preprocess every scan of ``table`` into ``out/preprocessed/`` and make ``out`` a workspace on
    ``Grid(settings.resolution)``; returns ``out``. A re-run (or a run after a crash) redoes only the scans
    whose result is missing or whose input or settings changed. ``classes`` (a :class:`lib.data.classes.Classes`)
    reads the diagnoses of another task than AD vs HC; ``task``: what ``init`` stores of it in the workspace."""
    from lib.data.splits import make_splits, save_splits
    from lib.data.validation import validate_table
    from lib.data.workspace import Workspace

    table, out = Path(table).expanduser().resolve(), Path(out).expanduser().resolve()
    cohort = _read(table, classes)
    root = out / "preprocessed"
    root.mkdir(parents=True, exist_ok=True)
    for leftover in [*root.glob(".*.tmp-*"), *root.glob(".*.old-*")]:   # of a run that was killed
        shutil.rmtree(leftover, ignore_errors=True)
    has_labels = "labels" in cohort.columns
    tasks = []
    for _, row in cohort.iterrows():
        labels = row["labels"] if has_labels and isinstance(row["labels"], str) and row["labels"] else None
        if labels and not Path(labels).is_absolute():
            labels = str((table.parent / labels).resolve())
        tasks.append((row["path"], settings, root / folder_name(row["scan_id"]), labels))
    results = run_scans(tasks, workers, settings.threads, progress)
    qc_table = pd.DataFrame([r.row(settings.registration) for r in results], columns=list(qc.COLUMNS))
    qc_table["scan_id"] = cohort["scan_id"].astype(str).to_numpy()
    atomic.write_csv(root / "qc.csv", qc_table)
    usable = [r.usable for r in results]
    if not any(usable):
        raise PreprocessError(f"no scan of {table} reached the template; see {root / 'qc.csv'}")
    new = cohort.drop(columns=[c for c in ("row",) if c in cohort]).copy()
    new.insert(new.columns.get_loc("path") + 1, "raw_path", new["path"])
    new["path"] = [str(r.t1.relative_to(out)) for r in results]
    new["preprocess_status"] = [r.status for r in results]
    new["preprocess_message"] = [r.message for r in results]
    keep = pd.Series(usable, index=new.index)
    atomic.write_csv(root / "excluded.csv", new[~keep])
    new = new[keep].reset_index(drop=True)
    ws = Workspace.create(out, kind="study", resolution=float(settings.resolution),
                          preprocessing={**settings.canonical(), "table": str(table)}, **(task or {}))
    atomic.write_csv(ws.cohort_csv, new)
    save_splits(ws, make_splits(new))
    report = validate_table(ws.cohort_csv, ws, check_images=True)   # the pages read the last validation
    atomic.write_csv(ws.qc_csv, report.qc)
    atomic.write_text(ws.validation_json, report.to_json())
    ws.update_config(complete=True, n_scans=len(new))
    return out
