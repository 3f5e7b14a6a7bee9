"""Demo-cohort generation: time per scan and peak memory, 1 vs 2 worker processes, one run.

    .venv/bin/python bench/demo_generation.py [--subjects 12] [--resolution 2]

Each configuration runs in a fresh subprocess so its peak resident memory
(the largest of the process and its workers) is measured on its own. Printed: seconds per
scan, the speed-up of 2 workers over 1, the projected time of the default
80-subject cohort against the 2-minute target, and the cost of a scan relative
to merely writing one compressed NIfTI of the same grid (the I/O floor).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, resource, sys, tempfile, time
import numpy as np, nibabel as nib
from lib.data import demo
from lib.data.templates import Grid
n, res, workers = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
out = tempfile.mkdtemp()
t0 = time.perf_counter()
ws = demo.generate(out, demo.DemoConfig(n_subjects=n, resolution=res, workers=workers, seed=11))
elapsed = time.perf_counter() - t0
n_scans = ws.config["n_scans"]
# I/O floor: write the same number of int16 volumes of this grid, gzip-compressed
g = Grid(res)
vol = (np.random.default_rng(0).random(g.shape) * 1000).astype(np.int16)
t1 = time.perf_counter()
for i in range(min(n_scans, 20)):
    nib.save(nib.Nifti1Image(vol, g.affine), f"{out}/io_{i}.nii.gz")
io_per_scan = (time.perf_counter() - t1) / min(n_scans, 20)
peak_kb = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
print(json.dumps({"seconds": elapsed, "scans": n_scans, "io_per_scan": io_per_scan, "peak_mb": peak_kb / 1024}))
"""


def run(n: int, res: float, workers: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(n), str(res), str(workers)], cwd=ROOT,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--subjects", type=int, default=12)
    p.add_argument("--resolution", type=float, default=2.0)
    args = p.parse_args()
    results = {w: run(args.subjects, args.resolution, w) for w in (1, 2)}
    print(f"demo generation at {args.resolution:g} mm, {args.subjects} subjects "
          f"({results[1]['scans']} scans), same seed in both runs")
    print(f"{'workers':>8} {'s/scan':>8} {'peak MB':>8} {'scan / I/O floor':>17}")
    for w, r in results.items():
        per = r["seconds"] / r["scans"]
        print(f"{w:>8} {per:8.3f} {r['peak_mb']:8.0f} {per / r['io_per_scan']:17.1f}")
    s1 = results[1]["seconds"] / results[1]["scans"]
    s2 = results[2]["seconds"] / results[2]["scans"]
    print(f"speed-up 2 workers / 1 worker: {s1 / s2:.2f}x")
    default_scans = 172  # the default cohort: 80 subjects, 1-3 visits, seed 0
    projected = s2 * default_scans
    print(f"projected default cohort ({default_scans} scans, 2 workers): {projected:.0f} s "
          f"= {projected / 120:.2f} of the 120 s target")


if __name__ == "__main__":
    main()
