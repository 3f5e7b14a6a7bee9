"""How alike rankings and maps are: the overlap of top-k region rankings (robustness across β, retrainings and
methods, Böhle et al. 2019 Fig 7) and distances between relevance vectors (the most different patients, the
distances between methods' maps)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd


# --- rankings ------------------------------------------------------------------------------------------------
def _top(ranking, k: int) -> list:
    if isinstance(ranking, pd.Series):
        ranking = ranking.dropna().sort_values(ascending=False, kind="stable").index
    return list(ranking)[:k]



def top_k_overlap(a, b, k: int = 10) -> float:
    """Percentage of shared items among the top ``k`` of two rankings (Fig 7; Eitel, study 3).

    A ranking is a sequence ordered best first, or a Series of scores (higher is better).
    With fewer than ``k`` items the shorter top list sets the denominator. NaN if both are empty.
    """
    ta, tb = _top(a, k), _top(b, k)
    denom = min(len(ta), len(tb))
    if denom == 0:
        return float("nan")
    return 100.0 * len(set(ta) & set(tb)) / denom



def overlap_matrix(rankings: Mapping[str, object], k: int = 10) -> pd.DataFrame:
    """Pairwise :func:`top_k_overlap` (%) between named rankings, e.g. β values; 100 on the diagonal."""
    names = list(rankings)
    m = pd.DataFrame(np.nan, index=names, columns=names)
    for i, j in itertools.product(range(len(names)), repeat=2):
        if i <= j:
            m.iat[i, j] = m.iat[j, i] = top_k_overlap(rankings[names[i]], rankings[names[j]], k)
    return m



def mean_pairwise_overlap(rankings: Sequence, k: int = 10) -> float:
    """Mean :func:`top_k_overlap` (%) over all pairs, e.g. across retrainings. NaN with < 2 rankings."""
    vals = [top_k_overlap(a, b, k) for a, b in itertools.combinations(list(rankings), 2)]
    return float(np.nanmean(vals)) if vals else float("nan")



# --- distances -----------------------------------------------------------------------------------------------
def cosine_distances(vectors) -> np.ndarray:
    """``(n, n)`` cosine distances 1 − cos(u, v) in [0, 2]; rows that are all zero get NaN."""
    x = np.asarray(vectors, dtype=float)
    norms = np.linalg.norm(x, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        u = x / norms[:, None]
    d = np.clip(1.0 - u @ u.T, 0.0, 2.0)
    d[~(norms > 0), :] = np.nan
    d[:, ~(norms > 0)] = np.nan
    np.fill_diagonal(d, np.where(norms > 0, 0.0, np.nan))
    return d



def furthest_pair(vectors, ids: Sequence | None = None, metric: str = "cosine") -> tuple | None:
    """The two rows furthest apart: ``(id_a, id_b, distance)``, ``id_a`` before ``id_b`` in order.

    ``metric`` "cosine" (zero rows are ignored) or "euclidean". None with fewer than two usable rows.
    """
    x = np.asarray(vectors, dtype=float)
    ids = list(range(len(x))) if ids is None else list(ids)
    if metric == "cosine":
        d = cosine_distances(x)
    elif metric == "euclidean":
        sq = (x * x).sum(axis=1)
        d = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0))
    else:
        raise ValueError("metric must be 'cosine' or 'euclidean'")
    iu = np.triu_indices(len(x), k=1)
    vals = d[iu]
    if vals.size == 0 or not np.isfinite(vals).any():
        return None
    best = int(np.nanargmax(vals))
    i, j = iu[0][best], iu[1][best]
    return ids[i], ids[j], float(vals[best])



def distance_table(maps: Mapping[str, np.ndarray], *, normalise: str | None = None,
                   mask: np.ndarray | None = None) -> pd.DataFrame:
    """Euclidean distances ‖A − B‖₂ between named maps (Rieke et al. 2018 Table 2).

    ``normalise``: None (raw maps, as in the formula), "sum" (each map divided by the sum of its
    absolute values) or "max" (by its largest absolute value), so methods on different scales
    compare. ``mask`` restricts the voxels. Symmetric with an exact zero diagonal.
    """
    names = list(maps)
    flat = {}
    for name in names:
        v = np.asarray(maps[name], dtype=np.float64)
        v = v[mask] if mask is not None else v.ravel()
        if normalise in ("sum", "max"):
            s = np.abs(v).sum() if normalise == "sum" else np.abs(v).max(initial=0.0)
            v = v / s if s > 0 else v
        elif normalise is not None:
            raise ValueError("normalise must be None, 'sum' or 'max'")
        flat[name] = v
    shapes = {v.shape for v in flat.values()}
    if len(shapes) > 1:
        raise ValueError(f"maps differ in shape: {sorted(shapes)}")
    d = np.zeros((len(names), len(names)))
    for i, j in itertools.combinations(range(len(names)), 2):
        d[i, j] = d[j, i] = float(np.linalg.norm(flat[names[i]] - flat[names[j]]))
    return pd.DataFrame(d, index=names, columns=names)

