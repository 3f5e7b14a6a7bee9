"""The raw demo: scans moved into a scanner space by a known transform, the truth kept beside them."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from nilearn.image import resample_to_img

from lib.cli import main
from lib.core import atomic
from lib.data import raw_demo
from lib.data.templates import Grid
from lib.data.workspace import Workspace


@pytest.fixture(scope="module")
def raw_ws(tmp_path_factory) -> Workspace:
    """Two demo scans at 2 mm (the product's grid) with their raw copies, through ``python -m lib demo --raw``."""
    root = tmp_path_factory.mktemp("raw_ws")
    args = ["--workspace", str(root), "demo", "--subjects", "2", "--resolution", "2", "--visits", "1",
            "--seed", "5", "--workers", "1", "--raw", "--no-results"]
    assert main(args) == 0
    return Workspace.open(root)


def test_raw_table_points_at_scanner_space_scans_with_the_protocols_header(raw_ws):
    cohort = pd.read_csv(raw_ws.cohort_csv)
    raw = pd.read_csv(raw_ws.root / "raw" / "participants.csv")
    assert list(raw["scan_id"]) == list(cohort["scan_id"])
    assert (raw.drop(columns=["path", "labels"]) == cohort.drop(columns="path")).all().all()   # same columns
    assert all((raw_ws.root / "raw" / p).exists() for p in raw["labels"])
    for row in raw.to_dict("records"):
        img = nib.load(raw_ws.root / "raw" / row["path"])
        orientation, units = raw_demo.PROTOCOLS[row["site"]]
        assert "".join(nib.aff2axcodes(img.affine)) == orientation != "RAS"
        expected = np.array(units) * raw_demo.RAW_VOXEL * 2.0
        assert np.allclose(img.header.get_zooms()[:3], expected, atol=1e-4)
        assert len(set(np.round(expected, 4))) > 1                        # anisotropic
        assert not Grid(2.0).matches(img)                                 # another grid and field of view
        info = raw_ws.root / "raw" / "truth" / f"{row['scan_id']}_affine.json"
        assert info.exists() and (raw_ws.root / "raw" / "truth" / f"{row['scan_id']}_warp.nii.gz").exists()


def test_the_true_transform_brings_the_raw_scan_back_to_the_template_space_scan(raw_ws):
    raw_root = raw_ws.root / "raw"
    hippocampus = raw_demo.hippocampus_labels()
    assert len(hippocampus) == 2
    cohort = pd.read_csv(raw_ws.cohort_csv).set_index("scan_id")
    for row in pd.read_csv(raw_root / "participants.csv").to_dict("records"):
        scan_id = row["scan_id"]
        truth = raw_demo.load_truth(raw_root, scan_id)
        params = raw_ws.root / "raw" / "truth" / f"{scan_id}_affine.json"
        assert not np.allclose(truth.affine, np.eye(4), atol=0.02), params   # the head really moved
        raw = nib.load(raw_root / row["path"])
        bias = np.asarray(nib.load(raw_root / "truth" / f"{scan_id}_bias.nii.gz").dataobj, dtype=np.float32)
        unbiased = nib.Nifti1Image(np.asarray(raw.dataobj, dtype=np.float32) / bias, raw.affine)
        back = raw_demo.to_template(unbiased, truth, Grid(2.0)).get_fdata()
        original = nib.load(raw_ws.root / cohort.loc[scan_id, "path"]).get_fdata()
        labels = np.asarray(nib.load(raw_ws.root / "ground_truth" / "labels" / f"{scan_id}_labels.nii.gz").dataobj)
        brain = labels > 0
        assert np.corrcoef(back[brain], original[brain])[0, 1] >= 0.95
        # without the transform the raw scan is far from the template-space scan
        naive = nib.Nifti1Image(np.asarray(raw.dataobj, dtype=np.float32), raw.affine)
        moved = resample_to_img(naive, nib.Nifti1Image(original, Grid(2.0).affine), force_resample=True,
                                copy_header=True).get_fdata()
        assert np.corrcoef(moved[brain], original[brain])[0, 1] < 0.8
        # the raw-space labels are the demo's labels: warped back, the hippocampus overlaps its truth
        raw_labels = nib.load(raw_root / "truth" / f"{scan_id}_labels.nii.gz")
        assert raw_labels.shape == raw.shape and np.allclose(raw_labels.affine, raw.affine)
        back_labels = np.asarray(raw_demo.to_template(raw_labels, truth, Grid(2.0), order=0).dataobj)
        assert raw_demo.dice(back_labels, labels, hippocampus) >= 0.95


def test_the_skull_like_rim_lies_outside_the_brain(raw_ws):
    raw_root = raw_ws.root / "raw"
    scan_id = pd.read_csv(raw_root / "participants.csv")["scan_id"][0]
    raw = np.asarray(nib.load(raw_root / "scans" / f"{scan_id}_T1w.nii.gz").dataobj)
    labels = np.asarray(nib.load(raw_root / "truth" / f"{scan_id}_labels.nii.gz").dataobj)
    outside = raw[labels == 0]
    assert (outside > 0.3 * np.median(raw[labels > 0])).sum() > 0.05 * (labels > 0).sum()   # scalp and marrow


def test_raw_scans_are_deterministic_by_seed(raw_ws):
    row = pd.read_csv(raw_ws.cohort_csv).iloc[0]
    scan = nib.load(raw_ws.root / row["path"])
    labels = nib.load(raw_ws.root / "ground_truth" / "labels" / f"{row['scan_id']}_labels.nii.gz")
    stored = raw_ws.root / "raw" / "scans" / f"{row['scan_id']}_T1w.nii.gz"
    again = raw_demo.make_raw_scan(scan, labels, row["site"], 5, row["scan_id"])
    assert np.array_equal(np.asarray(again["image"].dataobj), np.asarray(nib.load(stored).dataobj))
    other = raw_demo.make_raw_scan(scan, labels, row["site"], 6, row["scan_id"])
    assert not np.allclose(other["truth"].affine, again["truth"].affine)


def test_demo_raw_on_a_complete_demo_adds_only_the_raw_copy(raw_ws):
    scans = sorted((raw_ws.root / "scans").iterdir())
    before = {p.name: p.stat().st_mtime_ns for p in scans}
    table = raw_ws.root / "raw" / "participants.csv"
    table.unlink()
    assert main(["--workspace", str(raw_ws.root), "demo", "--subjects", "2", "--resolution", "2",
                 "--visits", "1", "--seed", "5", "--workers", "1", "--raw", "--no-results"]) == 0
    assert table.exists()
    assert {p.name: p.stat().st_mtime_ns for p in sorted((raw_ws.root / "scans").iterdir())} == before


def test_colin27_moved_by_a_known_transform_comes_back(tmp_path):
    raw_path = raw_demo.colin27_raw(tmp_path, resolution=2.0, seed=3, site="site-C")
    raw = nib.load(raw_path)
    assert "".join(nib.aff2axcodes(raw.affine)) == "LIP"
    original = nib.load(tmp_path / "colin27_template_grid.nii.gz").get_fdata()
    bias = np.asarray(nib.load(tmp_path / "truth" / "colin27_bias.nii.gz").dataobj, dtype=np.float32)
    unbiased = nib.Nifti1Image(np.asarray(raw.dataobj, dtype=np.float32) / bias, raw.affine)
    back = raw_demo.to_template(unbiased, raw_demo.load_truth(tmp_path, "colin27"), Grid(2.0)).get_fdata()
    head = original > 0.1 * np.percentile(original, 99)
    assert np.corrcoef(back[head], original[head])[0, 1] >= 0.95
    assert not (tmp_path / "truth" / "colin27_labels.nii.gz").exists()


def _ants_affine(path, affine: np.ndarray) -> None:
    """``affine`` (template → scanner, RAS mm) as an ITK transform file (LPS), as ANTs writes a registration's."""
    import ants

    flip = np.diag([-1.0, -1.0, 1.0])
    transform = ants.create_ants_transform(transform_type="AffineTransform", dimension=3,
                                           matrix=flip @ affine[:3, :3] @ flip, offset=flip @ affine[:3, 3])
    ants.write_transform(transform, str(path))


def test_registration_accuracy_scores_a_pipelines_transforms_against_the_truth(raw_ws, tmp_path):
    """A stand-in pipeline output whose forward transform is the true affine (the warp left out) scores far
    above one whose transform is the identity; the ceiling is the true transform's own."""
    raw = pd.read_csv(raw_ws.root / "raw" / "participants.csv")
    scores = {}
    for name in ("true_affine", "identity"):
        out = tmp_path / name
        for scan_id in raw["scan_id"]:
            folder = out / "preprocessed" / scan_id
            folder.mkdir(parents=True)
            truth = raw_demo.load_truth(raw_ws.root / "raw", scan_id)
            _ants_affine(folder / "fwd_affine.mat", truth.affine if name == "true_affine" else np.eye(4))
            template_space = nib.load(raw_ws.root / "scans" / f"{scan_id}_T1w.nii.gz")
            nib.save(template_space, folder / "t1.nii.gz")
            atomic.write_json(folder / "qc.json", {"scan_id": scan_id, "status": "ok", "forward": ["fwd_affine.mat"],
                                                   "settings": {"registration": "linear"}})
        scores[name] = raw_demo.registration_accuracy(raw_ws, out)
    good, bad = scores["true_affine"], scores["identity"]
    assert len(good) == len(raw) and (good["registration"] == "linear").all()
    assert (good["dice_ceiling"] >= 0.95).all()
    assert (good["dice_truth"] >= 0.70).all() and (bad["dice_truth"] < 0.3).all()
    assert (good["corr_truth"] > 0.99).all()   # the stand-in's registered scan is the template-space scan


def test_the_template_moved_keeps_its_atlas_labels_as_truth(tmp_path):
    raw_path = raw_demo.template_raw(tmp_path, resolution=3.0, seed=1)
    raw = nib.load(raw_path)
    assert "".join(nib.aff2axcodes(raw.affine)) == "PSR"
    labels = nib.load(tmp_path / "truth" / "icbm152_labels.nii.gz")
    back = raw_demo.to_template(labels, raw_demo.load_truth(tmp_path, "icbm152"), Grid(3.0), order=0)
    from lib.data.atlases import DEFAULT_ATLAS
    from lib.data.templates import atlas
    reference = np.asarray(atlas(DEFAULT_ATLAS, 3.0)[0].dataobj)
    assert raw_demo.dice(np.asarray(back.dataobj), reference, raw_demo.hippocampus_labels()) >= 0.8
