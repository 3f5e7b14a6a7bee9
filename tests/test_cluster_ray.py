"""Jobs on a real Ray cluster started here: a head and a second worker node, one CPU each (one cluster for the
module). Heatmap and training jobs equal local runs; a killed worker's chunk is retried; cancel stops every
task; the head going away fails the job with a message, and the next attempt keeps the chunks that arrived."""

import json
import os
import shutil
import signal
import time

import numpy as np
import pandas as pd
import pytest
import torch

from bench.ray_local import LocalRayCluster
from lib import jobs
from lib.explain import heatmaps
from lib.reviews import auth

ADMIN = auth.Identity("tester", "admin")


@pytest.fixture(scope="module")
def cluster():
    with LocalRayCluster(nodes=2, cpus=1) as c:
        yield c


@pytest.fixture()
def fresh_cache(demo_ws):
    shutil.rmtree(demo_ws.cache_dir / "heatmaps", ignore_errors=True)
    yield
    shutil.rmtree(demo_ws.cache_dir / "heatmaps", ignore_errors=True)


def _submit(ws, request, cluster):
    return jobs.submit(ws, request, who=ADMIN, executor=jobs.RayExecutor(cluster.address))


def _wait(ws, job_id, until=lambda job: not job.active, timeout=300, seen=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = jobs.get(ws, job_id)
        if seen is not None:
            seen.add(job.message)
        if until(job):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} still {job.state} after {timeout} s:\n{job.log_tail()}")


def _arrays(store):
    return np.asarray(store.maps), np.asarray(store.scale), json.loads((store.folder / "index.json").read_text())


def _same_as_local(ws, run, store, **params):
    """``store`` (computed on the cluster) equals the store a local run computes, to the bit."""
    remote = _arrays(store)
    shutil.rmtree(store.folder)
    local = _arrays(heatmaps.compute_store(ws, run, "lrp", distributor=None, **params))
    assert local[2] == remote[2]
    assert np.array_equal(local[1], remote[1]) and np.array_equal(local[0], remote[0])


def test_heatmap_job_on_the_cluster_equals_a_local_run(demo_ws, demo_run, cluster, fresh_cache):
    job = _submit(demo_ws, jobs.Explain(run_id=demo_run.id, beta=0.5), cluster)
    seen = set()
    done = _wait(demo_ws, job.id, seen=seen)
    assert done.state == "done", f"{done.error}\n{done.log_tail()}"
    assert done.record["executor"] == "ray" and done.record["cluster"] == cluster.address
    # the Jobs page shows chunks done / total and the workers in use, as it shows a local job's progress
    assert any("chunk 1/" in m and "busy" in m for m in seen), seen
    assert any("2 workers busy" in m for m in seen), seen
    _same_as_local(demo_ws, demo_run, heatmaps.find_store(demo_ws, demo_run, "lrp", beta=0.5), beta=0.5)


def test_a_worker_killed_mid_chunk_is_retried_and_the_result_equals_a_local_run(demo_ws, demo_run, cluster,
                                                                                fresh_cache):
    job = _submit(demo_ws, jobs.Explain(run_id=demo_run.id, beta=1.0), cluster)
    deadline = time.time() + 240
    while not cluster.worker_pids("heatmaps") and time.time() < deadline:
        time.sleep(0.05)
    victims = cluster.worker_pids("heatmaps")
    assert victims, "no chunk ever ran"
    os.kill(victims[0], signal.SIGKILL)
    done = _wait(demo_ws, job.id)
    assert done.state == "done", f"{done.error}\n{done.log_tail()}"
    assert victims[0] not in cluster.processes()
    store = heatmaps.find_store(demo_ws, demo_run, "lrp", beta=1.0)
    assert not list(store.folder.parent.glob("*.partial"))   # nothing half written left behind
    _same_as_local(demo_ws, demo_run, store, beta=1.0)


def _runs_of(ws, group):
    configs = [json.loads(p.read_text()) for p in ws.runs_dir.glob("*/config.json")]
    return {c["train"]["seed"]: ws.runs_dir / c["id"] for c in configs if c.get("group") == group}


def test_two_seed_training_on_the_cluster_equals_local_runs(demo_ws, cluster):
    settings = dict(seeds=(0, 1), epochs=2, batch_size=6, lr=1e-3)
    job = _submit(demo_ws, jobs.Train(name="on-cluster", **settings), cluster)
    done = _wait(demo_ws, job.id)
    assert done.state == "done", f"{done.error}\n{done.log_tail()}"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # a Ray task has one CPU, so one thread: the same float sums
    try:
        jobs.Train(name="here", **settings).run(demo_ws, lambda *a: None)
    finally:
        torch.set_num_threads(threads)
    remote, local = _runs_of(demo_ws, "on-cluster"), _runs_of(demo_ws, "here")
    assert sorted(remote) == sorted(local) == [0, 1]
    for seed in (0, 1):
        a, b = pd.read_csv(remote[seed] / "predictions.csv"), pd.read_csv(local[seed] / "predictions.csv")
        assert a["scan_id"].tolist() == b["scan_id"].tolist()
        assert np.array_equal(a["ad_score"].to_numpy(), b["ad_score"].to_numpy()), seed
        losses = [[r.get("loss") for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines())]
                  for d in (remote[seed], local[seed])]
        assert losses[0] == losses[1]


def test_cancel_stops_every_task_of_the_job(demo_ws, demo_run, cluster, fresh_cache):
    job = _submit(demo_ws, jobs.Explain(run_id=demo_run.id, beta=2.0, batch_size=2), cluster)
    deadline = time.time() + 240
    while not cluster.worker_pids("heatmaps") and time.time() < deadline:
        time.sleep(0.05)
    assert cluster.worker_pids("heatmaps"), "no chunk ever ran"
    assert jobs.cancel(demo_ws, job.id, who=ADMIN)
    assert _wait(demo_ws, job.id).state == "cancelled"
    deadline = time.time() + 20
    while cluster.worker_pids("heatmaps") and time.time() < deadline:
        time.sleep(0.2)
    assert cluster.worker_pids("heatmaps") == []
    time.sleep(2)   # nothing queued starts later either
    assert cluster.worker_pids("heatmaps") == []
    assert heatmaps.find_store(demo_ws, demo_run, "lrp", beta=2.0) is None


def test_prediction_job_on_the_cluster_equals_a_local_run(demo_ws, demo_run, cluster):
    from lib.learn.prediction import finish_run

    finish_run(demo_ws, demo_run)
    local = (demo_run.dir / "predictions.csv").read_bytes()
    (demo_run.dir / "predictions.csv").unlink()
    done = _wait(demo_ws, _submit(demo_ws, jobs.Predict(run_id=demo_run.id), cluster).id)
    assert done.state == "done", f"{done.error}\n{done.log_tail()}"
    assert (demo_run.dir / "predictions.csv").read_bytes() == local


def test_command_line_cluster_option_runs_the_job_through_ray_client(demo_ws, demo_run, cluster, capsys):
    from lib.cli import main

    local = (demo_run.dir / "predictions.csv").read_bytes()
    (demo_run.dir / "predictions.csv").unlink()
    address = f"ray://127.0.0.1:{cluster.client_port}"
    assert main(["--workspace", str(demo_ws.root), "--cluster", address, "predict", "--run", demo_run.id]) == 0
    job = jobs.list_jobs(demo_ws, "predict")[0]
    assert job.state == "done" and job.record["executor"] == "inprocess" and job.record["cluster"] == address
    assert (demo_run.dir / "predictions.csv").read_bytes() == local


def test_head_gone_fails_the_job_with_a_message_and_a_second_attempt_computes_only_the_rest(
        demo_ws, demo_run, cluster, fresh_cache):
    """Last in the module: it stops the cluster's head."""
    job = _submit(demo_ws, jobs.Explain(run_id=demo_run.id, beta=3.0, batch_size=2), cluster)
    _wait(demo_ws, job.id, until=lambda j: (j.record.get("done") or 0) > 0 or not j.active)
    os.killpg(cluster.groups[0], signal.SIGKILL)
    failed = _wait(demo_ws, job.id, timeout=120)
    assert failed.state == "failed"
    assert "went away" in failed.error and "submit" in failed.error, failed.error
    kept = failed.record["done"]
    first = []
    store = heatmaps.compute_store(demo_ws, demo_run, "lrp", beta=3.0, distributor=None,
                                   progress=lambda done, total, msg: first.append(done))
    assert first[0] >= kept > 0 and len(store) == first[-1]
