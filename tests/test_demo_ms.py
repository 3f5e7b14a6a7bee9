"""The MS demo: its own task, lesions only in patients and only in the white matter, darker than their
surroundings, a lesion load that is the mask's volume, and lesion masks as the localisation ground truth."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from lib.analysis.evaluation.localisation import ground_truth_mask
from lib.cli import main
from lib.data import demo, demo_ms
from lib.data.templates import template
from lib.data.workspace import Workspace


@pytest.fixture(scope="module")
def ms_demo(tmp_path_factory) -> Workspace:
    root = tmp_path_factory.mktemp("ms_demo")
    assert main(["--workspace", str(root), "demo", "--disease", "ms", "--subjects", "6", "--resolution", "3",
                 "--visits", "2", "--seed", "3", "--workers", "1"]) == 0
    return Workspace.open(root)


def test_the_ms_demo_declares_its_task_and_measure(ms_demo):
    assert demo.is_complete(ms_demo) and demo_ms.is_complete(ms_demo)
    assert ms_demo.classes.names == ("HC", "MS") and ms_demo.classes.title("MS") == "multiple sclerosis"
    assert ms_demo.biomarker_measure == "lesion_load"
    cohort = pd.read_csv(ms_demo.cohort_csv)
    assert set(cohort["diagnosis"]) == {"MS", "HC"} and {"lesion_load", "edss"} <= set(cohort.columns)
    assert (cohort.loc[cohort["diagnosis"] == "HC", ["lesion_load", "edss"]] == 0).all().all()
    assert (cohort.loc[cohort["diagnosis"] == "MS", "lesion_load"] > 0).all()


def test_lesions_are_dark_white_matter_spots_whose_volume_is_the_lesion_load(ms_demo):
    cohort = pd.read_csv(ms_demo.cohort_csv).set_index("scan_id")
    truth = pd.read_csv(ms_demo.ground_truth_dir / "atrophy.csv").set_index("scan_id")
    grid = ms_demo.grid
    brain = np.asarray(template(grid.resolution).dataobj) > 0.05 * np.asarray(template(grid.resolution).dataobj).max()
    for scan_id, row in truth.iterrows():
        mask_img = nib.load(ms_demo.resolve(row["atrophy_map"]))
        assert np.allclose(mask_img.affine, grid.affine)
        mask = np.asarray(mask_img.dataobj) > 0
        load = mask.sum() * grid.voxel_volume / 1000
        assert load == pytest.approx(cohort.loc[scan_id, "lesion_load"], abs=1e-3)
        assert load == pytest.approx(row["lesion_load_ml"], abs=1e-3)
        if cohort.loc[scan_id, "diagnosis"] == "HC":
            assert not mask.any()
            continue
        assert mask.any() and row["n_lesions"] >= 1
        labels = np.asarray(nib.load(ms_demo.resolve(row["labels"])).dataobj)
        # mostly white matter: juxtacortical lesions touch the cortex, and a 3 mm voxel straddles both
        assert np.isin(labels[mask], [0, *_wm_like()]).mean() > 0.6
        scan = np.asarray(nib.load(ms_demo.resolve(cohort.loc[scan_id, "path"])).dataobj, float)
        ring = (np.asarray(_dilate(mask)) & ~mask) & brain
        assert scan[mask].mean() < scan[ring].mean()                    # T1-hypointense
        # the Evaluation page's localisation reads the lesion mask as the scan's ground truth
        assert np.array_equal(ground_truth_mask(ms_demo, scan_id, grid), mask)


@pytest.fixture(scope="module")
def ms_demo_2mm(tmp_path_factory) -> Workspace:
    """Two subjects (one with MS) at the demo's default 2 mm, to be read on the 3 mm grid as training reads it."""
    return demo_ms.generate(tmp_path_factory.mktemp("ms_demo_2mm"),
                            demo_ms.MSDemoConfig(n_subjects=2, resolution=2.0, max_visits=1, seed=5, workers=1))


@pytest.mark.parametrize("which", ["made at 3 mm", "made at 2 mm, resampled to 3 mm"])
def test_lesions_stay_visible_on_the_3mm_grid(which, ms_demo, ms_demo_2mm):
    """After partial-volume averaging at 3 mm (the shipped model's grid) a lesion is still clearly darker than
    the white matter around it: what a classifier trained at 3 mm has to see."""
    from nilearn.image import resample_img

    from lib.data.images import load_on_grid
    from lib.data.templates import Grid

    ws = ms_demo if which == "made at 3 mm" else ms_demo_2mm
    grid = Grid(3.0)
    cohort = pd.read_csv(ws.cohort_csv).set_index("scan_id")
    truth = pd.read_csv(ws.ground_truth_dir / "atrophy.csv").set_index("scan_id")
    ratios = []
    for scan_id in cohort.index[cohort["diagnosis"] == "MS"]:
        scan = np.asarray(load_on_grid(ws.resolve(cohort.loc[scan_id, "path"]), grid)[0].dataobj, float)
        mask = ground_truth_mask(ws, scan_id, grid)
        labels = resample_img(nib.load(ws.resolve(truth.loc[scan_id, "labels"])), target_affine=grid.affine,
                              target_shape=grid.shape, interpolation="nearest", force_resample=True,
                              copy_header=True)
        wm = np.isin(np.asarray(labels.dataobj), _wm_only())
        around = (np.asarray(_dilate(mask)) & ~mask) & wm
        assert mask.sum() >= 5 and around.sum() >= 20, scan_id
        ratios.append(scan[mask].mean() / scan[around].mean())
    assert ratios and max(ratios) < 0.85, ratios           # every patient's lesions ≥ 15 % darker than their WM
    assert np.mean(ratios) < 0.8, ratios


def _wm_only() -> list[int]:
    from lib.data.templates import atlas

    _, table = atlas("neuromorphometrics", 3.0)
    return [int(i) for i, n in zip(table["index"], table["name"]) if "White_Matter" in n]


def _wm_like() -> list[int]:
    from lib.data.templates import atlas

    _, table = atlas("neuromorphometrics", 3.0)
    return [int(i) for i, n in zip(table["index"], table["name"]) if "White_Matter" in n or "Vent" in n]


def _dilate(mask):
    from scipy import ndimage

    return ndimage.binary_dilation(mask, iterations=2)
