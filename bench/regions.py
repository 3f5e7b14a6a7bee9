"""Region metrics against nilearn's masker, side by side in one run, and peak memory.

    .venv/bin/python bench/regions.py [--scans 50] [--resolution 2] [--atlas NAME] [--repeats 3]

The same float32 heatmaps (signed, seeded) go through:

* nilearn ``NiftiLabelsMasker(strategy="sum")`` on one 4D image held in memory (nilearn's best case)
  and on one 3D image per scan (how a cohort of heatmap files is read);
* ``lib.analysis.regions.region_metrics`` with ``positive=False`` (sums, density, fraction: like for like
  with the masker) and with all metrics;
* the alternatives considered for the inner loop: torch float64 cumulative sums over label runs
  (the CUDA backend, here on the CPU), a torch gather of the atlas voxels with ``index_add_``, a
  torch sparse one-hot matrix product, and one ``np.bincount`` per scan over all voxels.

Timings alternate between methods and the best of ``--repeats`` is kept (the machine is shared).
Every method's sums are checked against the masker's. Peak memory is measured with tracemalloc
(numpy buffers) while streaming the scans one by one through ``region_metrics``, next to the
size of one heatmap and of the whole cohort.
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lib.data.atlas import DEFAULT_ATLAS, load_atlas  # noqa: E402
from lib.analysis.regions import RegionSummer, region_metrics  # noqa: E402


def heatmaps(n: int, shape, seed: int = 0) -> np.ndarray:
    """Signed, skewed float32 maps with a smooth trend, so region sums partly cancel."""
    rng = np.random.default_rng(seed)
    out = rng.gamma(0.5, 1.0, (n, *shape)).astype(np.float32)
    out -= 0.4
    out += (0.2 * np.sin(np.arange(shape[0]) / 7)).astype(np.float32)[None, :, None, None]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scans", type=int, default=50)
    p.add_argument("--resolution", type=float, default=2.0)
    p.add_argument("--atlas", default=DEFAULT_ATLAS)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    from nilearn.maskers import NiftiLabelsMasker

    atlas = load_atlas(args.atlas, args.resolution)
    shape = atlas.labels.shape
    n = args.scans
    h = heatmaps(n, shape)
    ids = [f"s{i:04d}" for i in range(n)]
    img4d = nib.Nifti1Image(np.moveaxis(h, 0, -1).copy(), atlas.grid.affine)
    imgs3d = [nib.Nifti1Image(v, atlas.grid.affine) for v in h]
    label_values = atlas.table["index"].to_numpy()

    def in_atlas_order(m, out):
        """The masker's columns reordered to ``atlas.table`` (it numbers regions its own way)."""
        col = {v: k for k, v in m.region_ids_.items() if k != "background"}
        return np.asarray(out).reshape(-1, len(col))[:, [col[v] for v in label_values]]

    # Fitted once, like our atlas layout (cached per atlas): only the extraction is timed.
    masker = NiftiLabelsMasker(atlas.image, strategy="sum").fit()

    def nilearn_4d():
        return in_atlas_order(masker, masker.transform(img4d))

    def nilearn_3d():
        return in_atlas_order(masker, np.stack([np.ravel(masker.transform(im)) for im in imgs3d]))

    def ours(positive: bool, backend: str = "numpy"):
        def run():
            df = region_metrics(h, atlas, scan_ids=ids, positive=positive, backend=backend, device="cpu")
            return df["sum"].to_numpy().reshape(n, -1)
        return run

    # Alternatives for the inner loop (sums only).
    flat = atlas.labels.ravel().astype(np.int64)
    lut = np.full(flat.max() + 1, len(label_values), np.int64)
    lut[label_values] = np.arange(len(label_values))
    compact = lut[flat]
    inside = np.flatnonzero(compact < len(label_values))
    t_inside, t_region = torch.from_numpy(inside), torch.from_numpy(compact[inside])
    H = torch.from_numpy(h.reshape(n, -1))
    onehot = torch.sparse_coo_tensor(torch.stack([t_region, torch.arange(inside.size)]),
                                     torch.ones(inside.size, dtype=torch.float64),
                                     (len(label_values), inside.size)).to_sparse_csr()

    def torch_gather_index_add():
        out = torch.zeros(n, len(label_values), dtype=torch.float64)
        return out.index_add_(1, t_region, H[:, t_inside].double()).numpy()

    def torch_sparse_onehot():
        return (onehot @ H[:, t_inside].double().T).T.numpy()

    def numpy_bincount():
        return np.stack([np.bincount(compact, weights=v, minlength=len(label_values) + 1)[:-1]
                         for v in h.reshape(n, -1)])

    methods = {
        "nilearn masker, one 4D image": nilearn_4d,
        "region_metrics, sums only (numpy)": ours(False),
        "region_metrics, all metrics (numpy)": ours(True),
        "runs + float64 cumsum (torch backend, CPU)": ours(False, "torch"),
        "torch gather + index_add_ (float64)": torch_gather_index_add,
        "torch sparse one-hot @ maps (float64)": torch_sparse_onehot,
        "np.bincount per scan, all voxels": numpy_bincount,
    }
    best = {k: float("inf") for k in methods}
    results = {}
    for _ in range(args.repeats):
        for name, fn in methods.items():
            t0 = time.perf_counter()
            results[name] = np.asarray(fn(), dtype=np.float64)
            best[name] = min(best[name], time.perf_counter() - t0)
    t0 = time.perf_counter()
    results["nilearn masker, one 3D image per scan"] = nilearn_3d()
    best["nilearn masker, one 3D image per scan"] = time.perf_counter() - t0

    ref = results["nilearn masker, one 4D image"]
    base = best["nilearn masker, one 4D image"]
    print(f"{n} scans, {args.atlas} ({atlas.n_regions} regions) at {args.resolution:g} mm {shape}, "
          f"torch threads {torch.get_num_threads()}, best of {args.repeats} (3D-per-scan masker: 1 run)")
    print(f"{'method':46s} {'seconds':>8s} {'ms/scan':>8s} {'vs 4D masker':>13s} {'max rel diff':>13s}")
    for name in best:
        rel = np.max(np.abs(results[name] - ref) / np.maximum(np.abs(ref), 1e-30))
        print(f"{name:46s} {best[name]:8.3f} {1000 * best[name] / n:8.2f} {base / best[name]:12.1f}x {rel:13.1e}")
    speed = base / best["region_metrics, sums only (numpy)"]
    print(f"\nregion_metrics (sums, density, fraction) vs nilearn's masker on the same maps: {speed:.1f}x faster "
          f"(target >= 20x); all metrics incl. positive parts: "
          f"{base / best['region_metrics, all metrics (numpy)']:.1f}x; "
          f"vs the masker reading one 3D image per scan: "
          f"{best['nilearn masker, one 3D image per scan'] / best['region_metrics, all metrics (numpy)']:.1f}x")

    # Peak memory while streaming scans one at a time (numpy allocations, traced).
    del results, H, onehot, img4d, imgs3d
    one = h[0].nbytes
    summer_setup = RegionSummer(atlas)  # the run layout itself, allocated once per atlas
    layout = summer_setup.starts.nbytes + summer_setup.ends.nbytes + summer_setup.run_region.nbytes
    summer_setup.close()
    tracemalloc.start()
    df = region_metrics(((i, v.copy()) for i, v in zip(ids, h)), atlas)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"\npeak traced memory streaming {n} scans one by one: {peak / 2**20:.0f} MiB "
          f"= {peak / one:.1f} heatmaps of {one / 2**20:.1f} MiB (the cohort: {h.nbytes / 2**20:.0f} MiB; "
          f"run layout {layout / 2**20:.1f} MiB; result table {df.memory_usage(deep=True).sum() / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
