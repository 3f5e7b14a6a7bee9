"""Read overhead of cache integrity checks on a heatmap store, measured side by side in one run.

    .venv/bin/python bench/cache.py [--scans 200 --resolution 1.5 --repeats 100]

Builds a sealed store of random float16 maps in a temporary folder, warms the page cache, then times
opening the store and reading one scan: unchecked (the check replaced by a no-op), the first checked open in
a process (every file hashed) and later checked opens (one ``stat`` per file), against reading every scan once.
Run it alone: the machine's other load distorts even ratios.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lib.core import cache# noqa: E402
from lib.explain import heatmaps as hm# noqa: E402
from lib.data.templates import Grid  # noqa: E402


def build_store(folder: Path, n: int, resolution: float) -> None:
    folder.mkdir(parents=True)
    shape = Grid(resolution).shape
    maps = np.lib.format.open_memmap(folder / "maps.npy", mode="w+", dtype=np.float16, shape=(n, *shape))
    rng = np.random.default_rng(0)
    for i in range(n):
        maps[i] = rng.standard_normal(shape, dtype=np.float32).astype(np.float16)
    maps.flush()
    del maps
    np.save(folder / "scale.npy", np.ones(n, np.float32))
    (folder / "index.json").write_text(json.dumps({"scan_ids": [str(i) for i in range(n)], "resolution": resolution,
                                                  "params": {"method": "lrp", "beta": 0.0}, "version": 1}))
    cache.seal(folder)


def mean_open_get(folder: Path, repeats: int) -> float:
    t = time.perf_counter()
    for _ in range(repeats):
        hm.HeatmapStore(folder).get("1")
    return (time.perf_counter() - t) / repeats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scans", type=int, default=200)
    ap.add_argument("--resolution", type=float, default=1.5)
    ap.add_argument("--repeats", type=int, default=100)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "store"
        build_store(folder, args.scans, args.resolution)
        with open(folder / "maps.npy", "rb") as fh:  # warm the page cache: every timing reads from memory
            while fh.read(1 << 24):
                pass
        cache._verified.clear()
        t = time.perf_counter()
        store = hm.HeatmapStore(folder)
        store.get("0")
        first = time.perf_counter() - t
        later = mean_open_get(folder, args.repeats)
        checked = hm.cache.require
        hm.cache.require = lambda *a, **k: None
        try:
            unchecked = mean_open_get(folder, args.repeats)
        finally:
            hm.cache.require = checked
        t = time.perf_counter()
        for _ in store.iter():
            pass
        every = time.perf_counter() - t
        size = (folder / "maps.npy").stat().st_size / 2**20
    print(f"heatmap store: {args.scans} scans at {args.resolution:g} mm, maps {size:.0f} MiB")
    print(f"{'open + read one scan, unchecked':<44}{unchecked * 1e3:10.1f} ms")
    print(f"{'open + read one scan, checked (later opens)':<44}{later * 1e3:10.1f} ms   "
          f"{later / unchecked:5.2f}× unchecked")
    print(f"{'first checked open in a process (hashing)':<44}{first * 1e3:10.0f} ms   "
          f"{first / every:5.2f}× reading every scan once ({every * 1e3:.0f} ms)")


if __name__ == "__main__":
    main()
