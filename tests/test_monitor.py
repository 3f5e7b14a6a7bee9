"""Training monitor computations: curves, smoothing, ROC and confusion from run files."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from lib.core import atomic, cache
from lib.views import monitor
from lib.learn.metrics import confusion_matrix, roc_auc, roc_curve
from lib.learn.runs import Run


def _fake_run(tmp_path, name="r1", n_epochs=5, best=2):
    d = tmp_path / name
    d.mkdir()
    cfg = {"id": name, "created": 1.0, "resolution": 3.0, "train": {"model": "boehle2019", "lr": 1e-4,
                                                                     "patience": 8, "seed": 0}}
    atomic.write_json(d / "config.json", cfg)
    atomic.write_json(d / "state.json", {"status": "done", "epoch": n_epochs - 1, "best_epoch": best,
                                         "best_score": [0.8, -0.4], "max_epochs": 10, "n_batches": 4})
    lines = []
    for e in range(n_epochs):
        for b in range(4):
            lines.append({"kind": "batch", "epoch": e, "step": e * 4 + b, "loss": 1.0 / (e * 4 + b + 1),
                          "time": e * 10 + b})
        lines.append({"kind": "epoch", "epoch": e, "step": e * 4 + 3, "time": e * 10 + 4, "best": e == best,
                      "train": {"loss": 1 - e / 10, "balanced_accuracy": 0.5 + e / 20},
                      "validation": {"loss": 1 - e / 20, "balanced_accuracy": 0.5 + e / 30}})
    (d / "metrics.jsonl").write_text("".join(json.dumps(l) + "\n" for l in lines) + '{"kind": "epo')
    return Run(d, cfg)


def test_curves_have_train_and_validation_and_mark_the_best_epoch(tmp_path):
    run = _fake_run(tmp_path)
    c = monitor.curves([run], "balanced_accuracy", "epoch")
    assert set(c["series"]) == {"train", "validation"}
    val = c[c["series"] == "validation"]
    assert list(val["x"]) == [1, 2, 3, 4, 5]  # 1-based epochs; the torn last line is ignored
    assert val.loc[val["best"], "x"].tolist() == [3]
    loss = monitor.curves([run], "loss", "step")
    assert "train (batches)" in set(loss["series"])
    assert loss[loss["series"] == "train (batches)"]["x"].is_monotonic_increasing
    wall = monitor.curves([run], "loss", "wall time")
    assert wall[wall["series"] == "validation"]["x"].tolist() == [4, 14, 24, 34, 44]
    with pytest.raises(ValueError, match="unknown metric"):
        monitor.curves([run], "f1")


def test_smoothing_is_a_bias_corrected_moving_average():
    v = np.array([1.0, 0.0, 1.0, 0.0])
    assert np.array_equal(monitor.smooth(v, 0.0), v)
    s = monitor.smooth(v, 0.5)
    assert s[0] == pytest.approx(1.0)  # bias correction: the first value is kept
    assert s[1] == pytest.approx(0.5 * 0.5 / 0.75)
    assert np.ptp(s) < np.ptp(v)


def test_runs_table_lists_status_and_best_epoch(tmp_path):
    t = monitor.runs_table([_fake_run(tmp_path)])
    assert t.loc[0, "status"] == "done" and t.loc[0, "best epoch"] == 3 and t.loc[0, "epoch"] == "5/10"
    assert "fold" not in t and "group" not in t   # no run of a fold or group: no empty columns at 1400 px


def test_roc_and_confusion():
    rng = np.random.default_rng(0)
    y = rng.random(200) < 0.5
    s = np.clip(y * 0.3 + rng.random(200) * 0.7, 0, 1)
    fpr, tpr, _ = roc_curve(y, s)
    assert fpr[0] == tpr[0] == 1 and fpr[-1] == tpr[-1] == 0
    assert -np.trapezoid(tpr, fpr) == pytest.approx(roc_auc(y, s), abs=1e-9)
    cm = confusion_matrix(y, s >= 0.5)
    assert cm.sum() == 200 and cm[1, 1] == int((y & (s >= 0.5)).sum()) and cm[0, 1] == int((~y & (s >= 0.5)).sum())


def test_evaluation_reads_predictions(tmp_path):
    run = _fake_run(tmp_path)
    assert monitor.evaluation(run) is None
    pd.DataFrame({"scan_id": ["a", "b", "c", "d"], "diagnosis": ["AD", "AD", "HC", "HC"],
                  "split": ["test"] * 4, "ad_score": [0.9, 0.2, 0.6, 0.1],
                  "predicted": ["AD", "HC", "AD", "HC"]}).to_csv(run.dir / "predictions.csv", index=False)
    cache.seal(run.dir / "predictions.csv")  # as the predict job does: a file without its marker is not trusted
    ev = monitor.evaluation(run, "test")
    assert ev["n"] == 4 and ev["metrics"]["balanced_accuracy"] == 0.5
    assert ev["confusion"].tolist() == [[1, 1], [1, 1]]
    assert monitor.evaluation(run, "validation") == {"n": 0}
