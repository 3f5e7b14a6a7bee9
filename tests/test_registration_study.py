"""Eitel's study 4 on a tiny raw demo: three preprocessed workspaces with the demo's split, one training per
seed on each, the table with the thesis's numbers beside it (the pipeline is stood in for by the true
transforms, so this tests the study's plumbing, not registration)."""

from __future__ import annotations

from pathlib import Path

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
from lib.learn import registration_study as study
from lib.views import registration_study as view

def oracle_pipeline(table: Path, registration: str, resolution: int, out: Path, progress, workers) -> Path:
    """Stands in for preprocess_table: ``none`` resamples by the header only, the registrations apply the
    true transform; writes the layout the pipeline does (registered scans, qc.csv, a workspace)."""
    grid = Grid(float(resolution))
    raw = pd.read_csv(table)
    ws = Workspace.create(out, kind="study", resolution=resolution, complete=True, n_scans=len(raw))
    rows, qc = [], []
    for i, row in enumerate(raw.to_dict("records")):
        raw_img = nib.load(table.parent / row["path"])
        img = nib.Nifti1Image(raw_img.get_fdata(dtype=np.float32), raw_img.affine)
        if registration == "none":
            reference = nib.Nifti1Image(np.zeros(grid.shape, "f4"), grid.affine)
            moved = resample_to_img(img, reference, force_resample=True, copy_header=True)
        else:
            moved = raw_demo.to_template(img, raw_demo.load_truth(table.parent, row["scan_id"]), grid)
        path = Path("preprocessed") / row["scan_id"] / "t1.nii.gz"
        atomic.write_nifti(out / path, nib.Nifti1Image(moved.get_fdata().astype("f4"), grid.affine))
        rows.append({**row, "path": str(path)})
        qc.append({"scan_id": row["scan_id"], "status": "ok", "message": "", "registration": registration})
        progress(i + 1, len(raw), row["scan_id"])
    atomic.write_csv(out / "preprocessed" / "qc.csv", pd.DataFrame(qc))
    atomic.write_csv(ws.cohort_csv, pd.DataFrame(rows))
    return out


@pytest.fixture(scope="module")
def raw_ws(tmp_path_factory) -> Workspace:
    root = tmp_path_factory.mktemp("study_ws")
    assert main(["--workspace", str(root), "demo", "--subjects", "10", "--resolution", "3", "--visits", "1",
                 "--seed", "2", "--workers", "1", "--raw", "--no-results"]) == 0
    return Workspace.open(root)


def test_study_table_has_three_rows_and_the_thesis_columns(raw_ws):
    settings = study.StudySettings(seeds=(0, 1), epochs=1, batch_size=4, workers=1)
    path = study.run_study(raw_ws, settings, preprocess=oracle_pipeline)
    table = pd.read_csv(path)
    assert list(table["registration"]) == ["none", "linear", "nonlinear"]
    assert (table["runs"] == 2).all()
    assert table["balanced_accuracy"].between(0, 100).all() and table["balanced_accuracy_sd"].notna().all()
    assert list(table["thesis_balanced_accuracy"]) == [76.2, 82.6, 83.3]
    assert list(table["thesis_auc"]) == [0.850, 0.904, 0.910]
    assert table["probe_auc"].between(0.5, 1).all()
    # the same split in every preprocessed workspace: the demo's
    demo_parts = atomic.read_json(raw_ws.splits_json)["parts"]
    for registration in study.REGISTRATIONS:
        target = Workspace.open(study.study_dir(raw_ws) / registration)
        assert atomic.read_json(target.splits_json)["parts"] == demo_parts
        run = target.runs_dir / f"regstudy-{registration}-s1" / "config.json"
        train = atomic.read_json(run)["train"]
        assert train["resolution"] == 3.0
        assert train["patience"] == settings.epochs   # no early stopping on the demo's few validation scans
    shown = view.study_table(table)
    assert list(shown["registration"]) == ["none (pad/crop)", "linear (affine)", "non-linear (affine + SyN)"]
    assert shown["thesis: bal. acc. %"][1] == "82.6 ± 0.9" and shown["thesis: gain"][2] == "7.1"
    assert " ± " in shown["demo: bal. acc. %"][0]
    assert shown["demo: hippocampus probe AUC"].str.fullmatch(r"0\.\d{3}|1\.000").all()


def test_hippocampus_probe_separates_a_darker_hippocampus_and_not_identical_scans():
    from lib.data.templates import atlas, template

    volume = np.asarray(template(3).dataobj, dtype=np.float32)
    hippocampus = np.isin(np.asarray(atlas("neuromorphometrics", 3)[0].dataobj), (47, 48))
    rng = np.random.default_rng(0)
    positive = [True, False] * 4
    darker = [volume * np.where(hippocampus, 1 - (0.2 if p else 0.0) - 0.01 * rng.random(), 1) for p in positive]
    assert study.hippocampus_probe(darker, positive, 3) == 1.0
    brighter = [volume * np.where(hippocampus, 1.2 if p else 1.0, 1) for p in positive]   # either direction
    assert study.hippocampus_probe(brighter, positive, 3) == 1.0
    assert study.hippocampus_probe([volume] * 8, positive, 3) == 0.5


def test_a_rerun_reuses_finished_trainings(raw_ws):
    runs = sorted(Workspace.open(study.study_dir(raw_ws) / "linear").runs_dir.glob("regstudy-*/summary.json"))
    assert runs
    before = [p.stat().st_mtime_ns for p in runs]
    study.run_study(raw_ws, study.StudySettings(registrations=("linear",), seeds=(0, 1), epochs=1, batch_size=4,
                                                workers=1), preprocess=oracle_pipeline)
    assert [p.stat().st_mtime_ns for p in runs] == before
    assert list(pd.read_csv(study.results_csv(raw_ws))["registration"]) == ["linear"]


def test_without_a_raw_demo_the_study_says_how_to_make_one(tmp_path):
    ws = Workspace.create(tmp_path / "plain")
    with pytest.raises(study.StudyError, match="demo --raw"):
        study.run_study(ws, preprocess=oracle_pipeline)


def test_an_arm_the_pipeline_refuses_is_named(raw_ws):
    def refusing(table, registration, *args):
        raise ValueError(f"no scan of {table} reached the template")

    with pytest.raises(study.StudyError, match="preprocessing with none registration: no scan of .* reached"):
        study.run_study(raw_ws, study.StudySettings(seeds=(0,), epochs=1), preprocess=refusing)


@pytest.mark.parametrize("bad", [{"batch_size": 0}, {"epochs": 0}, {"workers": 0}, {"patience": 0}])
def test_impossible_settings_are_refused_before_any_preprocessing(bad):
    with pytest.raises(study.StudyError, match="must be at least 1"):
        study.StudySettings(**bad)
