"""Group means of a heatmap store cached on disk per (store, grouping), with the colour scales of their maps.

The means (streamed by :mod:`lib.analysis.groups`) live in ``<store>/group_means/<key>/``: one ``<group>.npy``
(float32 ``(X, Y, Z)`` on the run's grid, memory-mapped when read) per non-empty group, an ``index.json`` holding
the member counts and the colour scales, and a ``complete.json`` marker written last (checksums,
:mod:`lib.core.cache`): a grouping whose files do not match it is recomputed. ``key`` hashes the store's folder
name (itself a content key: checkpoint, method, parameters, scans) and the exact members of every group, so a
changed split, prediction or subgrouping is another cache entry and never a stale one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lib.analysis import groups as gm
from lib.analysis.groups import individual_scale, membership, paper_scale, percentile_scale
from lib.core import atomic, cache
from lib.data.templates import brain_mask
from lib.data.classes import DEFAULT_CLASSES, Classes

THRESHOLD_PERCENTILES = (50, 75, 90, 95, 99)

CACHE_VERSION = 1



@dataclass(frozen=True)
class Scale:
    """A colour scale: values ≤ ``vmin`` get the map's first colour (or are transparent), ≥ ``vmax`` its last."""

    vmin: float
    vmax: float



@dataclass(frozen=True)
class Entry:
    """One group or subgroup of a cached grouping (``subgroup`` None = the whole group)."""

    group: str
    subgroup: str | None
    count: int
    reason: str
    file: str | None

    @property
    def label(self) -> str:
        """``"TP"`` or ``"TP · site-A"``."""
        return self.group if self.subgroup is None else f"{self.group} · {self.subgroup}"



class CachedGroupMeans:
    """One cached grouping of one store: the group means as memory-mapped arrays, counts and colour scales.

    Attributes
    ----------
    entries : list of Entry in :func:`lib.analysis.groups.membership` order: each of AD, HC, TP, FP, TN, FN followed
        by its subgroups
    by : the subgroup column or None
    paper, individual, diverging : Scale
        From the grouping's average AD map (``scale_from`` names the map when AD is empty): the paper's
        50th–99.5th percentile scale over brain voxels, shared by all groups (Figs 2–3); Fig 8's
        90th–99.5th percentile scale for single scans; ± the 99.5th percentile of |AD map| for signed maps.
    """

    def __init__(self, folder: Path):
        """Raises :class:`lib.core.cache.CacheError` when the grouping is incomplete or its files are altered."""
        self.folder = Path(folder)
        cache.require(self.folder, "group means", "python -m lib group-means --run RUN --store STORE")
        self.index = json.loads((self.folder / "index.json").read_text())
        self.by: str | None = self.index["by"]
        self.entries = [Entry(e["group"], e["subgroup"], int(e["count"]), e["reason"], e["file"])
                        for e in self.index["entries"]]
        self._by_label = {e.label: e for e in self.entries}
        scales = self.index["scales"]
        self.scale_from: str | None = scales["from"]
        self.paper = Scale(*scales["paper"])
        self.individual = Scale(*scales["individual"])
        self.diverging = Scale(*scales["diverging"])
        #: value of the reference map at each of :data:`THRESHOLD_PERCENTILES` (brain voxels)
        self.percentiles = {int(q): float(v) for q, v in scales["percentiles"].items()}

    def entry(self, label: str) -> Entry:
        if label not in self._by_label:
            raise KeyError(f"no group {label!r} in this grouping")
        return self._by_label[label]

    def __contains__(self, label: str) -> bool:
        return label in self._by_label and self._by_label[label].file is not None

    def __getitem__(self, label: str) -> np.ndarray:
        """The mean map of ``label`` ("AD", "TP · site-A"), float32 ``(X, Y, Z)``, memory-mapped read-only."""
        e = self.entry(label)
        if e.file is None:
            raise KeyError(f"group {label!r} is empty: {e.reason}")
        return np.load(self.folder / e.file, mmap_mode="r")

    def count(self, label: str) -> int:
        return self.entry(label).count

    @property
    def labels(self) -> list[str]:
        return [e.label for e in self.entries]

    @property
    def empty(self) -> list[Entry]:
        """Groups and subgroups without any scan, each with the reason."""
        return [e for e in self.entries if e.count == 0]



def grouping_key(store, table: pd.DataFrame, by: str | None, classes: Classes = DEFAULT_CLASSES) -> str:
    """Content key of one grouping of one store: the store's own key and the members of every (sub)group
    (named by the task's classes)."""
    members = membership(table, by, classes=classes)
    blob = json.dumps({"v": CACHE_VERSION, "store": Path(store.folder).name, "by": by,
                       "groups": [[g, v, sorted(ids)] for (g, v), ids in members.items()]},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]



def cached_group_means(store, table: pd.DataFrame, *, by: str | None = None, progress=None,
                       classes: Classes = DEFAULT_CLASSES) -> CachedGroupMeans:
    """Group means of ``store`` over the scans of ``table`` (e.g. :func:`selection`), cached on disk.

    Parameters
    ----------
    store : lib.explain.heatmaps.HeatmapStore
    table : predictions of the scans to average (``scan_id, diagnosis, outcome`` and ``by``)
    by : None or a predictions column for subgroups (see :data:`SUBGROUPS`)

    The means are streamed by :func:`lib.analysis.groups.group_means` over the store (one volume in memory at a
    time) into a temporary folder, sealed (checksums, :mod:`lib.core.cache`) and renamed into place, so a reader
    never sees half a grouping and two users computing the same grouping at once both leave a whole one.
    """
    folder = Path(store.folder) / "group_means" / grouping_key(store, table, by, classes)
    if cache.ok(folder):
        return CachedGroupMeans(folder)
    if folder.exists():   # corrupted, unfinished or of an older version: recomputed
        cache.discard(folder)
    ids = [s for s in table["scan_id"].astype(str) if s in store]
    result = gm.group_means(store.iter(ids), table, by=by, progress=progress, classes=classes)
    final, folder = folder, folder.with_name(f".{folder.name}.{os.getpid()}.{time.time_ns()}")
    try:
        entries = []
        for i, key in enumerate(result):
            g, v = key if isinstance(key, tuple) else (key, None)
            item = result[(g, v)]
            file = None
            if item.count > 0:
                file = f"{i:03d}_{re.sub(r'[^A-Za-z0-9_.-]+', '_', f'{g}_{v}' if v is not None else g)[:60]}.npy"
                with atomic.atomic_path(folder / file) as tmp:
                    np.save(tmp, np.asarray(item.mean, dtype=np.float32))
            entries.append({"group": g, "subgroup": None if v is None else str(v), "count": int(item.count),
                            "reason": item.reason, "file": file})
        source = next((g for g in gm.groups_of(classes) if result.count(g) > 0), None)
        scales = scales_from(result.mean(source) if source else None, store.grid.resolution)
        atomic.write_json(folder / "index.json", {
            "version": CACHE_VERSION, "store": Path(store.folder).name, "by": by, "entries": entries,
            "scales": {"from": source, **scales}})
        cache.seal(folder, kind="group_means", store=Path(store.folder).name, by=by)
        try:
            os.rename(folder, final)
        except OSError:   # another user finished the same grouping first: theirs is used
            shutil.rmtree(folder, ignore_errors=True)
            if not cache.ok(final):
                raise
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)   # an interrupted grouping leaves nothing
        raise
    return CachedGroupMeans(final)



def symmetric_limit(volume: np.ndarray, q: float = 99.5) -> float:
    """The ``q``-th percentile of |volume| over its non-zero voxels (1 for an all-zero map)."""
    a = np.abs(np.asarray(volume, dtype=np.float32))
    nz = a[a > 0]
    lim = float(np.percentile(nz, q)) if nz.size else 0.0
    return lim if lim > 0 else 1.0



def scales_from(reference: np.ndarray | None, resolution: float) -> dict[str, list[float]]:
    """The paper's, Fig 8's and a symmetric scale from an average map, and its values at
    :data:`THRESHOLD_PERCENTILES`, over the template's brain voxels (:func:`lib.data.templates.brain_mask`, so every
    method is scaled over the same voxels). Unit scales without a map."""
    unit = {"paper": [0.0, 1.0], "individual": [0.0, 1.0], "diverging": [-1.0, 1.0],
            "percentiles": {str(q): float(q) / 100 for q in THRESHOLD_PERCENTILES}}
    if reference is None:
        return unit
    mask = brain_mask(resolution)
    if not np.any(np.asarray(reference)[mask]):
        mask = None   # a map that is zero over the whole brain: fall back to its non-zero voxels
    try:
        paper, individual = paper_scale(reference, mask), individual_scale(reference, mask)
        cuts = {str(q): percentile_scale(reference, q, q, mask)[0] for q in THRESHOLD_PERCENTILES}
    except ValueError:   # an all-zero map
        return unit
    lim = symmetric_limit(np.asarray(reference)[mask] if mask is not None else reference)
    return {"paper": [float(paper[0]), float(max(paper[1], paper[0] + 1e-12))],
            "individual": [float(individual[0]), float(max(individual[1], individual[0] + 1e-12))],
            "diverging": [-lim, lim], "percentiles": cuts}

