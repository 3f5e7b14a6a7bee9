"""Relevance per atlas region for every scan: sum, density, fraction, gain (Böhle et al. 2019 §2.5).

Metrics of one scan ``s`` and region ``r`` (``V_r`` = the region's voxels on the grid):

``sum``
    Σ_{v∈V_r} h_s(v), the relevance summed over the region (signed).
``density``
    ``sum / |V_r|``: the region's mean relevance per voxel (the paper's "size-normalized" metric).
``fraction``
    ``sum / Σ_v h_s(v)``: share of the scan's total signed relevance, the total taken over the
    **whole volume** (voxels outside the atlas included, so fractions over regions add up to
    less than 1 when relevance falls outside it). Rieke et al. 2018 Table 1. NaN if the total is 0.
``positive_sum``, ``positive_fraction``
    The same with ``max(h, 0)``: the region's share of the scan's positive relevance (evidence for
    the explained class). Always in [0, 1]; the safer share for signed maps whose total can be
    near zero.
``abs_sum``, ``abs_density``, ``abs_fraction`` (``absolute=True``)
    The same with ``|h|``, e.g. for gradient maps whose sign carries no evidence (Böhle et al. 2019
    Figs 4–6 show guided backprop's "susceptibility" as absolute values). Derived exactly from the
    other sums (``|h| = 2 max(h, 0) − h``), so they cost nothing extra.
``gain``
    Group-level: a group's mean ``sum`` in a region divided by the HC mean ``sum`` there
    (:func:`group_summary`); per scan, the scan's ``sum`` over the HC mean (:func:`add_gain`),
    whose group mean is the group gain. NaN where the reference mean is 0.

Computation. The atlas labels, flattened in C order, split into runs of equal label (about
39,000 at 2 mm for Neuromorphometrics). A scan's region sums are its run sums (contiguous reads,
no gather) added per region; everything is accumulated in float64. Two interchangeable
backends: ``numpy`` (the scan cast to float64, ``np.add.reduceat`` over the runs, threads over
scans) and ``torch`` (float64 cumulative sums on the device, differenced at run ends,
``index_add_`` per region). ``backend="auto"`` takes ``torch`` on CUDA
(:func:`lib.learn.models.default_device`) and ``numpy`` on the CPU, where ``bench/regions.py``
measures it the fastest of the candidates (a gather of the atlas voxels with ``index_add_``, a
sparse one-hot product, ``np.bincount`` per scan, the torch kernel on the CPU). Both agree with
nilearn's ``NiftiLabelsMasker(strategy="sum")`` to the precision of its float32 output (about 1e-7
relative). Batches stream in: memory holds one
batch, never the cohort. ``positive=False`` skips the positive-part sums (half the work).
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lib.data.atlas import Atlas
from lib.data.classes import DEFAULT_CLASSES

POSITIVE, NEGATIVE = DEFAULT_CLASSES.positive, DEFAULT_CLASSES.negative

METRICS = ("sum", "density", "fraction", "positive_sum", "positive_fraction")
ABS_METRICS = ("abs_sum", "abs_density", "abs_fraction")
COLUMNS = ("scan_id", "region", "label", "hemisphere", "voxels", *METRICS)


_LAYOUTS: "weakref.WeakKeyDictionary[Atlas, dict]" = weakref.WeakKeyDictionary()


def _layout(atlas: Atlas) -> dict:
    """Label runs of an atlas (computed once per Atlas object): starts, ends, region of each run."""
    if atlas in _LAYOUTS:
        return _LAYOUTS[atlas]
    labels = atlas.table["index"].to_numpy(np.int64)
    n = len(labels)
    flat = np.ascontiguousarray(atlas.labels).ravel()
    lut = np.full(int(flat.max()) + 1, n, np.int64)  # background → extra bin n
    lut[labels] = np.arange(n)
    compact = lut[flat]
    cut = np.ones(flat.size, bool)
    cut[1:] = compact[1:] != compact[:-1]
    starts = np.flatnonzero(cut)
    # the atlas's voxels grouped by region (memory order within each): one gather and one reduceat per scan
    # touch only the labelled fifth of the grid, where a reduceat over every run reads all of it
    inside = np.flatnonzero(compact < n)
    gather = inside[np.argsort(compact[inside], kind="stable")]
    gather_region = compact[gather]
    gather_starts = np.flatnonzero(np.r_[True, gather_region[1:] != gather_region[:-1]]) if gather.size else \
        np.zeros(0, np.int64)
    out = {"labels": labels, "n_regions": n, "starts": starts, "ends": np.append(starts[1:], flat.size),
           "run_region": compact[starts], "voxels": np.bincount(compact, minlength=n + 1)[:n],
           "gather": gather, "gather_starts": gather_starts, "gather_region": gather_region[gather_starts]}
    for v in out.values():
        if isinstance(v, np.ndarray):
            v.flags.writeable = False
    _LAYOUTS[atlas] = out
    return out


class RegionSummer:
    """Region sums of heatmaps on an atlas's grid; build once per atlas, call per batch.

    Parameters
    ----------
    atlas : Atlas
        Labels ``(X, Y, Z)``; heatmaps must have the same shape.
    backend : {"auto", "numpy", "torch"}
    device : torch.device, optional
        For the torch backend; default :func:`lib.learn.models.default_device`.
    threads : int, optional
        Worker threads of the numpy backend (scans in parallel); default ``min(4, cpu count)``.
    positive : bool
        Also sum ``max(h, 0)`` (for ``positive_sum`` / ``positive_fraction``).
    """

    def __init__(self, atlas: Atlas, backend: str = "auto", device: torch.device | str | None = None,
                 threads: int | None = None, positive: bool = True):
        from lib.learn.models import default_device

        self.atlas = atlas
        self.shape = tuple(atlas.labels.shape)
        self.device = torch.device(device) if device is not None else default_device()
        if backend == "auto":
            backend = "torch" if self.device.type == "cuda" else "numpy"
        if backend not in ("numpy", "torch"):
            raise ValueError(f"backend must be 'auto', 'numpy' or 'torch', not {backend!r}")
        self.backend = backend
        self.threads = threads or max(1, min(4, os.cpu_count() or 1))
        self.positive = positive
        lay = _layout(atlas)
        self.labels, self.n_regions, self.voxels = lay["labels"], lay["n_regions"], lay["voxels"]
        self.starts, self.ends, self.run_region = lay["starts"], lay["ends"], lay["run_region"]
        self.gather, self.gather_starts, self.gather_region = lay["gather"], lay["gather_starts"], lay["gather_region"]
        if self.backend == "torch":
            self._t_ends = torch.from_numpy(self.ends - 1).to(self.device)
            self._t_run_region = torch.from_numpy(np.array(self.run_region)).to(self.device)
        self._pool: ThreadPoolExecutor | None = None

    @property
    def preferred_batch(self) -> int:
        """Scans per batch worth holding: the numpy backend works scan by scan, the device wants many."""
        return 16 if self.backend == "torch" else 2 * self.threads

    # -- backends -------------------------------------------------------------------------------------------
    def _region_sums(self, flat: np.ndarray, x: np.ndarray) -> np.ndarray:
        """float64 ``(R+1,)``: region sums of the gathered atlas voxels ``x``; bin R = the rest of ``flat``."""
        out = np.zeros(self.n_regions + 1)
        if x.size:
            out[self.gather_region] = np.add.reduceat(x, self.gather_starts)
        # einsum accumulates in float64 without the buffered cast of sum(dtype=float64): ~20 % faster, as exact
        out[self.n_regions] = np.einsum("i->", flat, dtype=np.float64) - out[: self.n_regions].sum()
        return out

    def _numpy_scan(self, v) -> tuple[np.ndarray, np.ndarray | None]:
        """float64 ``(R+1,)`` sums and positive sums of one scan (bin R = outside the atlas)."""
        flat = np.asarray(v).ravel()
        x = flat[self.gather].astype(np.float64)
        sums = self._region_sums(flat, x)
        if not self.positive:
            return sums, None
        if flat.min() >= 0:
            return sums, sums
        return sums, self._region_sums(np.maximum(flat, 0), np.maximum(x, 0, out=x))

    def _numpy(self, vols: Sequence) -> tuple[np.ndarray, np.ndarray | None]:
        if len(vols) > 1 and self.threads > 1:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads)
            parts = list(self._pool.map(self._numpy_scan, vols))
        else:
            parts = [self._numpy_scan(v) for v in vols]
        sums = np.stack([p[0] for p in parts])
        return sums, (np.stack([p[1] for p in parts]) if self.positive else None)

    def _torch_sums(self, x: torch.Tensor) -> torch.Tensor:
        c = torch.cumsum(x, dim=1, dtype=torch.float64)
        at_end = c[:, self._t_ends]
        runs = torch.diff(at_end, dim=1, prepend=torch.zeros_like(at_end[:, :1]))
        out = torch.zeros(x.shape[0], self.n_regions + 1, dtype=torch.float64, device=x.device)
        return out.index_add_(1, self._t_run_region, runs)

    def _torch(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
        sums = self._torch_sums(x)
        if not self.positive:
            return sums.cpu().numpy(), None
        pos = sums if bool((x.min() >= 0).item()) else self._torch_sums(torch.clamp(x, min=0))
        return sums.cpu().numpy(), pos.cpu().numpy()

    # -- public ---------------------------------------------------------------------------------------------
    def __call__(self, batch) -> dict[str, np.ndarray]:
        """Raw sums of a batch: an array/tensor ``(N, X, Y, Z)`` or ``(N, 1, X, Y, Z)``, or a list of
        ``(X, Y, Z)`` volumes.

        Returns
        -------
        dict with float64 arrays ``sum`` ``(N, R)`` (regions in ``atlas.table`` order) and
        ``total`` ``(N,)`` over the whole volume; with ``positive=True`` also ``positive_sum``
        and ``positive_total``.
        """
        vols = list(batch) if isinstance(batch, (list, tuple)) else None
        shapes = {tuple(v.shape) for v in vols} if vols is not None else {tuple(batch.shape[1:])}
        shapes = {s[1:] if len(s) == 4 and s[0] == 1 else s for s in shapes}
        if shapes != {self.shape}:
            raise ValueError(f"heatmaps of shape {sorted(shapes)} do not match the atlas grid {self.shape}")
        n = len(vols) if vols is not None else int(batch.shape[0])
        if self.backend == "torch":
            x = torch.stack([torch.as_tensor(v) for v in vols]) if vols is not None else torch.as_tensor(batch)
            sums, pos = self._torch(x.reshape(n, -1).to(self.device, torch.float32))
        else:
            if vols is None:
                if isinstance(batch, torch.Tensor):
                    batch = batch.detach().cpu().numpy()
                vols = list(np.asarray(batch).reshape(n, -1))
            else:
                vols = [v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v for v in vols]
            sums, pos = self._numpy(vols)
        out = {"sum": sums[:, : self.n_regions], "total": sums.sum(axis=1)}
        if pos is not None:
            out.update(positive_sum=pos[:, : self.n_regions], positive_total=pos.sum(axis=1))
        return out

    def close(self):
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def __del__(self):
        self.close()


def iter_batches(source, scan_ids: Sequence[str] | None = None, batch_size: int = 16
                 ) -> Iterator[tuple[list[str], object]]:
    """Normalise the inputs of :func:`region_metrics` to ``(ids, batch)`` pairs.

    ``source`` is one of: an array/tensor ``(N, X, Y, Z)`` or ``(N, 1, X, Y, Z)`` with
    ``scan_ids``; an iterable of ``(ids, batch)``; an iterable of ``(scan_id, volume)`` with
    3D volumes, grouped into lists of ``batch_size`` volumes (never copied into one array).
    """
    if isinstance(source, (np.ndarray, torch.Tensor)):
        n = source.shape[0]
        ids = [str(s) for s in (scan_ids if scan_ids is not None else range(n))]
        if len(ids) != n:
            raise ValueError(f"{len(ids)} scan ids for {n} heatmaps")
        for i in range(0, n, batch_size):
            yield ids[i:i + batch_size], source[i:i + batch_size]
        return
    pending_ids: list[str] = []
    pending: list = []
    for key, data in source:
        if np.ndim(data) == 3:
            pending_ids.append(str(key))
            pending.append(data)
            if len(pending) >= batch_size:
                yield pending_ids, pending
                pending_ids, pending = [], []
        else:
            ids = [str(k) for k in key]
            if len(ids) != data.shape[0]:
                raise ValueError(f"{len(ids)} scan ids for a batch of {data.shape[0]} heatmaps")
            yield ids, data
    if pending:
        yield pending_ids, pending


def region_metrics(source, atlas: Atlas, *, scan_ids: Sequence[str] | None = None, backend: str = "auto",
                   device: torch.device | str | None = None, batch_size: int | None = None, positive: bool = True,
                   absolute: bool = False, progress=None) -> pd.DataFrame:
    """Tidy scan × region table of ``sum, density, fraction, positive_sum, positive_fraction``.

    Parameters
    ----------
    source
        Heatmaps on the atlas grid, float32 ``(X, Y, Z)`` each; see :func:`iter_batches` for
        the accepted forms. An iterable is consumed once, one batch in memory at a time.
    atlas : Atlas
    batch_size : int, optional
        Scans held at once (default: 2 per worker thread on the CPU, 16 on CUDA).
    positive : bool
        Include ``positive_sum`` and ``positive_fraction`` (False: about half the time).
    absolute : bool
        Also ``abs_sum``, ``abs_density``, ``abs_fraction`` (of ``|h|``; needs ``positive``).
    progress : callable(done, None, message), optional
        Called after every batch.

    Returns
    -------
    DataFrame with columns ``scan_id, region, label, hemisphere, voxels`` and the metrics,
    one row per scan and region (regions in ``atlas.table`` order).
    """
    if absolute and not positive:
        raise ValueError("absolute=True needs positive=True (|h| is derived from the positive part)")
    summer = RegionSummer(atlas, backend=backend, device=device, positive=positive)
    columns = [c for c in COLUMNS if positive or not c.startswith("positive")] + (list(ABS_METRICS) if absolute else [])
    table = atlas.table
    all_ids: list[str] = []
    parts: dict[str, list[np.ndarray]] = {}
    seen: set[str] = set()
    try:
        for ids, batch in iter_batches(source, scan_ids, batch_size or summer.preferred_batch):
            for i in ids:
                if i in seen:
                    raise ValueError(f"scan id {i!r} given twice")
                seen.add(i)
            raw = summer(batch)
            all_ids.extend(ids)
            for key, value in raw.items():
                parts.setdefault(key, []).append(value)
            if progress:
                progress(len(all_ids), None, f"{len(all_ids)} scans")
    finally:
        summer.close()
    if not all_ids:
        return pd.DataFrame({c: pd.Series(dtype=float if c in METRICS + ABS_METRICS else object) for c in columns})
    raw = {k: np.concatenate(v) for k, v in parts.items()}
    n, r = raw["sum"].shape
    cols = {
        "scan_id": np.repeat(np.asarray(all_ids, dtype=object), r),
        "region": np.tile(table["name"].to_numpy(), n),
        "label": np.tile(summer.labels, n),
        "hemisphere": np.tile(table["hemisphere"].to_numpy(), n),
        "voxels": np.tile(summer.voxels, n),
        "sum": raw["sum"].ravel(),
        "density": (raw["sum"] / summer.voxels[None, :]).ravel(),
        "fraction": _share(raw["sum"], raw["total"]),
    }
    if positive:
        cols.update(positive_sum=raw["positive_sum"].ravel(),
                    positive_fraction=_share(raw["positive_sum"], raw["positive_total"]))
    if absolute:
        abs_sum = 2 * raw["positive_sum"] - raw["sum"]
        cols.update(abs_sum=abs_sum.ravel(), abs_density=(abs_sum / summer.voxels[None, :]).ravel(),
                    abs_fraction=_share(abs_sum, 2 * raw["positive_total"] - raw["total"]))
    return pd.DataFrame(cols)


def _share(part: np.ndarray, total: np.ndarray) -> np.ndarray:
    """``part / total`` per row, raveled; NaN where the total is 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = part / total[:, None]
    out[total == 0] = np.nan
    return out.ravel()


# --- group helpers -------------------------------------------------------------------------------------------
def membership(groups) -> dict[str, set[str]]:
    """``{group: {scan_id, …}}`` from a mapping group → scan ids, a mapping/Series scan id → group,
    or a DataFrame with ``scan_id`` and ``group`` columns. A scan may be in several groups (AD and TP)."""
    if isinstance(groups, pd.DataFrame):
        groups = groups.groupby("group")["scan_id"].agg(lambda s: set(map(str, s))).to_dict()
        return {str(k): v for k, v in groups.items()}
    if isinstance(groups, pd.Series):
        groups = groups.to_dict()
    if not isinstance(groups, Mapping):
        raise TypeError("groups must be a mapping, a Series or a DataFrame with scan_id and group")
    out: dict[str, set[str]] = {}
    values = list(groups.values())
    if values and all(isinstance(v, str) for v in values):
        for scan, group in groups.items():
            out.setdefault(group, set()).add(str(scan))
    else:
        for group, members in groups.items():
            out[str(group)] = {str(s) for s in members}
    return out


def group_summary(metrics: pd.DataFrame, groups, *, reference: str | None = NEGATIVE,
                  columns: Sequence[str] = METRICS) -> pd.DataFrame:
    """Per group and region: member count ``n``, the mean and SD of each metric, and ``gain``.

    ``gain`` = the group's mean ``sum`` / the ``reference`` group's mean ``sum`` in the same
    region (NaN where that is 0 or the reference group is empty or absent). Groups without
    members are left out. Columns: ``group, region, label, n, mean_<m>, sd_<m>…, gain``.
    """
    members = membership(groups)
    frames = []
    for group, scans in members.items():
        sub = metrics[metrics["scan_id"].isin(scans)]
        if sub.empty:
            continue
        g = sub.groupby(["region", "label"], sort=False)
        agg = g[list(columns)].agg(["mean", "std"])
        agg.columns = [f"{stat}_{col}".replace("std_", "sd_") for col, stat in agg.columns]
        agg.insert(0, "n", g["scan_id"].nunique())
        agg = agg.reset_index()
        agg.insert(0, "group", group)
        frames.append(agg)
    if not frames:
        return pd.DataFrame(columns=["group", "region", "label", "n", "gain"])
    out = pd.concat(frames, ignore_index=True)
    if reference is not None and "mean_sum" in out:
        ref = out[out["group"] == reference].set_index("label")["mean_sum"]
        denom = out["label"].map(ref)
        with np.errstate(divide="ignore", invalid="ignore"):
            out["gain"] = np.where((denom != 0) & denom.notna(), out["mean_sum"] / denom, np.nan)
    return out


def add_gain(metrics: pd.DataFrame, reference_scans: Iterable[str]) -> pd.DataFrame:
    """``metrics`` with a per-scan ``gain`` column: the scan's ``sum`` / the reference scans' mean
    ``sum`` in that region (for distributions of gain, Fig 6). NaN where that mean is 0."""
    ref = metrics[metrics["scan_id"].isin({str(s) for s in reference_scans})]
    mean = ref.groupby("label")["sum"].mean()
    denom = metrics["label"].map(mean)
    out = metrics.copy()
    with np.errstate(divide="ignore", invalid="ignore"):
        out["gain"] = np.where((denom != 0) & denom.notna(), out["sum"] / denom, np.nan)
    return out


def top_regions(table: pd.DataFrame, metric: str, k: int = 25, *, group: str | None = None,
                ascending: bool = False) -> pd.DataFrame:
    """The ``k`` regions with the highest ``metric``, best first, with their ``rank`` (1-based).

    ``table`` is either scan-level (:func:`region_metrics`, averaged over its scans — filter it
    first to pick scans) or group-level (:func:`group_summary`; ``metric`` may be ``gain`` or
    ``mean_<m>``, and ``group`` picks the group).
    """
    t = table
    if group is not None:
        if "group" not in t:
            raise ValueError("group= needs a group-level table (group_summary)")
        t = t[t["group"] == group]
    col = metric if metric in t else f"mean_{metric}"
    if col not in t:
        raise KeyError(f"no column {metric!r} in the table")
    if "scan_id" in t:
        t = t.groupby(["region", "label"], sort=False, as_index=False)[col].mean()
    t = t[["region", "label", col]].dropna(subset=[col]).sort_values(col, ascending=ascending, kind="stable")
    t = t.head(k).reset_index(drop=True)
    t.insert(0, "rank", np.arange(1, len(t) + 1))
    return t.rename(columns={col: metric})


def wide(metrics: pd.DataFrame, metric: str = "density", regions: Sequence[str] | None = None) -> pd.DataFrame:
    """Scans × regions matrix of one metric (index ``scan_id``; columns in ``regions`` order if given)."""
    out = metrics.pivot(index="scan_id", columns="region", values=metric)
    if regions is not None:
        out = out[list(regions)]
    return out


def diverse_pair(metrics: pd.DataFrame, scores: Mapping[str, float] | pd.Series, *, metric: str = "density",
                 regions: Sequence[str] | None = None, min_score: float = 0.9,
                 scans: Iterable[str] | None = None) -> tuple[str, str, float] | None:
    """The two scans furthest apart by cosine distance in ``metric`` space (Fig 5, Fig 8).

    Candidates: ``scans`` (e.g. the AD patients; default all) whose AD ``score`` exceeds
    ``min_score``; vectors over ``regions`` (e.g. the top 25 by density; default all).
    Returns ``(scan_a, scan_b, distance)`` or None with fewer than two candidates.
    """
    from lib.analysis.similarity import furthest_pair

    scores = pd.Series(scores, dtype=float)
    scores.index = scores.index.map(str)
    chosen = scores[scores > min_score].index
    if scans is not None:
        chosen = chosen.intersection(pd.Index([str(s) for s in scans]))
    m = wide(metrics[metrics["scan_id"].isin(chosen)], metric, regions)
    if len(m) < 2:
        return None
    return furthest_pair(m.to_numpy(), list(m.index), metric="cosine")


def to_csv(table: pd.DataFrame, path: str | Path | None = None) -> str | None:
    """CSV text of a metrics table (for a download button), or written atomically to ``path``."""
    if path is None:
        return table.to_csv(index=False)
    from lib.core import atomic

    atomic.write_csv(path, table)
    return None
