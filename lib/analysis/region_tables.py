"""Region-metric tables of heatmap stores, computed once per (store, atlas) and cached in the workspace.

A table is the tidy scan × region output of :func:`lib.analysis.regions.region_metrics` (signed, positive
and absolute metrics) for every scan of one heatmap store on one atlas. It lives in
``<workspace>/cache/regions/<key>.parquet`` with a ``<key>.json`` beside it (store, atlas, counts),
written atomically, and a ``<key>.parquet.ok`` marker last (its size and checksum, :mod:`lib.core.cache`):
a table that does not match its marker, or covers other scans than its store, is recomputed. ``key`` hashes the store's folder name (itself a content key:
checkpoint, method, parameters, scans) and the atlas's content (labels and names, so a user atlas
replaced under the same name, or left/right merging, is another key and never a stale table).

Atlases: the shipped ones (:data:`lib.data.templates.ATLAS_FILES`) and the workspace's own, each a folder
``<workspace>/atlases/<name>/`` holding ``labels.nii[.gz]`` and ``names.csv`` (or ``.tsv``), added
with :func:`save_user_atlas`.

Long work runs as a regions job (:class:`lib.jobs.RegionTables`): for every run × LRP β (or
every given store) it computes the heatmap store if it is missing (:func:`lib.explain.heatmaps.compute_store`,
resumable, shared with the explain job by its lock) and then the table.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from lib.core import atomic, cache, memo
from lib.data.atlas import DEFAULT_ATLAS, Atlas, AtlasError, atlas_from_files, load_atlas
from lib.data.atlases import shipped_atlases
from lib.data.templates import ATLAS_FILES
from lib.data.workspace import Workspace
from lib.core.progress import Progress
from lib.data.classes import DEFAULT_CLASSES

POSITIVE, NEGATIVE = DEFAULT_CLASSES.positive, DEFAULT_CLASSES.negative

CACHE_VERSION = 1
BETAS = (0.0, 0.25, 0.5, 0.75, 1.0)
"""The LRP β values of Böhle et al. 2019 Fig 7."""
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")


# --- atlases -------------------------------------------------------------------------------------------------
def user_atlas_dir(ws: Workspace) -> Path:
    return ws.root / "atlases"


def _user_files(folder: Path) -> tuple[Path, Path] | None:
    labels = next((folder / n for n in ("labels.nii.gz", "labels.nii") if (folder / n).is_file()), None)
    names = next((folder / n for n in ("names.csv", "names.tsv") if (folder / n).is_file()), None)
    return (labels, names) if labels and names else None


def list_atlases(ws: Workspace) -> list[str]:
    """Shipped atlas names (the default first, the paper's) and then the workspace's own."""
    shipped = shipped_atlases()
    root = user_atlas_dir(ws)
    own = sorted(d.name for d in root.iterdir() if d.is_dir() and _user_files(d)) if root.is_dir() else []
    return shipped + [n for n in own if n not in shipped]


def get_atlas(ws: Workspace, name: str, resolution: float, merge: bool = False) -> Atlas:
    """A shipped or workspace atlas on ``Grid(resolution)``, left and right merged if asked.

    Raises :class:`lib.data.atlas.AtlasError` (naming the files) for an unusable user atlas and
    KeyError for an unknown name.
    """
    if name in ATLAS_FILES:
        return load_atlas(name, resolution, merge)
    files = _user_files(user_atlas_dir(ws) / name) if _NAME.match(name) else None
    if files is None:
        raise KeyError(f"unknown atlas {name!r}; choose one of {list_atlases(ws)}")
    return atlas_from_files(*files, resolution=resolution, name=name, merge=merge)


def save_user_atlas(ws: Workspace, name: str, labels_path: str | Path, names_path: str | Path,
                    resolution: float, *, who) -> Atlas:
    """Check a labels NIfTI + names table (:func:`lib.data.atlas.atlas_from_files`) and keep a copy in the
    workspace as atlas ``name``, as ``who`` (an ``auth.Identity``; adding or replacing an atlas needs
    ``change_atlas``, else ``auth.PermissionDenied`` before any file is read). Nothing is copied if the
    files are refused (AtlasError names them)."""
    from lib.reviews import auth

    auth.require(who, "change_atlas")
    if not _NAME.match(name) or name in ATLAS_FILES:
        raise AtlasError(f"atlas name {name!r}: use letters, digits, '_', '-' or '.', and not a shipped "
                         f"atlas's name ({', '.join(sorted(ATLAS_FILES))}).")
    labels_path, names_path = Path(labels_path), Path(names_path)
    atlas = atlas_from_files(labels_path, names_path, resolution=resolution, name=name)
    folder = user_atlas_dir(ws) / name
    tmp = folder.with_name(f".{name}.{time.time_ns()}")
    tmp.mkdir(parents=True)
    lab_name = "labels.nii.gz" if labels_path.name.endswith(".gz") else "labels.nii"
    shutil.copyfile(labels_path, tmp / lab_name)
    names_ext = ".tsv" if names_path.suffix.lower() in (".tsv", ".tab", ".txt") else ".csv"
    shutil.copyfile(names_path, tmp / f"names{names_ext}")
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)
    return atlas


def atlas_key(atlas: Atlas) -> str:
    """Content hash of an atlas: its label volume, its region table and its grid. Hashed once per atlas object
    (its labels are read-only), not on every page rerun that looks up a table."""
    known = atlas.__dict__.get("_content_key")
    if known is not None and known[0] == (id(atlas.labels), atlas.resolution, len(atlas.table)):
        return known[1]
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(atlas.labels, dtype=np.int32).tobytes())
    h.update(atlas.table[["index", "name"]].to_csv(index=False).encode())
    h.update(f"{atlas.resolution:g}|{atlas.labels.shape}".encode())
    atlas.__dict__["_content_key"] = ((id(atlas.labels), atlas.resolution, len(atlas.table)), h.hexdigest()[:16])
    return atlas.__dict__["_content_key"][1]


# --- cached tables -------------------------------------------------------------------------------------------
def table_key(store, atlas: Atlas) -> str:
    blob = json.dumps({"v": CACHE_VERSION, "store": Path(store.folder).name, "atlas": atlas_key(atlas)},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def table_path(ws: Workspace, store, atlas: Atlas) -> Path:
    return ws.cache_dir / "regions" / f"{table_key(store, atlas)}.parquet"


def find_table(ws: Workspace, store, atlas: Atlas) -> Path | None:
    """The cached table's path if it is complete and intact (its marker matches), else None. Nothing is
    computed."""
    path = table_path(ws, store, atlas)
    return path if path.with_suffix(".json").exists() and cache.ok(path) else None


def read_table(path: str | Path, store=None) -> pd.DataFrame:
    """A cached table; :class:`lib.core.cache.CacheError` naming it when it is corrupted or (with ``store``)
    lacks some of the store's scans, never a partial table. Read once per version of the file (and store)."""
    return _read_table(Path(path), store)


@memo.memoized(16)
def _read_table(path: Path, store) -> pd.DataFrame:
    cache.require(path, "region table", "python -m lib regions --run RUN --store STORE --atlas ATLAS")
    try:
        table = pd.read_parquet(path)
    except Exception as exc:  # pyarrow's errors have no common base; the checksum matched, so it is a bug
        raise cache.CacheError(f"region table at {path} is not readable ({exc}). Remove it with "
                               f"`{cache.REPAIR}`.") from exc
    if store is not None:
        missing = set(store.scan_ids) - set(table["scan_id"].astype(str))
        if missing:
            raise cache.CacheError(f"region table at {path} lacks {len(missing)} of the {len(store)} scans of its "
                                   f"heatmap store. Remove it with `{cache.REPAIR}` and recompute it.")
    return table


def compute_table(ws: Workspace, store, atlas: Atlas, *, progress: Progress | None = None,
                  batch_size: int = 16) -> Path:
    """Region metrics of every scan of ``store`` on ``atlas`` (signed, positive and absolute), cached.

    Returns the table's path; an existing table is returned as it is. Memory: one batch of
    ``batch_size`` maps at a time (read from the memory-mapped store).
    """
    from lib.analysis.regions import region_metrics

    path = table_path(ws, store, atlas)
    if find_table(ws, store, atlas):
        meta = cache.meta(path)
        if set(meta.get("scans", [])) >= set(store.scan_ids):
            return path
    if path.exists() or cache.marker_of(path).exists():   # corrupted, partial or of an older version
        cache.discard(path)
    ids = list(store.scan_ids)
    n = len(ids)

    def batches():
        for i in range(0, n, batch_size):
            chunk = ids[i:i + batch_size]
            yield chunk, store.batch(chunk)

    def tick(done, _total, _msg):
        if progress:
            progress(done, n, f"region metrics: {done}/{n} scans")

    table = region_metrics(batches(), atlas, absolute=True, progress=tick)
    table["scan_id"] = table["scan_id"].astype(str)
    with atomic.atomic_path(path) as tmp:
        table.to_parquet(tmp, index=False)
    atomic.write_json(path.with_suffix(".json"), {
        "store": Path(store.folder).name, "params": store.params, "target": store.meta.get("target", POSITIVE),
        "run": store.meta.get("run"), "atlas": atlas.name, "atlas_key": atlas_key(atlas),
        "regions": atlas.n_regions, "scans": n, "created": time.time(), "version": CACHE_VERSION})
    cache.seal(path, kind="regions", store=Path(store.folder).name, atlas=atlas.name,
               scans=sorted(set(table["scan_id"])))
    return path


# --- what the regions job computes ---------------------------------------------------------------------------
def store_params(store) -> dict:
    """A store's parameters as ``find_store`` keywords (its canonical parameters without ``method``)."""
    return {k: v for k, v in store.params.items() if k != "method"}


def matching_store(ws: Workspace, checkpoint_sha: str, method: str, params: dict | None = None,
                   target: str | None = None):
    """The finished store of a checkpoint with ``method`` and ``params`` (defaults filled in), or None.
    ``target``: the explained class, by default the workspace's positive class.

    Matched on the stores' recorded checkpoint hash and canonical parameters, so nothing is loaded or
    built (unlike :func:`lib.explain.heatmaps.find_store`, which needs the run's scan store).
    """
    from lib.explain import canonical_params
    from lib.explain.heatmaps import list_stores

    try:
        wanted = canonical_params(method, **{k: v for k, v in (params or {}).items() if k != "atlas"})
    except (KeyError, TypeError, ValueError):
        return None
    if params and "atlas" in params:
        wanted["atlas"] = params["atlas"]
    target = target or ws.classes.positive
    for s in list_stores(ws):
        if (s.meta.get("checkpoint_sha256") == checkpoint_sha and s.meta.get("target", POSITIVE) == target
                and s.params == wanted):
            return s
    return None


def compute_many(ws: Workspace, tasks: Sequence[tuple], atlas: Atlas, *, progress: Progress | None = None,
                 batch_size: int = 4) -> list[Path]:
    """Tables for ``tasks``: each ``(run, store)`` (a finished store) or ``(run, method, params)`` (the store
    is computed first if missing). Progress runs over all tasks; returns the tables' paths in order."""
    from lib.explain.heatmaps import compute_store, find_store

    out = []
    n = len(tasks)
    scale = 1000

    for k, task in enumerate(tasks):
        run = task[0]

        def prog(done, total, msg, _k=k, _phase=(0, 1)):
            frac = _phase[0] + _phase[1] * (done / total if total else 0.0)
            if progress:
                progress(int((_k + min(frac, 1.0)) * scale), n * scale, f"[{_k + 1}/{n}] {run.id}: {msg}")

        if len(task) == 2:
            store = task[1]
        else:
            method, params = task[1], task[2]
            store = find_store(ws, run, method, **params)
            if store is None:
                store = compute_store(ws, run, method, batch_size=batch_size, device=None,
                                      progress=lambda d, t, m, _k=k: prog(d, t, m, _k, (0.0, 0.8)), **params)
        path = compute_table(ws, store, atlas, progress=lambda d, t, m, _k=k: prog(d, t, m, _k, (0.8, 0.2)))
        out.append(path)
        if progress:
            progress((k + 1) * scale, n * scale, f"[{k + 1}/{n}] {run.id}: region metrics ready")
    return out


def group_runs(ws: Workspace, run) -> list:
    """Finished runs trained together with ``run`` (same ``config["group"]``: seeds or folds), ``run`` first;
    just ``[run]`` when it has no group."""
    from lib.learn.runs import list_runs

    group = run.config.get("group")
    if not group:
        return [run]
    others = [r for r in list_runs(ws) if r.id != run.id and r.config.get("group") == group
              and r.status == "done" and r.best_checkpoint.exists()]
    return [run] + sorted(others, key=lambda r: r.id)
