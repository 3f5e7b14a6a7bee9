"""Every scan of a cohort on one grid, cached on disk as a memory-mapped array.

Training, prediction, heatmaps and evaluation all read the same store, so a
scan is loaded (and resampled, when the run's grid differs from the scans')
once per grid. The store lives in ``<workspace>/cache/volumes/<key>/`` where
the key hashes the grid and every scan's path, size and modification time: a
changed scan gives a new store, never a stale one. It is built in a temporary
folder, sealed (:func:`lib.core.cache.seal`: checksums in ``complete.json``, written last)
and renamed into place, so a reader never sees half a store; a store that no longer
matches its checksums (or has no marker) is rebuilt on its next use.

Intensity normalisation follows scikit-learn's fit/transform split: a
:class:`Normaliser` is fitted on the training scans only and applied to all.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pandas as pd

from lib.core import cache
from lib.data.templates import Grid
from lib.data.workspace import Workspace
from lib.core.progress import Progress

STORE_VERSION = 1


def _scan_key(ws: Workspace, cohort: pd.DataFrame, grid: Grid) -> str:
    h = hashlib.sha256(f"v{STORE_VERSION};{grid.resolution:g};{grid.shape}".encode())
    for scan_id, path in zip(cohort["scan_id"], cohort["path"]):
        p = ws.resolve(path)
        st = p.stat()
        h.update(f"{scan_id}={p}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:16]


class VolumeStore:
    """Read-only view of a built store: ``array[i]`` is scan ``scan_ids[i]`` as float32 ``(X, Y, Z)``."""

    def __init__(self, folder: Path):
        """Raises :class:`lib.core.cache.CacheError` when the store is incomplete or its files are altered."""
        self.folder = Path(folder)
        cache.require(self.folder, "volume store", "any job that reads the scans (it is rebuilt)")
        meta = json.loads((self.folder / "index.json").read_text())
        self.scan_ids: list[str] = [str(s) for s in meta["scan_ids"]]
        self.grid = Grid(float(meta["resolution"]))
        self.shape = tuple(meta["shape"])
        self.array = np.load(self.folder / "volumes.npy", mmap_mode="r")
        self._row = {s: i for i, s in enumerate(self.scan_ids)}

    def __len__(self) -> int:
        return len(self.scan_ids)

    def rows(self, scan_ids: Iterable[str]) -> np.ndarray:
        """Row numbers of ``scan_ids`` (KeyError naming the first unknown scan)."""
        return np.array([self._row[str(s)] for s in scan_ids], dtype=np.int64)

    def get(self, scan_ids: Iterable[str]) -> np.ndarray:
        """A float32 copy ``(N, X, Y, Z)`` of the given scans."""
        return np.asarray(self.array[self.rows(scan_ids)], dtype=np.float32)


def store_path(ws: Workspace, cohort: pd.DataFrame, grid: Grid) -> Path:
    return ws.cache_dir / "volumes" / _scan_key(ws, cohort, grid)


def volume_store(ws: Workspace, cohort: pd.DataFrame, grid: Grid | None = None,
                 progress: Progress | None = None) -> VolumeStore:
    """The store of ``cohort``'s scans on ``grid`` (default: the workspace grid), built if missing.

    Scans off the grid are resampled with nilearn (:func:`lib.data.validation.load_on_grid`).
    Raises :class:`lib.data.validation.ImageError` naming the scan if one cannot be read.
    """
    from lib.data.images import ImageError, load_on_grid

    grid = grid or ws.grid
    target = store_path(ws, cohort, grid)
    if cache.ok(target):
        return VolumeStore(target)
    if target.exists():   # corrupted, unfinished or of an older version: rebuilt
        cache.discard(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        n = len(cohort)
        arr = np.lib.format.open_memmap(tmp / "volumes.npy", mode="w+", dtype=np.float32,
                                        shape=(n, *grid.shape))
        for i, (scan_id, path) in enumerate(zip(cohort["scan_id"], cohort["path"])):
            try:
                img, _ = load_on_grid(ws.resolve(path), grid)
            except ImageError as exc:
                raise ImageError(f"scan {scan_id}: {exc}") from exc
            arr[i] = np.asarray(img.dataobj, dtype=np.float32)
            if progress:
                progress(i + 1, n, f"loading scans on the {grid.resolution:g} mm grid")
        arr.flush()
        del arr
        (tmp / "index.json").write_text(json.dumps({
            "scan_ids": [str(s) for s in cohort["scan_id"]], "resolution": grid.resolution,
            "shape": list(grid.shape), "version": STORE_VERSION}))
        cache.seal(tmp, kind="volumes", resolution=grid.resolution, scans=n)
        try:
            os.rename(tmp, target)
        except OSError:
            # another process finished the same store first: use theirs
            if not cache.ok(target):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return VolumeStore(target)


@dataclass
class Normaliser:
    """Intensity normalisation fitted on training scans, applied to every scan.

    ``scan_scaling="brain_mean"`` first divides each scan by the mean of its
    non-zero voxels (a per-scan operation that removes scanner gain, nothing
    fitted); ``kind="zscore"`` then subtracts the training voxels' mean and
    divides by their standard deviation. ``kind="none"`` leaves intensities.
    """

    kind: str = "zscore"
    scan_scaling: str = "brain_mean"
    mean: float = 0.0
    std: float = 1.0
    fitted_on: int = 0

    def scale_scans(self, x: np.ndarray) -> np.ndarray:
        """Per-scan scaling of a batch ``(N, X, Y, Z)`` (float32 copy)."""
        x = np.array(x, dtype=np.float32, copy=True)
        if self.scan_scaling == "brain_mean":
            for i in range(len(x)):
                nz = x[i][x[i] > 0]
                if nz.size:
                    x[i] /= np.float32(nz.mean())
        elif self.scan_scaling != "none":
            raise ValueError(f"unknown scan_scaling {self.scan_scaling!r}")
        return x

    def fit(self, store: VolumeStore, scan_ids: Iterable[str]) -> "Normaliser":
        """Fit on ``scan_ids`` (the training split) only, streaming one scan at a time."""
        total = total_sq = 0.0
        count = 0
        scan_ids = list(scan_ids)
        for row in store.rows(scan_ids):
            x = self.scale_scans(store.array[row:row + 1]).astype(np.float64)
            total += float(x.sum())
            total_sq += float((x * x).sum())
            count += x.size
        if self.kind == "zscore":
            if not count:
                raise ValueError("cannot fit the intensity normalisation on zero training scans")
            self.mean = total / count
            self.std = max(float(np.sqrt(max(total_sq / count - self.mean ** 2, 0.0))), 1e-8)
        elif self.kind != "none":
            raise ValueError(f"unknown normalisation {self.kind!r}")
        self.fitted_on = len(scan_ids)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Normalised float32 copy of a batch ``(N, X, Y, Z)``."""
        x = self.scale_scans(x)
        if self.kind == "zscore":
            x -= np.float32(self.mean)
            x /= np.float32(self.std)
        return x

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Normaliser":
        return cls(**{k: d[k] for k in ("kind", "scan_scaling", "mean", "std", "fitted_on") if k in d})


def cohort_fingerprint(cohort: pd.DataFrame) -> str:
    """Hash of the scan IDs and diagnoses a run was trained on (detects a changed cohort, cheaply)."""
    h = hashlib.sha256()
    for s, d in sorted(zip(cohort["scan_id"].astype(str), cohort["diagnosis"].astype(str))):
        h.update(f"{s}:{d};".encode())
    return h.hexdigest()[:16]



def batches(rows: np.ndarray, size: int) -> list[np.ndarray]:
    """``rows`` cut into consecutive batches of at most ``size``."""
    return [rows[i:i + size] for i in range(0, len(rows), size)]


def load_batch(store: VolumeStore, rows: np.ndarray, normaliser: Normaliser) -> np.ndarray:
    """The normalised scans of store ``rows`` as one float32 batch ``(N, X, Y, Z)``, in the order asked."""
    # memmap fancy indexing reads in row order fastest; restore the requested order after
    order = np.argsort(rows, kind="stable")
    x = np.empty((len(rows), *store.shape), dtype=np.float32)
    x[order] = store.array[rows[order]]
    return normaliser.transform(x)
