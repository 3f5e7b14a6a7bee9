"""Heatmaps of a whole cohort, computed once per (checkpoint, method, parameters) and kept on disk.

A store lives in ``<workspace>/cache/heatmaps/<key>/`` where ``key`` hashes the
best checkpoint's SHA-256, the method's canonical parameters, the explained
class and the scans' content keys (see :mod:`lib.data.volumes`). Every page and
every user of a lab server reads the same store; nobody computes it twice:

* the job holds an exclusive file lock on the key while it computes, so a
  second request for the same work (another browser, another CLI call) waits
  for the first and then returns from the finished store;
* work in progress lives in ``<key>.partial/``; after each batch the maps are
  flushed and then the batch is marked done, so an interrupted job (cancel,
  SIGKILL, reboot) resumes where it stopped;
* the finished folder is sealed (:func:`lib.core.cache.seal`: checksums of its files in ``complete.json``,
  written last) and renamed into place in one step; a store whose files do not match (truncated,
  altered, marker missing) is never read: it counts as absent and is recomputed.

Storage: float16 scaled per scan by its largest absolute value (kept as
float32), so relevance of ~1e-6 per voxel keeps float16's 11-bit relative
precision instead of underflowing; region sums stay within 1e-3 of float32
relative to the region's absolute relevance (tested).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Iterable, Iterator

import nibabel as nib
import numpy as np
import torch

from lib.core import atomic, cache, distribute, memo
from lib.data.atlases import DEFAULT_ATLAS
from lib.data.templates import Grid
from lib.learn.runs import Run, load_checkpoint, run_cohort
from lib.data.volumes import VolumeStore, load_batch, volume_store
from lib.data.workspace import Workspace
from lib.core.progress import Progress
from lib.data.classes import DEFAULT_CLASSES


STORE_VERSION = 1

_CURRENT = object()   # compute_store's distributor: the running job's


class HeatmapStore:
    """A finished store: ``get(scan_id)`` → float32 ``(X, Y, Z)`` on the run's grid."""

    def __init__(self, folder: Path):
        """Raises :class:`lib.core.cache.CacheError` when the store is incomplete or its files are altered."""
        self.folder = Path(folder)
        cache.require(self.folder, "heatmap store", "python -m lib explain --run RUN --method METHOD")
        self.meta = json.loads((self.folder / "index.json").read_text())
        self.scan_ids: list[str] = [str(s) for s in self.meta["scan_ids"]]
        self.grid = Grid(float(self.meta["resolution"]))
        self.params: dict = self.meta["params"]
        self.maps = np.load(self.folder / "maps.npy", mmap_mode="r")
        self.scale = np.load(self.folder / "scale.npy")
        self._row = {s: i for i, s in enumerate(self.scan_ids)}

    def __len__(self) -> int:
        return len(self.scan_ids)

    def memo_key(self) -> tuple:
        """The store's identity for :mod:`lib.core.memo`: its folder and completeness marker (a rebuilt store
        is a new key)."""
        return memo.stamp(self.folder / cache.MARKER)

    def __contains__(self, scan_id) -> bool:
        return str(scan_id) in self._row

    def get(self, scan_id: str) -> np.ndarray:
        i = self._row[str(scan_id)]
        return self.maps[i].astype(np.float32) * self.scale[i]

    def iter(self, scan_ids: Iterable[str] | None = None) -> Iterator[tuple[str, np.ndarray]]:
        """``(scan_id, map)`` one at a time: O(one volume) memory for streaming aggregations."""
        for s in (self.scan_ids if scan_ids is None else scan_ids):
            yield str(s), self.get(s)

    def batch(self, scan_ids: Iterable[str]) -> np.ndarray:
        rows = np.array([self._row[str(s)] for s in scan_ids], dtype=np.int64)
        return self.maps[rows].astype(np.float32) * self.scale[rows, None, None, None]

    def to_nifti(self, scan_id: str) -> nib.Nifti1Image:
        return to_nifti(self.get(scan_id), self.grid)


def to_nifti(volume: np.ndarray, grid: Grid) -> nib.Nifti1Image:
    """A map on ``grid`` as NIfTI with the template affine (sform and qform = MNI), so viewers align it."""
    img = nib.Nifti1Image(np.asarray(volume, dtype=np.float32), grid.affine)
    img.set_sform(grid.affine, code="mni")
    img.set_qform(grid.affine, code="mni")
    img.header["descrip"] = b"relevance-atlas heatmap"
    return img


def to_native_space(volume: np.ndarray, grid: Grid, scan_path: str | os.PathLike) -> nib.Nifti1Image:
    """The map on a scan's own grid and affine: a scan registered by :mod:`lib.data.preprocess` goes back
    through its inverse transform to the raw scan's space; any other scan is resampled onto its file's grid
    (scans that were only resampled to the template)."""
    from nilearn.image import resample_to_img

    folder = Path(scan_path).parent
    if (folder / "qc.json").is_file() and (folder / "native_grid.nii.gz").is_file():
        from lib.data.preprocess import warp_to_native

        return warp_to_native(volume, grid.affine, folder)
    ref = nib.load(str(scan_path))
    if ref.ndim > 3:
        ref = nib.Nifti1Image(np.zeros(ref.shape[:3], np.float32), ref.affine)
    return resample_to_img(to_nifti(volume, grid), ref, interpolation="continuous", force_resample=True,
                           copy_header=True)


# --- keys -----------------------------------------------------------------------------------------------------
def resolve_params(method: str, params: dict, grid: Grid) -> tuple[dict, dict]:
    """``(call kwargs, canonical params)``; for a method that needs an atlas (area occlusion) the atlas name
    becomes its label array."""
    from lib.explain.catalogue import canonical_params, get

    call = dict(params)
    atlas_name = call.pop("atlas", None)
    if get(method).needs_atlas:
        from lib.data.templates import atlas

        atlas_name = atlas_name or DEFAULT_ATLAS
        img, _ = atlas(atlas_name, grid.resolution)
        call["labels"] = np.asarray(img.dataobj, dtype=np.int32)
    canonical = canonical_params(method, **call)
    if atlas_name:
        canonical["atlas"] = atlas_name
    return call, canonical


def store_key(checkpoint_sha: str, canonical: dict, target: str, volumes: VolumeStore) -> str:
    blob = json.dumps({"v": STORE_VERSION, "checkpoint": checkpoint_sha, "params": canonical, "target": target,
                       "scans": volumes.folder.name}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _lookup(ws: Workspace, run: Run, method: str, params: dict, target: str):
    cohort = run_cohort(ws, run)
    volumes = volume_store(ws, cohort, run.grid)
    call, canonical = resolve_params(method, params, run.grid)
    key = store_key(run.checkpoint_hash(), canonical, target, volumes)
    return cohort, volumes, call, canonical, ws.cache_dir / "heatmaps" / key


def find_store(ws: Workspace, run: Run, method: str = "lrp", target: str | None = None, **params
               ) -> HeatmapStore | None:
    """The finished store for this request, or None (nothing is computed here). ``target``: the explained
    class, by default the run's positive class."""
    target = target or run.classes.positive
    *_, folder = _lookup(ws, run, method, params, target)
    return HeatmapStore(folder) if cache.ok(folder) else None


def job_key(ws: Workspace, run: Run, method: str = "lrp", target: str | None = None, **params) -> str:
    """The job-runner key of this request: equal requests share one job."""
    target = target or run.classes.positive
    *_, folder = _lookup(ws, run, method, params, target)
    return f"explain:{folder.name}"


def explain_rows(model, normaliser, volumes: VolumeStore, rows, method: str, target: str, call: dict,
                 classes=DEFAULT_CLASSES) -> tuple[np.ndarray, np.ndarray]:
    """Maps of the scans at ``rows`` as stored: float16 scaled to a peak of 1, and the float32 peaks
    (``classes``: the run's, which name ``target``)."""
    from lib.explain import explain

    dev = next(model.parameters()).device
    x = torch.from_numpy(load_batch(volumes, rows, normaliser)).unsqueeze(1).to(dev)
    r = explain(model, x, method=method, target=target, classes=classes, **call)[:, 0].float()
    peak = r.abs().flatten(1).amax(1).clamp_min(1e-30)
    return (r / peak[:, None, None, None]).cpu().numpy().astype(np.float16), peak.cpu().numpy()


@contextlib.contextmanager
def _exclusive(path: Path, on_wait: Callable[[], None] | None = None):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait:
                on_wait()
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _open_partial(partial: Path, n: int, shape) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(maps, done, scale)`` of the work in progress in ``partial`` (resumed), or new ones."""
    maps_path, done_path, scale_path = partial / "maps.npy", partial / "done.npy", partial / "scale.npy"
    if maps_path.exists() and done_path.exists():
        try:
            maps = np.load(maps_path, mmap_mode="r+")
            done = np.load(done_path)
            scale = np.load(scale_path)
            if maps.shape != (n, *shape) or done.shape != (n,) or scale.shape != (n,):
                raise ValueError("work in progress of another shape")
            return maps, done, scale
        except (OSError, ValueError, EOFError):   # damaged work in progress: start again
            pass
    maps = np.lib.format.open_memmap(maps_path, mode="w+", dtype=np.float16, shape=(n, *shape))
    return maps, np.zeros(n, dtype=bool), np.zeros(n, dtype=np.float32)


def compute_store(ws: Workspace, run: Run, method: str = "lrp", *, target: str | None = None, batch_size: int = 4,
                  device: torch.device | str | None = None, progress: Progress | None = None,
                  distributor=_CURRENT, **params) -> HeatmapStore:
    """Explain every scan of ``run``'s cohort with ``method`` and store the maps (or return the stored ones).

    With a distributor (by default the running job's, :func:`lib.core.distribute.current`) the missing scans are
    explained in chunks on its workers (:mod:`lib.explain.heatmap_chunks`); the store, its key and its maps are
    those of a run here."""
    def tick(done, total, msg):
        if progress:
            progress(done, total, msg)

    target = target or run.classes.positive
    cohort, volumes, call, canonical, folder = _lookup(ws, run, method, params, target)
    if cache.ok(folder):
        return HeatmapStore(folder)
    with _exclusive(folder.with_suffix(".lock"),
                    on_wait=lambda: tick(0, 1, "the same heatmaps are being computed by another job: waiting")):
        if cache.ok(folder):  # the job we waited for finished them
            return HeatmapStore(folder)
        if folder.exists():  # corrupted, unfinished or of an older version: recomputed
            cache.discard(folder)
        partial = folder.with_name(folder.name + ".partial")
        partial.mkdir(parents=True, exist_ok=True)
        done_path, scale_path = partial / "done.npy", partial / "scale.npy"
        n = len(volumes)
        maps, done, scale = _open_partial(partial, n, volumes.shape)
        todo = np.flatnonzero(~done)
        label = f"{method} {', '.join(f'{k}={v}' for k, v in params.items())}".strip()
        tick(int(done.sum()), n, f"{label}: {int(done.sum())}/{n} scans")

        def absorb(rows, r_maps, r_scale, note=""):
            maps[rows] = r_maps
            scale[rows] = r_scale
            maps.flush()
            # maps first, then the record that says they are there: a crash between the two redoes the batch
            with atomic.atomic_path(scale_path) as tmp:
                np.save(tmp, scale)
            done[rows] = True
            with atomic.atomic_path(done_path) as tmp:
                np.save(tmp, done)
            tick(int(done.sum()), n, f"{label}: {int(done.sum())}/{n} scans{note}")

        dist = distribute.current() if distributor is _CURRENT else distributor
        if dist is not None:
            from lib.explain.heatmap_chunks import compute_distributed

            compute_distributed(dist, ws, run, method, target, params, partial, todo, batch_size, absorb)
        else:
            model, normaliser, _meta = load_checkpoint(run.best_checkpoint, device)
            for start in range(0, len(todo), batch_size):
                rows = todo[start:start + batch_size]
                absorb(rows, *explain_rows(model, normaliser, volumes, rows, method, target, call, run.classes))
        maps = None   # the memory map closed before the folder is sealed
        (partial / "index.json").write_text(json.dumps({
            "scan_ids": volumes.scan_ids, "resolution": run.grid.resolution, "params": canonical,
            "target": target, "positive": run.classes.positive, "run": run.id,
            "checkpoint_sha256": run.checkpoint_hash(),
            "version": STORE_VERSION}, indent=1))
        cache.seal(partial, kind="heatmaps", params=canonical, target=target, run=run.id)
        os.rename(partial, folder)
    return HeatmapStore(folder)


def list_stores(ws: Workspace, run: Run | None = None) -> list[HeatmapStore]:
    """Finished stores of the workspace (of ``run``'s current checkpoint when given)."""
    root = ws.cache_dir / "heatmaps"
    if not root.exists():
        return []
    out = []
    sha = run.checkpoint_hash() if run else None
    for d in sorted(root.iterdir()):
        if d.is_dir() and not d.name.startswith(".") and cache.ok(d):   # a bad store is not listed
            s = HeatmapStore(d)
            if sha is None or s.meta.get("checkpoint_sha256") == sha:
                out.append(s)
    return out


def parse_params(pairs: list[str] | None, where: str = "") -> dict:
    """``["beta=0.5", "composite=epsilon_plus"]`` → ``{"beta": 0.5, "composite": "epsilon_plus"}`` (JSON values);
    ``where`` starts the message of a malformed pair."""
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ValueError(f"{where}parameter {pair!r} is not KEY=VALUE")
        k, v = pair.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v.strip()
    return out
