import nibabel as nib
import numpy as np
import pandas as pd

from lib.views import overview
from lib.data.templates import atlas


def test_counts_and_demographics(demo_ws):
    cohort = overview.load_cohort(demo_ws)
    t = overview.counts(cohort)
    assert t["diagnosis"].loc["scans"].sum() == len(cohort)
    assert t["diagnosis"].loc["subjects"].sum() == cohort["subject_id"].nunique()
    assert t["split"].to_numpy().sum() == len(cohort)
    assert list(t["split"].index) == ["train", "validation", "test"]
    demo = overview.demographics(cohort)
    assert demo.loc["subjects"].astype(int).sum() == cohort["subject_id"].nunique()
    assert "MMSE" in demo.index and "female" in demo.index
    import pyarrow as pa

    pa.Table.from_pandas(demo)  # what Streamlit does with it: no mixed-type column to fall back from


def test_group_means_stream_equals_in_memory_mean(demo_ws):
    path = overview.compute_group_means(demo_ws)
    means = overview.group_means(demo_ws)
    cohort = overview.load_cohort(demo_ws)
    ad = [overview.brain_normalised(np.asarray(nib.load(demo_ws.resolve(p)).dataobj, np.float32))
          for p in cohort.loc[cohort["diagnosis"] == "AD", "path"]]
    np.testing.assert_allclose(means["AD"], np.mean(ad, axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(means["AD - HC"], means["AD"] - means["HC"], atol=1e-6)
    img = nib.load(path)
    np.testing.assert_allclose(img.affine, demo_ws.grid.affine)
    # cached: a second call returns the same file without recomputing
    assert overview.compute_group_means(demo_ws) == path


def test_region_at_names_the_hippocampus():
    labels, table = atlas("neuromorphometrics", 2.0)
    from lib.data.templates import Grid

    ijk = Grid(2.0).mni_to_voxel((-25, -20, -15))
    assert overview.region_at(np.asarray(labels.dataobj), table, ijk) == "Left Hippocampus"
    assert overview.region_at(np.asarray(labels.dataobj), table, (0, 0, 0)) == "outside the atlas"


def test_ground_truth_for_demo_scans(demo_ws):
    cohort = pd.read_csv(demo_ws.cohort_csv)
    gt_table = pd.read_csv(demo_ws.ground_truth_dir / "atrophy.csv")
    ad_scan = gt_table.sort_values("severity").iloc[-1]["scan_id"]
    gt = overview.ground_truth(demo_ws, ad_scan)
    assert gt["severity"] > 0 and gt["atrophy_map"].exists()
    amap = np.asarray(nib.load(gt["atrophy_map"]).dataobj)
    assert amap.max() > 0
    hc_scan = cohort.loc[cohort["diagnosis"] == "HC", "scan_id"]
    healthy = [s for s in hc_scan if overview.ground_truth(demo_ws, s)["severity"] == 0]
    assert healthy, "expected some controls without any disease atrophy"
    gt_hc = overview.ground_truth(demo_ws, healthy[0])
    assert max(gt_hc["units_mm"].values()) == 0
    assert np.asarray(nib.load(gt_hc["atrophy_map"]).dataobj).max() == 0
