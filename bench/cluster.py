"""Heatmap job throughput here vs on a two-node Ray cluster on this same machine, and the per-chunk overhead.

    .venv/bin/python bench/cluster.py [--subjects 16] [--resolution 3] [--workspace DIR --run RUN]

Builds a small demo workspace and a briefly trained run (or uses the given ones), then in one run:

- the same ``explain`` job (LRP β = 0, batch 4) submitted as a local background job and as a job on a Ray
  cluster started here (``ray start --head`` plus one worker node, one CPU each), each from submission to
  its finished store, the store removed between them; both stores are checked to be equal;
- the per-chunk overhead, measured directly: the round trip of an empty Ray task, a chunk's set-up on the
  worker (workspace, run, keys, cached model) and the driver copying one arrived chunk into the store.

Both nodes share this machine's cores, so the cluster's speed-up is at most 2× (less on a loaded machine);
the figures say what a chunk costs next to the explanation itself.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ray_local import LocalRayCluster  # noqa: E402
from lib import jobs  # noqa: E402
from lib.cli import main as cli  # noqa: E402
from lib.data.workspace import Workspace  # noqa: E402
from lib.explain import heatmaps  # noqa: E402
from lib.learn.runs import load_run  # noqa: E402
from lib.reviews import auth  # noqa: E402

ADMIN = auth.Identity("bench", "admin")


def workspace(args) -> tuple[Workspace, object]:
    if args.workspace:
        ws = Workspace.open(args.workspace)
        return ws, load_run(ws, args.run)
    root = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    assert cli(["--workspace", str(root), "demo", "--subjects", str(args.subjects), "--resolution",
                str(args.resolution), "--visits", "2", "--seed", "1"]) == 0
    assert cli(["--workspace", str(root), "train", "--epochs", "2", "--batch-size", "6", "--run-id", "bench"]) == 0
    ws = Workspace.open(root)
    return ws, load_run(ws, "bench")


def timed_job(ws, request, executor) -> float:
    """Seconds from submission to the finished store."""
    t = time.perf_counter()
    job = jobs.submit(ws, request, who=ADMIN, executor=executor)
    while (job := jobs.get(ws, job.id)).active:
        time.sleep(0.05)
    if job.state != "done":
        raise SystemExit(f"{executor.name} job {job.state}: {job.error}\n{job.log_tail()}")
    return time.perf_counter() - t


def chunk_overhead(ws, run, address: str, batch_size: int) -> dict:
    """Seconds: connecting to the cluster and its first task (worker processes start), as a job's driver
    does once; an empty Ray task's round trip; a chunk's set-up on a worker; absorbing one chunk."""
    import ray

    from lib.explain.heatmap_chunks import explain_chunk
    from lib.explain.heatmaps import _lookup, explain_rows
    from lib.learn.runs import load_checkpoint

    t = time.perf_counter()
    ray.init(address=address, runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    try:
        noop = ray.remote(num_cpus=1)(lambda: None)
        ray.get(noop.remote())   # a worker started
        startup = time.perf_counter() - t
        t = time.perf_counter()
        for _ in range(20):
            ray.get(noop.remote())
        round_trip = (time.perf_counter() - t) / 20
    finally:
        ray.shutdown()
    t = time.perf_counter()
    ws2 = Workspace.open(ws.root)
    run2 = load_run(ws2, run.id)
    _c, volumes, call, _canon, folder = _lookup(ws2, run2, "lrp", {"beta": 0.0}, "AD")
    run2.checkpoint_hash()
    setup = time.perf_counter() - t
    folder.with_name(folder.name + ".partial").mkdir(parents=True, exist_ok=True)
    rows = list(range(batch_size))
    name = explain_chunk(str(ws.root), run.id, "lrp", "AD", {"beta": 0.0}, rows, batch_size, folder.name)
    model, normaliser, _ = load_checkpoint(run.best_checkpoint)
    t = time.perf_counter()
    explain_rows(model, normaliser, volumes, np.asarray(rows), "lrp", "AD", call)
    compute = time.perf_counter() - t
    path = folder.with_name(folder.name + ".partial") / "chunks" / name
    maps = np.lib.format.open_memmap(tempfile.mktemp(suffix=".npy"), mode="w+", dtype=np.float16,
                                     shape=(len(volumes), *volumes.shape))
    t = time.perf_counter()
    with np.load(path) as z:
        maps[z["rows"]] = z["maps"]
        maps.flush()
    absorb = time.perf_counter() - t
    shutil.rmtree(folder.with_name(folder.name + ".partial"))
    return {"startup": startup, "round_trip": round_trip, "setup": setup, "absorb": absorb, "compute": compute}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--subjects", type=int, default=16)
    p.add_argument("--resolution", type=float, default=3.0)
    p.add_argument("--workspace")
    p.add_argument("--run")
    p.add_argument("--batch-size", type=int, default=4)
    args = p.parse_args()
    ws, run = workspace(args)
    request = jobs.Explain(run_id=run.id, beta=0.0, batch_size=args.batch_size)
    folder = heatmaps.find_store(ws, run, "lrp", beta=0.0)
    if folder is not None:
        shutil.rmtree(folder.folder)
    local_s = timed_job(ws, request, jobs.LocalProcessExecutor())
    store = heatmaps.find_store(ws, run, "lrp", beta=0.0)
    local_maps, n = np.asarray(store.maps).copy(), len(store)
    shutil.rmtree(store.folder)
    with LocalRayCluster(nodes=2, cpus=1) as cluster:
        cluster_s = timed_job(ws, request, jobs.RayExecutor(cluster.address))
        store = heatmaps.find_store(ws, run, "lrp", beta=0.0)
        equal = np.array_equal(np.asarray(store.maps), local_maps)
        over = chunk_overhead(ws, run, cluster.address, args.batch_size)
    grid = "x".join(map(str, store.maps.shape[1:]))
    print(f"heatmap job, {n} scans at {run.grid.resolution:g} mm ({grid}), LRP beta=0, batch {args.batch_size}:")
    print(f"  local process      {local_s:7.1f} s   {n / local_s:5.2f} scans/s   (submission to sealed store)")
    print(f"  2-node Ray cluster {cluster_s:7.1f} s   {n / cluster_s:5.2f} scans/s   maps equal: {equal}")
    lean = cluster_s - over["startup"]
    print(f"  cluster / local: {local_s / cluster_s:.2f}x; {local_s / lean:.2f}x without the cluster's start-up "
          f"({over['startup']:.1f} s per job: connecting, worker processes starting). Both nodes share this "
          "machine's cores: at most 2x")
    print("per-chunk overhead:")
    print(f"  empty Ray task round trip       {over['round_trip'] * 1e3:8.1f} ms")
    print(f"  chunk set-up on the worker      {over['setup'] * 1e3:8.1f} ms  (workspace, run, store key)")
    print(f"  driver absorbing one chunk      {over['absorb'] * 1e3:8.1f} ms")
    print(f"  explaining one batch of {args.batch_size}       {over['compute'] * 1e3:8.1f} ms  "
          f"(overhead / compute = {(over['round_trip'] + over['setup'] + over['absorb']) / over['compute']:.2f})")


if __name__ == "__main__":
    main()
