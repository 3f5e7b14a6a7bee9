"""Region metrics: sums against nilearn's masker, hand-computed density/fraction/gain on a toy atlas."""

from __future__ import annotations

import itertools
import warnings

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from scipy.spatial.distance import cosine

from lib.data.atlas import atlas_from_arrays, load_atlas
from lib.analysis.regions import (add_gain, diverse_pair, group_summary, region_metrics, to_csv, top_regions, wide)
from lib.data.templates import Grid

RES = 3.0


def _nilearn_sums(atlas, heatmaps: np.ndarray) -> np.ndarray:
    from nilearn.maskers import NiftiLabelsMasker

    img = nib.Nifti1Image(np.moveaxis(heatmaps, 0, -1).astype(np.float32), atlas.grid.affine)
    masker = NiftiLabelsMasker(atlas.image, strategy="sum")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = masker.fit_transform(img)
    # Columns follow the masker's own region order; map them back to label values.
    ids = [v for k, v in masker.region_ids_.items() if k != "background"]
    return pd.DataFrame(out, columns=ids)


@pytest.fixture(scope="module")
def nm_atlas():
    return load_atlas("neuromorphometrics", RES)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_sums_equal_nilearn_masker(nm_atlas, backend):
    rng = np.random.default_rng(3)
    shape = nm_atlas.labels.shape
    # Signed, skewed maps with a smooth component: regions whose sums partly cancel.
    heat = (rng.gamma(0.5, 1.0, (4, *shape)) - 0.45 + 0.3 * np.sin(np.arange(shape[0]) / 5)[None, :, None, None])
    heat = heat.astype(np.float32)
    ids = ["s1", "s2", "s3", "s4"]
    df = region_metrics(heat, nm_atlas, scan_ids=ids, backend=backend, device="cpu", batch_size=3)
    ref = _nilearn_sums(nm_atlas, heat)
    ours = df.pivot(index="scan_id", columns="label", values="sum").loc[ids, ref.columns].to_numpy()
    np.testing.assert_allclose(ours, ref.to_numpy(), rtol=1e-5, atol=0)
    assert len(df) == 4 * nm_atlas.n_regions
    # Whole-volume fractions: regions plus the outside add up to the scan total.
    outside = heat.reshape(4, -1)[:, nm_atlas.labels.ravel() == 0].sum(axis=1, dtype=np.float64)
    totals = heat.reshape(4, -1).sum(axis=1, dtype=np.float64)
    frac_in = df.groupby("scan_id")["fraction"].sum().loc[ids].to_numpy()
    np.testing.assert_allclose(frac_in, 1 - outside / totals, rtol=1e-9)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_streamed_inputs_give_the_same_table(nm_atlas, backend):
    rng = np.random.default_rng(4)
    heat = rng.normal(size=(5, *nm_atlas.labels.shape)).astype(np.float32)
    ids = [f"scan{i}" for i in range(5)]
    whole = region_metrics(heat, nm_atlas, scan_ids=ids, backend="numpy")
    kw = {"backend": backend, "device": "cpu"}
    pairs = region_metrics(((i, h) for i, h in zip(ids, heat)), nm_atlas, batch_size=2, **kw)
    batches = region_metrics(iter([(ids[:3], torch.from_numpy(heat[:3, None])),
                                   (ids[3:], torch.from_numpy(heat[3:, None]))]), nm_atlas, **kw)
    tensors = region_metrics(((i, torch.from_numpy(h)) for i, h in zip(ids, heat)), nm_atlas, **kw)
    for other in (pairs, batches, tensors):
        pd.testing.assert_frame_equal(whole, other, rtol=1e-12)


def _toy_atlas():
    grid = Grid(RES)
    labels = np.zeros(grid.shape, np.int32)
    labels[10:12, 10:12, 10:12] = 5   # 8 voxels
    labels[20:23, 20:23, 20:23] = 9   # 27 voxels
    labels[30:34, 40:45, 30:31] = 2   # 20 voxels
    names = pd.DataFrame({"index": [2, 5, 9], "name": ["Left_C", "A_L", "B_R"]})
    return atlas_from_arrays(labels, names, name="toy", resolution=RES)


def _toy_heatmap(scale_a: float, atlas) -> np.ndarray:
    h = np.zeros(atlas.labels.shape, np.float32)
    h[atlas.labels == 5] = 2.0 * scale_a
    h[atlas.labels == 9] = -1.0
    h[atlas.labels == 2] = np.linspace(0, 1.9, 20)
    h[0, 0, :10] = 0.5   # relevance outside the atlas counts in the scan's total
    return h


def test_density_fraction_and_gain_by_hand():
    atlas = _toy_atlas()
    scales = {"ad1": 3.0, "ad2": 5.0, "hc1": 1.0, "hc2": 1.0}
    heat = np.stack([_toy_heatmap(s, atlas) for s in scales.values()])
    df = region_metrics(heat, atlas, scan_ids=list(scales))
    row = df.set_index(["scan_id", "region"])
    c_sum = float(np.linspace(0, 1.9, 20).sum())
    for scan, s in scales.items():
        total = 16 * s - 27 + c_sum + 5.0
        positive_total = 16 * s + c_sum + 5.0
        assert row.loc[(scan, "A_L"), "sum"] == pytest.approx(16 * s)
        assert row.loc[(scan, "A_L"), "density"] == pytest.approx(2 * s)
        assert row.loc[(scan, "B_R"), "density"] == pytest.approx(-1.0)
        assert row.loc[(scan, "Left_C"), "density"] == pytest.approx(c_sum / 20)
        assert row.loc[(scan, "A_L"), "fraction"] == pytest.approx(16 * s / total)
        assert row.loc[(scan, "B_R"), "fraction"] == pytest.approx(-27 / total)
        assert row.loc[(scan, "B_R"), "positive_sum"] == 0
        assert row.loc[(scan, "A_L"), "positive_fraction"] == pytest.approx(16 * s / positive_total)
    assert set(df["voxels"]) == {8, 27, 20}
    assert dict(zip(df["region"], df["hemisphere"])) == {"A_L": "left", "B_R": "right", "Left_C": "left"}

    groups = {"AD": ["ad1", "ad2"], "HC": ["hc1", "hc2"], "FN": []}
    summary = group_summary(df, groups).set_index(["group", "region"])
    assert set(summary.index.get_level_values("group")) == {"AD", "HC"}   # an empty group is left out
    assert summary.loc[("AD", "A_L"), "n"] == 2
    assert summary.loc[("AD", "A_L"), "mean_sum"] == pytest.approx(16 * 4.0)
    assert summary.loc[("AD", "A_L"), "sd_sum"] == pytest.approx(np.std([48, 80], ddof=1))
    assert summary.loc[("AD", "A_L"), "gain"] == pytest.approx(4.0)       # (48 + 80) / 2 / 16
    assert summary.loc[("AD", "B_R"), "gain"] == pytest.approx(1.0)
    assert summary.loc[("HC", "A_L"), "gain"] == pytest.approx(1.0)
    # The same from a scan → group mapping.
    by_scan = group_summary(df, {"ad1": "AD", "ad2": "AD", "hc1": "HC", "hc2": "HC"})
    assert np.allclose(by_scan.sort_values(["group", "region"])["gain"],
                       summary.reset_index().sort_values(["group", "region"])["gain"])
    # Without the reference group the gain is undefined, not an error.
    assert group_summary(df, {"AD": ["ad1"]})["gain"].isna().all()

    per_scan = add_gain(df, ["hc1", "hc2"]).set_index(["scan_id", "region"])["gain"]
    assert per_scan.loc[("ad1", "A_L")] == pytest.approx(3.0)
    assert np.mean([per_scan.loc[("ad1", "A_L")], per_scan.loc[("ad2", "A_L")]]) == pytest.approx(
        summary.loc[("AD", "A_L"), "gain"])


def test_zero_reference_gives_nan_gain_and_zero_total_nan_fraction():
    atlas = _toy_atlas()
    heat = np.zeros((2, *atlas.labels.shape), np.float32)
    heat[0][atlas.labels == 5] = 1.0
    df = region_metrics(heat, atlas, scan_ids=["a", "h"])
    assert df[df["scan_id"] == "h"]["fraction"].isna().all()
    g = group_summary(df, {"AD": ["a"], "HC": ["h"]}).set_index(["group", "region"])["gain"]
    assert np.isnan(g.loc[("AD", "A_L")])


def test_top_regions_and_wide():
    atlas = _toy_atlas()
    heat = np.stack([_toy_heatmap(s, atlas) for s in (3.0, 1.0)])
    df = region_metrics(heat, atlas, scan_ids=["ad", "hc"])
    top = top_regions(df, "density", k=2)
    assert list(top["region"]) == ["A_L", "Left_C"] and list(top["rank"]) == [1, 2]
    assert top["density"].iat[0] == pytest.approx((6 + 2) / 2)   # averaged over the scans
    summary = group_summary(df, {"AD": ["ad"], "HC": ["hc"]})
    assert top_regions(summary, "gain", k=1, group="AD")["region"].iat[0] == "A_L"
    assert list(top_regions(summary, "sum", k=3, group="HC")["region"]) == ["Left_C", "A_L", "B_R"]  # 19 > 16 > -27
    w = wide(df, "sum", regions=["B_R", "A_L"])
    assert list(w.columns) == ["B_R", "A_L"] and w.loc["ad", "A_L"] == pytest.approx(48)


def test_diverse_pair_is_the_truly_furthest_among_confident_scans():
    rng = np.random.default_rng(7)
    regions = [f"R{i}" for i in range(6)]
    scans = [f"p{i}" for i in range(12)]
    vec = rng.gamma(1.0, 1.0, (12, 6))
    vec[0] = [10, 0, 0, 0, 0, 0.01]   # the most extreme pair overall …
    vec[1] = [0, 0, 0, 0, 0.01, 10]
    scores = {s: (0.95 if i >= 2 else 0.5) for i, s in enumerate(scans)}   # … but not confident
    df = pd.DataFrame([{"scan_id": s, "region": r, "density": vec[i, j]}
                       for i, s in enumerate(scans) for j, r in enumerate(regions)])
    a, b, d = diverse_pair(df, scores, metric="density", min_score=0.9)
    best = max(itertools.combinations(range(2, 12), 2), key=lambda ij: cosine(vec[ij[0]], vec[ij[1]]))
    assert {a, b} == {scans[best[0]], scans[best[1]]}
    assert d == pytest.approx(cosine(vec[best[0]], vec[best[1]]))
    # Restricted to a subset of scans and regions.
    sub = diverse_pair(df, scores, regions=regions[:3], scans=scans[2:6])
    best = max(itertools.combinations(range(2, 6), 2), key=lambda ij: cosine(vec[ij[0], :3], vec[ij[1], :3]))
    assert {sub[0], sub[1]} == {scans[best[0]], scans[best[1]]}
    assert diverse_pair(df, scores, scans=scans[:3]) is None


def test_csv_export_and_input_errors(tmp_path):
    atlas = _toy_atlas()
    heat = np.stack([_toy_heatmap(1.0, atlas)])
    df = region_metrics(heat, atlas, scan_ids=["x"], positive=False)
    assert "positive_sum" not in df and "fraction" in df
    text = to_csv(df)
    assert text.splitlines()[0].startswith("scan_id,region,label")
    to_csv(df, tmp_path / "m.csv")
    back = pd.read_csv(tmp_path / "m.csv", dtype={"scan_id": str})
    np.testing.assert_allclose(back["sum"], df["sum"])
    with pytest.raises(ValueError, match="do not match the atlas grid"):
        region_metrics(np.zeros((1, 5, 5, 5), np.float32), atlas)
    with pytest.raises(ValueError, match="given twice"):
        region_metrics(iter([("x", heat[0]), ("x", heat[0])]), atlas, batch_size=1)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_absolute_metrics_equal_those_of_the_absolute_map(nm_atlas, backend):
    rng = np.random.default_rng(5)
    heat = rng.normal(size=(3, *nm_atlas.labels.shape)).astype(np.float32)
    ids = ["a", "b", "c"]
    df = region_metrics(heat, nm_atlas, scan_ids=ids, backend=backend, device="cpu", absolute=True)
    ref = region_metrics(np.abs(heat), nm_atlas, scan_ids=ids, backend="numpy")
    for m in ("sum", "density", "fraction"):
        np.testing.assert_allclose(df[f"abs_{m}"], ref[m], rtol=1e-9)
    assert (df["abs_sum"] >= df["sum"].abs() - 1e-9).all()
    # On the toy atlas by hand: |−1| × 27 voxels in B_R.
    atlas = _toy_atlas()
    toy = region_metrics(_toy_heatmap(1.0, atlas)[None], atlas, scan_ids=["x"], absolute=True).set_index("region")
    assert toy.loc["B_R", "abs_sum"] == pytest.approx(27.0) and toy.loc["B_R", "abs_density"] == pytest.approx(1.0)
    assert toy.loc["B_R", "sum"] == pytest.approx(-27.0)
    with pytest.raises(ValueError, match="needs positive"):
        region_metrics(heat, nm_atlas, scan_ids=ids, positive=False, absolute=True)
