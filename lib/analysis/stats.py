"""Statistics behind the atlas and biomarker analyses: correlation with permutation tests, bootstrap,
partial correlation, FDR, group tests with effect sizes, density estimates (ranking overlap and distances:
:mod:`lib.analysis.similarity`).

Conventions: inputs are 1D array-likes (NaN pairs are dropped, and ``n`` reports what was used);
random procedures take a ``seed`` and are reproducible; results are plain floats, dicts and
DataFrames; degenerate inputs (too few values, constant data) give NaN, never an exception.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy import stats as sps
from lib.data.classes import DEFAULT_CLASSES

POSITIVE, NEGATIVE = DEFAULT_CLASSES.positive, DEFAULT_CLASSES.negative


# --- correlation -------------------------------------------------------------------------------------------
def _pairs(x, y) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y differ in length ({x.size} vs {y.size})")
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


def _standardise(v: np.ndarray) -> np.ndarray | None:
    c = v - v.mean()
    norm = np.sqrt((c * c).sum())
    return None if norm == 0 or not np.isfinite(norm) else c / norm


def pearson(x, y) -> tuple[float, float]:
    """Pearson r and its parametric two-sided p-value (as ``scipy.stats.pearsonr``); NaN if n < 3 or constant."""
    x, y = _pairs(x, y)
    zx, zy = (_standardise(x), _standardise(y)) if x.size >= 3 else (None, None)
    if zx is None or zy is None:
        return float("nan"), float("nan")
    r = float(np.clip(zx @ zy, -1.0, 1.0))
    return r, _r_pvalue(r, x.size - 2)


def _r_pvalue(r: float, df: int) -> float:
    if df < 1 or not np.isfinite(r):
        return float("nan")
    if abs(r) >= 1.0:
        return 0.0
    t = r * np.sqrt(df / (1.0 - r * r))
    return float(2 * sps.t.sf(abs(t), df))


def _null_r(zx: np.ndarray, zy: np.ndarray, n_permutations: int, rng: np.random.Generator,
            chunk: int, basis: np.ndarray | None = None) -> np.ndarray:
    """r of ``zx`` against ``n_permutations`` random permutations of ``zy`` (both standardised).

    ``zx`` may be a matrix ``(n, c)`` (one column per feature; the result is then
    ``(n_permutations, c)``). With ``basis`` (orthonormal columns spanning the covariates, see
    :func:`_basis`), ``zx`` and ``zy`` are covariate residuals and the permutation is Freedman–Lane's:
    the shuffled residuals of y are residualised again before correlating, so the null
    distribution has the ``n − 2 − k`` degrees of freedom of the observed partial r rather than
    ``n − 2`` (shuffling the residuals alone is anti-conservative for small n).
    """
    out = np.empty((n_permutations, *zx.shape[1:]))
    for start in range(0, n_permutations, chunk):
        m = min(chunk, n_permutations - start)
        perms = rng.permuted(np.broadcast_to(zy, (m, zy.size)), axis=1)
        r = perms @ zx
        if basis is not None:
            # zx is orthogonal to the covariates, so only the norm of the re-residualised y changes
            rest = perms - (perms @ basis) @ basis.T
            norm = np.sqrt((rest * rest).sum(axis=1))
            norm[norm == 0] = np.inf
            r = r / (norm[:, None] if r.ndim == 2 else norm)
        out[start:start + m] = r
    return out


def _basis(design: np.ndarray) -> np.ndarray:
    """Orthonormal basis ``(n, rank)`` of the columns of ``design`` (collinear columns add nothing)."""
    u, s, _ = np.linalg.svd(design, full_matrices=False)
    tol = (s.max() if s.size else 0.0) * max(design.shape) * np.finfo(float).eps
    return u[:, s > tol]


def permutation_test(x, y, n_permutations: int = 10_000, seed: int | None = 0, chunk: int = 2_000
                     ) -> tuple[float, float]:
    """Pearson r and its two-sided permutation p-value.

    y is shuffled ``n_permutations`` times (vectorised in chunks of ``chunk`` permutations);
    p = (1 + #{|r_perm| ≥ |r|}) / (1 + n_permutations), so never 0 (Phipson & Smyth 2010).
    The smallest reachable p is 1 / (1 + n_permutations).
    """
    x, y = _pairs(x, y)
    zx, zy = (_standardise(x), _standardise(y)) if x.size >= 3 else (None, None)
    if zx is None or zy is None:
        return float("nan"), float("nan")
    r = float(np.clip(zx @ zy, -1.0, 1.0))
    null = _null_r(zx, zy, n_permutations, np.random.default_rng(seed), chunk)
    # Tolerance so that permutations tying with the observed r count as "as extreme".
    hits = int((np.abs(null) >= abs(r) * (1 - 1e-12) - 1e-14).sum())
    return r, (1 + hits) / (1 + n_permutations)


def spearman(x, y) -> tuple[float, float]:
    """Spearman ρ and its two-sided p-value (``scipy.stats.spearmanr``); NaN if n < 3 or constant."""
    x, y = _pairs(x, y)
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan"), float("nan")
    res = sps.spearmanr(x, y)
    return float(res.statistic), float(res.pvalue)


def bootstrap_ci(x, y, n_boot: int = 10_000, level: float = 0.95, seed: int | None = 0, chunk: int = 2_000
                 ) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of Pearson r (pairs resampled with replacement).

    Resamples whose x or y is constant have no r and are skipped. NaN with n < 3.
    """
    x, y = _pairs(x, y)
    n = x.size
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    rs = np.empty(n_boot)
    for start in range(0, n_boot, chunk):
        m = min(chunk, n_boot - start)
        idx = rng.integers(0, n, size=(m, n))
        bx, by = x[idx], y[idx]
        bx = bx - bx.mean(axis=1, keepdims=True)
        by = by - by.mean(axis=1, keepdims=True)
        den = np.sqrt((bx * bx).sum(axis=1) * (by * by).sum(axis=1))
        with np.errstate(invalid="ignore", divide="ignore"):
            rs[start:start + m] = np.where(den > 0, (bx * by).sum(axis=1) / den, np.nan)
    alpha = (1 - level) / 2
    lo, hi = np.nanquantile(rs, [alpha, 1 - alpha])
    return float(lo), float(hi)


def _design(covariates, n: int) -> np.ndarray:
    if covariates is None:
        return np.ones((n, 1))
    z = covariates.to_numpy(dtype=float) if isinstance(covariates, (pd.DataFrame, pd.Series)) \
        else np.asarray(covariates, dtype=float)
    z = z.reshape(n, -1) if z.size else np.empty((n, 0))   # no scans (or no covariate): constant only
    return np.column_stack([np.ones(n), z])


def partial_correlation(x, y, covariates, n_permutations: int = 0, seed: int | None = 0) -> dict:
    """Pearson correlation of x and y controlling for ``covariates`` (e.g. age, intracranial volume).

    x and y are each regressed on ``[1, covariates]`` (least squares) and the residuals are
    correlated. The p-value is the t-test on ``n − 2 − k`` degrees of freedom (k = rank of the
    covariates beyond the intercept); with ``n_permutations`` > 0 a permutation p-value of the
    residual correlation is added (Freedman–Lane: y's residuals are shuffled and residualised
    again, see :func:`_null_r`). Rows with a NaN anywhere are dropped.

    Returns
    -------
    dict with ``r``, ``p``, ``n``, ``df``, ``k`` and ``p_permutation`` (NaN when not computed).
    """
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    design = _design(covariates, x.size)
    keep = np.isfinite(x) & np.isfinite(y) & np.isfinite(design).all(axis=1)
    x, y, design = x[keep], y[keep], design[keep]
    n = x.size
    k = int(np.linalg.matrix_rank(design)) - 1 if n else 0
    out = {"r": float("nan"), "p": float("nan"), "n": n, "df": n - 2 - k, "k": k, "p_permutation": float("nan")}
    if n - 2 - k < 1:
        return out
    beta, *_ = np.linalg.lstsq(design, np.column_stack([x, y]), rcond=None)
    res = np.column_stack([x, y]) - design @ beta
    zx, zy = _standardise(res[:, 0]), _standardise(res[:, 1])
    if zx is None or zy is None:
        return out
    r = float(np.clip(zx @ zy, -1, 1))
    out.update(r=r, p=_r_pvalue(r, n - 2 - k))
    if n_permutations > 0:
        null = _null_r(zx, zy, n_permutations, np.random.default_rng(seed), 2_000, _basis(design))
        out["p_permutation"] = (1 + int((np.abs(null) >= abs(r) * (1 - 1e-12) - 1e-14).sum())) / (1 + n_permutations)
    return out


def partial_correlations(features, y, covariates=None, *, n_permutations: int = 10_000, seed: int | None = 0,
                         chunk: int = 2_000, method: str = "bh") -> pd.DataFrame:
    """:func:`partial_correlation` of every column of ``features`` with one ``y``, permutations shared.

    For a scans × regions matrix against one clinical measure: ``y`` and each column are
    regressed on ``[1, covariates]``; the residuals of ``y`` are shuffled once per permutation
    (Freedman–Lane, as :func:`partial_correlation`) and correlated with every column at the same
    time (one matrix product per chunk), so the cost barely grows with the number of columns.
    With the same ``seed`` each column's ``p_permutation`` is that of
    ``partial_correlation(column, y, covariates, …)``.

    Rows where ``y`` or a covariate is missing are dropped for every column; a column with a
    missing value in the remaining rows (or constant after regression) gets NaN.

    Parameters
    ----------
    features : DataFrame ``(n, m)`` (columns name the features) or array
    y : array-like ``(n,)``
    covariates : DataFrame or array ``(n, k)``, optional
    n_permutations : int
        0 skips the permutation test (``p_permutation`` and ``p_fdr`` use the t-test p then).
    method : {"bh", "by"}
        FDR correction of the permutation p-values (of the t-test p without permutations).

    Returns
    -------
    DataFrame with one row per column, in column order: ``feature, n, r, p, p_permutation, p_fdr``.
    """
    names = list(features.columns) if isinstance(features, pd.DataFrame) else None
    X = np.asarray(features, dtype=float)
    if X.ndim == 1:
        X = X[:, None]
    names = names or list(range(X.shape[1]))
    y = np.asarray(y, dtype=float).ravel()
    if y.size != X.shape[0]:
        raise ValueError(f"y has {y.size} values for {X.shape[0]} rows")
    design = _design(covariates, y.size)
    keep = np.isfinite(y) & np.isfinite(design).all(axis=1)
    X, y, design = X[keep], y[keep], design[keep]
    n, m = X.shape
    k = int(np.linalg.matrix_rank(design)) - 1 if n else 0
    df = n - 2 - k
    r = np.full(m, np.nan)
    p_perm = np.full(m, np.nan)
    usable = np.isfinite(X).all(axis=0) if n else np.zeros(m, bool)
    zy = None
    if df >= 1 and usable.any():
        beta, *_ = np.linalg.lstsq(design, np.column_stack([y, np.where(usable, X, 0.0)]), rcond=None)
        res = np.column_stack([y, np.where(usable, X, 0.0)]) - design @ beta
        # residuals at rounding level mean "explained by the covariates (or constant)": no r
        tiny = lambda v: 1e-12 * np.abs(v).max(axis=0, initial=0.0) * np.sqrt(n)  # noqa: E731
        ry = res[:, 0] - res[:, 0].mean()
        zy = _standardise(res[:, 0]) if np.sqrt(ry @ ry) > tiny(y) else None
        rx = res[:, 1:]
        rx = rx - rx.mean(axis=0)
        norms = np.sqrt((rx * rx).sum(axis=0))
        usable &= norms > tiny(X)
        zx = np.divide(rx, norms, out=np.zeros_like(rx), where=norms > 0)
    if zy is not None and usable.any():
        zx = zx[:, usable]
        r_obs = np.clip(zx.T @ zy, -1, 1)
        r[usable] = r_obs
        if n_permutations > 0:
            rng = np.random.default_rng(seed)
            basis = _basis(design)
            hits = np.zeros(zx.shape[1], np.int64)
            bound = np.abs(r_obs) * (1 - 1e-12) - 1e-14   # ties with the observed r count as "as extreme"
            for start in range(0, n_permutations, chunk):   # one chunk of shuffles, every column at once
                null = _null_r(zx, zy, min(chunk, n_permutations - start), rng, chunk, basis)
                hits += (np.abs(null) >= bound).sum(axis=0)
            p_perm[usable] = (1 + hits) / (1 + n_permutations)
    p = np.array([_r_pvalue(v, df) if np.isfinite(v) else np.nan for v in r])
    out = pd.DataFrame({"feature": names, "n": n, "r": r, "p": p,
                        "p_permutation": p_perm if n_permutations > 0 else np.full(m, np.nan)})
    out["p_fdr"] = fdr(out["p_permutation"] if n_permutations > 0 else out["p"], method)
    return out


def correlate(x, y, *, n_permutations: int = 10_000, n_boot: int = 10_000, level: float = 0.95,
              seed: int | None = 0) -> dict:
    """Everything the biomarker figure reports for one x–y pair.

    Returns
    -------
    dict: ``n``, ``r``, ``p`` (parametric), ``p_permutation``, ``rho``, ``p_spearman``,
    ``ci_low``, ``ci_high`` (bootstrap of r at ``level``), ``n_permutations``.
    """
    xs, ys = _pairs(x, y)
    r, p = pearson(xs, ys)
    _, p_perm = permutation_test(xs, ys, n_permutations, seed)
    rho, p_s = spearman(xs, ys)
    lo, hi = bootstrap_ci(xs, ys, n_boot, level, seed)
    return {"n": int(xs.size), "r": r, "p": p, "p_permutation": p_perm, "rho": rho, "p_spearman": p_s,
            "ci_low": lo, "ci_high": hi, "n_permutations": n_permutations}


# --- multiple testing, group comparisons --------------------------------------------------------------------
def fdr(pvalues, method: str = "bh") -> np.ndarray:
    """Benjamini–Hochberg (``bh``) or Benjamini–Yekutieli (``by``) adjusted p-values
    (``scipy.stats.false_discovery_control``); NaN entries stay NaN and do not count as tests."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = sps.false_discovery_control(np.clip(p[ok], 0, 1), method=method)
    return out


def _hedges_g(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = a.size, b.size
    if na < 2 or nb < 2:
        return float("nan")
    pooled = np.sqrt(((na - 1) * a.var(ddof=1) + (nb - 1) * b.var(ddof=1)) / (na + nb - 2))
    if pooled == 0:
        return float("nan")
    return float((a.mean() - b.mean()) / pooled * (1 - 3 / (4 * (na + nb) - 9)))


def compare_groups(values: pd.DataFrame, labels, a: str = POSITIVE, b: str = NEGATIVE, *, test: str = "mannwhitney",
                   method: str = "bh") -> pd.DataFrame:
    """Per column of ``values`` (e.g. regions), a two-sided test of group ``a`` against ``b``, FDR-corrected.

    Parameters
    ----------
    values : DataFrame
        Scans × features (index = scan id), e.g. :func:`lib.analysis.regions.wide`.
    labels : mapping or Series scan id → group, or an array aligned with the rows
    test : {"mannwhitney", "welch"}
        Mann–Whitney U (effect: rank-biserial correlation 2U/(n_a n_b) − 1, > 0 when ``a`` tends
        to be larger) or Welch's t (effect: Hedges' g, ``a`` − ``b`` over the pooled SD).

    Returns
    -------
    DataFrame sorted by p: ``feature, n_a, n_b, mean_a, mean_b, median_a, median_b, statistic,
    p, p_fdr, effect, effect_name``. Features with fewer than 2 values in a group get NaN.
    """
    if test not in ("mannwhitney", "welch"):
        raise ValueError("test must be 'mannwhitney' or 'welch'")
    if isinstance(labels, (Mapping, pd.Series)):
        lab = pd.Series(labels)
        lab.index = lab.index.map(str)
        lab = values.index.map(str).map(lab)
    else:
        lab = np.asarray(labels)
        if lab.size != len(values):
            raise ValueError(f"{lab.size} labels for {len(values)} rows")
    lab = np.asarray(lab, dtype=object)
    in_a, in_b = lab == a, lab == b
    rows = []
    for col in values.columns:
        v = values[col].to_numpy(dtype=float)
        va, vb = v[in_a & np.isfinite(v)], v[in_b & np.isfinite(v)]
        row = {"feature": col, "n_a": va.size, "n_b": vb.size,
               "mean_a": va.mean() if va.size else np.nan, "mean_b": vb.mean() if vb.size else np.nan,
               "median_a": np.median(va) if va.size else np.nan, "median_b": np.median(vb) if vb.size else np.nan,
               "statistic": np.nan, "p": np.nan, "effect": np.nan,
               "effect_name": "rank-biserial r" if test == "mannwhitney" else "Hedges' g"}
        if va.size >= 2 and vb.size >= 2 and np.ptp(np.concatenate([va, vb])) > 0:
            if test == "mannwhitney":
                res = sps.mannwhitneyu(va, vb, alternative="two-sided")
                row.update(statistic=float(res.statistic), p=float(res.pvalue),
                           effect=2 * float(res.statistic) / (va.size * vb.size) - 1)
            else:
                res = sps.ttest_ind(va, vb, equal_var=False)
                row.update(statistic=float(res.statistic), p=float(res.pvalue), effect=_hedges_g(va, vb))
        rows.append(row)
    out = pd.DataFrame(rows)
    out.insert(out.columns.get_loc("p") + 1, "p_fdr", fdr(out["p"], method))
    return out.sort_values("p", kind="stable", na_position="last").reset_index(drop=True)


# --- density estimates --------------------------------------------------------------------------------------
def kde_grid(*samples, n_points: int = 256, cut: float = 3.0) -> np.ndarray:
    """One evaluation grid covering all ``samples`` plus ``cut`` Scott bandwidths on each side."""
    vals = [np.asarray(s, dtype=float).ravel() for s in samples]
    vals = np.concatenate([v[np.isfinite(v)] for v in vals]) if vals else np.empty(0)
    if vals.size == 0:
        return np.linspace(0.0, 1.0, n_points)
    lo, hi = float(vals.min()), float(vals.max())
    bw = _fallback_bw(vals) if vals.size < 2 or np.std(vals) == 0 else \
        max(float(np.std(vals, ddof=1)) * vals.size ** (-1 / 5), _fallback_bw(vals))
    return np.linspace(lo - cut * bw, hi + cut * bw, n_points)


def _fallback_bw(v: np.ndarray) -> float:
    scale = float(np.max(np.abs(v))) if v.size else 0.0
    return 0.05 * scale if scale > 0 else 1.0


def kde(values, grid=None, *, n_points: int = 256, bw_method=None, cut: float = 3.0
        ) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian kernel density estimate of ``values`` on ``grid`` (``scipy.stats.gaussian_kde``).

    Robust: NaN/inf are dropped; no value gives a zero density; a single value or constant
    values (where ``gaussian_kde`` fails on a singular covariance) give one Gaussian of width
    2 grid steps (or 5 % of the value's magnitude without a grid) so the spike still shows and
    integrates to 1. Default grid: :func:`kde_grid`.

    Returns
    -------
    (grid, density), both float64 ``(n_points,)``; the density integrates to ≈ 1 over a grid
    that covers the data.
    """
    v = np.asarray(values, dtype=float).ravel()
    v = v[np.isfinite(v)]
    grid = kde_grid(v, n_points=n_points, cut=cut) if grid is None else np.asarray(grid, dtype=float)
    if v.size == 0:
        return grid, np.zeros_like(grid)
    if v.size >= 2 and np.ptp(v) > 0:
        try:
            return grid, sps.gaussian_kde(v, bw_method=bw_method)(grid)
        except (np.linalg.LinAlgError, ValueError):
            pass
    step = float(np.median(np.diff(grid))) if grid.size > 1 else 0.0
    bw = 2 * step if step > 0 else _fallback_bw(v)
    centre = float(v.mean())
    return grid, np.exp(-0.5 * ((grid - centre) / bw) ** 2) / (bw * np.sqrt(2 * np.pi))
