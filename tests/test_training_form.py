"""The Training form's defaults that finish on this machine, and its measured duration estimate."""

from __future__ import annotations

import pytest

from lib.views import training_form as tf


def test_cpu_proposes_the_demo_models_settings_and_gpu_the_papers(demo_ws):
    cpu = tf.form_defaults(demo_ws, "cpu")
    assert (cpu.resolution, cpu.lr, cpu.patience, cpu.epochs) == (3.0, 1e-3, 15, 80)
    assert "demo model" in cpu.why
    gpu = tf.form_defaults(demo_ws, "cuda")
    assert (gpu.resolution, gpu.lr, gpu.patience) == (demo_ws.grid.resolution, 1e-4, 8)


def test_the_cpu_settings_are_the_shipped_demo_models():
    from lib.core import atomic
    from lib.data.workspace import REPO_ROOT

    train = atomic.read_json(REPO_ROOT / "models" / "demo-boehle2019" / "config.json")["train"]
    assert (train["resolution"], train["lr"], train["patience"], train["max_epochs"]) == \
        (tf.DEMO_MODEL["resolution"], tf.DEMO_MODEL["lr"], tf.DEMO_MODEL["patience"], tf.DEMO_MODEL["epochs"])


def test_estimate_from_a_measured_rate_cached_per_machine_and_grid(demo_ws, monkeypatch):
    calls = []

    def fake(model, shape, device, **kw):
        calls.append(shape)
        return {"train_s_per_scan": 0.5, "eval_s_per_scan": 0.2, "measured": 0.0}

    (demo_ws.cache_dir / "throughput.json").unlink(missing_ok=True)
    monkeypatch.setattr(tf, "measure", fake)
    rate = tf.throughput(demo_ws, "boehle2019", 3.0, "cpu")
    assert tf.throughput(demo_ws, "boehle2019", 3.0, "cpu") == rate and len(calls) == 1   # cached on disk
    tf.throughput(demo_ws, "boehle2019", 2.0, "cpu")
    assert len(calls) == 2   # another grid is measured
    sizes = tf.split_sizes(demo_ws)
    per_epoch, line = tf.estimate(rate, sizes, 10)
    assert per_epoch == pytest.approx(sizes["train"] * 0.5 + sizes["validation"] * 0.2)
    assert f"{sizes['train']} training" in line and "10 epochs" in line
    (demo_ws.cache_dir / "throughput.json").unlink()


def test_measure_times_real_steps_of_the_model():
    rate = tf.measure("boehle2019", (33, 39, 33), "cpu", batch=2, steps=1)
    assert 0 < rate["eval_s_per_scan"] and 0 < rate["train_s_per_scan"]


def test_the_page_never_measures_in_the_server_process_it_starts_one_niced_process(demo_ws, monkeypatch):
    import os

    monkeypatch.setattr(tf, "measure", lambda *a, **k: pytest.fail("measured in the calling process"))
    (demo_ws.cache_dir / "throughput.json").unlink(missing_ok=True)
    for marker in demo_ws.cache_dir.glob(".throughput-*"):   # a page of another test may have measured
        marker.unlink()
    assert tf.known_throughput(demo_ws, "boehle2019", 3.0, "cpu") is None
    tf._measuring.clear()
    assert tf.start_measuring(demo_ws, "boehle2019", 3.0, "cpu")
    assert tf.start_measuring(demo_ws, "boehle2019", 3.0, "cpu") and len(tf._measuring) == 1   # one at a time
    proc = tf._measuring[0]
    nice = int(open(f"/proc/{proc.pid}/stat").read().rsplit(")", 1)[1].split()[16]) if proc.poll() is None else None
    assert nice is None or nice >= os.nice(0) + tf.NICENESS
    proc.wait(timeout=300)
    rate = tf.known_throughput(demo_ws, "boehle2019", 3.0, "cpu")
    assert rate is not None and rate["train_s_per_scan"] > 0
    # a measurement that ended without a rate is not started again at every poll of the page
    (demo_ws.cache_dir / "throughput.json").unlink()
    assert tf.start_measuring(demo_ws, "boehle2019", 3.0, "cpu") is False and len(tf._measuring) == 1
    (demo_ws.cache_dir / "throughput.json").unlink(missing_ok=True)
    for marker in demo_ws.cache_dir.glob(".throughput-*"):
        marker.unlink()
