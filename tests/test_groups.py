"""Streamed group means (AD/HC/TP/FP/TN/FN and subgroups) and the paper's percentile colour scales."""

from __future__ import annotations

import weakref

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from lib.analysis.groups import GROUPS, group_means, individual_scale, paper_scale
from lib.data.templates import brain_mask
from lib.data.templates import Grid

SHAPE = (6, 7, 5)


def _cohort(n: int = 24, seed: int = 0):
    rng = np.random.default_rng(seed)
    dx = np.where(np.arange(n) % 2 == 0, "AD", "HC")
    predicted_ad = np.where(dx == "AD", rng.random(n) < 0.75, rng.random(n) < 0.2)
    outcome = np.where(dx == "AD", np.where(predicted_ad, "TP", "FN"), np.where(predicted_ad, "FP", "TN"))
    table = pd.DataFrame({"scan_id": [f"s{i:02d}" for i in range(n)], "diagnosis": dx, "outcome": outcome,
                          "split": rng.choice(["train", "test"], n), "site": rng.choice(["A", "B", None], n)})
    vols = rng.normal(size=(n, *SHAPE)).astype(np.float32) + (dx == "AD")[:, None, None, None]
    return table, vols


def _stream(table, vols, live=None):
    for sid, v in zip(table["scan_id"], vols):
        out = v.copy()
        if live is not None:
            live.append(weakref.ref(out))
            assert sum(r() is not None for r in live) <= 2, "previous volumes are being kept"
        yield sid, out


def test_streamed_means_equal_in_memory_means():
    table, vols = _cohort()
    live: list = []
    res = group_means(_stream(table, vols, live), table)
    for g in GROUPS:
        sel = (table["diagnosis"] == g) if g in ("AD", "HC") else (table["outcome"] == g)
        assert res.count(g) == int(sel.sum())
        if sel.any():
            np.testing.assert_allclose(res.mean(g), vols[sel.to_numpy()].astype(np.float64).mean(axis=0),
                                       rtol=1e-6, atol=1e-6)
            assert res[g].mean.dtype == np.float32 and res[g].scan_ids == table["scan_id"][sel].tolist()
    np.testing.assert_allclose(res.difference("AD", "HC"), res.mean("AD") - res.mean("HC"))
    assert res.missing == [] and res.ignored == []


def test_subgroups_in_the_same_pass():
    table, vols = _cohort(seed=1)
    res = group_means(_stream(table, vols), table, by="site")
    site = table["site"].fillna("(missing)")
    for g in ("AD", "TP", "HC"):
        gsel = (table["diagnosis"] == g) if g in ("AD", "HC") else (table["outcome"] == g)
        for v in ("A", "B", "(missing)"):
            sel = (gsel & (site == v)).to_numpy()
            assert res.count(g, v) == sel.sum()
            if sel.any():
                np.testing.assert_allclose(res.mean(g, v), vols[sel].mean(axis=0), rtol=1e-5, atol=1e-6)
            else:
                assert res.mean(g, v) is None
        # The whole group is assembled from its subgroups.
        np.testing.assert_allclose(res.mean(g), vols[gsel.to_numpy()].mean(axis=0), rtol=1e-5, atol=1e-6)
    counts = res.counts()
    assert set(counts.columns) == {"group", "site", "count", "empty_reason"}
    assert counts.loc[(counts["group"] == "AD") & (counts["site"] == "all"), "count"].item() == \
        (table["diagnosis"] == "AD").sum()


def test_empty_groups_are_reported_not_raised():
    table, vols = _cohort(n=10, seed=2)
    table["outcome"] = np.where(table["diagnosis"] == "AD", "TP", "TN")   # a perfect classifier
    res = group_means(_stream(table, vols), table)
    for g in ("FP", "FN"):
        assert res.count(g) == 0 and res.mean(g) is None
        assert "no false" in res[g].reason
    assert res.difference("TP", "FP") is None
    counts = res.counts().set_index("group")
    assert list(counts.index) == list(GROUPS) and counts.loc["FN", "count"] == 0
    assert counts.loc["TP", "empty_reason"] == ""

    no_predictions = group_means(_stream(table, vols), table.drop(columns="outcome"))
    assert no_predictions.count("TP") == 0 and "outcome" in no_predictions["TP"].reason
    assert no_predictions.count("AD") == 5


def test_missing_and_foreign_scans_and_input_types():
    table, vols = _cohort(n=8, seed=3)
    stream = [(sid, torch.from_numpy(v) if i % 2 else nib.Nifti1Image(v, np.eye(4)))
              for i, (sid, v) in enumerate(zip(table["scan_id"], vols)) if sid != "s03"]
    stream.append(("stranger", vols[0]))
    res = group_means(iter(stream), table)
    assert res.missing == ["s03"] and res.ignored == ["stranger"]
    keep = (table["diagnosis"] == "HC") & (table["scan_id"] != "s03")
    np.testing.assert_allclose(res.mean("HC"), vols[keep.to_numpy()].mean(axis=0), rtol=1e-6, atol=1e-6)
    only_test = table[table["split"] == "test"]
    res_test = group_means(_stream(table, vols), only_test)
    assert res_test.count("AD") + res_test.count("HC") == len(only_test)


def test_inconsistent_inputs_raise():
    table, vols = _cohort(n=6, seed=4)
    bad = table.copy()
    bad.loc[bad["diagnosis"] == "HC", "outcome"] = "TP"
    with pytest.raises(ValueError, match="contradicts"):
        group_means(_stream(bad, vols), bad)
    with pytest.raises(ValueError, match="came twice"):
        group_means(iter([("s00", vols[0]), ("s00", vols[0])]), table)
    with pytest.raises(ValueError, match="shape"):
        group_means(iter([("s00", vols[0]), ("s01", np.zeros((3, 3, 3)))]), table)
    with pytest.raises(ValueError, match="no column"):
        group_means(_stream(table, vols), table, by="scanner")


def test_percentile_scales_reproduce_the_paper_rule():
    rng = np.random.default_rng(5)
    ad_mean = np.zeros((20, 20, 20), np.float32)
    brain = np.zeros_like(ad_mean, bool)
    brain[4:16, 3:17, 5:15] = True
    ad_mean[brain] = rng.gamma(2.0, 1.0, brain.sum())
    ad_mean[brain & (rng.random(ad_mean.shape) < 0.1)] = 0.0   # some brain voxels carry nothing
    vals = ad_mean[brain]

    vmin, vmax = paper_scale(ad_mean, mask=brain)
    assert (vmin, vmax) == pytest.approx(tuple(np.percentile(vals, [50, 99.5])))
    assert np.mean(vals < vmin) == pytest.approx(0.5, abs=1 / vals.size + 1e-9)     # half the brain black
    assert np.mean(vals > vmax) == pytest.approx(0.005, abs=1 / vals.size + 1e-9)   # 0.5 % white
    lo, hi = individual_scale(ad_mean, mask=brain)
    assert lo == pytest.approx(np.percentile(vals, 90)) and hi == pytest.approx(vmax)
    assert np.mean(vals < lo) == pytest.approx(0.9, abs=1 / vals.size + 1e-9)
    # Without a mask: the non-zero voxels, whatever the size of the background.
    nz = ad_mean[ad_mean != 0]
    assert paper_scale(ad_mean) == pytest.approx(tuple(np.percentile(nz, [50, 99.5])))
    padded = np.pad(ad_mean, 10)
    assert paper_scale(padded) == pytest.approx(paper_scale(ad_mean))
    with pytest.raises(ValueError, match="empty"):
        paper_scale(None)
    with pytest.raises(ValueError, match="non-zero"):
        paper_scale(np.zeros((3, 3, 3)))


def test_brain_mask_on_the_template_grid():
    mask = brain_mask(3.0)
    assert mask.shape == Grid(3.0).shape and mask.dtype == bool
    assert 0.1 < mask.mean() < 0.4
    centre = Grid(3.0).mni_to_voxel((0, -20, 10))
    assert mask[tuple(centre)] and not mask[0, 0, 0]
