"""What the Biomarkers page computes per view, timed side by side in one run (the machine is noisy: compare
the ratios, not the seconds).

1. Fig 9 statistics of one group: lib.analysis.stats.permutation_test (vectorised shuffles) against
   scipy.stats.permutation_test with the same number of permutations.
2. The region table: lib.analysis.stats.partial_correlations over every region at once (shared shuffles, one matrix
   product per chunk) against lib.analysis.stats.partial_correlation called once per region.

    .venv/bin/python bench/biomarker.py [--scans 80 --regions 135 --permutations 10000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats as sps

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from lib.analysis import stats# noqa: E402


def _best(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scans", type=int, default=80, help="scans analysed (the demo's true positives: 80)")
    ap.add_argument("--regions", type=int, default=135, help="atlas regions (Neuromorphometrics: 135)")
    ap.add_argument("--permutations", type=int, default=10_000)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    n, m, k = a.scans, a.regions, a.permutations
    x = rng.normal(size=n)
    y = -0.3 * x + rng.normal(size=n)

    def ours():
        return stats.permutation_test(x, y, n_permutations=k, seed=0)

    def scipys():
        return sps.permutation_test((x, y), lambda u, v, axis=-1: _r(u, v, axis), permutation_type="pairings",
                                    vectorized=True, n_resamples=k, rng=np.random.default_rng(0))

    t_ours, t_scipy = _best(ours), _best(scipys)
    print(f"one group, n = {n}, {k:,} permutations: lib {t_ours * 1e3:.1f} ms, scipy {t_scipy * 1e3:.1f} ms "
          f"→ {t_scipy / t_ours:.1f}× (p {ours()[1]:.4f} vs {scipys().pvalue:.4f})")

    values = rng.normal(size=(n, m))
    cov = rng.normal(size=(n, 2))
    measure = rng.normal(size=n)

    def shared():
        return stats.partial_correlations(values, measure, cov, n_permutations=k, seed=0)

    def looped():
        return [stats.partial_correlation(values[:, j], measure, cov, n_permutations=k, seed=0)
                for j in range(m)]

    t_shared = _best(shared)
    t_loop = _best(looped, repeats=1)
    same = np.allclose(shared()["p_permutation"], [r["p_permutation"] for r in looped()])
    print(f"{m} regions, n = {n}, 2 covariates, {k:,} permutations each: shared {t_shared:.2f} s, "
          f"one region at a time {t_loop:.2f} s → {t_loop / t_shared:.1f}× (equal p-values: {same})")


def _r(u, v, axis=-1):
    uc = u - u.mean(axis=axis, keepdims=True)
    vc = v - v.mean(axis=axis, keepdims=True)
    return (uc * vc).sum(axis=axis) / np.sqrt((uc * uc).sum(axis=axis) * (vc * vc).sum(axis=axis))


if __name__ == "__main__":
    main()
