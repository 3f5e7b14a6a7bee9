"""Training: augmentation, normalisation fitted on training scans only, early stopping, runs, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lib.learn import training
from lib.cli import main
from lib.learn.runs import TrainConfig, TrainingError, create_run, load_checkpoint, load_run, run_parts
from lib.learn.training import EarlyStopping, augment, plan, train_run
from lib.data.volumes import Normaliser, volume_store
from lib.data.workspace import REPO_ROOT

FAST = ["--epochs", "4", "--patience", "10", "--batch-size", "6"]


def _cohort(ws):
    from lib.data.scans import load_cohort

    return load_cohort(ws)


# --- augmentation ---------------------------------------------------------------------------------------------
def test_augmentation_keeps_shape_order_and_content():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 9, 7, 5)).astype(np.float32)
    out = augment(x.copy(), np.random.default_rng(1), flip_p=0.5, shift_voxels=2)
    assert out.shape == x.shape and out.dtype == np.float32
    flips = shifts = 0
    for i in range(len(x)):
        # each output is its own input, flipped and/or shifted along X only: never another scan (labels stay)
        matches = []
        for flip in (False, True):
            src = x[i, ::-1] if flip else x[i]
            for s in range(-2, 3):
                inner = slice(max(s, 0), 9 + min(s, 0))
                src_inner = slice(max(-s, 0), 9 - max(s, 0))
                if np.array_equal(out[i, inner], src[src_inner]):
                    matches.append((flip, s))
        assert matches, f"volume {i} is not a flipped/shifted copy of its input"
        flips += matches[0][0]
        shifts += matches[0][1] != 0
    assert flips and shifts  # both augmentations happen with these seeds


def test_augmentation_off_is_identity():
    x = np.random.default_rng(0).normal(size=(3, 8, 6, 4)).astype(np.float32)
    assert np.array_equal(augment(x.copy(), np.random.default_rng(0), flip_p=0.0, shift_voxels=0), x)


# --- early stopping -----------------------------------------------------------------------------------------
def test_early_stopping_keeps_the_best_epoch():
    stop = EarlyStopping(patience=3)
    scores = [(0.6, -0.7), (0.8, -0.5), (0.8, -0.6), (0.7, -0.4), (0.8, -0.55), (0.9, -0.9)]
    improved = [stop.update(e, s) for e, s in enumerate(scores[:5])]
    assert improved == [True, True, False, False, False]
    assert stop.best_epoch == 1 and stop.should_stop


def test_early_stopping_ties_on_accuracy_go_to_lower_loss():
    stop = EarlyStopping(patience=2)
    stop.update(0, training.validation_score({"balanced_accuracy": 0.75, "loss": 0.6}))
    assert stop.update(1, training.validation_score({"balanced_accuracy": 0.75, "loss": 0.5}))
    assert not stop.update(2, training.validation_score({"balanced_accuracy": 0.75, "loss": 0.55}))
    assert stop.best_epoch == 1


# --- normalisation ------------------------------------------------------------------------------------------
def test_normaliser_is_fitted_on_training_scans_only(demo_ws):
    cohort = _cohort(demo_ws)
    store = volume_store(demo_ws, cohort)
    train_ids = cohort.loc[cohort["split"] == "train", "scan_id"].tolist()
    other_ids = cohort.loc[cohort["split"] != "train", "scan_id"].tolist()
    norm = Normaliser().fit(store, train_ids)
    x = norm.scale_scans(store.get(train_ids)).astype(np.float64)
    assert norm.mean == pytest.approx(x.mean(), rel=1e-6)
    assert norm.std == pytest.approx(x.std(), rel=1e-5)
    assert norm.fitted_on == len(train_ids)
    # the statistics of all scans differ, so a leak would be visible
    everything = norm.scale_scans(store.get(train_ids + other_ids)).astype(np.float64)
    assert abs(everything.mean() - norm.mean) > 1e-6
    z = norm.transform(store.get(train_ids)).astype(np.float64)
    assert abs(z.mean()) < 1e-4 and z.std() == pytest.approx(1.0, rel=1e-3)


def test_volume_store_is_built_once_and_matches_the_scans(demo_ws):
    from lib.data.scans import load_scan

    cohort = _cohort(demo_ws)
    store = volume_store(demo_ws, cohort)
    again = volume_store(demo_ws, cohort)
    assert again.folder == store.folder
    sid, path = cohort["scan_id"].iat[3], cohort["path"].iat[3]
    assert np.array_equal(store.get([sid])[0], np.asarray(load_scan(demo_ws, path).dataobj, np.float32))
    with pytest.raises(KeyError):
        store.rows(["no-such-scan"])


# --- runs ---------------------------------------------------------------------------------------------------
def test_plan_makes_one_run_per_fold_and_seed():
    cfgs = plan(TrainConfig(), seeds=[0, 1, 2], folds=[0, 1])
    assert [(c.fold, c.seed) for c in cfgs] == [(f, s) for f in (0, 1) for s in (0, 1, 2)]


def test_fold_split_keeps_test_and_uses_fold_as_validation(demo_ws):
    cohort = _cohort(demo_ws)
    import lib.data.splits as splits_mod

    splits = splits_mod.load_splits(demo_ws, cohort)
    parts = run_parts(cohort, splits, 1)
    assert set(parts["validation"]) == {s for s, f in splits["folds"].items()
                                        if f == 1 and splits["parts"][s] != "test"}
    assert set(parts["test"]) == {s for s, p in splits["parts"].items() if p == "test"}
    assert not set(parts["train"]) & (set(parts["validation"]) | set(parts["test"]))
    with pytest.raises(TrainingError, match="fold 9"):
        run_parts(cohort, splits, 9)


def test_a_short_run_records_everything(demo_ws, capsys):
    assert main(["--workspace", str(demo_ws.root), "train", *FAST, "--run-id", "short"]) == 0
    run = load_run(demo_ws, "short")
    assert run.status == "done"
    batches, epochs = run.metrics()
    assert list(epochs["epoch"]) == [0, 1, 2, 3]
    for col in ("train_loss", "train_accuracy", "train_balanced_accuracy", "train_auc", "train_sensitivity",
                "train_specificity", "validation_loss", "validation_balanced_accuracy", "validation_auc"):
        assert col in epochs, col
    assert len(batches) >= 4 and batches["step"].is_monotonic_increasing
    # the best checkpoint is the epoch with the best validation score
    scores = [training.validation_score({"balanced_accuracy": b, "loss": l})
              for b, l in zip(epochs["validation_balanced_accuracy"], epochs["validation_loss"])]
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))
    summary = run.summary()
    assert summary["best_epoch"] == best == run.state["best_epoch"]
    _, norm, meta = load_checkpoint(run.best_checkpoint, "cpu")
    assert meta["epoch"] == best
    # normalisation recorded with the run equals a fit on the run's training subjects
    cohort = _cohort(demo_ws)
    train_ids = cohort.loc[cohort["subject_id"].isin(run.config["parts"]["train"]), "scan_id"].tolist()
    refit = Normaliser().fit(volume_store(demo_ws, cohort), train_ids)
    assert norm.mean == pytest.approx(refit.mean) and norm.std == pytest.approx(refit.std)
    # predictions for every scan with outcomes consistent with labels and scores
    preds = run.predictions()
    assert len(preds) == len(cohort) and set(preds["split"]) == {"train", "validation", "test"}
    assert ((preds["ad_score"] >= 0.5) == (preds["predicted"] == "AD")).all()
    pos = preds["diagnosis"] == "AD"
    assert set(preds.loc[pos, "outcome"]) <= {"TP", "FN"} and set(preds.loc[~pos, "outcome"]) <= {"TN", "FP"}
    # evaluate recomputes the test metrics from the scans and agrees with the run's summary
    capsys.readouterr()
    assert main(["--workspace", str(demo_ws.root), "evaluate", "--run", "short"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["split"] == "test" and out["scans"] == int((preds["split"] == "test").sum())
    assert out["balanced_accuracy"] == pytest.approx(summary["test"]["balanced_accuracy"], abs=1e-4)
    assert out["checkpoint_sha256"] == run.checkpoint_hash()


def test_bad_checkpoint_is_named(tmp_path, demo_ws, capsys):
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["--workspace", str(demo_ws.root), "evaluate", "--checkpoint", str(bad)]) == 1
    assert str(bad) in capsys.readouterr().err
    with pytest.raises(TrainingError, match="no run 'nope'"):
        load_run(demo_ws, "nope")


def _train_cmd(ws, *args):
    return [sys.executable, "-m", "lib", "--workspace", str(ws.root), "train", *args]


def _epochs(run_dir: Path) -> list[dict]:
    return [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()
            if json.loads(l)["kind"] == "epoch"]


def test_sigkill_then_resume_retraces_an_uninterrupted_run(demo_ws):
    args = ["--epochs", "7", "--patience", "2", "--batch-size", "6", "--lr", "3e-4"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    subprocess.run(_train_cmd(demo_ws, *args, "--run-id", "whole"), check=True, cwd=REPO_ROOT, env=env,
                   capture_output=True)
    proc = subprocess.Popen(_train_cmd(demo_ws, *args, "--run-id", "killed"), cwd=REPO_ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed = demo_ws.runs_dir / "killed"
    deadline = time.time() + 240
    while time.time() < deadline:
        if (killed / "state.json").exists() and json.loads((killed / "state.json").read_text()).get("epoch", -1) >= 1:
            break
        time.sleep(0.05)
    time.sleep(0.3)  # land somewhere inside the next epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run = load_run(demo_ws, "killed")
    assert run.status == "interrupted"
    subprocess.run(_train_cmd(demo_ws, "--resume", "killed"), check=True, cwd=REPO_ROOT, env=env,
                   capture_output=True)
    assert load_run(demo_ws, "killed").status == "done"
    whole, resumed = _epochs(demo_ws.runs_dir / "whole"), _epochs(killed)
    assert [e["epoch"] for e in resumed] == [e["epoch"] for e in whole]
    for a, b in zip(whole, resumed):
        assert a["validation"]["loss"] == pytest.approx(b["validation"]["loss"], rel=1e-4)
    assert load_run(demo_ws, "killed").summary()["best_epoch"] == load_run(demo_ws, "whole").summary()["best_epoch"]


def test_a_shipped_run_installs_into_a_matching_workspace_only(demo_ws, demo_run, tmp_path):
    from lib.learn.prediction import finish_run
    from lib.learn.runs import export_run, install_shipped_run

    shipped = export_run(demo_run, tmp_path / "models")
    assert sorted(p.name for p in shipped.iterdir()) == ["best.pt", "config.json", "metrics.jsonl", "state.json",
                                                         "summary.json"]
    renamed = shipped.rename(shipped.with_name("shipped-copy"))
    run = install_shipped_run(demo_ws, renamed)
    assert run.id == "shipped-copy" and run.config["shipped"] and run.predictions() is None
    assert run.checkpoint_hash() == demo_run.checkpoint_hash()
    summary = finish_run(demo_ws, run)
    assert summary["test"] == demo_run.summary()["test"]
    assert install_shipped_run(demo_ws, renamed).dir == run.dir  # once only
    # a workspace with another cohort refuses it
    other = tmp_path / "other"
    assert main(["--workspace", str(other), "demo", "--subjects", "8", "--resolution", "3", "--visits", "1",
                 "--seed", "5"]) == 0
    from lib.data.workspace import Workspace

    with pytest.raises(TrainingError, match="different cohort"):
        install_shipped_run(Workspace.open(other), renamed)


def test_one_process_trains_a_run_at_a_time(demo_ws):
    import fcntl

    run = create_run(demo_ws, TrainConfig(max_epochs=1), run_id="locked")
    with open(run.dir / ".training.lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(TrainingError, match="being trained by another process"):
            train_run(demo_ws, run)
    assert run.status == "created"


@pytest.mark.parametrize("bad, message", [({"batch_size": 0}, "batch size must be at least 1"),
                                          ({"max_epochs": 0}, "max epochs must be at least 1"),
                                          ({"lr": 0.0}, "learning rate must be positive")])
def test_an_impossible_training_config_is_one_clear_error(bad, message):
    from lib.learn.runs import TrainConfig, TrainingError

    with pytest.raises(TrainingError, match=message):
        TrainConfig(**bad)
