"""Explanation engine: cost of LRP against a plain gradient pass and against zennit, batched occlusion, memory.

    .venv/bin/python bench/explain.py [--grid 96 114 96] [--batch 4] [--repeats 2] [--device cpu|cuda]
    .venv/bin/python bench/explain.py --grid 193 229 193 --batch 4      # on a GPU machine

Everything runs on the paper's network (``boehle2019``, freshly initialised with a
fixed seed) and the same random input batch. Timings are interleaved over
``--repeats`` rounds and the best of each is kept (the machine is shared, so
the minimum is the least disturbed run). Printed:

- LRP (β = 0 and β = 0.5) time ÷ a plain input-gradient pass (autograd on the
  model, gradient of the AD probability w.r.t. the input; targets ≤ 1.5× and
  ≤ 2.5×), and ÷ this engine's own gradient sweep (``sensitivity``);
- zennit (AlphaBeta β = 0 + SequentialMergeBatchNorm, same starting relevance)
  time ÷ ours (target ≥ 3×);
- batched occlusion (one volume, coarse patch) ÷ the one-patch-at-a-time loop
  through the model (Rieke et al.'s way; target ≥ 5×);
- peak memory of each measurement: on CUDA ``torch.cuda.max_memory_allocated``,
  on the CPU the peak resident size of a fresh subprocess that builds the same
  model and input and runs only that measurement, next to one that only builds
  them. The peak is the process's own ``VmHWM`` (Linux), because ``getrusage``
  maxrss of a child keeps its parent's resident size from before the fork;
  ``getrusage`` is the fallback elsewhere, and the subprocesses run first, while
  this process is still small.

The one-patch occlusion loop is long, so it runs in the first round only.
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lib.explain import explain  # noqa: E402
from lib.explain.occlusion import patch_starts  # noqa: E402
from lib.learn.models import build_model, default_device  # noqa: E402

AD = 1


def setup(grid, batch, device):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_model("boehle2019", grid).to(device).eval()
    x = torch.randn((batch, 1) + tuple(grid), generator=torch.Generator().manual_seed(1)).to(device)
    return model, x


def zennit_lrp(model, x):
    from zennit.attribution import Gradient
    from zennit.canonizers import SequentialMergeBatchNorm
    from zennit.composites import LayerMapComposite
    from zennit.rules import AlphaBeta, Pass
    from zennit.types import Activation, BatchNorm, Convolution

    rule = AlphaBeta(1.0, 0.0, zero_params=["bias"])
    comp = LayerMapComposite([(Activation, Pass()), (BatchNorm, Pass()), (Convolution, rule), (nn.Linear, rule)],
                             canonizers=[SequentialMergeBatchNorm()])
    xx = x.clone().requires_grad_(True)
    with Gradient(model, comp) as attributor:
        out = model(xx).detach()
        seed = torch.zeros_like(out)
        seed[:, AD] = out.softmax(1)[:, AD]
        _, rel = attributor(xx, seed)
    return rel


def autograd_gradient(model, x):
    xx = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model(xx).softmax(1)[:, AD].sum(), xx)
    return g


def occlusion_loop(model, x, patch, stride):
    """Rieke et al.'s loop: one occluded copy per forward pass."""
    vol = x[:1]
    starts = [patch_starts(n, patch, stride) for n in vol.shape[2:]]
    with torch.no_grad():
        base = model(vol).softmax(1)[0, AD]
        drops = []
        for a in starts[0]:
            for b in starts[1]:
                for c in starts[2]:
                    occluded = vol.clone()
                    occluded[..., a:a + patch, b:b + patch, c:c + patch] = 0
                    drops.append(base - model(occluded).softmax(1)[0, AD])
    return torch.stack(drops)


def measurements(model, x, occ_mm, zennit_model):
    return {
        "gradient (autograd)": lambda: autograd_gradient(model, x),
        "gradient (engine)": lambda: explain(model, x, "sensitivity"),
        "lrp beta=0": lambda: explain(model, x, "lrp", beta=0.0),
        "lrp beta=0.5": lambda: explain(model, x, "lrp", beta=0.5),
        "zennit beta=0": lambda: zennit_lrp(zennit_model, x),
        "occlusion batched": lambda: explain(model, x[:1], "occlusion", patch_mm=occ_mm, stride_mm=occ_mm,
                                             batch_size=16),
        "occlusion loop": lambda: occlusion_loop(model, x, *occ_voxels(x, occ_mm)),
    }


def occ_voxels(x, occ_mm):
    from lib.explain import METHODS
    return METHODS["occlusion"].params(patch_mm=occ_mm, stride_mm=occ_mm).voxels(x.shape[2:])


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_rss_mib() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(args) -> None:
    """Run one measurement in this fresh process and print its peak memory."""
    device = torch.device(args.device)
    model, x = setup(args.grid, args.batch, device)
    if args.child != "setup":
        fns = measurements(model, x, args.occlusion_mm, copy.deepcopy(model))
        fns[args.child]()
    print(json.dumps({"peak_mib": peak_rss_mib()}))


def memory_in_subprocesses(args) -> list[str]:
    base = [sys.executable, str(Path(__file__).resolve()), "--grid", *map(str, args.grid), "--batch",
            str(args.batch), "--device", args.device, "--occlusion-mm", str(args.occlusion_mm), "--child"]
    lines = []
    for k in ["setup", "gradient (autograd)", "lrp beta=0", "lrp beta=0.5", "zennit beta=0"]:
        out = subprocess.run(base + [k], capture_output=True, text=True, cwd=ROOT)
        label = "model + input only" if k == "setup" else k
        if out.returncode != 0:
            lines.append(f"  {label:22s} failed: {out.stderr.strip().splitlines()[-1:]}")
            continue
        peak = json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"]
        lines.append(f"  {label:22s} {peak:9.0f}  (peak RSS of a fresh process)")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", type=int, nargs=3, default=[96, 114, 96])
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--device", default=str(default_device()))
    ap.add_argument("--occlusion-mm", type=float, default=80.0, help="patch edge and stride of the occlusion test")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)

    device = torch.device(args.device)
    memory = memory_in_subprocesses(args) if device.type != "cuda" and not args.no_memory else []
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"device: {name}; torch {torch.__version__}; grid {tuple(args.grid)}, batch {args.batch}, "
          f"boehle2019, {args.repeats} interleaved rounds (best kept)")
    model, x = setup(args.grid, args.batch, device)
    fns = measurements(model, x, args.occlusion_mm, copy.deepcopy(model))
    best = {k: float("inf") for k in fns}
    peak_gpu = {}
    for round_ in range(args.repeats):
        for k, fn in fns.items():
            if k == "occlusion loop" and round_ > 0:
                continue
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            best[k] = min(best[k], time.perf_counter() - t0)
            if device.type == "cuda":
                peak_gpu[k] = torch.cuda.max_memory_allocated(device) / 2**20

    n = args.batch
    patch, stride = occ_voxels(x, args.occlusion_mm)
    n_patches = 1
    for s in x.shape[2:]:
        n_patches *= len(patch_starts(s, patch, stride))
    print(f"\n{'measurement':22s} {'seconds':>8s} {'volumes/s':>10s}")
    for k, t in best.items():
        vols = (1 if k.startswith("occlusion") else n) / t
        print(f"{k:22s} {t:8.2f} {vols:10.2f}")
    g = best["gradient (autograd)"]
    own = best["gradient (engine)"]
    print("\nratios (same model and input, measured side by side)")
    print(f"  LRP beta=0   / gradient pass (autograd): {best['lrp beta=0'] / g:5.2f}x  (target <= 1.5x)"
          f"   / engine gradient: {best['lrp beta=0'] / own:5.2f}x")
    print(f"  LRP beta=0.5 / gradient pass (autograd): {best['lrp beta=0.5'] / g:5.2f}x  (target <= 2.5x)"
          f"   / engine gradient: {best['lrp beta=0.5'] / own:5.2f}x")
    print(f"  zennit AlphaBeta+SequentialMergeBatchNorm / ours: {best['zennit beta=0'] / best['lrp beta=0']:5.2f}x"
          f"  (target >= 3x)")
    print(f"  occlusion loop / batched ({n_patches} patches of {patch}^3 voxels, stride {stride}, one volume): "
          f"{best['occlusion loop'] / best['occlusion batched']:5.2f}x  (target >= 5x)")

    if args.no_memory:
        return
    print("\npeak memory (MiB)")
    if device.type == "cuda":
        for k, v in peak_gpu.items():
            print(f"  {k:22s} {v:9.0f}  (torch.cuda.max_memory_allocated)")
        return
    for line in memory:
        print(line)


if __name__ == "__main__":
    main()
