"""Evaluating explanations: region perturbation (AOPC), cascading randomisation, ground-truth localisation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from lib.analysis import evaluation as ev
from lib.cli import main
from lib.explain import explain
from lib.learn.models import build_model
from lib.data.templates import Grid

SHAPE = (12, 12, 12)
INFORMATIVE = (slice(0, 4), slice(4, 8), slice(4, 8))  # exactly one cube of the 4-voxel partition


def _toy_model(weight: float = 3.0) -> nn.Module:
    """AD logit = weight × (mean of the informative cube − 0.5 × 2); HC logit 0: only that cube matters."""
    lin = nn.Linear(int(np.prod(SHAPE)), 2)
    with torch.no_grad():
        lin.weight.zero_()
        lin.bias.zero_()
        m = torch.zeros(SHAPE)
        m[INFORMATIVE] = 1.0
        lin.weight[1] = weight * m.ravel() / m.sum()
        lin.bias[1] = -0.5 * weight
    return nn.Sequential(nn.Flatten(), lin).eval()


def _toy_inputs(n: int = 4) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return 0.5 + torch.rand((n, 1, *SHAPE), generator=g)


# --- region perturbation --------------------------------------------------------------------------------------------
def test_aopc_of_the_true_occlusion_effect_beats_a_random_map_on_a_toy_model():
    model, x = _toy_model(), _toy_inputs()
    occ = explain(model, x, "occlusion", patch_mm=4, stride_mm=4, voxel_size=1.0, fill=0.0)[:, 0].numpy()
    # the occlusion map is the true effect: non-zero only in the informative cube
    assert np.all(occ[(slice(None), *INFORMATIVE)] > 0.3)
    outside = np.ones(SHAPE, bool)
    outside[INFORMATIVE] = False
    assert np.abs(occ[:, outside]).max() < 1e-6
    labels = ev.cube_partition(SHAPE, 4)
    assert labels.max() == 27
    index = ev.RegionIndex(labels)
    rng = np.random.default_rng(0)
    noise = rng.normal(size=occ.shape)
    steps = 5
    a_occ, a_noise, a_random = [], [], []
    for i in range(len(x)):
        xi = x[i:i + 1]
        repl = ev.replacement_volume(xi, "zero", torch.ones(SHAPE, dtype=torch.bool), rng=rng)
        order = ev.morf_order(ev.region_scores(occ[i], labels), rng)[:steps]
        curve = ev.perturbation_curve(model, xi, order, index, repl, target=1)
        # the first step removes exactly the informative cube: its drop is the occlusion map's value there
        assert curve[0] - curve[1] == pytest.approx(float(occ[i][INFORMATIVE].mean()), abs=1e-5)
        a_occ.append(ev.aopc(curve))
        order = ev.morf_order(ev.region_scores(noise[i], labels), rng)[:steps]
        a_noise.append(ev.aopc(ev.perturbation_curve(model, xi, order, index, repl, target=1)))
        a_random += [ev.aopc(ev.perturbation_curve(model, xi, ev.random_order(27, rng)[:steps], index, repl))
                     for _ in range(10)]
    assert np.mean(a_occ) > np.mean(a_noise) + 0.2
    assert np.mean(a_occ) > np.mean(a_random) + 0.2
    # with the informative cube first, AOPC = L/(L+1) × the full drop
    assert np.mean(a_occ) == pytest.approx(steps / (steps + 1) * float(occ[(slice(None), *INFORMATIVE)].mean()),
                                           rel=1e-4)


def test_perturbation_curve_is_cumulative_and_independent_of_the_batch_size():
    model, x = _toy_model(), _toy_inputs(1)
    labels = ev.cube_partition(SHAPE, 4)
    index = ev.RegionIndex(labels)
    repl = torch.zeros_like(x)
    order = ev.random_order(27, np.random.default_rng(3))
    curves = [ev.perturbation_curve(model, x, order, index, repl, batch_size=b) for b in (1, 5, 64)]
    assert curves[0].shape == (28,)
    np.testing.assert_allclose(curves[0], curves[1], atol=1e-6)
    np.testing.assert_allclose(curves[0], curves[2], atol=1e-6)
    # all 27 cubes replaced by zero: the AD probability of an all-zero input
    zero = torch.softmax(model(torch.zeros_like(x)), 1)[0, 1].item()
    assert curves[0][-1] == pytest.approx(zero, abs=1e-6)
    assert curves[0][0] == pytest.approx(torch.softmax(model(x), 1)[0, 1].item(), abs=1e-6)


def test_cube_partition_covers_the_mask_with_disjoint_cubes():
    mask = np.zeros((10, 11, 9), bool)
    mask[2:7, 3:9, 1:5] = True
    lab = ev.cube_partition(mask.shape, 3, mask)
    assert lab.shape == mask.shape and lab.dtype == np.int32
    assert np.all(lab[mask] > 0)  # every mask voxel is in a perturbable cube
    ids = np.unique(lab[lab > 0])
    np.testing.assert_array_equal(ids, np.arange(1, len(ids) + 1))
    for i in ids:  # each region is one box of at most 3 voxels per side
        where = np.argwhere(lab == i)
        assert np.all(where.max(0) - where.min(0) < 3)
        assert mask[lab == i].any()
    rel = np.random.default_rng(1).normal(size=mask.shape)
    scores = ev.region_scores(rel, lab)
    assert scores.sum() == pytest.approx(rel[lab > 0].sum())
    order = ev.morf_order(scores, np.random.default_rng(0))
    assert np.all(np.diff(scores[order - 1]) <= 0)
    assert np.all(ev.region_scores(rel, lab, "abs") >= 0)


def test_replacements():
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(2.0, 1.0, size=(1, 1, 16, 16, 16)).astype(np.float32))
    brain = torch.zeros((16, 16, 16), dtype=torch.bool)
    brain[4:12, 4:12, 4:12] = True
    inside = x[0, 0][brain]
    assert torch.all(ev.replacement_volume(x, "zero", brain, rng=rng) == 0)
    assert torch.allclose(ev.replacement_volume(x, "mean", brain, rng=rng), inside.mean())
    u = ev.replacement_volume(x, "uniform", brain, rng=rng)
    assert u.min() >= inside.min() and u.max() <= inside.max() and u.std() > 0.5
    b = ev.replacement_volume(x, "blur", brain, rng=rng, blur_vox=2.0)
    assert b.shape == x.shape and b.std() < 0.5 * x.std()  # smoothing removes the voxel noise
    with pytest.raises(ValueError, match="replacement"):
        ev.replacement_volume(x, "median", brain, rng=rng)


# --- sanity check ---------------------------------------------------------------------------------------------------
def test_cascade_randomises_from_the_output_down_and_leaves_the_model_alone():
    torch.manual_seed(0)
    model = build_model("boehle2019", (24, 28, 24)).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    names = [n for n, _ in ev.weight_layers(model)]
    assert names == ["conv 1", "conv 2", "conv 3", "conv 4", "dense 1", "dense 2"]
    steps = list(ev.cascade(model, seed=0))
    assert [s for s, _ in steps] == ["original", "dense 2 (output)", "dense 1", "conv 4", "conv 3", "conv 2",
                                     "conv 1"]
    assert steps[0][1] is model
    for k, (_, m) in enumerate(steps):
        layers = dict(ev.weight_layers(m))
        changed = [n for n in names if not torch.equal(layers[n].weight, dict(ev.weight_layers(model))[n].weight)]
        assert changed == names[len(names) - k:]  # the top k layers, and only those
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    # the BatchNorm of a randomised convolution is reset with it
    last = steps[-1][1]
    bn = [m for m in last.modules() if isinstance(m, nn.BatchNorm3d)][0]
    assert torch.all(bn.running_var == 1) and torch.all(bn.running_mean == 0)


@pytest.mark.parametrize("method,params", [("sensitivity", {"absolute": False}), ("gradient_x_input", {})])
def test_randomising_every_layer_drives_the_rank_correlation_to_zero(method, params):
    torch.manual_seed(0)
    model = build_model("boehle2019", (24, 28, 24)).eval()
    x = torch.randn(3, 1, 24, 28, 24)
    maps = [explain(m, x, method, **params)[:, 0].numpy() for _, m in ev.cascade(model, seed=1)]
    first = [ev.map_similarity(maps[0][i], maps[0][i]) for i in range(3)]
    assert all(s["spearman"] == 1 and s["ssim"] == pytest.approx(1) and s["topk"] == 1 for s in first)
    final = [ev.map_similarity(maps[0][i], maps[-1][i])["spearman"] for i in range(3)]
    assert abs(np.mean(final)) < 0.1
    assert ev.sanity_verdict(float(np.mean(final)), 0.5)


def test_verdict_and_constant_maps():
    assert ev.sanity_verdict(0.2, 0.5) and ev.sanity_verdict(-0.2, 0.5)
    assert not ev.sanity_verdict(0.7, 0.5) and not ev.sanity_verdict(-0.7, 0.5)
    assert not ev.sanity_verdict(float("nan"), 0.5)
    a = np.random.default_rng(0).normal(size=(8, 8, 8))
    s = ev.map_similarity(a, np.zeros_like(a))
    assert s["spearman"] == 0 and s["topk"] == 0


def test_ssim3d():
    rng = np.random.default_rng(0)
    a = rng.random((20, 20, 20))
    assert ev.ssim3d(a, a) == pytest.approx(1.0)
    b = rng.random((20, 20, 20))
    assert abs(ev.ssim3d(a, b, data_range=1.0)) < 0.05
    assert ev.ssim3d(a, b) == pytest.approx(ev.ssim3d(b, a))
    near = ev.ssim3d(a, a + 0.05 * rng.normal(size=a.shape), data_range=1.0)
    far = ev.ssim3d(a, a + 0.5 * rng.normal(size=a.shape), data_range=1.0)
    assert 1 > near > far
    mask = np.zeros(a.shape, bool)
    mask[5:15, 5:15, 5:15] = True
    assert ev.ssim3d(a, a, mask=mask) == pytest.approx(1.0)


# --- localisation ---------------------------------------------------------------------------------------------------
def _truth(shape=(30, 30, 30)):
    t = np.zeros(shape, bool)
    t[5:20, 5:15, 5:25] = True
    return t


def test_localisation_is_one_for_the_mask_itself():
    truth = _truth()
    s = ev.localisation_scores(truth.astype(np.float32), truth)
    assert s["mass"] == 1 and s["auc"] == 1 and s["hit"] == 1
    assert s["chance_mass"] == pytest.approx(truth.mean())
    # within a domain, chance is the mask's share of the domain
    domain = np.zeros(truth.shape, bool)
    domain[:, :, :15] = True
    s = ev.localisation_scores(truth.astype(np.float32), truth, domain)
    assert s["mass"] == 1 and s["auc"] == 1 and s["hit"] == 1
    assert s["chance_mass"] == pytest.approx(truth[domain].mean())


def test_pointing_game_counts_a_tied_maximum_by_its_share_inside_the_mask():
    truth = _truth()
    plateau = np.zeros(truth.shape, np.float32)
    plateau[15:25, 5:15, 5:25] = 1.0  # x 15…19 inside the mask, 20…24 outside
    s = ev.localisation_scores(plateau, truth)
    assert s["hit"] == pytest.approx(0.5)
    assert ev.localisation_scores(plateau, truth, tolerance_vox=5)["hit"] == 1


def test_localisation_of_noise_is_near_chance():
    truth = _truth()
    rng = np.random.default_rng(0)
    scores = [ev.localisation_scores(rng.normal(size=truth.shape), truth) for _ in range(300)]
    chance = truth.mean()
    assert np.mean([s["mass"] for s in scores]) == pytest.approx(chance, abs=0.01)
    assert np.mean([s["auc"] for s in scores]) == pytest.approx(0.5, abs=0.01)
    assert np.mean([s["hit"] for s in scores]) == pytest.approx(chance, abs=0.05)
    # a tolerance widens the pointing game's target, and its chance level with it
    s = ev.localisation_scores(rng.normal(size=truth.shape), truth, tolerance_vox=2)
    assert s["chance_hit"] > chance and s["chance_mass"] == pytest.approx(chance)


def test_voxel_auc_matches_scikit_learn_with_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(2)
    truth = rng.random(5000) < 0.2
    scores = rng.integers(0, 5, 5000) + truth * rng.integers(0, 2, 5000)
    assert ev.voxel_auc(scores, truth) == pytest.approx(roc_auc_score(truth, scores))
    assert np.isnan(ev.voxel_auc(scores, np.zeros(5000, bool)))


# --- requests, settings, ranking ------------------------------------------------------------------------------------
def test_method_requests_round_trip_and_refuse_unknowns():
    m = ev.parse_method("lrp:beta=0.5")
    assert m == ev.MethodRequest("lrp", {"beta": 0.5}) and m.label == "LRP β=0.5"
    assert ev.parse_method(m.spec) == m
    assert ev.parse_method("gradcam").label == "Grad-CAM"
    assert ev.parse_method("occlusion:patch_mm=20").label == "occlusion (patch_mm=20)"
    with pytest.raises(ValueError, match="unknown method"):
        ev.parse_method("saliency")
    with pytest.raises(TypeError, match="unknown parameter"):
        ev.parse_method("lrp:gamma=1")
    with pytest.raises(ValueError, match="replacement"):
        ev.Settings(replacement="median")
    with pytest.raises(ValueError, match="regions"):
        ev.Settings(regions="spheres")


def _fake_results():
    def loc(label, mass):
        return {"rows": [{"scan_id": "s1", "diagnosis": "AD", "mass": mass, "auc": mass, "hit": 1.0,
                          "chance_mass": 0.1, "chance_hit": 0.1, "mask_voxels": 10}]}

    sanity_pass = {"steps": ["original", "dense 2 (output)"], "spearman": [[1.0], [0.1]],
                   "spearman_abs": [[1.0], [0.1]], "ssim": [[1.0], [0.2]], "topk": [[1.0], [0.1]]}
    sanity_fail = {**sanity_pass, "spearman": [[1.0], [0.9]]}
    return {"random": {"aopc": [0.1, 0.1], "outputs": [[0.8, 0.7], [0.6, 0.5]]},
            "aopc": {"A": {"aopc": [0.5, 0.5], "outputs": [[0.8, 0.3], [0.6, 0.1]]},
                     "B": {"aopc": [0.3, 0.3], "outputs": [[0.8, 0.5], [0.6, 0.3]]}},
            "sanity": {"A": sanity_fail, "B": sanity_pass},
            "localisation": {"A": loc("A", 0.9), "B": loc("B", 0.5)}}


def test_ranking_puts_sanity_failures_last_and_shows_every_score():
    t = ev.summary(_fake_results(), ["A", "B"], threshold=0.5)
    # A is better on every score but fails the sanity check: B ranks first
    assert list(t["method"]) == ["B", "A"] and list(t["rank"]) == [1, 2]
    a = t.set_index("method").loc["A"]
    assert a["AOPC"] == pytest.approx(0.5) and a["AOPC gain"] == pytest.approx(0.4) and a["sanity"] == "fail"
    assert a["ρ randomised"] == pytest.approx(0.9) and a["mass accuracy"] == pytest.approx(0.9)
    # the sentence the page shows beside the table names the scores the code averages and the sanity rule
    rule = ev.ranking_rule(0.5)
    assert all(c in rule for c in ev.RANK_CRITERIA) and "|ρ| ≥ 0.5" in rule and "AOPC gain" in ev.RANK_CRITERIA
    # with a laxer threshold both pass and A wins
    t = ev.summary(_fake_results(), ["A", "B"], threshold=0.95)
    assert list(t["method"]) == ["A", "B"]
    curves = ev.aopc_curves(_fake_results())
    assert set(curves["label"]) == {"A", "B", "random order"}
    assert curves[(curves["label"] == "A") & (curves["k"] == 1)]["drop"].iloc[0] == pytest.approx(0.5)
    assert ev.chance_levels(_fake_results())["mass accuracy"] == pytest.approx(0.1)


# --- on a trained run of the demo cohort ----------------------------------------------------------------------------
def test_ground_truth_mask_on_the_run_grid_and_resampled(demo_ws):
    import pandas as pd

    table = pd.read_csv(demo_ws.ground_truth_dir / "atrophy.csv", dtype={"scan_id": str})
    mm = table[[c for c in table.columns if c.startswith("mm_")]].sum(axis=1)
    sick, healthy = table.loc[mm.idxmax(), "scan_id"], table.loc[mm == 0, "scan_id"].iloc[0]
    own = ev.ground_truth_mask(demo_ws, sick, demo_ws.grid)
    assert own.shape == demo_ws.grid.shape and own.any()
    other = Grid(4.0)
    resampled = ev.ground_truth_mask(demo_ws, sick, other)
    assert resampled.shape == other.shape and resampled.any()
    # the same volume of tissue in mm³ on either grid, within resampling error
    v_own, v_other = own.sum() * demo_ws.grid.voxel_volume, resampled.sum() * other.voxel_volume
    assert 0.7 < v_other / v_own < 1.3
    assert not ev.ground_truth_mask(demo_ws, healthy, demo_ws.grid).any()
    regions = ev.ground_truth_mask(demo_ws, sick, demo_ws.grid, ev.Settings(truth="regions"))
    assert regions.any() and regions.sum() < 0.5 * ev.brain_mask(demo_ws.grid).sum()
    assert ev.ground_truth_mask(demo_ws, "no-such-scan", demo_ws.grid) is None


SMALL = ["--scans", "2", "--steps", "3", "--sanity-scans", "1", "--cube-mm", "15", "--batch-size", "4"]


def test_cli_evaluates_a_run_caches_and_reuses_heatmap_stores(demo_ws, demo_run, capsys, monkeypatch):
    from lib.explain import heatmaps

    args = ["--workspace", str(demo_ws.root), "evaluate-maps", "--run", demo_run.id, "--methods", "lrp:beta=0",
            "gradcam", *SMALL]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "LRP β=0" in out and "Grad-CAM" in out and "passes when |ρ|" in out
    e = ev.Evaluation(demo_ws, demo_run, ["lrp:beta=0", "gradcam"],
                      ev.Settings(n_scans=2, steps=3, sanity_scans=1, batch_size=4))
    assert e.missing() == []
    res = e.results()
    assert set(res["aopc"]) == {"LRP β=0", "Grad-CAM"} and res["random"] is not None
    for r in res["aopc"].values():
        o = np.asarray(r["outputs"])
        assert o.shape == (2, 4) and np.all((o >= 0) & (o <= 1))
        np.testing.assert_allclose(r["aopc"], ev.aopc(o))
    # the unperturbed output is the model's AD probability of the scan
    preds = demo_run.predictions().set_index("scan_id")
    r = res["aopc"]["Grad-CAM"]
    for sid, o in zip(r["scan_ids"], r["outputs"]):
        assert o[0] == pytest.approx(float(preds.loc[sid, "ad_score"]), abs=1e-4)
    san = res["sanity"]["LRP β=0"]
    assert len(san["steps"]) == 7 and san["spearman"][0] == [1.0]
    assert np.load(san["maps_path"]).shape == (7, *demo_run.grid.shape)
    for loc in res["localisation"].values():
        assert loc["rows"], "the chosen part has atrophied scans"
        for row in loc["rows"]:
            assert 0 <= row["mass"] <= 1 and 0 <= row["auc"] <= 1 and 0 <= row["hit"] <= 1
    table = ev.summary(res, ["LRP β=0", "Grad-CAM"])
    assert table["AOPC"].notna().all() and table["sanity"].isin(["pass", "fail"]).all()
    # a second request is answered from the cache: nothing is explained or perturbed again
    import lib.explain as ex

    def refuse(*a, **k):
        raise AssertionError("recomputed")

    monkeypatch.setattr(ex, "explain", refuse)
    monkeypatch.setattr(ev.perturbation, "perturbation_curve", refuse)
    assert main(args) == 0
    assert "Grad-CAM" in capsys.readouterr().out
    # a heatmap store of the run is read instead of explaining again
    monkeypatch.undo()
    heatmaps.compute_store(demo_ws, demo_run, "guided_backprop")
    monkeypatch.setattr(ex, "explain", refuse)
    assert main(["--workspace", str(demo_ws.root), "evaluate-maps", "--run", demo_run.id, "--methods",
                 "guided_backprop", "--checks", "aopc", "localisation", *SMALL]) == 0
    e = ev.Evaluation(demo_ws, demo_run, ["guided_backprop"], ev.Settings(n_scans=2, steps=3, sanity_scans=1))
    assert e.missing(["aopc", "localisation"]) == [] and e.missing(["sanity"]) == [("sanity", "guided backprop")]


def test_cli_refuses_bad_requests(demo_ws, demo_run, capsys):
    base = ["--workspace", str(demo_ws.root), "evaluate-maps"]
    assert main([*base, "--run", "nope"]) == 1
    assert "no run" in capsys.readouterr().err
    assert main([*base, "--run", demo_run.id, "--methods", "lrp:gamma=2"]) == 1
    assert "unknown parameter" in capsys.readouterr().err
    assert main([*base, "--run", demo_run.id, "--scans", "0"]) == 1


def test_cache_keys_follow_what_each_check_depends_on(demo_ws, demo_run):
    a = ev.Evaluation(demo_ws, demo_run, ["lrp:beta=0"], ev.Settings())
    b = ev.Evaluation(demo_ws, demo_run, ["lrp:beta=0"], ev.Settings(sanity_threshold=0.3, batch_size=2,
                                                                       replacement="blur"))
    m = a.methods[0]
    # the threshold and the batch size change nothing cached; the replacement changes only region perturbation
    assert a.folder("sanity", m) == b.folder("sanity", m)
    assert a.folder("localisation", m) == b.folder("localisation", m)
    assert a.folder("aopc", m) != b.folder("aopc", m) and a.folder("random") != b.folder("random")
    c = ev.Evaluation(demo_ws, demo_run, ["lrp:beta=1"], ev.Settings())
    assert a.folder("sanity", m) != c.folder("sanity", c.methods[0])
    assert a.folder("random") == c.folder("random")  # one baseline for every method
    assert a.job_key() != c.job_key() and a.job_key() == ev.Evaluation(demo_ws, demo_run, ["lrp:beta=0"]).job_key()
    # the page submits exactly this request: its job is the evaluation's key, its settings come back whole
    from lib import jobs

    request = jobs.EvaluateMaps.of(b)
    assert request.run_id == demo_run.id and request.methods == ("lrp:beta=0",) and request.replacement == "blur"
    assert request.n_scans is None   # at its default: left out
    assert request.settings() == b.settings and request.key(demo_ws) == b.job_key()
    assert jobs.EvaluateMaps.of(a).key(demo_ws) == a.job_key() != request.key(demo_ws)
    json.dumps(request.to_dict())
