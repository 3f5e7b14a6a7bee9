"""Seconds per scan of the preprocessing pipeline against ANTsPy's defaults, side by side in one run, and peak memory.

    .venv/bin/python bench/preprocess.py [--resolutions 2 1] [--registrations none linear nonlinear] [--threads 2]

The scan is Colin27 (Debian's mricron-data ``ch2.nii.gz``, a real 1 mm T1 with skull) moved by a known affine
(rotations 12°, −9°, 14°, scaling 8 %, −7 %, 5 %, shifts up to 18 mm) and stored in another orientation. Each
measurement runs in a fresh process with ITK's thread count set before ANTsPy is imported:

* the pipeline: ``preprocess_scan`` end to end (checks, RAS, N4, registration, brain extraction, warping,
  normalisation, QC, files), nothing cached; ANTsPy imported and the template loaded before the clock starts,
  as a worker process of a batch has them after its first scan;
* the anchor: ``ants.registration(template, scan, type_of_transform="Affine" | "SyN")`` with ANTsPy's default
  parameters, the scan resampled to the same voxel size (registration alone, no N4, no QC).

Peak memory is the process's maximum resident set (``ru_maxrss``), ANTsPy's import included.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

COLIN = Path("/usr/share/mricron/templates/ch2.nii.gz")
ANCHOR = {"linear": "Affine", "nonlinear": "SyN"}


def moved_colin(folder: Path) -> Path:
    import nibabel as nib
    import numpy as np

    def rotation(axis, degrees):
        c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
        i, j = [k for k in range(3) if k != axis]
        out = np.eye(4)
        out[i, i], out[i, j], out[j, i], out[j, j] = c, -s, s, c
        return out

    move = rotation(0, 12) @ rotation(1, -9) @ rotation(2, 14) @ np.diag([1.08, 0.93, 1.05, 1.0])
    move[:3, 3] = (15, -18, 12)
    src = nib.load(COLIN)
    flip = np.eye(4)
    flip[0, 0], flip[0, 3] = -1, src.shape[0] - 1
    path = folder / "colin_moved.nii.gz"
    nib.save(nib.Nifti1Image(np.ascontiguousarray(np.asarray(src.dataobj)[::-1]), move @ src.affine @ flip), path)
    return path


def _measure(what: str, registration: str, resolution: int, threads: int, scan: str, out: str, queue) -> None:
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(threads)
    import resource

    if what == "pipeline":
        import ants  # noqa: F401  (imported once per worker process in a batch, like the template below)

        from lib.data.preprocess import Settings, preprocess_scan
        from lib.data.templates import template

        template(resolution), template(3)   # the registration target and the pass-through check's
        start = time.perf_counter()
        result = preprocess_scan(scan, Settings(registration, resolution, threads=threads),
                                 Path(out) / f"{registration}_{resolution}")
        seconds, note = time.perf_counter() - start, f"{result.status}, corr {result.measures['corr_template']:.2f}"
    else:
        import ants

        from lib.data.preprocess import antsio
        from lib.data.templates import template

        fixed = antsio.from_nib(template(resolution))
        moving = ants.resample_image(ants.image_read(scan), (resolution,) * 3, False, 0)
        start = time.perf_counter()
        ants.registration(fixed, moving, type_of_transform=ANCHOR[registration])
        seconds, note = time.perf_counter() - start, ""
    queue.put((seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, note))


def measure(what: str, registration: str, resolution: int, threads: int, scan: Path, out: Path):
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=_measure, args=(what, registration, resolution, threads, str(scan), str(out), queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--resolutions", type=int, nargs="+", default=[2, 1])
    p.add_argument("--registrations", nargs="+", default=["none", "linear", "nonlinear"])
    p.add_argument("--threads", type=int, default=2, help="ITK threads (the machine's 2 cores)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        scan = moved_colin(Path(tmp))
        print(f"Colin27 moved, {args.threads} ITK threads, load average {os.getloadavg()[0]:.1f} at the start")
        print(f"{'mm':>3} {'registration':<12} {'pipeline s':>10} {'anchor s':>9} {'anchor/pipeline':>15} "
              f"{'pipeline MiB':>12} {'anchor MiB':>10}  pipeline QC")
        for resolution in args.resolutions:
            for registration in args.registrations:
                seconds, mib, note = measure("pipeline", registration, resolution, args.threads, scan, Path(tmp))
                if registration in ANCHOR:
                    a_seconds, a_mib, _ = measure("anchor", registration, resolution, args.threads, scan, Path(tmp))
                    anchor = f"{a_seconds:9.1f} {a_seconds / seconds:15.2f} {mib:12.0f} {a_mib:10.0f}"
                else:
                    anchor = f"{'-':>9} {'-':>15} {mib:12.0f} {'-':>10}"
                print(f"{resolution:>3} {registration:<12} {seconds:10.1f} {anchor}  {note}", flush=True)
        print(f"load average {os.getloadavg()[0]:.1f} at the end (2 cores shared: figures taken under load)")


if __name__ == "__main__":
    main()
