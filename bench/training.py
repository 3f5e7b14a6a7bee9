"""Training throughput (scans/s) and peak memory of the CNNs on several grids, side by side.

    .venv/bin/python bench/training.py [--steps 6] [--batch-size 8] [--models boehle2019 pif2021] [--rounds 2]
                                       [--grids 3mm 2mm 96]

Each grid runs in its own process (so peak resident memory is that grid's alone): a few warm-up
steps, then timed optimiser steps (forward, backward, Adam) with augmentation-free random batches,
then timed inference. Grids: the demo model's 3 mm grid (65×77×65), the demo workspace's 2 mm grid
(97×115×97) and 96×114×96 (the paper's network at half resolution). By default Böhle et al.'s CNN and
the patch-individual filter network (Eitel et al. 2021a) run side by side; their processes alternate and
each (grid, model) keeps its best of ``--rounds`` rounds, so that load from elsewhere on the machine
hits both models alike, and a further process per grid interleaves the models' steps (A, B, A, B, …)
and reports median step times, the ratio least affected by a loaded machine. Ratios are against
96×114×96 (same model) and against the first model (same grid), measured in the same run. On CUDA, mixed precision is used as in training and GPU peak memory
is printed too.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GRIDS = {"demo model 3 mm": (65, 77, 65), "demo workspace 2 mm": (97, 115, 97), "96×114×96": (96, 114, 96)}
SHORT = {"3mm": "demo model 3 mm", "2mm": "demo workspace 2 mm", "96": "96×114×96"}


def _train_step(model, opt, scaler, x, y, amp: bool) -> None:
    """One optimiser step as training does it (mixed precision on CUDA)."""
    import torch
    from torch import nn

    with torch.autocast(x.device.type, dtype=torch.float16, enabled=amp):
        loss = nn.functional.cross_entropy(model(x).float(), y)
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()


def _one(shape, steps: int, batch: int, model_name: str) -> dict:
    import torch
    from torch import nn

    sys.path.insert(0, str(ROOT))
    from lib.learn.models import build_model, default_device

    device = default_device()
    amp = device.type == "cuda"
    torch.manual_seed(0)
    model = build_model(model_name, shape).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, weight_decay=1e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    x = torch.randn(batch, 1, *shape, device=device)
    y = torch.randint(0, 2, (batch,), device=device)

    def step():
        _train_step(model, opt, scaler, x, y, amp)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    model.train()
    for _ in range(2):
        step()
    sync()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    train_rate = steps * batch / (time.perf_counter() - t)
    model.eval()
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.float16, enabled=amp):
        model(x)
        sync()
        t = time.perf_counter()
        for _ in range(steps):
            model(x)
        sync()
    infer_rate = steps * batch / (time.perf_counter() - t)
    out = {"device": str(device), "train_scans_per_s": train_rate, "infer_scans_per_s": infer_rate,
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "params": sum(p.numel() for p in model.parameters())}
    if device.type == "cuda":
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def _paired(shape, steps: int, batch: int, model_names: list[str]) -> dict:
    """Median seconds per training step and per inference pass of each model, the models' steps interleaved
    in one process (A, B, A, B, …) so that load from elsewhere on the machine falls on all of them alike."""
    import statistics

    import torch
    from torch import nn

    sys.path.insert(0, str(ROOT))
    from lib.learn.models import build_model, default_device

    device = default_device()
    amp = device.type == "cuda"
    x = torch.randn(batch, 1, *shape, device=device)
    y = torch.randint(0, 2, (batch,), device=device)
    setups = {}
    for name in model_names:
        torch.manual_seed(0)
        model = build_model(name, shape).to(device)
        setups[name] = (model, torch.optim.Adam(model.parameters(), lr=1e-4, weight_decay=1e-4),
                        torch.amp.GradScaler("cuda", enabled=amp))

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def step(name):
        model, opt, scaler = setups[name]
        model.train()
        _train_step(model, opt, scaler, x, y, amp)

    def infer(name):
        model = setups[name][0].eval()
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            model(x)

    times = {n: {"train": [], "infer": []} for n in model_names}
    for name in model_names:  # warm-up
        step(name)
        infer(name)
    for _ in range(steps):
        for name in model_names:
            for kind, fn in (("train", step), ("infer", infer)):
                sync()
                t = time.perf_counter()
                fn(name)
                sync()
                times[name][kind].append(time.perf_counter() - t)
    return {n: {k: statistics.median(v) for k, v in d.items()} for n, d in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--models", "--model", nargs="+", default=["boehle2019", "pif2021"])
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds; the best of each is kept")
    ap.add_argument("--grids", nargs="+", choices=list(SHORT), default=list(SHORT),
                    help="3mm, 2mm and/or 96 (default all three)")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--paired", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.paired:
        print(json.dumps(_paired(tuple(json.loads(args.paired)), args.steps, args.batch_size, args.models)))
        return
    if args.one:
        print(json.dumps(_one(tuple(json.loads(args.one)), args.steps, args.batch_size, args.models[0])))
        return
    grids = {SHORT[g]: GRIDS[SHORT[g]] for g in SHORT if g in args.grids}
    ref_grid = "96×114×96" if "96×114×96" in grids else None
    results: dict = {}
    for _ in range(max(1, args.rounds)):
        for name, shape in grids.items():
            for model in args.models:
                proc = subprocess.run([sys.executable, __file__, "--one", json.dumps(shape), "--steps",
                                       str(args.steps), "--batch-size", str(args.batch_size), "--models", model],
                                      capture_output=True, text=True, check=True)
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                best = results.get((name, model))
                if best is not None:  # fastest of the rounds; memory is the same every round
                    r["train_scans_per_s"] = max(r["train_scans_per_s"], best["train_scans_per_s"])
                    r["infer_scans_per_s"] = max(r["infer_scans_per_s"], best["infer_scans_per_s"])
                results[(name, model)] = r
    paired = {}
    if len(args.models) > 1:
        for name, shape in grids.items():
            proc = subprocess.run([sys.executable, __file__, "--paired", json.dumps(shape), "--steps",
                                   str(args.steps), "--batch-size", str(args.batch_size), "--models", *args.models],
                                  capture_output=True, text=True, check=True)
            paired[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    first = args.models[0]
    any_result = results[(next(iter(grids)), first)]
    device, gpu = any_result["device"], "peak_gpu_mb" in any_result
    print(f"batch {args.batch_size}, {args.steps} timed steps, device {device}, best of {args.rounds} "
          f"alternating rounds")
    print(f"{'grid':<22}{'model':<12}{'train scans/s':>14}{'× 96×114×96':>13}{'× ' + first:>14}"
          f"{'infer scans/s':>15}{'peak RSS MB':>13}{'params':>10}" + ("  peak GPU MB" if gpu else ""))
    for name in grids:
        for model in args.models:
            r = results[(name, model)]
            rate = r["train_scans_per_s"]
            vs_ref = rate / results[(ref_grid, model)]["train_scans_per_s"] if ref_grid else float("nan")
            line = (f"{name if model == first else '':<22}{model:<12}{rate:>14.2f}{vs_ref:>13.2f}"
                    f"{rate / results[(name, first)]['train_scans_per_s']:>14.2f}"
                    f"{r['infer_scans_per_s']:>15.2f}{r['peak_rss_mb']:>13.0f}{r['params']:>10}")
            if gpu:
                line += f"{r['peak_gpu_mb']:>13.0f}"
            print(line)
    if paired:
        print(f"\ninterleaved in one process ({args.steps} steps each, medians): training step and inference "
              f"time of each model relative to {first} (< 1: faster)")
        for name, p in paired.items():
            print(f"{name:<22}" + "  ".join(
                f"{m}: step {p[m]['train']:.2f} s ×{p[m]['train'] / p[first]['train']:.2f}, "
                f"inference {p[m]['infer']:.2f} s ×{p[m]['infer'] / p[first]['infer']:.2f}" for m in args.models))
    for model in args.models if "demo model 3 mm" in grids else []:
        demo = results[("demo model 3 mm", model)]
        print(f"{model}: an epoch of the demo model (~110 training scans) costs about "
              f"{110 / demo['train_scans_per_s']:.0f} s of training steps here")


if __name__ == "__main__":
    main()
