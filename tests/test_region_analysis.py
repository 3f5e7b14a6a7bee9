"""What the Atlas metrics page computes: annotation and gain, rankings, density estimates, the most different
confident patients, top-k overlaps, each method's top regions, per-region tests, ground-truth overlap, figures."""

from __future__ import annotations

import itertools
from urllib.parse import parse_qs, urlparse

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from scipy.spatial.distance import cosine

from lib.analysis import region_analysis as ra
from lib.views import region_figures as rf

REGIONS = ["Left_Hippocampus", "Right_Hippocampus", "Left_Amygdala", "Brain_Stem", "Left_vessel"]
VOXELS = {"Left_Hippocampus": 100, "Right_Hippocampus": 110, "Left_Amygdala": 40, "Brain_Stem": 500, "Left_vessel": 1}


def _cohort(seed: int = 0, n_ad: int = 6, n_hc: int = 6):
    """A region table (as cached) and predictions: AD scans carry extra relevance in the hippocampi."""
    rng = np.random.default_rng(seed)
    scans = [f"ad{i}" for i in range(n_ad)] + [f"hc{i}" for i in range(n_hc)]
    rows = []
    for s in scans:
        for j, r in enumerate(REGIONS):
            base = 1.0 + j * 0.1 + rng.random() * 0.05
            extra = 3.0 if s.startswith("ad") and "Hippocampus" in r else 0.0
            total_sum = (base + extra) * VOXELS[r] * 0.01
            rows.append({"scan_id": s, "region": r, "label": j + 1, "hemisphere": "left", "voxels": VOXELS[r],
                         "sum": total_sum, "density": total_sum / VOXELS[r], "fraction": total_sum / 50.0,
                         "positive_sum": total_sum, "positive_fraction": total_sum / 50.0,
                         "abs_sum": 2 * total_sum, "abs_density": 2 * total_sum / VOXELS[r],
                         "abs_fraction": total_sum / 50.0})
    metrics = pd.DataFrame(rows)
    scores = {s: (0.95 - 0.01 * i if s.startswith("ad") else 0.2) for i, s in enumerate(scans)}
    preds = pd.DataFrame({
        "scan_id": scans, "subject_id": [s[:3] for s in scans],
        "diagnosis": ["AD" if s.startswith("ad") else "HC" for s in scans],
        "ad_score": [scores[s] for s in scans],
        "split": ["test" if i % 2 == 0 else "train" for i in range(len(scans))]})
    preds["predicted"] = np.where(preds["ad_score"] > 0.5, "AD", "HC")
    preds["outcome"] = [("T" if d == p else "F") + ("P" if p == "AD" else "N")
                        for d, p in zip(preds["diagnosis"], preds["predicted"])]
    return metrics, preds


def test_annotate_selects_the_split_and_gain_is_relative_to_its_hc_mean():
    metrics, preds = _cohort()
    t = ra.annotate(metrics, preds, split="test")
    test_scans = set(preds.loc[preds["split"] == "test", "scan_id"])
    assert set(t["scan_id"]) == test_scans
    assert {"diagnosis", "outcome", "ad_score", "gain"} <= set(t.columns)
    hc = t[t["diagnosis"] == "HC"]
    hc_mean = hc.groupby("region")["sum"].mean()
    # gain of one scan = its sum / the HC mean of this split; the HC mean gain is exactly 1
    row = t[(t["scan_id"] == "ad0") & (t["region"] == "Left_Hippocampus")].iloc[0]
    assert row["gain"] == pytest.approx(row["sum"] / hc_mean["Left_Hippocampus"])
    np.testing.assert_allclose(hc.groupby("region")["gain"].mean(), 1.0)
    # absolute values swap in the abs_* columns
    a = ra.annotate(metrics, preds, split="all", absolute=True)
    assert len(a) == len(metrics)
    np.testing.assert_allclose(a["sum"], metrics["abs_sum"])
    np.testing.assert_allclose(a["density"], metrics["abs_density"])
    with pytest.raises(KeyError, match="abs_sum"):
        ra.annotate(metrics.drop(columns=["abs_sum"]), preds, absolute=True)


def test_rankings_and_top_table_by_hand():
    metrics, preds = _cohort()
    t = ra.annotate(metrics, preds, split="all")
    ad = t[t["diagnosis"] == "AD"]
    expected = ad.groupby("region")["density"].mean().sort_values(ascending=False)
    r = ra.ranking(t, "density")
    assert list(r.index) == list(expected.index)
    np.testing.assert_allclose(r.to_numpy(), expected.to_numpy())
    # the group gain is the AD mean sum over the HC mean sum (Böhle et al. §2.5)
    g = ra.ranking(t, "gain")
    hc = t[t["diagnosis"] == "HC"].groupby("region")["sum"].mean()
    assert g["Left_Hippocampus"] == pytest.approx(ad.groupby("region")["sum"].mean()["Left_Hippocampus"]
                                                  / hc["Left_Hippocampus"])
    assert set(g.index[:2]) == {"Left_Hippocampus", "Right_Hippocampus"}
    # the one-voxel region leaves the ranking when small regions are excluded
    assert "Left_vessel" in r.index and "Left_vessel" not in ra.ranking(t, "density", min_voxels=2).index
    top = ra.top_table(t, "density", k=3)
    assert list(top["rank"]) == [1, 2, 3] and list(top["region"]) == list(expected.index[:3])
    assert top["mean_HC"].iat[0] == pytest.approx(
        t[(t["diagnosis"] == "HC") & (t["region"] == top["region"].iat[0])]["density"].mean())
    assert (top["n_AD"] == 6).all() and (top["n_HC"] == 6).all()
    # TP/TN groups come from the outcome column
    assert set(ra.group_scans(t, "TP")) == set(preds.loc[preds["outcome"] == "TP", "scan_id"])
    with pytest.raises(KeyError):
        ra.ranking(t, "volume")


def test_distributions_are_densities_with_the_group_means():
    metrics, preds = _cohort()
    t = ra.annotate(metrics, preds, split="all")
    dists = ra.distributions(t, "density", ["Left_Hippocampus", "Brain_Stem"], ("AD", "HC", "FP"), cut=3)
    assert [d["region"] for d in dists] == ["Left_Hippocampus", "Brain_Stem"]
    # by default the estimate is drawn over the observed values only
    for d in ra.distributions(t, "density", ["Left_Hippocampus"], ("AD", "HC")):
        for e in d["groups"].values():
            assert e["grid"][0] == pytest.approx(e["values"].min()) and e["grid"][-1] == pytest.approx(e["values"].max())
    one = t[~t["scan_id"].isin(["hc1", "hc2", "hc3", "hc4", "hc5"])]          # a single HC scan
    spike = ra.distributions(one, "density", ["Brain_Stem"], ("HC",))[0]["groups"]["HC"]
    assert np.ptp(spike["grid"]) > 0 and spike["density"].max() > 0
    for d in dists:
        ad, hc = d["groups"]["AD"], d["groups"]["HC"]
        for e, group in ((ad, "AD"), (hc, "HC")):
            vals = t[(t["region"] == d["region"]) & (t["diagnosis"] == group)]["density"]
            assert e["n"] == len(vals) and e["mean"] == pytest.approx(vals.mean())
            assert np.trapezoid(e["density"], e["grid"]) == pytest.approx(1.0, abs=0.02)
        assert d["groups"]["FP"]["n"] == 0 and np.isnan(d["groups"]["FP"]["mean"])
        assert not d["groups"]["FP"]["density"].any()


def test_most_different_patients_is_the_truly_furthest_confident_pair():
    rng = np.random.default_rng(3)
    regions = [f"R{i}" for i in range(5)]
    scans = [f"p{i}" for i in range(9)]
    vec = rng.gamma(1.0, 1.0, (9, 5))
    vec[0], vec[1] = [9, 0, 0, 0, 0.01], [0.01, 0, 0, 0, 9]   # furthest overall, but p0 is not confident
    rows = [{"scan_id": s, "region": r, "density": vec[i, j]} for i, s in enumerate(scans) for j, r in enumerate(regions)]
    t = pd.DataFrame(rows)
    t["diagnosis"] = np.where(t["scan_id"] == "p8", "HC", "AD")          # p8 is a (confident-looking) control
    t["ad_score"] = t["scan_id"].map({s: (0.5 if s == "p0" else 0.95) for s in scans})
    a, b, d = ra.most_different_patients(t, regions, min_score=0.9)
    candidates = range(1, 8)
    best = max(itertools.combinations(candidates, 2), key=lambda ij: cosine(vec[ij[0]], vec[ij[1]]))
    assert {a, b} == {scans[best[0]], scans[best[1]]}
    assert d == pytest.approx(cosine(vec[best[0]], vec[best[1]]))
    assert list(ra.confident_patients(t, 0.9).index) == scans[1:8]
    assert ra.most_different_patients(t, regions, min_score=0.99) is None
    fp = ra.fingerprints(t, ["p2", "p1"], ["R3", "R0"])
    assert list(fp.index) == ["p2", "p1"] and list(fp.columns) == ["R3", "R0"]
    assert fp.loc["p1", "R0"] == pytest.approx(vec[1, 0])


def test_overlap_of_identical_rankings_is_100_and_of_disjoint_ones_0():
    metrics, preds = _cohort()
    t = ra.annotate(metrics, preds, split="all")
    m = ra.overlap_matrices({"β=0": t, "β=0.25": t.copy()}, k=3)
    assert set(m) == set(ra.ROBUSTNESS_METRICS)
    for mat in m.values():
        assert (mat.to_numpy() == 100).all()
    # reverse one table's sums: its top 2 are the other's bottom 2
    flipped = t.copy()
    for col in ("sum", "density", "gain"):
        flipped[col] = -flipped[col]
    m2 = ra.overlap_matrices({"a": t, "b": flipped}, metrics=("density",), k=2)["density"]
    assert m2.loc["a", "b"] == 0 and m2.loc["a", "a"] == 100
    mo = ra.mean_overlaps({"r1": t, "r2": t, "r3": flipped}, metrics=("density",), k=2)
    # pairs: (r1, r2) 100, (r1, r3) 0, (r2, r3) 0
    assert mo["mean_overlap"].iat[0] == pytest.approx(100 / 3) and mo["pairs"].iat[0] == 3


def test_method_top_regions_hold_the_mean_fraction():
    metrics, preds = _cohort()
    t = ra.annotate(metrics, preds, split="all")
    other = t.copy()
    other["fraction"] = other["fraction"] * np.where(other["region"] == "Brain_Stem", 10, 1)
    long = ra.method_top_regions({"LRP β=0": t, "Guided backprop": other}, k=2)
    assert set(long["method"]) == {"LRP β=0", "Guided backprop"} and set(long["group"]) == {"AD", "HC"}
    lrp_ad = long[(long["method"] == "LRP β=0") & (long["group"] == "AD")]
    expected = t[t["diagnosis"] == "AD"].groupby("region")["fraction"].mean().sort_values(ascending=False)
    assert list(lrp_ad["region"]) == list(expected.index[:2])
    np.testing.assert_allclose(lrp_ad["fraction"], expected.to_numpy()[:2])
    assert long[(long["method"] == "Guided backprop") & (long["rank"] == 1)]["region"].unique().tolist() == \
        ["Brain_Stem"]
    wide_t = ra.method_table(long, "AD")
    assert list(wide_t.columns) == ["LRP β=0", "Guided backprop"] and list(wide_t.index) == [1, 2]
    assert wide_t.loc[1, "Guided backprop"].startswith("Brain_Stem (") and wide_t.loc[1, "Guided backprop"].endswith("%)")


def test_region_tests_match_scipy_with_fdr():
    metrics, preds = _cohort(n_ad=8, n_hc=8)
    t = ra.annotate(metrics, preds, split="all")
    res = ra.region_tests(t, "density").set_index("region")
    ad = t[t["diagnosis"] == "AD"].pivot(index="scan_id", columns="region", values="density")
    hc = t[t["diagnosis"] == "HC"].pivot(index="scan_id", columns="region", values="density")
    p = {r: sps.mannwhitneyu(ad[r], hc[r], alternative="two-sided").pvalue for r in REGIONS}
    for r in REGIONS:
        assert res.loc[r, "p"] == pytest.approx(p[r])
    fdr = sps.false_discovery_control([p[r] for r in REGIONS])
    np.testing.assert_allclose(res.loc[REGIONS, "p_fdr"], fdr)
    # the planted effect: both hippocampi significant with all AD above all HC, the others not
    assert set(res.index[res["significant"]]) == {"Left_Hippocampus", "Right_Hippocampus"}
    assert res.loc["Left_Hippocampus", "effect"] == pytest.approx(1.0)
    welch = ra.region_tests(t, "density", test="welch").set_index("region")
    assert welch.loc["Brain_Stem", "p"] == pytest.approx(sps.ttest_ind(ad["Brain_Stem"], hc["Brain_Stem"],
                                                                        equal_var=False).pvalue)


def test_truth_overlap_and_atrophied_regions_of_the_demo(demo_ws):
    truth = ra.atrophied_regions(demo_ws)
    gt = pd.read_csv(demo_ws.ground_truth_dir / "atrophy.csv")
    assert truth and all(f"mm_{r}" in gt.columns for r in truth)
    assert not any("Vent" in r for r in truth)     # enlarged, not atrophied
    assert {"Left_Hippocampus", "Right_Hippocampus"} <= truth
    assert "Hippocampus" in ra.atrophied_regions(demo_ws, merged=True)
    o = ra.truth_overlap(["Left_Hippocampus", "Brain_Stem", "Right_Amygdala", "CSF"], truth)
    assert o["k"] == 4 and o["hits"] == len({"Left_Hippocampus", "Right_Amygdala"} & truth)
    assert o["percent"] == pytest.approx(100 * o["hits"] / 4)


def test_viewer_link_reopens_the_scan_in_the_heatmap_page():
    url = ra.viewer_link("run 1", "abc123", "sub-001_ses-1", "/data/my ws")
    parsed = urlparse(url)
    assert parsed.path == "heatmaps"
    q = {k: v[0] for k, v in parse_qs(parsed.query).items()}
    assert q == {"run": "run 1", "store": "abc123", "view": "Individual", "split": "all", "scan": "sub-001_ses-1",
                 "workspace": "/data/my ws"}


def test_region_figure_draws_groups_means_fingerprints_and_identity_line():
    metrics, preds = _cohort()
    t = ra.annotate(metrics, preds, split="all")
    regions = list(ra.ranking(t, "gain").index[:4])
    dists = ra.distributions(t, "gain", regions, ("TP", "TN"))
    fp = ra.fingerprints(t, ["ad0", "ad2"], regions, "gain")
    fig = rf.region_figure(dists, "gain", ("TP", "TN"), fingerprints=fp, marked={regions[1]}, identity=True,
                           title="gain")
    names = [tr.name for tr in fig.data]
    assert names[:4] == ["TP distribution", "TN distribution", "TP mean", "TN mean"] and names[4:] == ["ad0", "ad2"]
    assert fig.data[0].fillcolor.startswith("rgba(255,127,14") and fig.data[1].fillcolor.startswith("rgba(44,160,44")
    tp_means = [d["groups"]["TP"]["mean"] for d in dists]
    np.testing.assert_allclose(fig.data[2].x, tp_means)
    np.testing.assert_allclose(fig.data[4].x, fp.loc["ad0"].to_numpy())
    assert any(s.x0 == 1.0 and s.x1 == 1.0 for s in fig.layout.shapes)        # the identity gain
    assert list(fig.layout.yaxis.ticktext) == [regions[0], f"★ {regions[1]}", *regions[2:]]
    # TP shapes sit above each row's baseline (the axis is reversed), TN shapes below
    xs, ys = rf.ridge_polygons(dists, "TP", -1)
    y = np.array([v for v in ys if v is not None], dtype=float)
    rows = np.round(y).astype(int)
    assert (y <= rows + 1e-9).all() and (y >= rows - rf.HALF_HEIGHT - 1e-9).all()
    assert ys.count(None) == len(regions)
    assert not any(s.x0 == 1.0 for s in rf.region_figure(dists, "gain", ("TP", "TN")).layout.shapes)


def test_overlap_and_volcano_figures():
    metrics, preds = _cohort()
    t = ra.annotate(metrics, preds, split="all")
    mats = ra.overlap_matrices({"β=0": t, "β=1": t}, k=3)
    fig = rf.overlap_figure(mats)
    assert len(fig.data) == 3
    assert fig.data[0].text[0][0] == "100" and fig.data[0].zmax == 100
    res = ra.region_tests(t, "density")
    v = rf.volcano_figure(res, marked={"Left_Hippocampus"})
    sig = next(tr for tr in v.data if tr.name.startswith("significant"))
    assert set(sig.customdata[:, 0]) == set(res.loc[res["significant"], "region"])
    assert "star" in list(sig.marker.symbol)
