"""Inter-rater agreement on verdicts: Cohen's κ for each pair of raters, Fleiss' κ for all of them.

Ratings are ``(target, rater, verdict)`` triples (see :meth:`ReviewStore.ratings`); only targets rated by
at least two people count.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from itertools import combinations

import numpy as np
import pandas as pd

from lib.reviews.models import VERDICTS


def cohen_kappa(a: list[str], b: list[str]) -> float:
    """Cohen's κ of two raters' labels of the same items (NaN when chance agreement is total)."""
    if len(a) != len(b) or not a:
        raise ValueError("two equally long, non-empty lists of labels")
    cats = sorted(set(a) | set(b))
    n = len(a)
    p_o = sum(x == y for x, y in zip(a, b)) / n
    ca, cb = Counter(a), Counter(b)
    p_e = sum(ca[c] * cb[c] for c in cats) / n**2
    return float("nan") if p_e == 1 else (p_o - p_e) / (1 - p_e)


def fleiss_kappa(counts: np.ndarray) -> float:
    """Fleiss' κ from an (items × categories) table of how many raters chose each category.

    Items may have different numbers of raters (at least 2 each); each item's agreement is computed
    with its own count, which equals Fleiss (1971) when every item has the same number.
    """
    counts = np.asarray(counts, dtype=float)
    n_i = counts.sum(axis=1)
    if counts.ndim != 2 or len(counts) == 0 or (n_i < 2).any():
        raise ValueError("an items × categories table with at least two ratings per item")
    p_i = ((counts**2).sum(axis=1) - n_i) / (n_i * (n_i - 1))
    p_bar = p_i.mean()
    p_j = counts.sum(axis=0) / n_i.sum()
    p_e = (p_j**2).sum()
    return float("nan") if p_e == 1 else float((p_bar - p_e) / (1 - p_e))


def agreement(ratings: list[tuple[str, str, str]], categories=VERDICTS) -> dict:
    """Agreement over the targets rated by two or more raters.

    Returns
    -------
    dict with ``n_targets`` (rated by ≥ 2), ``n_raters``, ``fleiss`` (κ or None when fewer than two
    targets), ``pairs`` (DataFrame: rater_a, rater_b, n common targets, cohen κ, raw agreement) and
    ``table`` (DataFrame targets × raters of verdicts).
    """
    by_target: dict[str, dict[str, str]] = defaultdict(dict)
    for target, rater, verdict in ratings:
        by_target[target][rater] = verdict
    multi = {t: r for t, r in by_target.items() if len(r) >= 2}
    raters = sorted({rater for r in multi.values() for rater in r})
    table = pd.DataFrame.from_dict(multi, orient="index").reindex(columns=raters).sort_index()
    cats = list(categories) + sorted({v for r in multi.values() for v in r.values()} - set(categories))
    fleiss = None
    if len(multi) >= 2:
        counts = np.array([[list(r.values()).count(c) for c in cats] for r in multi.values()])
        fleiss = fleiss_kappa(counts)
    pairs = []
    for a, b in combinations(raters, 2):
        common = [t for t, r in multi.items() if a in r and b in r]
        if len(common) >= 2:
            la = [multi[t][a] for t in common]
            lb = [multi[t][b] for t in common]
            pairs.append({"rater_a": a, "rater_b": b, "n": len(common), "cohen_kappa": cohen_kappa(la, lb),
                          "agreement": float(np.mean([x == y for x, y in zip(la, lb)]))})
    return {"n_targets": len(multi), "n_raters": len(raters), "fleiss": fleiss,
            "pairs": pd.DataFrame(pairs, columns=["rater_a", "rater_b", "n", "cohen_kappa", "agreement"]),
            "table": table}
