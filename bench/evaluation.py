"""Cost of evaluating explanations on the demo model's 3 mm grid (65×77×65), measured side by side.

    .venv/bin/python bench/evaluation.py [--steps 16] [--repeats 3]

Region perturbation: the same cumulative perturbation curve (cubes of 15 mm, uniform noise) evaluated one
copy per forward pass and in batches of 4 and 8 (``Settings.batch_size``); the ratio is the batched speed-up.
Map similarity of the sanity check: Spearman ρ, 3D SSIM and top-k overlap of two maps within the brain,
per component, against the time of one forward pass. Runs on ``lib.learn.models.default_device()``; timings are
medians of ``--repeats`` runs, interleaved so that load on a shared machine hits every variant alike.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lib.analysis import evaluation as ev# noqa: E402
from lib.learn.models import build_model, default_device  # noqa: E402
from lib.data.templates import Grid  # noqa: E402


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=16, help="perturbation steps L")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    device = default_device()
    grid = Grid(3.0)
    torch.manual_seed(0)
    model = build_model("boehle2019", grid.shape).to(device).eval()
    brain = ev.brain_mask(grid)
    x = torch.randn(1, 1, *grid.shape, device=device)
    labels = ev.cube_partition(grid.shape, 5, brain)
    index = ev.RegionIndex(labels, device)
    rng = np.random.default_rng(0)
    repl = ev.replacement_volume(x, "uniform", torch.from_numpy(brain).to(device), rng=rng)
    order = ev.random_order(int(labels.max()), rng)[:args.steps]
    ev.perturbation_curve(model, x, order, index, repl, batch_size=4)  # warm-up

    times: dict[int, list[float]] = {1: [], 4: [], 8: []}
    curves = {}
    for _ in range(args.repeats):
        for b in times:
            _sync(device)
            t = time.perf_counter()
            curves[b] = ev.perturbation_curve(model, x, order, index, repl, batch_size=b)
            _sync(device)
            times[b].append(time.perf_counter() - t)
    for b in (4, 8):
        assert np.allclose(curves[1], curves[b], atol=1e-5), "batching changed the curve"
    n = args.steps + 1
    base = float(np.median(times[1]))
    print(f"device {device}; grid {grid.shape}; {int(labels.max())} cubes of 5 voxels in the brain; "
          f"curve of L = {args.steps} steps ({n} forward passes)")
    print(f"{'batch':>6} {'s / curve':>10} {'volumes/s':>10} {'speed-up vs batch 1':>20}")
    for b, ts in times.items():
        m = float(np.median(ts))
        print(f"{b:>6} {m:>10.3f} {n / m:>10.1f} {base / m:>20.2f}")

    a = np.random.default_rng(1).normal(size=grid.shape).astype(np.float32)
    c = a + np.random.default_rng(2).normal(size=grid.shape).astype(np.float32)
    n_top = int(round(0.02 * brain.sum()))
    parts = {
        "Spearman ρ (both variants)": lambda: (ev._spearman(a[brain], c[brain]),
                                               ev._spearman(np.abs(a[brain]), np.abs(c[brain]))),
        "3D SSIM": lambda: ev.ssim3d(np.abs(a), np.abs(c), mask=brain),
        "top-2 % overlap": lambda: np.intersect1d(ev._top(np.abs(a[brain]), n_top), ev._top(np.abs(c[brain]), n_top)),
        "map_similarity (all)": lambda: ev.map_similarity(a, c, brain),
    }
    sim = {k: [] for k in parts}
    for _ in range(args.repeats):
        for k, fn in parts.items():
            t = time.perf_counter()
            fn()
            sim[k].append(time.perf_counter() - t)
    fwd = float(np.median(times[8])) / n
    print(f"\nmap similarity within the brain ({int(brain.sum())} voxels); one forward pass (batched) = "
          f"{fwd * 1000:.0f} ms")
    for k, ts in sim.items():
        m = float(np.median(ts))
        print(f"{k:>28}: {m * 1000:7.0f} ms  = {m / fwd:5.2f} forward passes")


if __name__ == "__main__":
    main()
