"""One-command GPU check: training and explanation throughput at 1 mm, CUDA vs CPU agreement, peak GPU memory.

    .venv/bin/python bench/gpu_check.py                  # CUDA if present (1 mm, 193×229×193), else CPU (3 mm)
    .venv/bin/python bench/gpu_check.py --json out.json  # the figures as JSON too

On the paper's network (``boehle2019``, freshly initialised with a fixed seed) and synthetic volumes:

- training: two epochs over a synthetic set of ``--train-volumes`` volumes, as training runs them (Adam, class
  cross-entropy, mixed precision float16 with a gradient scaler on CUDA); volumes/s of each epoch;
- explanation throughput (volumes/s) for LRP β = 0 and β = 0.5, guided backprop and batched occlusion
  (40 mm patches), after one warm-up batch (occlusion: none);
- agreement of the maps on this device and on the CPU (relative L2 distance, ‖a − b‖ / ‖b‖) for a few volumes;
  without CUDA, float32 against float64 on the CPU, so the check still runs;
- peak GPU memory of each part (``torch.cuda.max_memory_allocated``), or the process's peak resident memory
  so far on the CPU (it only grows).

The device is chosen as everywhere in the library (CUDA when present). Without CUDA the defaults shrink to a
3 mm grid and a handful of volumes so that a CPU (and the test suite) finishes in a minute or two. The whole
check is timed; on a CUDA GPU it is meant to finish within 5 minutes.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lib.explain import explain  # noqa: E402
from lib.learn.models import build_model, default_device  # noqa: E402

ONE_MM = (193, 229, 193)
METHODS = {"LRP β=0": ("lrp", {"beta": 0.0}), "LRP β=0.5": ("lrp", {"beta": 0.5}),
           "guided backprop": ("guided_backprop", {}), "occlusion (batched)": ("occlusion", {})}
# the defaults per device: (grid, training volumes, batch, explained volumes, agreement volumes, occlusion volumes)
DEFAULTS = {"cuda": (ONE_MM, 16, 4, 8, 2, 2), "cpu": ((65, 77, 65), 4, 2, 2, 1, 1)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mib(device: torch.device) -> float:
    """Peak GPU memory since the last reset, or this process's peak resident memory (VmHWM) on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synthetic(n: int, grid, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn((n, 1, *grid), generator=g), torch.arange(n) % 2


def train_two_epochs(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int, device: torch.device
                     ) -> dict:
    """Volumes/s of each of two epochs over ``x``, as training runs them (mixed precision on CUDA)."""
    amp = device.type == "cuda"
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, weight_decay=1e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    _peak_reset(device)
    rates = []
    for _epoch in range(2):
        _sync(device)
        t = time.perf_counter()
        for i in range(0, len(x), batch):
            xb, yb = x[i:i + batch].to(device, non_blocking=True), y[i:i + batch].to(device)
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                loss = nn.functional.cross_entropy(model(xb).float(), yb)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        _sync(device)
        rates.append(len(x) / (time.perf_counter() - t))
    model.eval()
    return {"epoch_volumes_per_s": rates, "mixed_precision": amp, "peak_mib": _peak_mib(device)}


def explain_rate(model: nn.Module, x: torch.Tensor, method: str, params: dict, batch: int,
                 device: torch.device, warm_up: bool = True) -> dict:
    """Volumes/s explaining ``x`` in batches of ``batch`` (after one untimed warm-up batch, unless that would
    cost as much as the measurement: occlusion's hundreds of passes per volume warm up by themselves)."""
    if warm_up:
        explain(model, x[:batch].to(device), method=method, **params)
    _sync(device)
    _peak_reset(device)
    t = time.perf_counter()
    for i in range(0, len(x), batch):
        explain(model, x[i:i + batch].to(device), method=method, **params)
    _sync(device)
    return {"volumes_per_s": len(x) / (time.perf_counter() - t), "peak_mib": _peak_mib(device)}


def agreement(model: nn.Module, x: torch.Tensor, method: str, params: dict, device: torch.device) -> float:
    """Relative L2 distance of the maps on ``device`` and on the CPU (CPU: float32 against float64)."""
    if device.type == "cuda":
        a = explain(model, x.to(device), method=method, **params).cpu().double()
        b = explain(copy.deepcopy(model).cpu(), x, method=method, **params).double()
    else:
        a = explain(model, x, method=method, **params).double()
        b = explain(copy.deepcopy(model).double(), x.double(), method=method, **params)
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", help="cuda or cpu (default: CUDA when present)")
    p.add_argument("--grid", type=int, nargs=3, help="volume shape (default: 193 229 193 on CUDA, 65 77 65 on CPU)")
    p.add_argument("--train-volumes", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--volumes", type=int, help="volumes explained per method")
    p.add_argument("--agree-volumes", type=int)
    p.add_argument("--occlusion-volumes", type=int)
    p.add_argument("--occlusion-stride-mm", type=float, help="default: half a patch (20 mm)")
    p.add_argument("--model", default="boehle2019")
    p.add_argument("--skip", nargs="*", default=[], choices=("agreement", "occlusion"),
                   help="leave parts out (a CPU at 1 mm: occlusion takes minutes per volume)")
    p.add_argument("--json", help="also write the figures here")
    return p.parse_args(argv)


def run(args) -> dict:
    device = torch.device(args.device) if args.device else default_device()
    grid, n_train, batch, n_explain, n_agree, n_occl = DEFAULTS["cuda" if device.type == "cuda" else "cpu"]
    grid = tuple(args.grid or grid)
    n_train, batch = args.train_volumes or n_train, args.batch_size or batch
    n_explain, n_agree, n_occl = args.volumes or n_explain, args.agree_volumes or n_agree, \
        args.occlusion_volumes or n_occl
    start = time.perf_counter()
    torch.manual_seed(0)
    model = build_model(args.model, grid).to(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    out = {"device": name, "grid": list(grid), "model": args.model, "batch_size": batch,
           "agreement_against": "the CPU" if device.type == "cuda" else "float64 on the CPU"}
    x, y = synthetic(n_train, grid)
    out["training"] = train_two_epochs(model, x, y, batch, device)
    x = synthetic(max(n_explain, n_agree, n_occl), grid, seed=1)[0]
    out["explain"], out["agreement_rel_l2"] = {}, {}
    for label, (method, params) in METHODS.items():
        if method == "occlusion":
            if "occlusion" in args.skip:
                continue
            params = {"patch_mm": 40.0, "stride_mm": args.occlusion_stride_mm}
            out["explain"][label] = explain_rate(model, x[:n_occl], method, params, 1, device, warm_up=False)
            continue
        out["explain"][label] = explain_rate(model, x[:n_explain], method, params, batch, device)
        if "agreement" not in args.skip:
            out["agreement_rel_l2"][label] = agreement(model, x[:n_agree], method, params, device)
    out["seconds"] = time.perf_counter() - start
    return out


def report(out: dict) -> None:
    grid = "×".join(map(str, out["grid"]))
    tr = out["training"]
    print(f"device: {out['device']} · {out['model']} on {grid} · batch {out['batch_size']}")
    print(f"training ({'mixed precision float16' if tr['mixed_precision'] else 'float32, no CUDA'}), two epochs: "
          + ", ".join(f"{r:.2f}" for r in tr["epoch_volumes_per_s"]) + f" volumes/s · peak {tr['peak_mib']:.0f} MiB")
    print("explanations:")
    for label, r in out["explain"].items():
        agree = out["agreement_rel_l2"].get(label)
        print(f"  {label:20s} {r['volumes_per_s']:8.3f} volumes/s · peak {r['peak_mib']:7.0f} MiB"
              + (f" · relative L2 to {out['agreement_against']}: {agree:.1e}" if agree is not None else ""))
    print(f"total {out['seconds']:.0f} s" + (" (within 5 minutes)" if out["seconds"] <= 300 else " (over 5 minutes)"))


def main(argv=None) -> int:
    args = parse(argv)
    out = run(args)
    report(out)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
