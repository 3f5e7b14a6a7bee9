"""Group-average heatmaps (AD, HC, TP, FP, TN, FN) streamed in one pass, and the paper's colour scales.

Groups follow Böhle et al. 2019 §2.4 with the task's positive class (AD by default): the two classes
(``AD`` / ``HC``, or ``MS`` / ``HC`` …) by diagnosis; ``TP`` (positive classified positive), ``FP``
(negative classified positive), ``TN`` (negative classified negative), ``FN`` (positive classified
negative) by the table's ``outcome`` column (see :func:`lib.learn.metrics.outcome`). A scan is in
its diagnosis group and its outcome group, and with ``by=`` also in the matching subgroup
(split, site, sex, session, …).

Colour scaling (Figs 2, 3, 8). The captions give percentiles "of the average AD patient" but not
over which voxels. Over the whole box the background (about four fifths of the template grid) would
put the 50th percentile at about 0 and colour nearly the whole brain, unlike the figures, where
about half of the brain is black. The percentiles are therefore taken over brain voxels: those of
``mask`` when given (use :func:`lib.data.templates.brain_mask`, the ICBM152 brain, so every method is scaled over the
same voxels), otherwise the non-zero finite voxels of the average AD map.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from lib.core import memo
from lib.data.classes import DEFAULT_CLASSES, Classes

OUTCOMES = ("TP", "FP", "TN", "FN")
MISSING = "(missing)"


def groups_of(classes: Classes = DEFAULT_CLASSES) -> tuple[str, ...]:
    """``(positive, negative, "TP", "FP", "TN", "FN")``: every group of a task, in display order."""
    return (classes.positive, classes.negative, *OUTCOMES)


def outcome_diagnosis(classes: Classes = DEFAULT_CLASSES) -> dict[str, str]:
    """The diagnosis each outcome implies: TP and FN are positive, TN and FP negative."""
    return {"TP": classes.positive, "FN": classes.positive, "TN": classes.negative, "FP": classes.negative}


GROUPS = groups_of()
OUTCOME_DIAGNOSIS = outcome_diagnosis()


def _empty_reason(g: str, k: Classes) -> str:
    p, n = k.positive, k.negative
    return {p: f"no scan with diagnosis {p} among the selected scans",
            n: f"no scan with diagnosis {n} among the selected scans",
            "TP": f"no {p} scan was classified {p} (no true positives)",
            "FP": f"no {n} scan was classified {p} (no false positives)",
            "TN": f"no {n} scan was classified {n} (no true negatives)",
            "FN": f"no {p} scan was classified {n} (no false negatives)"}[g]


@dataclass
class GroupMean:
    """One group's average: ``mean`` float32 ``(X, Y, Z)``, or None when ``count`` is 0."""

    group: str
    subgroup: object | None
    count: int
    mean: np.ndarray | None
    scan_ids: list[str] = field(default_factory=list)
    reason: str = ""   # why the group is empty ("" otherwise)


class GroupMeans(Mapping):
    """Result of :func:`group_means`, keyed by ``"AD"`` … (whole groups) or ``("AD", value)`` (subgroups).

    Attributes
    ----------
    by : str or None
        The subgroup column.
    missing : list of str
        Scans of the table for which no volume came (left out of every mean).
    ignored : list of str
        Streamed scans that are not in the table (skipped).
    """

    def __init__(self, items: dict, by: str | None, missing: list[str], ignored: list[str]):
        self._items = items
        self.by = by
        self.missing = missing
        self.ignored = ignored

    @staticmethod
    def _key(key):
        return key if isinstance(key, tuple) else (key, None)

    def __getitem__(self, key) -> GroupMean:
        return self._items[self._key(key)]

    def __contains__(self, key) -> bool:
        return self._key(key) in self._items

    def __iter__(self) -> Iterator:
        return (k[0] if k[1] is None else k for k in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def mean(self, group: str, subgroup=None) -> np.ndarray | None:
        """The mean volume of a group (or subgroup), None when it has no member."""
        return self[(group, subgroup)].mean

    def count(self, group: str, subgroup=None) -> int:
        return self[(group, subgroup)].count

    def difference(self, a: str, b: str, subgroup=None) -> np.ndarray | None:
        """``mean(a) − mean(b)`` (e.g. TP − FP, AD − HC); None if either group is empty."""
        ma, mb = self.mean(a, subgroup), self.mean(b, subgroup)
        return None if ma is None or mb is None else ma - mb

    def counts(self) -> pd.DataFrame:
        """One row per group (and subgroup): ``group, [by], count, empty_reason``."""
        rows = []
        for (g, v), item in self._items.items():
            row = {"group": g}
            if self.by is not None:
                row[self.by] = "all" if v is None else v
            row.update(count=item.count, empty_reason=item.reason)
            rows.append(row)
        return pd.DataFrame(rows)


def _as_array(volume) -> np.ndarray:
    if hasattr(volume, "dataobj"):            # a nibabel image
        return np.asarray(volume.dataobj, dtype=np.float32)
    if hasattr(volume, "detach"):             # a torch tensor
        volume = volume.detach().cpu().numpy()
    return np.asarray(volume)


@memo.memoized(32)
def membership(table: pd.DataFrame, by: str | None = None, groups: Iterable[str] | None = None, *,
               classes: Classes = DEFAULT_CLASSES) -> dict[tuple[str, object], list[str]]:
    """Scan ids per ``(group, subgroup)`` key (subgroup None = the whole group), empty groups included.

    ``table`` needs ``scan_id`` and ``diagnosis``; ``outcome`` (TP/FP/TN/FN) for the outcome
    groups, and the ``by`` column for subgroups. Raises ValueError for an outcome that contradicts
    the diagnosis (a TP or FN must be positive, a TN or FP negative) or an unknown outcome.
    """
    every = groups_of(classes)
    groups = list(every if groups is None else groups)
    unknown = [g for g in groups if g not in every]
    if unknown:
        raise ValueError(f"unknown group(s) {unknown}; choose from {list(every)}")
    for col in ("scan_id", "diagnosis"):
        if col not in table:
            raise ValueError(f"the table needs a {col!r} column")
    if by is not None and by not in table:
        raise ValueError(f"no column {by!r} to make subgroups by; columns: {list(table.columns)}")
    ids = table["scan_id"].astype(str)
    dx = table["diagnosis"].astype(str)
    has_outcome = "outcome" in table
    outcome = table["outcome"].where(table["outcome"].notna(), "").astype(str) if has_outcome \
        else pd.Series("", index=table.index)
    bad = ~outcome.isin(["", *OUTCOMES])
    if bad.any():
        raise ValueError(f"unknown outcome(s) {sorted(outcome[bad].unique())[:5]} for scan(s) "
                         f"{ids[bad].head(5).tolist()}; expected TP, FP, TN or FN")
    expected = outcome.map(outcome_diagnosis(classes))
    clash = expected.notna() & (expected != dx)
    if clash.any():
        shown = [f"{i} ({o}, diagnosis {d})" for i, o, d in zip(ids[clash], outcome[clash], dx[clash])][:5]
        raise ValueError(f"outcome contradicts diagnosis with {classes.positive} as the positive class: {', '.join(shown)}")
    sub = None
    if by is not None:
        sub = table[by].where(table[by].notna(), MISSING).astype(str)
    values = sorted(sub.unique()) if sub is not None else []
    out: dict[tuple[str, object], list[str]] = {}
    for g in groups:
        sel = (outcome == g) if g in OUTCOMES else (dx == g)
        out[(g, None)] = ids[sel].tolist()
        for v in values:
            out[(g, v)] = ids[sel & (sub == v)].tolist()
    return out


def group_means(volumes: Iterable, table: pd.DataFrame, *, by: str | None = None,
                groups: Iterable[str] | None = None, progress=None, classes: Classes = DEFAULT_CLASSES
                ) -> GroupMeans:
    """Average volume of every group, streamed over ``(scan_id, volume)`` pairs in one pass.

    Parameters
    ----------
    volumes : iterable of (scan_id, volume)
        Heatmaps ``(X, Y, Z)`` (numpy, torch or nibabel), read once each; scans not in ``table``
        are skipped (listed in ``ignored``). Filter ``table`` to select scans (e.g. the test split).
    table : DataFrame
        ``scan_id``, ``diagnosis`` and, for TP/FP/TN/FN, ``outcome``; ``by`` for subgroups.
    by : str, optional
        Column for subgroups; then each group also has ``(group, value)`` entries.
    progress : callable(done, total, message), optional

    Returns
    -------
    GroupMeans
        Every requested group (and subgroup) with its count; an empty one has ``count`` 0,
        ``mean`` None and a ``reason``. Memory: one float64 accumulator per non-empty group and
        subgroup plus one volume, whatever the number of scans.
    """
    members = membership(table, by, groups, classes=classes)
    acc, n, seen, ignored = _accumulate(volumes, table, members, by, progress)
    seen_set = set(seen)
    items = _means(members, acc, n, seen_set, table, by, classes)
    missing = [s for s in table["scan_id"].astype(str) if s not in seen_set]
    return GroupMeans(items, by, missing, ignored)


def _accumulate(volumes: Iterable, table: pd.DataFrame, members: dict[tuple, list[str]], by: str | None,
                progress) -> tuple[dict[tuple, np.ndarray], dict[tuple, int], list[str], list[str]]:
    """One pass over the volumes: a float64 sum and a count per group (per subgroup with ``by``), the scans
    seen in order, and those ignored (not in ``table``)."""
    keys_of: dict[str, list[tuple]] = {}
    for key, scans in members.items():
        if by is not None and key[1] is None:
            continue   # whole groups are assembled from their subgroups at the end
        for s in scans:
            keys_of.setdefault(s, []).append(key)
    wanted = set(table["scan_id"].astype(str))
    acc: dict[tuple, np.ndarray] = {}
    n: dict[tuple, int] = {}
    seen: list[str] = []
    seen_set: set[str] = set()
    ignored: list[str] = []
    shape = None
    total = len(wanted)
    for scan_id, volume in volumes:
        scan_id = str(scan_id)
        if scan_id not in wanted:
            ignored.append(scan_id)
            continue
        if scan_id in seen_set:
            raise ValueError(f"scan {scan_id!r} came twice")
        data = _as_array(volume)
        if data.ndim == 4 and data.shape[0] == 1:
            data = data[0]
        if shape is None:
            shape = data.shape
        elif data.shape != shape:
            raise ValueError(f"scan {scan_id!r} has shape {data.shape}, the others {shape}")
        for key in keys_of.get(scan_id, []):
            if key not in acc:
                acc[key] = np.zeros(shape, np.float64)
                n[key] = 0
            acc[key] += data
            n[key] += 1
        seen.append(scan_id)
        seen_set.add(scan_id)
        if progress:
            progress(len(seen), total, f"scan {scan_id}")
    return acc, n, seen, ignored


def _means(members: dict[tuple, list[str]], acc: dict[tuple, np.ndarray], n: dict[tuple, int],
           seen_set: set[str], table: pd.DataFrame, by: str | None,
           classes: Classes = DEFAULT_CLASSES) -> dict[tuple, GroupMean]:
    """Every group's mean, count and, when empty, why.

    Accumulators become float32 means one by one and are freed as they go, so the peak stays at the
    accumulators plus one float64 volume. A whole group (with subgroups) comes before its parts.
    """
    items: dict[tuple, GroupMean] = {}
    for key, scans in members.items():
        g, v = key
        present = [s for s in scans if s in seen_set]
        count, mean = 0, None
        if by is not None and v is None:
            parts = [k for k in acc if k[0] == g]
            if parts:
                s = acc[parts[0]].copy()
                for k in parts[1:]:
                    s += acc[k]
                count = sum(n[k] for k in parts)
                s /= count
                mean = s.astype(np.float32)
                del s
        elif key in acc:
            a = acc.pop(key)
            count = n[key]
            a /= count
            mean = a.astype(np.float32)
            del a
        reason = ""
        if count == 0:
            if scans:
                reason = f"its {len(scans)} scan(s) have no volume"
            elif g in OUTCOMES and "outcome" not in table:
                reason = "no predictions: the table has no 'outcome' column"
            else:
                reason = _empty_reason(g, classes) + (f" with {by} = {v}" if v is not None else "")
        items[key] = GroupMean(g, v, count, mean, present, reason)
    return items


# --- colour scales ---------------------------------------------------------------------------------------------
def _brain_values(ad_mean, mask) -> np.ndarray:
    if ad_mean is None:
        raise ValueError("no average map of the positive class (its group is empty): there is nothing to scale by")
    data = np.asarray(ad_mean, dtype=np.float64)
    if mask is not None:
        mask = np.asarray(mask, bool)
        if mask.shape != data.shape:
            raise ValueError(f"mask of shape {mask.shape} for a map of shape {data.shape}")
        vals = data[mask]
    else:
        vals = data[data != 0]
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        raise ValueError("the positive class's average map has no non-zero finite voxel in the brain")
    return vals


def percentile_scale(ad_mean, low: float, high: float, mask=None) -> tuple[float, float]:
    """``(vmin, vmax)`` = the ``low`` and ``high`` percentiles of the average AD map over brain voxels."""
    lo, hi = np.percentile(_brain_values(ad_mean, mask), [low, high])
    return float(lo), float(hi)


def paper_scale(ad_mean, mask=None) -> tuple[float, float]:
    """The group-map scale of Figs 2–3: black below the 50th percentile of the average AD map,
    red → yellow, white above its 99.5th; one scale shared by all groups of a method."""
    return percentile_scale(ad_mean, 50.0, 99.5, mask)


def individual_scale(ad_mean, mask=None) -> tuple[float, float]:
    """The individual-map scale of Fig 8: coloured from the 90th to the 99.5th percentile of the
    average AD map; transparent below, saturated above."""
    return percentile_scale(ad_mean, 90.0, 99.5, mask)
