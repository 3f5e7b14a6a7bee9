"""Cached region tables: one per (heatmap store, atlas), content-keyed, written atomically; workspace atlases;
``python -m lib regions`` computing missing heatmap stores first; job requests; runs trained together."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from lib.reviews import auth
from lib.explain import heatmaps
from lib.analysis import region_tables as rt
from lib.cli import main
from lib.data.atlas import AtlasError, load_atlas
from lib.data.templates import Grid
from lib.data.workspace import Workspace

ADMIN = auth.Identity("tester", "admin")


@pytest.fixture(scope="module")
def lrp_store(demo_ws, demo_run):
    return heatmaps.compute_store(demo_ws, demo_run, "lrp", beta=0.0)


def test_table_is_computed_once_and_holds_the_store_sums(demo_ws, demo_run, lrp_store):
    atlas = rt.get_atlas(demo_ws, "neuromorphometrics", demo_run.grid.resolution)
    path = rt.table_path(demo_ws, lrp_store, atlas)
    path.unlink(missing_ok=True)
    path.with_suffix(".json").unlink(missing_ok=True)
    assert rt.find_table(demo_ws, lrp_store, atlas) is None
    seen = []
    out = rt.compute_table(demo_ws, lrp_store, atlas, progress=lambda d, t, m: seen.append((d, t)), batch_size=5)
    assert out == path and rt.find_table(demo_ws, lrp_store, atlas) == path
    assert seen[-1] == (len(lrp_store), len(lrp_store))
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["store"] == lrp_store.folder.name and meta["scans"] == len(lrp_store)
    table = rt.read_table(path)
    assert len(table) == len(lrp_store) * atlas.n_regions
    assert {"sum", "density", "fraction", "positive_sum", "abs_sum", "abs_density", "abs_fraction"} <= set(table)
    # region sums by hand from the stored maps
    scan = lrp_store.scan_ids[3]
    h = lrp_store.get(scan).astype(np.float64)
    for name in ("Left_Hippocampus", "Brain_Stem"):
        row = table[(table["scan_id"] == scan) & (table["region"] == name)].iloc[0]
        mask = atlas.labels == atlas.index_of(name)
        assert row["sum"] == pytest.approx(h[mask].sum(), rel=1e-6)
        assert row["density"] == pytest.approx(h[mask].mean(), rel=1e-6)
        assert row["abs_sum"] == pytest.approx(np.abs(h[mask]).sum(), rel=1e-6)
        assert row["fraction"] == pytest.approx(h[mask].sum() / h.sum(), rel=1e-6)
    # cached: a second call returns the same file untouched
    before = path.stat().st_mtime_ns
    assert rt.compute_table(demo_ws, lrp_store, atlas) == path and path.stat().st_mtime_ns == before
    assert not list(path.parent.glob(".*"))   # no temporary file left behind


def test_keys_follow_the_atlas_content(demo_ws, demo_run, lrp_store, tmp_path):
    res = demo_run.grid.resolution
    nm = rt.get_atlas(demo_ws, "neuromorphometrics", res)
    merged = rt.get_atlas(demo_ws, "neuromorphometrics", res, merge=True)
    aal = rt.get_atlas(demo_ws, "aal", res)
    keys = {rt.table_key(lrp_store, a) for a in (nm, merged, aal)}
    assert len(keys) == 3
    assert rt.table_key(lrp_store, nm) == rt.table_key(lrp_store, load_atlas("neuromorphometrics", res))
    # a workspace atlas: two regions of the grid
    grid = Grid(res)
    labels = np.zeros(grid.shape, np.int16)
    labels[20:30, 30:40, 20:30] = 1
    labels[35:45, 30:40, 20:30] = 2
    nib.save(nib.Nifti1Image(labels, grid.affine), tmp_path / "parc.nii.gz")
    pd.DataFrame({"index": [1, 2], "name": ["Left_Box", "Right_Box"]}).to_csv(tmp_path / "parc.csv", index=False)
    mine = rt.save_user_atlas(demo_ws, "boxes", tmp_path / "parc.nii.gz", tmp_path / "parc.csv", res, who=ADMIN)
    assert mine.n_regions == 2 and "boxes" in rt.list_atlases(demo_ws)
    assert rt.list_atlases(demo_ws)[0] == "neuromorphometrics"
    again = rt.get_atlas(demo_ws, "boxes", res)
    assert rt.atlas_key(again) == rt.atlas_key(mine)
    assert rt.get_atlas(demo_ws, "boxes", res, merge=True).n_regions == 1
    # replaced under the same name: another key, so never a stale table
    labels[20:30, 30:40, 20:30] = 2
    nib.save(nib.Nifti1Image(labels, grid.affine), tmp_path / "parc.nii.gz")
    rt.save_user_atlas(demo_ws, "boxes", tmp_path / "parc.nii.gz", tmp_path / "parc.csv", res, who=ADMIN)
    assert rt.atlas_key(rt.get_atlas(demo_ws, "boxes", res)) != rt.atlas_key(mine)
    # refused files are not copied, and names cannot escape the atlas folder or shadow a shipped atlas
    pd.DataFrame({"index": [1], "name": ["Left_Box"]}).to_csv(tmp_path / "short.csv", index=False)
    with pytest.raises(AtlasError, match="no row in the names table"):
        rt.save_user_atlas(demo_ws, "broken", tmp_path / "parc.nii.gz", tmp_path / "short.csv", res, who=ADMIN)
    assert "broken" not in rt.list_atlases(demo_ws)
    for bad in ("../x", "aal", ""):
        with pytest.raises(AtlasError, match="atlas name"):
            rt.save_user_atlas(demo_ws, bad, tmp_path / "parc.nii.gz", tmp_path / "parc.csv", res, who=ADMIN)
    with pytest.raises(KeyError, match="unknown atlas"):
        rt.get_atlas(demo_ws, "../boxes", res)


def test_cli_computes_missing_heatmaps_then_tables(demo_ws, demo_run, lrp_store, capsys):
    sha = demo_run.checkpoint_hash()
    assert rt.matching_store(demo_ws, sha, "lrp", {"beta": 0.0}).folder == lrp_store.folder
    assert rt.matching_store(demo_ws, sha, "lrp", {"beta": 1.0}) is None
    ws = ["--workspace", str(demo_ws.root)]
    assert main([*ws, "regions", "--run", demo_run.id, "--method", "lrp", "--beta", "0", "1", "--atlas", "aal",
                 "--merge"]) == 0
    printed = [line for line in capsys.readouterr().out.splitlines() if line.endswith(".parquet")]
    assert len(printed) == 2
    beta1 = rt.matching_store(demo_ws, sha, "lrp", {"beta": 1.0})
    assert beta1 is not None and heatmaps.find_store(demo_ws, demo_run, "lrp", beta=1.0).folder == beta1.folder
    merged_aal = rt.get_atlas(demo_ws, "aal", demo_run.grid.resolution, merge=True)
    for store, line in zip((lrp_store, beta1), printed):
        assert str(rt.find_table(demo_ws, store, merged_aal)) == line
    # by store folder name; errors name what is wrong
    assert main([*ws, "regions", "--run", demo_run.id, "--store", lrp_store.folder.name]) == 0
    assert main([*ws, "regions", "--run", demo_run.id, "--store", "nope"]) == 1
    assert "no finished heatmap store" in capsys.readouterr().err
    assert main([*ws, "regions", "--run", demo_run.id, "--atlas", "nope"]) == 1
    assert main([*ws, "regions", "--run", "no-such-run"]) == 1


def test_requests_share_a_job_key_only_when_equal():
    from lib.jobs import RegionTables

    a = RegionTables(run_ids=("r1",), method="lrp", betas=(0, 0.5), params={"beta": 0.25, "epsilon": 1e-6})
    b = RegionTables(run_ids=("r1",), method="lrp", betas=(0.0, 0.5))
    assert a.key(None) == b.key(None)   # β from betas wins; parameters at their defaults are left out
    assert a.canonical() == {"runs": ["r1"], "method": "lrp", "params": {}, "betas": [0.0, 0.5],
                             "atlas": "neuromorphometrics", "merge": False}
    c = RegionTables(run_ids=("r1",), method="lrp", betas=(0, 0.5), merge=True)
    d = RegionTables(run_ids=("r1", "r2"), method="lrp", params={"beta": 0.5, "epsilon": 0.1})
    assert len({a.key(None), c.key(None), d.key(None)}) == 3 and c.canonical()["merge"]
    assert d.canonical()["params"] == {"beta": 0.5, "epsilon": 0.1}
    s = RegionTables(run_ids=("r1",), stores=("k1", "k2"), atlas="aal")
    assert s.canonical() == {"runs": ["r1"], "stores": ["k1", "k2"], "atlas": "aal", "merge": False}
    assert s.key(None).startswith("regions:") and s.key(None) != RegionTables(run_ids=("r1",), stores=("k1",)).key(None)


def test_group_runs_are_the_finished_runs_trained_together(tmp_path):
    ws = Workspace.create(tmp_path / "ws", kind="study")

    def fake(run_id, group, status="done", checkpoint=True):
        d = ws.runs_dir / run_id
        d.mkdir(parents=True)
        (d / "config.json").write_text(json.dumps({"id": run_id, "group": group, "created": 1.0}))
        (d / "state.json").write_text(json.dumps({"status": status}))
        if checkpoint:
            (d / "best.pt").write_bytes(b"x")

    for rid, group, status, ckpt in [("a", "g1", "done", True), ("c", "g1", "done", True), ("b", "g1", "done", True),
                                     ("d", "g1", "failed", True), ("e", "g1", "done", False), ("f", "g2", "done", True),
                                     ("solo", None, "done", True)]:
        fake(rid, group, status, ckpt)
    from lib.learn.runs import load_run

    assert [r.id for r in rt.group_runs(ws, load_run(ws, "c"))] == ["c", "a", "b"]
    assert [r.id for r in rt.group_runs(ws, load_run(ws, "solo"))] == ["solo"]
