"""Statistics checked against scipy and brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from scipy.spatial.distance import cosine, euclidean

from lib.analysis import similarity, stats


def _corr_pair(n: int, rho: float, seed: int):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    y = rho * x + np.sqrt(1 - rho ** 2) * rng.normal(size=n)
    return x, y


def _pearson_stat(x, y, axis=-1):
    xc = x - x.mean(axis=axis, keepdims=True)
    yc = y - y.mean(axis=axis, keepdims=True)
    return (xc * yc).sum(axis=axis) / np.sqrt((xc * xc).sum(axis=axis) * (yc * yc).sum(axis=axis))


def test_pearson_equals_scipy_and_handles_nan_and_degenerate_input():
    x, y = _corr_pair(40, 0.4, 0)
    r, p = stats.pearson(x, y)
    ref = sps.pearsonr(x, y)
    assert r == pytest.approx(ref.statistic, abs=1e-12) and p == pytest.approx(ref.pvalue, rel=1e-9)
    xn, yn = x.copy(), y.copy()
    xn[3], yn[7] = np.nan, np.inf
    keep = np.isfinite(xn) & np.isfinite(yn)
    assert stats.pearson(xn, yn)[0] == pytest.approx(sps.pearsonr(x[keep], y[keep]).statistic, abs=1e-12)
    assert all(np.isnan(stats.pearson(np.ones(10), y[:10])))
    assert all(np.isnan(stats.pearson([1, 2], [3, 4])))
    rho, ps = stats.spearman(x, y)
    ref_s = sps.spearmanr(x, y)
    assert rho == pytest.approx(ref_s.statistic, abs=1e-12) and ps == pytest.approx(ref_s.pvalue, rel=1e-9)


@pytest.mark.parametrize("n, rho, seed", [(30, 0.35, 1), (25, -0.45, 2)])
def test_permutation_p_agrees_with_scipy_permutation_test(n, rho, seed):
    x, y = _corr_pair(n, rho, seed)
    n_perm = 20_000
    r, p = stats.permutation_test(x, y, n_permutations=n_perm, seed=5)
    ref = sps.permutation_test((x, y), _pearson_stat, permutation_type="pairings", vectorized=True,
                               n_resamples=n_perm, alternative="two-sided", rng=np.random.default_rng(9))
    assert r == pytest.approx(ref.statistic, abs=1e-12)
    assert 0.001 < ref.pvalue < 0.5                   # a regime where the comparison means something
    se = np.sqrt(2 * ref.pvalue * (1 - ref.pvalue) / n_perm)   # two independent Monte-Carlo estimates
    assert abs(p - ref.pvalue) < 4 * se + 1 / n_perm
    assert stats.permutation_test(x, y, n_permutations=n_perm, seed=5) == (r, p)   # seeded


def test_permutation_p_matches_the_exact_distribution_for_small_n():
    x, y = _corr_pair(7, 0.6, 3)
    perms = np.array(list(itertools.permutations(range(7))))            # all 5040 pairings
    null = _pearson_stat(np.broadcast_to(x, perms.shape), y[perms])
    r_obs = _pearson_stat(x, y)
    exact = float(np.mean(np.abs(null) >= abs(r_obs) - 1e-12))
    assert 0.01 < exact < 0.5
    _, p = stats.permutation_test(x, y, n_permutations=20_000, seed=0)
    assert abs(p - exact) < 4 * np.sqrt(exact * (1 - exact) / 20_000) + 1e-4
    # A perfect correlation reaches the floor 1 / (1 + n_permutations), never 0.
    _, p_min = stats.permutation_test(np.arange(30.0), 2 * np.arange(30.0), n_permutations=999, seed=0)
    assert p_min == pytest.approx(1 / 1000)


def test_bootstrap_ci_agrees_with_scipy_percentile_bootstrap():
    x, y = _corr_pair(60, 0.5, 4)
    lo, hi = stats.bootstrap_ci(x, y, n_boot=10_000, seed=1)
    ref = sps.bootstrap((x, y), _pearson_stat, paired=True, vectorized=True, n_resamples=10_000,
                        method="percentile", rng=np.random.default_rng(2)).confidence_interval
    r = sps.pearsonr(x, y).statistic
    assert lo < r < hi
    assert lo == pytest.approx(ref.low, abs=0.03) and hi == pytest.approx(ref.high, abs=0.03)
    narrow = stats.bootstrap_ci(*_corr_pair(600, 0.5, 4), n_boot=2_000, seed=1)
    assert narrow[1] - narrow[0] < (hi - lo) / 2
    assert stats.bootstrap_ci(x, y, n_boot=10_000, seed=1) == (lo, hi)


def test_partial_correlation_matches_regression_residuals():
    rng = np.random.default_rng(5)
    n = 80
    age = rng.normal(72, 7, n)
    icv = rng.normal(1500, 120, n)
    x = 0.08 * age + 0.002 * icv + rng.normal(size=n)      # both driven by the covariates …
    y = -0.06 * age + 0.003 * icv + 0.3 * x + rng.normal(size=n)
    cov = pd.DataFrame({"age": age, "icv": icv})
    out = stats.partial_correlation(x, y, cov)

    # Residuals by hand (normal equations) and the precision-matrix formula.
    design = np.column_stack([np.ones(n), age, icv])
    res = lambda v: v - design @ np.linalg.solve(design.T @ design, design.T @ v)  # noqa: E731
    r_res = sps.pearsonr(res(x), res(y)).statistic
    prec = np.linalg.inv(np.cov(np.column_stack([x, y, age, icv]).T))
    r_prec = -prec[0, 1] / np.sqrt(prec[0, 0] * prec[1, 1])
    assert out["r"] == pytest.approx(r_res, abs=1e-10) and out["r"] == pytest.approx(r_prec, abs=1e-10)
    assert out["n"] == n and out["k"] == 2 and out["df"] == n - 4
    t = r_res * np.sqrt((n - 4) / (1 - r_res ** 2))
    assert out["p"] == pytest.approx(2 * sps.t.sf(abs(t), n - 4), rel=1e-9)
    assert abs(out["r"] - sps.pearsonr(x, y).statistic) > 0.05    # controlling changed something

    # A collinear covariate adds nothing; a NaN row is dropped; a permutation p comes on request.
    same = stats.partial_correlation(x, y, np.column_stack([age, 2 * age + 1, icv]))
    assert same["r"] == pytest.approx(out["r"], abs=1e-9) and same["k"] == 2
    age_nan = age.copy()
    age_nan[0] = np.nan
    dropped = stats.partial_correlation(x, y, np.column_stack([age_nan, icv]))
    assert dropped["n"] == n - 1
    assert dropped["r"] == pytest.approx(stats.partial_correlation(x[1:], y[1:], cov.iloc[1:])["r"], abs=1e-12)
    perm = stats.partial_correlation(x, y, cov, n_permutations=5_000, seed=0)
    assert abs(perm["p_permutation"] - out["p"]) < 0.03 + 4 * np.sqrt(out["p"] * (1 - out["p"]) / 5_000)
    # Without covariates it is the plain correlation.
    assert stats.partial_correlation(x, y, None)["r"] == pytest.approx(sps.pearsonr(x, y).statistic, abs=1e-12)


def test_partial_correlations_of_many_columns_share_permutations():
    rng = np.random.default_rng(11)
    n = 40
    age = rng.normal(72, 7, n)
    icv = rng.normal(1500, 120, n)
    y = 0.05 * age + rng.normal(size=n)
    X = pd.DataFrame({"a": 0.4 * y + 0.01 * icv + rng.normal(size=n), "b": rng.normal(size=n),
                      "c": -0.3 * y + 0.02 * age + rng.normal(size=n),
                      "const": np.full(n, 3.0), "explained": 2 * age - 1})
    cov = pd.DataFrame({"age": age, "icv": icv})
    out = stats.partial_correlations(X, y, cov, n_permutations=10_000, seed=4)
    assert out["feature"].tolist() == list(X.columns) and (out["n"] == n).all()
    for col in ("a", "b", "c"):
        row = out.set_index("feature").loc[col]
        ref = stats.partial_correlation(X[col], y, cov, n_permutations=10_000, seed=4)
        assert row["r"] == pytest.approx(ref["r"], abs=1e-12) and row["p"] == pytest.approx(ref["p"], rel=1e-9)
        assert row["p_permutation"] == ref["p_permutation"]        # the same shuffles, column by column
    # a constant column and one the covariates explain have no partial correlation
    assert out.set_index("feature").loc[["const", "explained"], ["r", "p", "p_permutation"]].isna().all().all()
    # the permutation p agrees with scipy's permutation test of the residuals
    design = np.column_stack([np.ones(n), age, icv])
    res = lambda v: v - design @ np.linalg.lstsq(design, v, rcond=None)[0]  # noqa: E731
    ref = sps.permutation_test((res(X["c"].to_numpy()), res(y)), _pearson_stat, permutation_type="pairings",
                               vectorized=True, n_resamples=10_000, rng=np.random.default_rng(1))
    got = out.set_index("feature").loc["c", "p_permutation"]
    se = np.sqrt(2 * ref.pvalue * (1 - ref.pvalue) / 10_000)
    assert 0.001 < ref.pvalue < 0.5 and abs(got - ref.pvalue) < 4 * se + 1e-4
    np.testing.assert_array_equal(out["p_fdr"].isna(), out["p_permutation"].isna())
    ok = out["p_permutation"].notna()
    np.testing.assert_allclose(out.loc[ok, "p_fdr"], sps.false_discovery_control(out.loc[ok, "p_permutation"]))
    # a row with a missing y or covariate is dropped for every column
    y_nan = y.copy()
    y_nan[0] = np.nan
    dropped = stats.partial_correlations(X[["a"]], y_nan, cov, n_permutations=0)
    assert dropped["n"].iat[0] == n - 1 and np.isnan(dropped["p_permutation"].iat[0])
    assert dropped["r"].iat[0] == pytest.approx(
        stats.partial_correlation(X["a"][1:], y[1:], cov.iloc[1:])["r"], abs=1e-12)
    assert dropped["p_fdr"].iat[0] == pytest.approx(dropped["p"].iat[0])   # one test: nothing to correct


def test_partial_permutation_p_keeps_its_level_with_few_scans():
    # n = 8 with two covariates: the partial r has n − 4 degrees of freedom. Shuffling the residuals
    # alone would test against n − 2 and reject a true null about twice as often as it should; the
    # Freedman–Lane shuffle agrees with the exact t-test under normality.
    rng = np.random.default_rng(0)
    n, m = 8, 1000
    cov = rng.normal(size=(n, 2))
    y = rng.normal(size=n) + cov @ [0.5, 0.3]
    X = rng.normal(size=(n, m)) + (cov @ [0.4, -0.2])[:, None]      # m independent null features
    out = stats.partial_correlations(X, y, cov, n_permutations=4_000, seed=1)
    assert 0.02 <= (out["p_permutation"] <= 0.05).mean() <= 0.08
    assert np.abs(out["p_permutation"] - out["p"]).max() < 0.07
    assert np.corrcoef(out["p_permutation"], out["p"])[0, 1] > 0.99
    one = stats.partial_correlation(X[:, 0], y, cov, n_permutations=4_000, seed=1)
    assert one["p_permutation"] == out["p_permutation"].iat[0]


def test_correlate_bundles_everything():
    x, y = _corr_pair(50, -0.5, 6)
    out = stats.correlate(x, y, n_permutations=2_000, n_boot=2_000)
    assert out["n"] == 50 and out["r"] == pytest.approx(sps.pearsonr(x, y).statistic)
    assert out["ci_low"] < out["r"] < out["ci_high"] < 0
    assert 0 < out["p_permutation"] <= 1 and out["rho"] < 0


def test_fdr_matches_scipy_and_ignores_nan():
    p = np.array([0.001, 0.04, 0.03, np.nan, 0.5, 0.01])
    ok = np.isfinite(p)
    out = stats.fdr(p)
    np.testing.assert_allclose(out[ok], sps.false_discovery_control(p[ok]))
    assert np.isnan(out[3])
    np.testing.assert_allclose(stats.fdr(p, "by")[ok], sps.false_discovery_control(p[ok], method="by"))


def test_group_comparison_per_region():
    rng = np.random.default_rng(7)
    scans = [f"s{i}" for i in range(30)]
    labels = {s: ("AD" if i < 12 else "HC") for i, s in enumerate(scans)}
    ad = np.array([labels[s] == "AD" for s in scans])
    values = pd.DataFrame({
        "hippocampus": rng.normal(0, 1, 30) + 1.5 * ad,
        "cuneus": rng.normal(0, 1, 30),
        "constant": np.ones(30),
    }, index=scans)
    values.loc["s0", "cuneus"] = np.nan
    out = stats.compare_groups(values, labels).set_index("feature")
    assert out.index[0] == "hippocampus"                          # sorted by p
    a, b = values.loc[ad, "hippocampus"].to_numpy(), values.loc[~ad, "hippocampus"].to_numpy()
    ref = sps.mannwhitneyu(a, b)
    assert out.loc["hippocampus", "p"] == pytest.approx(ref.pvalue)
    pairs = np.sign(a[:, None] - b[None, :])
    assert out.loc["hippocampus", "effect"] == pytest.approx(pairs.mean())   # rank-biserial by brute force
    assert out.loc["cuneus", "n_a"] == 11 and out.loc["hippocampus", "n_b"] == 18
    assert np.isnan(out.loc["constant", "p"])
    np.testing.assert_allclose(out["p_fdr"].dropna(), stats.fdr(out["p"].dropna()))

    welch = stats.compare_groups(values, [labels[s] for s in scans], test="welch").set_index("feature")
    assert welch.loc["hippocampus", "p"] == pytest.approx(sps.ttest_ind(a, b, equal_var=False).pvalue)
    sp = np.sqrt(((a.size - 1) * a.var(ddof=1) + (b.size - 1) * b.var(ddof=1)) / (a.size + b.size - 2))
    g = (a.mean() - b.mean()) / sp * (1 - 3 / (4 * (a.size + b.size) - 9))
    assert welch.loc["hippocampus", "effect"] == pytest.approx(g) and g > 0


@pytest.mark.parametrize("values", [
    np.random.default_rng(8).normal(3, 2, 200),
    np.concatenate([np.random.default_rng(9).normal(-5, 1, 50), np.random.default_rng(10).normal(5, 0.2, 50)]),
    np.full(20, 0.37),          # constant: gaussian_kde has a singular covariance
    np.array([4.2]),            # a single value
    np.array([1e-4, 2e-4]),     # two tiny values
    np.array([0.0, 0.0, np.nan]),
])
def test_kde_integrates_to_one(values):
    grid, dens = stats.kde(values)
    assert grid.shape == dens.shape and np.all(dens >= 0)
    assert np.trapezoid(dens, grid) == pytest.approx(1.0, abs=0.01)


def test_kde_on_a_shared_grid_and_empty_input():
    a = np.random.default_rng(11).normal(0, 1, 300)
    b = np.full(10, 2.0)
    grid = stats.kde_grid(a, b, n_points=400)
    _, da = stats.kde(a, grid)
    _, db = stats.kde(b, grid)
    np.testing.assert_allclose(da, sps.gaussian_kde(a)(grid))
    assert np.trapezoid(db, grid) == pytest.approx(1.0, abs=0.01)
    assert grid[np.argmax(db)] == pytest.approx(2.0, abs=2 * (grid[1] - grid[0]))
    g, d = stats.kde([])
    assert g.size == d.size and not d.any()


def test_top_k_overlap():
    regions = [f"r{i}" for i in range(30)]
    assert similarity.top_k_overlap(regions, list(regions), k=10) == 100.0
    assert similarity.top_k_overlap(regions, regions[10:], k=10) == 0.0
    assert similarity.top_k_overlap(regions, regions[5:], k=10) == 50.0
    scores = pd.Series(np.arange(30.0), index=regions)          # higher is better: r29 first
    assert similarity.top_k_overlap(scores, regions[::-1], k=10) == 100.0
    assert similarity.top_k_overlap(regions[:4], regions, k=10) == 100.0   # short list sets the denominator
    m = similarity.overlap_matrix({"b0": regions, "b1": regions[5:], "b2": regions[::-1]}, k=10)
    assert (np.diag(m) == 100).all() and (m.to_numpy() == m.to_numpy().T).all()
    assert m.loc["b0", "b1"] == 50.0 and m.loc["b0", "b2"] == 0.0
    assert similarity.mean_pairwise_overlap([regions, regions[5:], regions[::-1]], k=10) == pytest.approx(
        (50 + 0 + 0) / 3)


def test_furthest_pair_is_the_brute_force_argmax():
    rng = np.random.default_rng(12)
    vec = rng.gamma(1.0, 1.0, (25, 8))
    vec[3] = 0.0                                                # zero vector: no direction, ignored
    ids = [f"p{i}" for i in range(25)]
    a, b, d = similarity.furthest_pair(vec, ids)
    pairs = [(i, j) for i, j in itertools.combinations(range(25), 2) if 3 not in (i, j)]
    best = max(pairs, key=lambda ij: cosine(vec[ij[0]], vec[ij[1]]))
    assert (a, b) == (ids[best[0]], ids[best[1]])
    assert d == pytest.approx(cosine(vec[best[0]], vec[best[1]]))
    ea, eb, ed = similarity.furthest_pair(vec, ids, metric="euclidean")
    best_e = max(itertools.combinations(range(25), 2), key=lambda ij: euclidean(vec[ij[0]], vec[ij[1]]))
    assert (ea, eb) == (ids[best_e[0]], ids[best_e[1]]) and ed == pytest.approx(euclidean(*vec[list(best_e)]))
    assert similarity.furthest_pair(vec[:1]) is None
    d_all = similarity.cosine_distances(vec)
    assert np.isnan(d_all[3]).all() and d_all[0, 1] == pytest.approx(cosine(vec[0], vec[1]))


def test_distance_table_between_mean_maps():
    rng = np.random.default_rng(13)
    maps = {m: rng.normal(size=(6, 7, 5)).astype(np.float32) for m in ("lrp", "gb", "occlusion")}
    t = similarity.distance_table(maps)
    assert list(t.index) == list(maps) and (t.to_numpy() == t.to_numpy().T).all()
    assert (np.diag(t) == 0).all()
    assert t.loc["lrp", "gb"] == pytest.approx(np.sqrt(((maps["lrp"].astype(float) - maps["gb"]) ** 2).sum()))
    mask = np.zeros((6, 7, 5), bool)
    mask[:3] = True
    tm = similarity.distance_table(maps, mask=mask)
    assert tm.loc["gb", "occlusion"] == pytest.approx(np.linalg.norm((maps["gb"] - maps["occlusion"])[mask]))
    scaled = dict(maps, gb=maps["lrp"] * 1000)
    assert similarity.distance_table(scaled, normalise="sum").loc["lrp", "gb"] == pytest.approx(0, abs=1e-6)
    with pytest.raises(ValueError, match="shape"):
        similarity.distance_table({"a": np.zeros(3), "b": np.zeros(4)})


def test_partial_correlations_of_no_scans_are_empty_not_an_error():
    """A selection without scans (e.g. no true positives in the split) gives NaN, as too few scans do."""
    out = stats.partial_correlations(pd.DataFrame({"a": [], "b": []}), [], pd.DataFrame({"age": []}), n_permutations=10)
    assert list(out["feature"]) == ["a", "b"] and (out["n"] == 0).all() and out["r"].isna().all()
