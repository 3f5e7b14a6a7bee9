"""What the pages compute, without Streamlit: choices, labels, read-outs, tables and figures of
lib.views.heatmaps, atlas, biomarker, evaluation and review_links."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from lib.views import atlas as av, biomarker as bv, evaluation as evv, heatmaps as hv, review_links as links

PREDS = pd.DataFrame({"scan_id": ["a", "b", "c", "d"], "split": ["test", "test", "train", "train"],
                      "ad_score": [0.2, 0.9, 0.5, 0.9], "site": ["x", "y", "x", "y"]})


# --------------------------------------------------------------------------- heatmaps
def test_heatmap_choices_offer_only_splits_with_scans_and_known_subgroups():
    assert hv.split_choices(PREDS) == ["test", "train", "all"]
    assert hv.subgroup_choices(PREDS, "test") == ["none", "site"]           # no sex/visit column; split needs all
    assert hv.subgroup_choices(PREDS.assign(session=1), "all") == ["none", "site", "visit", "split"]


@pytest.mark.parametrize("text, xyz", [("-26, -22, -14", (-26, -22, -14)), ("(1 2 3.5)", (1, 2, 3.5))])
def test_parse_mni_reads_three_numbers(text, xyz):
    assert hv.parse_mni(text) == xyz


@pytest.mark.parametrize("text", ["1, 2", "a, b, c", "1 2 3 4", ""])
def test_parse_mni_refuses_anything_else(text):
    with pytest.raises(ValueError):
        hv.parse_mni(text)


def test_readout_leaves_out_a_missing_value():
    r = {"mni": (-26.2, 0.4, 10), "voxel": (1, 2, 3), "value": 0.01234, "region": "Left Hippocampus"}
    assert hv.readout(r) == "MNI (-26, 0, 10) mm · voxel (1, 2, 3) · value **0.0123** · region **Left Hippocampus**"
    assert "value" not in hv.readout({**r, "value": np.nan})


def test_pretty_names_visits_only_for_the_visit_subgrouping():
    assert hv.pretty("AD · 2", "visit") == "AD · visit 2"
    assert hv.pretty("AD · F", "sex") == "AD · F"
    assert hv.pretty("HC", "visit") == "HC"


def test_scale_caption_names_the_style_limits():
    m = SimpleNamespace(scale_from="AD", paper=SimpleNamespace(vmin=0.1, vmax=2.0),
                        diverging=SimpleNamespace(vmax=3.0))
    assert "**0.1**" in hv.scale_caption("paper", m, None) and "**2**" in hv.scale_caption("paper", m, None)
    assert "**0.5**" in hv.scale_caption("threshold", m, 0.5)
    assert "± **3**" in hv.scale_caption("diverging", m, None)


def test_scan_order_puts_the_highest_ad_score_first_and_keeps_ties_stable():
    assert list(hv.scan_order(PREDS, ["a", "b", "c", "d"]).index) == ["b", "d", "c", "a"]
    assert hv.scan_choices({(g, None): ["x"] if g in ("HC", "TP") else [] for g in hv.GROUP_HELP}) == ["HC", "TP"]


def test_truth_units_leave_out_the_ventricles_and_sort_by_shift():
    gt = {"units_mm": {"Left_Hippocampus": 1.5, "Right_Lateral_Ventricle": 9.0, "Left_Amygdala": 2.0}}
    t = hv.truth_units(gt, k=2)
    assert list(t["region"]) == ["Left Amygdala", "Left Hippocampus"]
    assert list(t["mm"]) == [2.0, 1.5]


# --------------------------------------------------------------------------- atlas metrics
def _region_rows():
    rows = []
    for scan, outcome, dx, score in (("a", "TP", "AD", 0.9), ("b", "TN", "HC", 0.1), ("c", "FN", "AD", 0.4)):
        rows.append({"scan_id": scan, "outcome": outcome, "diagnosis": dx, "ad_score": score, "region": "r"})
    return pd.DataFrame(rows)


def test_pairs_need_both_groups_and_gain_prefers_tp_vs_tn():
    t = _region_rows()
    assert av.usable_pairs(t) == ["AD vs HC", "TP vs TN"]
    assert av.preferred_pair("gain", av.usable_pairs(t)) == "TP vs TN"
    assert av.preferred_pair("sum", av.usable_pairs(t)) == "AD vs HC"
    no_tn = t[t["outcome"] != "TN"].assign(diagnosis=["AD", "HC"])
    assert av.usable_pairs(no_tn) == ["AD vs HC"]
    assert av.preferred_pair("gain", av.usable_pairs(no_tn)) == "AD vs HC"


def test_gradient_maps_are_read_as_absolute_values():
    assert av.default_values("guided_backprop") == "absolute"
    assert av.default_values("lrp") == "signed"
    assert av.uses_absolute("each method's usual", "sensitivity") and not av.uses_absolute("all signed", "sensitivity")
    assert av.uses_absolute("all absolute", "lrp")


def test_patients_ordered_by_diagnosis_then_score_with_viewer_links():
    t = _region_rows()
    assert av.patient_order(t) == ["a", "c", "b"]
    links_ = av.patient_links(t, ["c", "a"], "run1", "store1", None)
    assert list(links_["scan"]) == ["c", "a"] and list(links_["outcome"]) == ["FN", "TP"]
    assert all("run=run1" in u and "store=store1" in u for u in links_["heatmap"])


def test_atlas_split_label_counts_the_scans():
    assert av.split_label(PREDS, "test") == "test split (2)"
    assert av.split_label(PREDS, "all") == "all scans (4)"
    assert av.split_choices(PREDS) == ["test", "train", "all"]
    assert av.csv_name("r", "lrp", "aal", True, "test", "signed") == "r_lrp_aal_merged_test_signed.csv"


# --------------------------------------------------------------------------- biomarkers
def test_stats_table_writes_minus_signs_and_dashes_for_missing_values():
    stats = pd.DataFrame({"n": [10, 2], "r": [-0.5604, np.nan], "p_permutation": [0.0001, np.nan],
                          "rho": [-0.4, np.nan], "ci_low": [-0.8, np.nan], "ci_high": [-0.2, np.nan]},
                         index=["TP", "FP"])
    t = bv.stats_table(stats)
    assert list(t["Pearson r"]) == ["−0.560", "—"]
    assert list(t["permutation p"])[1] == "—" and list(t["95 % CI of r"])[1] == "—"
    assert list(t["95 % CI of r"])[0] == "−0.80 … −0.20"


def test_covariates_never_include_the_measure_itself():
    cohort = pd.DataFrame({"age": [70], "eTIV": [1500.0], "mmse": [28]})
    assert bv.covariate_choices(cohort, "mmse", has_icv=True) == ["age", "icv"]
    assert bv.covariate_choices(cohort, "age", has_icv=True) == ["icv"]
    assert bv.covariate_choices(cohort.drop(columns="age"), "mmse", has_icv=False) == []


def test_default_store_is_lrp_beta_zero():
    stores = [SimpleNamespace(params={"method": "guided_backprop"}), SimpleNamespace(params={"method": "lrp",
                                                                                            "beta": 0.5}),
              SimpleNamespace(params={"method": "lrp", "beta": 0.0})]
    assert bv.default_store(stores) == 2
    assert bv.default_store(stores[:2]) == 0


def test_fig9_title_says_when_there_are_too_few_true_positives():
    y, title = bv.fig9_texts("LRP", "left", "sum", False, pd.Series({"r": np.nan, "p_permutation": np.nan}))
    assert y == "left hippocampal relevance sum" and "fewer than 3 true positives" in title
    y, _ = bv.fig9_texts("GB", "both", "density", True, pd.Series({"r": 0.1, "p_permutation": 0.5}))
    assert y == "hippocampal susceptibility (|gradient| density)"


# --------------------------------------------------------------------------- evaluation
def test_every_offered_method_has_a_distinct_label_and_the_defaults_are_offered():
    assert len(evv.LABELS) == len(evv.CHOICES)
    assert set(evv.default_labels()) <= set(evv.LABELS)


def test_missing_names_follow_the_methods_order_with_the_baseline_first():
    methods = [SimpleNamespace(label="LRP"), SimpleNamespace(label="GB")]
    missing = [("aopc", "GB"), ("aopc", "random order"), ("sanity", "LRP")]
    assert evv.missing_names(missing, methods) == ["the random-order baseline", "LRP", "GB"]


def test_sanity_maps_figure_has_a_panel_and_an_outline_per_step():
    maps = np.zeros((3, 4, 4, 4), np.float32)
    maps[0, 1, 2, 3] = 5.0
    brain = np.ones((4, 4, 4), bool)
    assert evv.peak_slice(maps) == 3
    fig = evv.sanity_maps_figure(maps, ["original", "fc", "conv1"], brain, 3)
    assert [t.type for t in fig.data] == ["heatmap", "contour"] * 3


def test_sanity_verdicts_name_pass_and_fail():
    summary = pd.DataFrame({"method": ["A", "B", "C"], "ρ randomised": [0.1, 0.9, np.nan],
                            "sanity": ["pass", "fail", ""]})
    text = evv.sanity_verdicts(summary, 0.5)
    assert "**A**: ρ = 0.10" in text and "passes" in text and "**fails**" in text and "**C**" not in text


# --------------------------------------------------------------------------- links between pages
def test_view_params_round_trip_through_parse_param():
    q = links.view_params({"kind": "scan", "scan_id": "s1"},
                          {"page": "pages/heatmaps.py", "slices": [1, 2, 3], "merge": True, "params": {"beta": 1.0},
                           "vmin": None}, workspace="/w")
    assert q == {"scan": "s1", "slices": "1,2,3", "merge": "true", "params": '{"beta":1.0}', "workspace": "/w"}
    assert links.parse_param(q["slices"], None, "ints") == [1, 2, 3]
    assert links.parse_param(q["merge"], False, bool) is True
    assert links.parse_param(q["params"], None, dict) == {"beta": 1.0}
    assert links.parse_param("x", 7, int) == 7 and links.parse_param(None, 7, int) == 7


def test_when_in_words():
    now = datetime(2026, 1, 2, tzinfo=timezone.utc)
    assert links.when(now - timedelta(seconds=5), now) == "just now"
    assert links.when(now - timedelta(minutes=5), now) == "5 min ago"
    assert links.when(now - timedelta(hours=3), now) == "3 h ago"
    assert links.when(now - timedelta(days=3), now) == "2025-12-30"
    assert links.when(None) == ""


def test_ground_truth_overlay_is_in_percent_of_local_volume_loss():
    from lib.views import heatmaps as hv

    atrophy = np.zeros((10, 10, 10), np.float32)
    atrophy[2:8, 2:8, 2:8] = 0.2          # det J − 1 = 0.2: 20 % local volume loss
    atrophy[5, 5, 5] = 3.66               # one border voxel of 366 % must not set the scale
    ov = hv.ground_truth_overlay(atrophy)
    assert ov.volume[3, 3, 3] == np.float32(20.0) and ov.vmin == 0.0
    assert 19.0 <= ov.vmax <= 25.0 and ov.threshold == 3.0
    assert "%" in hv.GROUND_TRUTH_LABEL and "det J - 1" in hv.GROUND_TRUTH_LABEL and hv.GROUND_TRUTH_LABEL.isascii()
    lesions = hv.ground_truth_overlay((atrophy > 1).astype(np.uint8), lesions=True)
    assert lesions.vmax == 1.0 and lesions.volume[5, 5, 5] == 1.0   # the MS demo: its lesion mask as it is


def test_review_queue_map_is_self_scaled_and_lists_the_runs_maps_paper_first(demo_ws, demo_run):
    from lib.explain import heatmaps
    from lib.views import review_queue as rq

    m = np.zeros((10, 10, 10), np.float32)
    m[:5] = np.linspace(-1, 1, 500).reshape(5, 10, 10)
    ov = rq.scan_overlay(m, absolute=False)
    positive = m[m > 0]
    assert ov.vmin == pytest.approx(np.percentile(positive, 90)) and ov.transparent_below == ov.vmin
    assert rq.scan_overlay(-m, absolute=True).vmax == pytest.approx(np.percentile(np.abs(m[m != 0]), 99.5))
    heatmaps.compute_store(demo_ws, demo_run, "guided_backprop")
    heatmaps.compute_store(demo_ws, demo_run, "lrp", beta=0.0)
    choices = rq.map_choices(demo_ws, demo_run.id)
    first = list(choices)[0]
    assert first.startswith("LRP") and first.endswith(f"of run {demo_run.id}")
    assert choices[f"Guided backprop of run {demo_run.id}"][0] == demo_run.id
    # a preferred run with no maps (the newest run with predictions, say) still offers the other runs' maps
    assert list(rq.map_choices(demo_ws, "no-such-run"))[0].startswith("LRP")
    assert rq.map_choices(demo_ws, None) == rq.map_choices(demo_ws, "no-such-run")
