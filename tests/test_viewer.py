"""What the heatmap page computes: cached group means, colour scales as rendered, crosshair, top regions,
distance tables, exports and the group-means job."""

from __future__ import annotations

import gzip
import io
import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from lib.core import atomic, cache
from lib.analysis import groups
from lib.data.templates import brain_mask
from lib.views import viewer
from lib.data.atlas import atlas_from_arrays
from lib.explain.heatmaps import HeatmapStore
from lib.views.render import ortho_image, slice_2d
from lib.data.templates import Grid

GRID = Grid(3.0)


def _store(folder, maps: dict[str, np.ndarray], params=None) -> HeatmapStore:
    """A finished heatmap store as lib.explain.heatmaps writes it (float16 maps scaled per scan)."""
    folder.mkdir(parents=True)
    ids = list(maps)
    peak = np.array([max(float(np.abs(m).max()), 1e-30) for m in maps.values()], np.float32)
    arr = np.lib.format.open_memmap(folder / "maps.npy", mode="w+", dtype=np.float16, shape=(len(ids), *GRID.shape))
    for i, m in enumerate(maps.values()):
        arr[i] = (m / peak[i]).astype(np.float16)
    arr.flush()
    del arr
    np.save(folder / "scale.npy", peak)
    (folder / "index.json").write_text(json.dumps({"scan_ids": ids, "resolution": GRID.resolution,
                                                   "params": params or {"method": "lrp", "beta": 0.0},
                                                   "target": "AD", "checkpoint_sha256": "x"}))
    cache.seal(folder)   # its completeness marker, written last
    return HeatmapStore(folder)


def _cohort(n=14, seed=0):
    rng = np.random.default_rng(seed)
    brain = brain_mask(GRID.resolution)
    dx = np.where(np.arange(n) % 2 == 0, "AD", "HC")
    pred_ad = np.where(dx == "AD", rng.random(n) < 0.7, rng.random(n) < 0.3)
    pred_ad[:2] = [True, False]                    # at least one TP and one TN
    outcome = np.where(dx == "AD", np.where(pred_ad, "TP", "FN"), np.where(pred_ad, "FP", "TN"))
    table = pd.DataFrame({"scan_id": [f"s{i:02d}" for i in range(n)], "diagnosis": dx, "outcome": outcome,
                          "split": np.where(np.arange(n) < n // 2, "test", "train"),
                          "site": rng.choice(["site-A", "site-B"], n), "ad_score": rng.random(n),
                          "predicted": np.where(pred_ad, "AD", "HC")})
    maps = {}
    for i, s in enumerate(table["scan_id"]):
        m = np.zeros(GRID.shape, np.float32)
        m[brain] = rng.gamma(2.0, 1.0, int(brain.sum())) * (2.0 if dx[i] == "AD" else 1.0) * 1e-5
        maps[s] = m
    return table, maps


def test_cached_group_means_equal_in_memory_means_and_are_computed_once(tmp_path, monkeypatch):
    table, maps = _cohort()
    store = _store(tmp_path / "store", maps)
    sel = viewer.selection(table, "all")
    cached = viewer.cached_group_means(store, sel, by="site")
    for e in cached.entries:
        ids = sel.loc[(sel["diagnosis"] == e.group) if e.group in ("AD", "HC") else (sel["outcome"] == e.group),
                      "scan_id"]
        if e.subgroup is not None:
            ids = ids[sel.loc[ids.index, "site"] == e.subgroup]
        assert e.count == len(ids), e.label
        if len(ids):
            expected = np.mean([store.get(s).astype(np.float64) for s in ids], axis=0)
            np.testing.assert_allclose(cached[e.label], expected, rtol=1e-5, atol=1e-12)
            assert isinstance(cached[e.label], np.memmap) and cached[e.label].dtype == np.float32
        else:
            assert e.label not in cached and e.reason
            with pytest.raises(KeyError, match="empty"):
                cached[e.label]
    # the scale is the paper's rule on the average AD map over the template's brain
    lo, hi = groups.paper_scale(cached["AD"], brain_mask(GRID.resolution))
    assert (cached.paper.vmin, cached.paper.vmax) == pytest.approx((lo, hi))
    assert cached.scale_from == "AD"
    # a second request is read from disk: nothing is averaged again
    monkeypatch.setattr(groups, "group_means", lambda *a, **k: (_ for _ in ()).throw(AssertionError("recomputed")))
    again = viewer.cached_group_means(store, sel, by="site")
    assert again.folder == cached.folder
    # another selection of scans is another cache entry, never the old one
    with pytest.raises(AssertionError, match="recomputed"):
        viewer.cached_group_means(store, viewer.selection(table, "test"), by="site")


def test_a_grouping_interrupted_before_its_index_is_recomputed(tmp_path, monkeypatch):
    table, maps = _cohort(n=6, seed=1)
    store = _store(tmp_path / "store", maps)

    def crash(*a, **k):
        raise RuntimeError("power cut")

    with monkeypatch.context() as m:
        m.setattr(atomic, "write_json", crash)
        with pytest.raises(RuntimeError):
            viewer.cached_group_means(store, table)
    folder = store.folder / "group_means" / viewer.grouping_key(store, table, None)
    assert not (folder / "index.json").exists()
    done = viewer.cached_group_means(store, table)
    assert (done.folder / "index.json").exists() and done.count("AD") == 3


def test_empty_groups_and_selection_are_explained(tmp_path):
    table, maps = _cohort(n=8, seed=2)
    table.loc[table["diagnosis"] == "HC", "outcome"] = "TN"       # no false positives at all
    store = _store(tmp_path / "store", maps)
    cached = viewer.cached_group_means(store, table)
    fp = cached.entry("FP")
    assert fp.count == 0 and "false positives" in fp.reason and fp in cached.empty
    with pytest.raises(ValueError, match="split"):
        viewer.selection(table, "holdout")


SCALE = 4


def _axial(img, vol):
    """Voxel-centre pixels of the axial panel (the third) of an ortho_image, ``(Y, X, 3)`` in display order,
    top rows (where the orientation letters are drawn) set to -1."""
    x, y, _ = vol.shape
    left = y * SCALE + 6 + x * SCALE + 6
    px = np.asarray(img)[:y * SCALE, left:left + x * SCALE].astype(int)[SCALE // 2::SCALE, SCALE // 2::SCALE]
    px[:4] = -1
    return px


def _render(vol, ov, background=None):
    bg = np.full(vol.shape, 0.5, np.float32) if background is None else background   # mid-grey anatomy
    return ortho_image(bg, (6, 7, 5), overlay=ov, crosshair=False, height=vol.shape[2] * SCALE, bg_range=(0.0, 1.0))


def test_percentile_scales_colour_voxels_as_the_paper_says():
    """Figs 2–3: black below the 50th percentile of the average AD map, white above its 99.5th; Fig 8: below the
    90th transparent, above the 99.5th yellow — checked on the rendered pixels."""
    rng = np.random.default_rng(3)
    ad_mean = rng.gamma(2.0, 1.0, (12, 30, 10)).astype(np.float32)
    ad_mean[:, :, 5] = np.linspace(0, ad_mean.max() * 1.01, 12 * 30).reshape(12, 30)   # every level on slice 5
    lo, hi = groups.paper_scale(ad_mean)
    i90, i995 = groups.individual_scale(ad_mean)
    means = type("M", (), {})()
    means.paper, means.individual = viewer.Scale(lo, hi), viewer.Scale(i90, i995)
    v = slice_2d(ad_mean, 2, 5)
    keep = np.zeros(v.shape, bool)
    keep[4:] = True
    px = _axial(_render(ad_mean, viewer.overlay(ad_mean, "paper", means, alpha=1.0)), ad_mean)
    below, above = keep & (v <= lo), keep & (v >= hi)
    assert below.sum() > 20 and above.sum() > 1
    assert (px[below] <= [12, 0, 0]).all()                 # black (hot's first colour) below the 50th percentile
    assert (px[above] == 255).all()                        # white above the 99.5th
    mid = keep & (v > lo + 0.2 * (hi - lo)) & (v < hi - 0.2 * (hi - lo))
    assert mid.any() and (px[mid][:, 0] > px[mid][:, 2]).all()   # red → yellow in between
    px = _axial(_render(ad_mean, viewer.overlay(ad_mean, "individual", means, alpha=1.0)), ad_mean)
    grey = round(0.5 * 255)
    assert (np.abs(px[keep & (v < i90)] - grey) <= 1).all()          # transparent below the 90th: anatomy shows
    assert (px[keep & (v >= i995)] == [255, 255, 0]).all()           # yellow above the 99.5th
    coloured = px[keep & (v >= i90)]
    assert (coloured[:, 0] == 255).all() and (coloured[:, 2] == 0).all()   # red → yellow
    # thresholded: below the cut transparent, above it the paper's colours
    px = _axial(_render(ad_mean, viewer.overlay(ad_mean, "threshold", means, alpha=1.0, threshold=i90)), ad_mean)
    assert (np.abs(px[keep & (v < i90)] - grey) <= 1).all() and (px[keep & (v >= hi)] == 255).all()


def test_diverging_overlay_is_symmetric_and_fades_near_zero():
    vol = np.zeros((8, 12, 10), np.float32)
    vol[2, 4, 5], vol[5, 4, 5], vol[3, 4, 5], vol[6, 4, 5] = 1.0, -1.0, 0.01, 0.5
    ov = viewer.overlay(vol, "diverging", limit=1.0, alpha=1.0)
    assert (ov.vmin, ov.vmax) == (-1.0, 1.0)
    row = _axial(_render(vol, ov), vol)[12 - 1 - 4].astype(int)   # y = 4
    assert row[2][0] > 90 and row[2][1] < 40 and row[2][2] < 60     # +1: red
    assert row[5][2] > 40 and row[5][0] < 40                        # −1: blue
    assert (np.abs(row[3] - 128) <= 1).all()                        # |v| < 2 % of the limit: transparent
    assert np.linalg.norm(row[6] - 128) < 0.6 * np.linalg.norm(row[2] - 128)   # half the limit: fainter


def test_crosshair_readout_and_jumps():
    labels = np.zeros(GRID.shape, np.int32)
    labels[10:20, 20:30, 15:25] = 7
    labels[40:50, 20:30, 15:25] = 8
    atlas = atlas_from_arrays(labels, pd.DataFrame({"index": [7, 8], "name": ["Left_Hippocampus", "Right_Thing"]}),
                              name="t", resolution=GRID.resolution)
    vol = np.arange(np.prod(GRID.shape), dtype=np.float32).reshape(GRID.shape)
    r = viewer.crosshair(GRID, (12, 22, 17), vol, atlas)
    assert r["mni"] == pytest.approx(tuple(GRID.voxel_to_mni((12, 22, 17))))
    assert r["value"] == vol[12, 22, 17] and r["region"] == "Left Hippocampus"
    far = viewer.crosshair(GRID, (500, -3, 17), None, atlas)
    assert far["voxel"] == (GRID.shape[0] - 1, 0, 17) and far["region"] == "outside the atlas"
    assert np.isnan(far["value"])
    inside = viewer.region_voxel(atlas, "Right_Thing")
    assert labels[inside] == 8
    assert viewer.voxel_of(GRID, GRID.voxel_to_mni(inside)) == inside
    assert viewer.peak_voxel(vol) == tuple(int(s) - 1 for s in GRID.shape)


def test_top_regions_of_one_map_and_their_outlines():
    labels = np.zeros(GRID.shape, np.int32)
    labels[5:15, 5:15, 5:15], labels[20:30, 20:30, 20:30], labels[40:44, 40:44, 40:44] = 1, 2, 3
    atlas = atlas_from_arrays(labels, pd.DataFrame({"index": [1, 2, 3], "name": ["A", "B", "C"]}),
                              name="t", resolution=GRID.resolution)
    vol = np.zeros(GRID.shape, np.float32)
    vol[labels == 1] = 1.0          # 1000 voxels × 1: the largest sum
    vol[labels == 3] = 5.0          # 64 voxels × 5: the largest density
    vol[labels == 2] = -0.1
    top = viewer.top_regions(vol, atlas, k=2)
    assert list(top["region"]) == ["A", "C"] and list(top["rank"]) == [1, 2]
    assert top["share"].iloc[0] == pytest.approx(1000 / (1000 + 320))
    assert list(viewer.top_regions(vol, atlas, k=1, metric="density")["region"]) == ["C"]
    marks = viewer.outline_labels(atlas, top["label"])
    assert set(np.unique(marks)) == {0, 1, 3}


def test_distance_tables_between_methods_are_symmetric_with_zero_diagonal():
    rng = np.random.default_rng(4)
    maps = {m: {"AD": rng.normal(size=(5, 6, 4)), "HC": rng.normal(size=(5, 6, 4))} for m in ("LRP", "GB", "Occ")}
    del maps["Occ"]["HC"]
    tables = viewer.method_distances(maps)
    assert list(tables) == ["AD", "HC"] and list(tables["HC"].index) == ["LRP", "GB"]
    for t in tables.values():
        d = t.to_numpy()
        assert (d == d.T).all() and (np.diag(d) == 0).all() and (d[~np.eye(len(d), dtype=bool)] > 0).all()
    assert tables["AD"].loc["LRP", "GB"] == pytest.approx(np.linalg.norm(maps["LRP"]["AD"] - maps["GB"]["AD"]))
    both = viewer.combined_table(tables)
    assert list(both.index) == ["LRP", "GB"]
    assert both.loc["LRP", "LRP"] == "0 / 0"
    assert both.loc["GB", "LRP"] == f"{tables['AD'].loc['GB', 'LRP']:.3g} / {tables['HC'].loc['GB', 'LRP']:.3g}"


def test_difference_neighbours_facts_and_nifti_export():
    a, b = np.full((4, 4, 4), 2.0, np.float32), np.ones((4, 4, 4), np.float32)
    b[0, 0, 0] = 4.0
    d, lim = viewer.difference(a, b)
    assert d[1, 1, 1] == 1.0 and d[0, 0, 0] == -2.0 and 1.0 <= lim <= 2.0
    assert viewer.neighbours(["a", "b", "c"], "a") == (None, "b")
    assert viewer.neighbours(["a", "b", "c"], "c") == ("b", None)
    assert viewer.neighbours(["a"], "z") == (None, None)
    table, _ = _cohort(n=4)
    cohort = pd.DataFrame({"scan_id": ["s01"], "mmse": [22.0], "cdr": [np.nan]})
    facts = viewer.scan_facts(table, cohort, "s01")
    assert facts["outcome"] in ("TN", "FP") and facts["mmse"] == 22.0 and "cdr" not in facts
    vol = np.random.default_rng(5).random(GRID.shape).astype(np.float32)
    raw = viewer.nifti_bytes(vol, GRID, "LRP mean TP")
    img = nib.Nifti1Image.from_bytes(gzip.decompress(raw))
    np.testing.assert_array_equal(np.asarray(img.dataobj), vol)
    assert np.allclose(img.affine, GRID.affine) and img.header.get_sform(coded=True)[1] == 4   # MNI
    assert b"LRP mean TP" in img.header["descrip"].tobytes()


def test_store_labels():
    from lib.explain import canonical_params

    assert viewer.store_label(canonical_params("lrp", beta=0.0)) == "LRP β=0"
    assert viewer.store_label(canonical_params("lrp", beta=1.0, epsilon=0.1)) == "LRP β=1 (epsilon=0.1)"
    assert viewer.store_label(canonical_params("guided_backprop")) == "Guided backprop"
    assert viewer.store_label(canonical_params("guided_backprop"), target="HC") == "Guided backprop, HC explained"


def test_group_means_job_from_the_command_line(demo_ws, demo_run, capsys):
    """``python -m lib group-means`` fills the cache the page reads; unknown stores are refused."""
    from lib.explain import heatmaps
    from lib import jobs
    from lib.cli import main

    store = heatmaps.compute_store(demo_ws, demo_run, "lrp", beta=0.0)
    request = jobs.GroupMeans(run_id=demo_run.id, store=store.folder.name, split="all", by="site")
    key = request.key(demo_ws)
    assert key.startswith("group-means:")
    assert main(["--workspace", str(demo_ws.root), "group-means", "--run", demo_run.id, "--store", store.folder.name,
                 "--split", "all", "--by", "site"]) == 0
    table = viewer.selection(demo_run.predictions(), "all")
    folder = store.folder / "group_means" / viewer.grouping_key(store, table, "site")
    cached = viewer.CachedGroupMeans(folder)
    assert cached.by == "site" and cached.count("AD") == int((table["diagnosis"] == "AD").sum())
    assert key == f"group-means:{viewer.grouping_key(store, table, 'site')}"   # the page's job is the cache's key
    assert jobs.GroupMeans(run_id=demo_run.id, store=store.folder.name, split="all", by="site").key(demo_ws) == key
    assert main(["--workspace", str(demo_ws.root), "group-means", "--run", demo_run.id, "--store", "nope"]) == 1
    assert "no finished heatmap store" in capsys.readouterr().err
    assert main(["--workspace", str(demo_ws.root), "group-means", "--run", demo_run.id, "--method", "lrp",
                 "--beta", "0.75"]) == 1


def test_colour_bar_of_a_cut_map_starts_at_the_cut():
    from lib.views.render import _colormap, colorbar

    full = np.asarray(colorbar("hot", 0.0, 1.0, width=100))
    cut = np.asarray(colorbar("hot", 0.0, 1.0, width=100, start=0.5))
    assert (full[0, 0] == _colormap("hot")[0]).all()           # black at vmin
    assert (cut[0, 0] == _colormap("hot")[127]).all()          # the colour of 0.5, not black
    assert (cut[0, 99] == full[0, 99]).all()                   # same top colour


def test_methods_are_compared_with_another_method_by_default():
    methods = ["lrp", "lrp", "lrp", "guided_backprop", "gradcam"]
    assert viewer.other_method_index(methods, 0) == 3      # LRP β=0 against guided backprop, not LRP β=0.5
    assert viewer.other_method_index(methods, 3) == 4
    assert viewer.other_method_index(methods, 4) == 0      # wraps round
    assert viewer.other_method_index(["lrp", "lrp"], 1) == 0   # one method only: the next store
