import hashlib

import nibabel as nib
import numpy as np
import pandas as pd

from lib.data import demo
from lib.data.templates import Grid, atlas


def _digest(path) -> str:
    return hashlib.sha256(np.asarray(nib.load(path).dataobj).tobytes()).hexdigest()


def test_cohort_table_and_files(demo_ws):
    cohort = pd.read_csv(demo_ws.cohort_csv)
    assert set(cohort["diagnosis"]) == {"AD", "HC"}
    assert cohort["scan_id"].is_unique
    for col in ("subject_id", "scan_id", "path", "session", "age", "sex", "mmse", "cdr", "site",
                "hippocampal_volume"):
        assert col in cohort, col
    assert cohort["age"].between(60, 96).all()
    grid = Grid(3.0)
    img = nib.load(demo_ws.resolve(cohort["path"].iat[0]))
    assert img.shape == grid.shape
    np.testing.assert_allclose(img.affine, grid.affine)
    assert demo_ws.is_demo and demo.is_complete(demo_ws)
    # validation ran as part of the build and found no errors
    assert demo_ws.qc_csv.exists() and demo_ws.validation_json.exists()


def test_generator_is_deterministic(tmp_path, demo_ws):
    """Same seed → identical scans and ground truth, whatever the number of worker processes."""
    cfg = demo.DemoConfig(n_subjects=16, resolution=3.0, max_visits=2, seed=1, workers=1)
    again = demo.generate(tmp_path / "again", cfg)
    a = pd.read_csv(demo_ws.cohort_csv)
    b = pd.read_csv(again.cohort_csv)
    pd.testing.assert_frame_equal(a, b)
    for path in a["path"].iloc[[0, 5, -1]]:
        assert _digest(demo_ws.resolve(path)) == _digest(again.resolve(path))
    other = demo.generate(tmp_path / "other", demo.DemoConfig(n_subjects=4, resolution=3.0, max_visits=1,
                                                              seed=2, workers=1))
    first = pd.read_csv(other.cohort_csv)["path"].iat[0]
    assert _digest(other.resolve(first)) != _digest(again.resolve(first))


def test_hippocampal_volume_is_deformed_label_count(demo_ws):
    cohort = pd.read_csv(demo_ws.cohort_csv)
    gt = pd.read_csv(demo_ws.ground_truth_dir / "atrophy.csv")
    volumes = pd.read_csv(demo_ws.ground_truth_dir / "region_volumes.csv")
    _, table = atlas("neuromorphometrics", 3.0)
    hippo = table.loc[table["name"].str.endswith("_Hippocampus"), "index"].to_numpy()
    for scan_id in cohort["scan_id"].iloc[:6]:
        labels = np.asarray(nib.load(demo_ws.resolve(gt.set_index("scan_id").at[scan_id, "labels"])).dataobj)
        expected = np.isin(labels, hippo).sum() * 27.0  # 3 mm voxels
        assert cohort.set_index("scan_id").at[scan_id, "hippocampal_volume"] == expected
        left = (labels == table.loc[table["name"] == "Left_Hippocampus", "index"].iat[0]).sum() * 27.0
        assert volumes.set_index("scan_id").at[scan_id, "Left_Hippocampus"] == left


def test_atrophy_lowers_ad_hippocampus_with_overlap():
    """On the default 2 mm grid: AD hippocampi clearly smaller on average, yet the groups overlap."""
    cfg = demo.DemoConfig(n_subjects=40, max_visits=1, seed=3)
    subjects = demo._draw_subjects(cfg)
    cfg._root = "/nonexistent"  # not written: measured from the deformed labels in memory
    fields = demo._fields(cfg.resolution)
    hippo = [fields.label_table.set_index("name").at[n, "index"] for n in ("Left_Hippocampus", "Right_Hippocampus")]
    vols = {"AD": [], "HC": []}
    for s in subjects:
        labels = demo._deformed_labels(s, 0, cfg)
        vols[s["diagnosis"]].append(np.isin(labels, hippo).sum() * fields.grid.voxel_volume)
    ad, hc = np.array(vols["AD"]), np.array(vols["HC"])
    assert ad.mean() < 0.88 * hc.mean()  # clearly lower (real cohorts: about 20 %)
    assert ad.max() > hc.min()  # overlapping: some AD have little atrophy, some HC some


def test_outdated_demo_workspace_is_not_complete(demo_ws, tmp_path):
    import shutil

    from lib.data.workspace import Workspace

    copy = tmp_path / "old"
    shutil.copytree(demo_ws.root, copy)
    ws = Workspace.open(copy)
    assert demo.is_complete(ws)
    ws.update_config(demo_version=demo.DEMO_VERSION - 1)
    assert not demo.is_complete(Workspace.open(copy))
