"""Biomarker analyses: hippocampal volumes from every source, hippocampal relevance from the region tables,
the paper's Fig 9 statistics per outcome group, the r-by-β table, region × measure partial correlations, the
scatter's click-through data and the CLI."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from lib.analysis import biomarker, biomarker_volumes, stats
from lib.core import cache
from lib.data.atlas import load_atlas
from lib.explain.heatmaps import HeatmapStore
from lib.data.templates import Grid
from lib.data.workspace import Workspace

RES = 3.0


def _fake_store(ws: Workspace, name: str, maps: np.ndarray, scan_ids, params: dict) -> HeatmapStore:
    """A finished heatmap store written the way lib.explain.heatmaps writes one (float16 × per-scan scale)."""
    folder = ws.cache_dir / "heatmaps" / name
    folder.mkdir(parents=True)
    peak = np.abs(maps).reshape(len(maps), -1).max(axis=1).astype(np.float32)
    np.save(folder / "maps.npy", (maps / peak[:, None, None, None]).astype(np.float16))
    np.save(folder / "scale.npy", peak)
    (folder / "index.json").write_text(json.dumps({"scan_ids": list(scan_ids), "resolution": RES,
                                                   "params": params, "target": "AD", "run": "r",
                                                   "checkpoint_sha256": "x", "version": 1}))
    cache.seal(folder)   # its completeness marker, written last
    return HeatmapStore(folder)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """12 scans on the 3 mm grid: known relevance in each hippocampus plus signed noise everywhere."""
    ws = Workspace.create(tmp_path_factory.mktemp("bm_ws"), resolution=RES)
    atlas = load_atlas("neuromorphometrics", RES)
    left, right = atlas.mask("Left_Hippocampus"), atlas.mask("Right_Hippocampus")
    rng = np.random.default_rng(0)
    n = 12
    ids = [f"s{i:02d}" for i in range(n)]
    a, b = rng.uniform(0.5, 2.0, n), rng.uniform(-1.0, 1.0, n)
    maps = rng.normal(0, 0.2, (n, *Grid(RES).shape)).astype(np.float32)
    maps[:, left] += a[:, None]
    maps[:, right] += b[:, None]
    store = _fake_store(ws, "lrp0", maps, ids, {"method": "lrp", "beta": 0.0})
    return {"ws": ws, "store": store, "ids": ids, "left": left, "right": right, "atlas": atlas}


def test_hippocampal_relevance_equals_mask_sums_and_is_cached(synthetic):
    ws, store, left, right = synthetic["ws"], synthetic["store"], synthetic["left"], synthetic["right"]
    assert biomarker.find_region_table(ws, store) is None
    calls = []
    table = biomarker.region_table(ws, store, progress=lambda d, t, m: calls.append((d, t)))
    assert calls and calls[-1] == (len(store), len(store))
    cached = biomarker.find_region_table(ws, store)
    assert cached is not None and len(cached) == len(table)
    both = left | right
    for side, mask in (("both", both), ("left", left), ("right", right)):
        for metric in ("sum", "density"):
            for absolute in (False, True):
                got = biomarker.hippocampal_relevance(table, side, metric, absolute=absolute)
                assert list(got.index) == synthetic["ids"]
                for s in synthetic["ids"][:4]:
                    m = store.get(s)[mask].astype(np.float64)
                    m = np.abs(m) if absolute else m
                    want = m.sum() / (mask.sum() if metric == "density" else 1)
                    assert got[s] == pytest.approx(want, rel=1e-6, abs=1e-9)
    # signed and absolute differ where relevance is negative (the right hippocampus has b < 0 for some scans)
    signed = biomarker.hippocampal_relevance(table, "right")
    absolute = biomarker.hippocampal_relevance(table, "right", absolute=True)
    assert (absolute >= signed - 1e-9).all() and (absolute - signed).max() > 1.0
    # the same region table is read, not recomputed, on a second call
    import lib.analysis.regions as regions

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(regions, "region_metrics", lambda *a, **k: (_ for _ in ()).throw(AssertionError("recomputed")))
        again = biomarker.region_table(ws, store)
    pd.testing.assert_frame_equal(again, table)


def test_hippocampus_regions_in_every_naming_convention():
    for atlas, expected in (("neuromorphometrics", {"Left_Hippocampus", "Right_Hippocampus"}),
                            ("aal", {"Hippocampus_L", "Hippocampus_R"}),
                            ("harvard_oxford", {"Left_Hippocampus", "Right_Hippocampus"})):
        table = load_atlas(atlas, RES).table
        assert set(biomarker.hippocampus_regions(table, "both")) == expected
        (left,) = biomarker.hippocampus_regions(table, "left")
        assert "L" in left.replace("Hippocampus", "")
    with pytest.raises(KeyError):
        biomarker.hippocampus_regions(pd.DataFrame({"name": ["Left_Amygdala"]}))
    merged = biomarker.region_choices(load_atlas("neuromorphometrics", RES), merge=True)
    assert sorted(merged["Hippocampus"]) == ["Left_Hippocampus", "Right_Hippocampus"]
    assert all(len(v) == 1 for v in biomarker.region_choices(load_atlas("aal", RES)).values())


def test_volumes_from_cohort_ground_truth_and_segmentation_agree(demo_ws, tmp_path):
    from lib.data.scans import load_cohort

    cohort = load_cohort(demo_ws)
    assert biomarker.volume_sources(demo_ws, cohort) == ["cohort", "ground_truth"]
    from_table = biomarker.hippocampal_volumes(demo_ws, cohort, "cohort")
    truth = biomarker.hippocampal_volumes(demo_ws, cohort, "ground_truth")
    assert from_table.attrs["unit"] == "mm³" and from_table.notna().all()
    np.testing.assert_allclose(truth.to_numpy(), from_table.to_numpy())     # the generator's definition
    left = biomarker.hippocampal_volumes(demo_ws, cohort, "ground_truth", side="left")
    right = biomarker.hippocampal_volumes(demo_ws, cohort, "ground_truth", side="right")
    np.testing.assert_allclose(left + right, truth)
    assert (left < truth).all() and "left" in left.attrs["label"]
    assert biomarker.hippocampal_volumes(demo_ws, cohort, "cohort", side="left").attrs["note"]

    # per-scan segmentations: the generator's deformed label images, counted here
    gt = pd.read_csv(demo_ws.ground_truth_dir / "atrophy.csv", dtype={"scan_id": str})
    seg = cohort.merge(gt[["scan_id", "labels"]].rename(columns={"labels": "seg"}), on="scan_id")
    assert biomarker.segmentation_columns(seg) == ["seg"]
    assert biomarker.volume_sources(demo_ws, seg) == ["cohort", "segmentation", "ground_truth"]
    counted = biomarker.hippocampal_volumes(demo_ws, seg, "segmentation")
    np.testing.assert_allclose(counted.to_numpy(), seg["hippocampal_volume"].to_numpy(), rtol=1e-9)
    counted_left = biomarker.hippocampal_volumes(demo_ws, seg, "segmentation", side="left")
    np.testing.assert_allclose(counted_left.to_numpy(), left.reindex(seg["scan_id"]).to_numpy(), rtol=1e-9)
    # cached by the files' stamps and the labels: a second call reads no image
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(biomarker_volumes, "label_volumes", lambda *a, **k: (_ for _ in ()).throw(AssertionError("re-read")))
        again = biomarker.hippocampal_volumes(demo_ws, seg, "segmentation")
    pd.testing.assert_series_equal(again, counted, check_names=False)

    # normalised by the intracranial volume: a percentage of it
    pct = biomarker.hippocampal_volumes(demo_ws, cohort, "cohort", normalise=True)
    np.testing.assert_allclose(pct.to_numpy(), 100 * from_table.to_numpy() / cohort["intracranial_volume"].to_numpy())
    assert pct.attrs["unit"] == "% of ICV" and 0.1 < pct.median() < 2


def test_label_volumes_use_each_files_voxel_size(tmp_path):
    data = np.zeros((10, 10, 10), np.int16)
    data[:3, :3, :3] = 17      # FreeSurfer Left-Hippocampus
    data[5:7, 5:7, 5:7] = 53   # Right-Hippocampus
    data[8, 8, 8] = 4
    f = tmp_path / "aseg.nii.gz"
    nib.save(nib.Nifti1Image(data, np.diag([1.5, 1.5, 1.5, 1.0])), f)
    got = biomarker.label_volumes([f, tmp_path / "missing.nii.gz"], [17, 53])
    assert got[0] == pytest.approx((27 + 8) * 1.5 ** 3) and np.isnan(got[1])
    assert biomarker_volumes._side_labels("freesurfer", "left") == [17]
    assert biomarker_volumes._side_labels({"left": [1, 2], "right": [3]}, "both") == [1, 2, 3]
    with pytest.raises(KeyError):
        biomarker_volumes._side_labels("aseg2", "both")


def test_adnimerge_hippocampus_and_icv_are_used(tmp_path):
    from lib.data.cohort import read_table

    f = tmp_path / "ADNIMERGE.csv"
    f.write_text("PTID,VISCODE,DX,AGE,MMSE,Hippocampus,ICV,IMAGEUID,path\n"
                 "011_S_0002,bl,CN,74.3,28,8336,1500000,1,a.nii.gz\n"
                 "011_S_0003,bl,Dementia,81.3,20,5319,1400000,2,b.nii.gz\n"
                 "011_S_0004,bl,CN,70.1,29,7905,1600000,3,c.nii.gz\n")
    cohort = read_table(f)
    ws = Workspace.create(tmp_path / "ws")
    assert biomarker.icv_column(cohort) == "ICV"
    vol = biomarker.hippocampal_volumes(ws, cohort)
    assert vol.attrs["source"] == "cohort" and vol.tolist() == [8336, 5319, 7905]
    pct = biomarker.hippocampal_volumes(ws, cohort, normalise=True)
    assert pct.tolist() == pytest.approx([100 * 8336 / 1.5e6, 100 * 5319 / 1.4e6, 100 * 7905 / 1.6e6])
    assert biomarker.measure_columns(cohort)[:4] == ["mmse", "age", "hippocampal_volume", "ICV"]
    with pytest.raises(ValueError, match="ground truth"):
        biomarker.hippocampal_volumes(ws, cohort, "ground_truth")


def _predictions(n: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    subj = [f"sub-{i // 2:03d}" for i in range(n)]
    return pd.DataFrame({"scan_id": [f"{s}_ses-{i % 2 + 1}" for i, s in enumerate(subj)], "subject_id": subj,
                         "session": [i % 2 + 1 for i in range(n)],
                         "diagnosis": np.where(np.arange(n) % 4 < 2, "AD", "HC"),
                         "outcome": rng.choice(["TP", "FP", "TN", "FN"], n, p=[0.45, 0.15, 0.3, 0.1]),
                         "split": np.where(np.arange(n) < 40, "test", "train"), "ad_score": rng.uniform(0, 1, n)})


def test_fig9_statistics_per_group_match_scipy():
    preds = _predictions()
    rng = np.random.default_rng(1)
    volume = pd.Series(rng.normal(7000, 800, len(preds)), index=preds["scan_id"])
    relevance = pd.Series(-0.002 * volume.to_numpy() + rng.normal(0, 1.5, len(preds)), index=preds["scan_id"])
    points = biomarker.scan_points(preds, relevance, volume, split="test")
    assert set(points["outcome"]) <= {"TP", "FP"} and (points["split"] == "test").all()
    assert len(points) == int(((preds["split"] == "test") & preds["outcome"].isin(["TP", "FP"])).sum())
    out = biomarker.group_stats(points, n_permutations=10_000, n_boot=2_000)
    tp = points[points["outcome"] == "TP"]
    ref = sps.pearsonr(tp["measure"], tp["relevance"])
    assert out.loc["TP", "n"] == len(tp) and out.loc["TP", "r"] == pytest.approx(ref.statistic, abs=1e-12)
    assert out.loc["TP", "r"] < 0
    perm = sps.permutation_test((tp["measure"].to_numpy(), tp["relevance"].to_numpy()),
                                lambda x, y: sps.pearsonr(x, y).statistic, permutation_type="pairings",
                                n_resamples=10_000, rng=np.random.default_rng(3))
    se = np.sqrt(2 * max(perm.pvalue, 1e-4) * (1 - perm.pvalue) / 10_000)
    assert abs(out.loc["TP", "p_permutation"] - perm.pvalue) < 4 * se + 2e-4
    assert out.loc["TP", "rho"] == pytest.approx(sps.spearmanr(tp["measure"], tp["relevance"]).statistic)
    assert out.loc["TP", "ci_low"] < out.loc["TP", "r"] < out.loc["TP", "ci_high"]
    # every split, other groups, first visits only
    assert len(biomarker.scan_points(preds, relevance, volume, split="all", groups=None)) == len(preds)
    first = biomarker.scan_points(preds, relevance, volume, split="all", groups=None, one_per_subject=True)
    assert first["subject_id"].is_unique and (first["session"] == 1).all()
    # a group with fewer than three scans has no r, and the caption says so
    few = biomarker.group_stats(points.head(2).assign(outcome="FN"), ["FN"], n_permutations=100, n_boot=100)
    assert np.isnan(few.loc["FN", "r"]) and "too few" in biomarker.stats_caption(few.loc["FN"])
    assert biomarker.p_text(1 / 10_001, 10_000) == "p < 1e-4"         # the floor of a permutation test
    assert biomarker.p_text(0.0123, 10_000) == "p = 0.012" and biomarker.format_r(-0.56) == "−0.560"
    caption = biomarker.stats_caption(out.loc["TP"], 10_000)
    assert caption.startswith("r = −0.") and f"n = {len(tp)}" in caption


def test_r_by_beta_table(synthetic):
    ws, ids = synthetic["ws"], synthetic["ids"]
    both = synthetic["left"] | synthetic["right"]
    rng = np.random.default_rng(4)
    volume = pd.Series(rng.normal(7000, 500, len(ids)), index=ids)
    stores = [synthetic["store"]]
    for beta, strength in ((1.0, 0.2), (0.5, 1.0)):   # β = 1 weakly, β = 0.5 strongly tied to volume
        maps = rng.normal(0, 0.05, (len(ids), *Grid(RES).shape)).astype(np.float32)
        maps[:, both] += (-strength * (volume.to_numpy() - 7000) / 500 + rng.normal(0, 1, len(ids)))[:, None]
        stores.append(_fake_store(ws, f"lrp{beta:g}", maps, ids, {"method": "lrp", "beta": beta}))
    stores.append(_fake_store(ws, "gb", rng.normal(0, 1, (len(ids), *Grid(RES).shape)).astype(np.float32), ids,
                              {"method": "guided_backprop"}))
    preds = pd.DataFrame({"scan_id": ids, "subject_id": ids, "diagnosis": "AD", "outcome": "TP", "split": "test",
                          "ad_score": 0.9})
    table = biomarker.beta_table(ws, stores, preds, volume, n_permutations=2_000, n_boot=500)
    assert table["beta"].tolist() == [0.0, 0.5, 1.0]                  # sorted, guided backprop left out
    assert table["paper_r"].tolist() == [-0.560, -0.525, -0.361]
    assert (table["n"] == len(ids)).all()
    for _, row in table.iterrows():
        store = next(s for s in stores if s.folder.name == row["store"])
        rel = [store.get(s)[both].sum() for s in ids]
        assert row["r"] == pytest.approx(sps.pearsonr(volume.to_numpy(), rel).statistic, abs=1e-5)
    assert table.set_index("beta").loc[0.5, "r"] < table.set_index("beta").loc[1.0, "r"]
    fig = biomarker.beta_figure(table)
    assert list(fig.data[0].x) == [0.0, 0.5, 1.0] and fig.data[1].name.startswith("Böhle")


def test_region_correlations_are_partial_correlations_with_fdr():
    rng = np.random.default_rng(7)
    n, m = 45, 30
    ids = [f"s{i}" for i in range(n)]
    age = rng.normal(72, 6, n)
    icv = rng.normal(1.5e6, 1e5, n)
    mmse = 30 - 0.08 * (age - 72) + rng.normal(0, 2, n)
    values = pd.DataFrame(rng.normal(size=(n, m)) + 0.01 * age[:, None], index=ids,
                          columns=[f"region{j}" for j in range(m)])
    values["region7"] += -0.8 * (mmse - mmse.mean())                  # one region tracks MMSE
    cov = pd.DataFrame({"age": age, "icv": icv}, index=ids)
    out = biomarker.region_correlations(values, pd.Series(mmse, index=ids), cov, n_permutations=4_000, seed=3)
    assert out["region"].iat[0] == "region7" and out["p_fdr"].iat[0] < 0.01 and out["r"].iat[0] < -0.5
    assert (np.diff(out["p_permutation"].to_numpy()) >= 0).all()
    np.testing.assert_allclose(out["p_fdr"], stats.fdr(out["p_permutation"]))
    for _, row in out.sample(5, random_state=0).iterrows():
        ref = stats.partial_correlation(values[row["region"]], mmse, cov, n_permutations=4_000, seed=3)
        assert row["r"] == pytest.approx(ref["r"], abs=1e-10) and row["p"] == pytest.approx(ref["p"], rel=1e-8)
        assert row["p_permutation"] == ref["p_permutation"] and row["n"] == n
    # the added-variable view: Pearson r of the adjusted points is the partial r
    pts = pd.DataFrame({"scan_id": ids, "outcome": "TP", "measure": mmse, "relevance": values["region7"]})
    adj = biomarker.adjust_for(pts, cov)
    r7 = out.set_index("region").loc["region7", "r"]
    assert sps.pearsonr(adj["measure"], adj["relevance"]).statistic == pytest.approx(r7, abs=1e-10)
    assert adj["measure"].mean() == pytest.approx(mmse.mean()) and biomarker.adjust_for(pts, None).equals(pts)
    # without covariates: Pearson's r
    plain = biomarker.region_correlations(values, pd.Series(mmse, index=ids), None, n_permutations=0)
    r7 = plain.set_index("region").loc["region7", "r"]
    assert r7 == pytest.approx(sps.pearsonr(values["region7"], mmse).statistic, abs=1e-12)
    # covariates from a cohort table by name ("icv" finds the intracranial-volume column)
    cohort = pd.DataFrame({"scan_id": ids, "age": age, "eTIV": icv})
    frame = biomarker.covariate_frame(cohort, ids[::-1], ["age", "icv"])
    assert list(frame.index) == ids[::-1] and frame["icv"].iat[0] == icv[-1]
    with pytest.raises(KeyError):
        biomarker.covariate_frame(cohort.drop(columns="eTIV"), ids, ["icv"])


def test_scatter_points_carry_their_scan_for_the_viewer_link():
    preds = _predictions()
    rng = np.random.default_rng(2)
    points = biomarker.scan_points(preds, pd.Series(rng.normal(size=len(preds)), index=preds["scan_id"]),
                                   pd.Series(rng.normal(size=len(preds)), index=preds["scan_id"]), split="all")
    fig = biomarker.scatter_figure(points, x_title="volume", y_title="relevance", title="t")
    tp, fp = fig.data[0], fig.data[1]
    assert tp.name.startswith("TP (n = ") and [t.name for t in fig.data[2:]] == ["TP least-squares fit"]
    assert fp.name.startswith("FP") and fp.marker.symbol == "diamond-open"
    want = points[points["outcome"] == "FP"]
    assert [c[0] for c in fp.customdata] == want["scan_id"].tolist()
    assert list(fp.x) == want["measure"].tolist()
    # what Streamlit returns for a clicked point
    first = want.iloc[0]
    event = {"selection": {"points": [{"curve_number": 1, "point_index": 0, "x": first["measure"],
                                       "customdata": list(fp.customdata[0])}], "point_indices": [0]}}
    picked = biomarker.selected_scan(event)
    assert picked["scan_id"] == first["scan_id"] and picked["outcome"] == "FP"
    assert picked["ad_score"] == pytest.approx(first["ad_score"])
    assert biomarker.selected_scan({"selection": {"points": []}}) is None
    params = biomarker.viewer_params("run1", "abc", picked)
    assert params == {"run": "run1", "view": "Individual", "store": "abc", "scan": first["scan_id"],
                      "split": first["split"], "group": "FP"}


def test_demo_run_end_to_end_and_cli(demo_ws, demo_run, capsys):
    from lib.explain import heatmaps
    from lib.cli import main
    from lib.data.scans import load_cohort

    lrp = heatmaps.compute_store(demo_ws, demo_run, "lrp", beta=0.0)
    gb = heatmaps.compute_store(demo_ws, demo_run, "guided_backprop")
    preds = demo_run.predictions()
    cohort = load_cohort(demo_ws)
    volume = biomarker.hippocampal_volumes(demo_ws, cohort)
    groups = ("TP", "FP", "TN", "FN")   # the 3-epoch fixture model may call every scan one class
    points, st = biomarker.hippocampus_analysis(demo_ws, lrp, preds, volume, split="all", groups=groups,
                                                n_permutations=2_000, n_boot=500)
    assert len(points) == len(preds) and points["relevance"].notna().all() and points["measure"].notna().all()
    for g in groups:
        assert st.loc[g, "n"] == int((preds["outcome"] == g).sum())
    atlas = load_atlas("neuromorphometrics", demo_run.grid.resolution)
    mask = atlas.mask("Left_Hippocampus", "Right_Hippocampus")
    for i in (0, len(points) - 1):
        s = points["scan_id"].iat[i]
        assert points["relevance"].iat[i] == pytest.approx(float(lrp.get(s)[mask].astype(np.float64).sum()),
                                                           rel=1e-5)
        assert points["measure"].iat[i] == volume[s]
    # guided backprop is read as |gradient| (the paper's susceptibility; the store keeps |g| by default too)
    gb_points, _ = biomarker.hippocampus_analysis(demo_ws, gb, preds, volume, split="all", groups=groups,
                                                  n_permutations=100, n_boot=100)
    assert (gb_points["relevance"] >= 0).all()
    s = gb_points["scan_id"].iat[0]
    assert gb_points["relevance"].iat[0] == pytest.approx(float(np.abs(gb.get(s)[mask]).astype(np.float64).sum()),
                                                          rel=1e-5)

    capsys.readouterr()
    assert main(["--workspace", str(demo_ws.root), "biomarker", "--run", demo_run.id, "--beta", "0",
                 "--split", "all", "--group", *groups, "--permutations", "2000", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["group"] for r in rows] == list(groups) and all(r["method"] == "LRP β=0" for r in rows)
    for r in rows:
        assert r["n"] == st.loc[r["group"], "n"]
        assert r["r"] == pytest.approx(st.loc[r["group"], "r"], abs=1e-12, nan_ok=True)
    assert main(["--workspace", str(demo_ws.root), "biomarker", "--run", demo_run.id, "--beta", "0.3"]) == 1
    assert "python -m lib explain" in capsys.readouterr().err
