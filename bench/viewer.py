"""Choosing a scan until its map is drawn: the 3D viewer (NiiVue) against the PNG slice views, at 2 and 1 mm.

    .venv/bin/python bench/viewer.py [--resolutions 2 1] [--repeats 3]

Needs the viewer built (``./setup.sh``) and Chromium (``./setup.sh --test``).

For each grid a smooth synthetic map inside the template brain stands for one scan's relevance map, over the
template anatomy with the Neuromorphometrics atlas (what the Heatmaps page sends). Measured, median of
``--repeats`` (the machine is shared):

- PNG path (today): the server draws the three orthogonal panels with the overlay as one PNG
  (``lib.views.viewer.view_png``), the browser decodes it. Every crosshair move repeats both.
- NiiVue path: the server encodes the map as 8-bit gzipped NIfTI (``lib.views.viewer_volumes``), *cold* (first
  time) or read from the content-keyed cache *warm*; the browser (headless Chromium, WebGL2 in software:
  a GPU draws far faster) parses the volumes and draws them, timed from the render message to the first
  frame after loading, for the three slices alone and for the default view with the 3D rendering (whose
  preparation dominates in software WebGL). A new scan sends its map (and its anatomy, when that is the scan itself);
  the template and the atlas are sent once per page. Crosshair moves and threshold/opacity changes then
  cost no server work at all.
- Bytes per volume: what travels to the browser (the PNG, each gzipped NIfTI).
"""

from __future__ import annotations

import argparse
import base64
import functools
import http.server
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import components.niivue as niivue  # noqa: E402
from lib.views import viewer, viewer_volumes as vv# noqa: E402
from lib.data.atlases import DEFAULT_ATLAS  # noqa: E402
from lib.data.templates import Grid, atlas, brain_mask, template  # noqa: E402


def synthetic_map(grid: Grid, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coords = np.indices(grid.shape, dtype=np.float32)
    centre = np.array(grid.shape, np.float32)[:, None, None, None] * np.array([0.35, 0.45, 0.4])[:, None, None, None]
    blob = np.exp(-(((coords - centre) / (0.18 * np.array(grid.shape, np.float32)[:, None, None, None])) ** 2)
                  .sum(0))
    return ((blob + 0.2 * rng.random(grid.shape, dtype=np.float32)) * brain_mask(grid.resolution)).astype(np.float32)


def median_time(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def serve(folder: Path):
    handler = functools.partial(_Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


DRAW = """async ([args, b64, layout]) => {
    document.getElementById("layout").value = layout;
    const bytes = (s) => Uint8Array.from(atob(s), c => c.charCodeAt(0));
    for (const k of Object.keys(b64)) args[k] = bytes(b64[k]);
    const t0 = performance.now();
    window.postMessage({type: "streamlit:render", args}, "*");
    const want = [args.anatomy_key, args.overlay_key, args.atlas_key].join("|");
    while (document.body.dataset.loaded !== want) await new Promise(r => setTimeout(r, 2));
    await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
    window.niivue.gl.finish();
    return performance.now() - t0;
}"""

DECODE_PNG = """async (b64) => {
    const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
    const t0 = performance.now();
    const bmp = await createImageBitmap(new Blob([bytes], {type: "image/png"}));
    const c = document.createElement("canvas"); c.width = bmp.width; c.height = bmp.height;
    c.getContext("2d").drawImage(bmp, 0, 0);
    return performance.now() - t0;
}"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--resolutions", type=float, nargs="+", default=[2.0, 1.0])
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args(argv)
    if not niivue.available():
        print("The 3D viewer is not built: run ./setup.sh first.")
        return 1
    exe = shutil.which("chromium")
    if not exe:
        print("Chromium is not installed: run ./setup.sh --test first.")
        return 1
    from playwright.sync_api import sync_playwright

    server, url = serve(niivue.BUILD)
    rows = []
    with sync_playwright() as p, tempfile.TemporaryDirectory() as tmp:
        browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--use-angle=swiftshader",
                                                                "--enable-unsafe-swiftshader"])
        page = browser.new_page(viewport={"width": 1000, "height": 800})
        page.goto(f"{url}/index.html")
        page.wait_for_function("() => !!window.niivue")
        for res in a.resolutions:
            grid = Grid(res)
            anat = np.asarray(template(res).dataobj, dtype=np.float32)
            labels_img, _ = atlas(DEFAULT_ATLAS, res)
            labels = np.asarray(labels_img.dataobj)
            rng = viewer.background_range(anat)
            ijk = tuple(s // 2 for s in grid.shape)
            maps = [synthetic_map(grid, seed) for seed in range(a.repeats + 1)]
            ov = [viewer.overlay(m, "individual") for m in maps]

            # PNG path: server draws three panels, the browser decodes the image
            png_server, png = median_time(lambda: viewer.view_png(anat, ijk, ov[0], height=300, bg_range=rng),
                                          a.repeats)
            b64png = base64.b64encode(png).decode()
            png_browser = statistics.median(page.evaluate(DECODE_PNG, b64png) / 1000 for _ in range(a.repeats))

            # NiiVue path: encode (cold) or read the cache (warm); the browser loads and draws
            folder = Path(tmp) / f"cache{res:g}"
            cold, warm, draws = [], [], {"slices": [], "mpr": []}
            anat_bytes = vv.encode(anat, grid.affine, *rng)
            atlas_bytes = vv.encode_labels(labels, grid.affine)
            for layout, i in [(lay, i) for lay in draws for i in range(a.repeats + 1)]:
                key = vv.content_key("bench", res, i, layout)
                t = time.perf_counter()
                map_bytes = vv.cached(folder, key, lambda: vv.encode_overlay(ov[i], grid.affine))
                cold.append(time.perf_counter() - t)
                t = time.perf_counter()
                vv.cached(folder, key, lambda: b"")
                warm.append(time.perf_counter() - t)
                args = {"anatomy_key": f"anat{res}", "anatomy_range": list(rng), "overlay_key": key,
                        "layer": vv.layer(ov[i]), "atlas_key": f"atlas{res}", "atlas_names": {},
                        "crosshair": [float(v) for v in grid.voxel_to_mni(ijk)], "height": 560}
                b64 = {"anatomy": base64.b64encode(anat_bytes).decode(), "overlay": base64.b64encode(map_bytes).decode(),
                       "atlas": base64.b64encode(atlas_bytes).decode()}
                draw = page.evaluate(DRAW, [args, b64, layout]) / 1000
                if i:   # the first draw of a layout also compiles its shaders
                    draws[layout].append(draw)
            rows.append({"grid": f"{res:g} mm {grid.shape}",
                         "png": (png_server, png_browser, len(png)),
                         "niivue": (statistics.median(cold[1:]), statistics.median(warm[1:]),
                                    {k: statistics.median(v) for k, v in draws.items()},
                                    len(map_bytes), len(anat_bytes), len(atlas_bytes)),
                         "float32_nifti": len(viewer.nifti_bytes(maps[0], grid))})
        browser.close()
    server.shutdown()

    print("choosing a scan until its map is drawn (median seconds)")
    print(f"{'grid':22s}{'PNG: server':>12s}{'browser':>9s}{'total':>7s}  |{'NiiVue: encode':>15s}{'cache hit':>10s}"
          f"{'draw slices':>12s}{'draw slices+3D':>15s}{'total cold':>11s}{'total warm':>11s}")
    for r in rows:
        ps, pb, _ = r["png"]
        cold, warm, draw, *_ = r["niivue"]
        print(f"{r['grid']:22s}{ps:12.3f}{pb:9.3f}{ps + pb:7.3f}  |{cold:15.3f}{warm:10.4f}{draw['slices']:12.2f}"
              f"{draw['mpr']:15.2f}{cold + draw['mpr']:11.2f}{warm + draw['mpr']:11.2f}")
    print("(totals of the NiiVue path with the default view, slices + 3D)")
    print("\nbytes sent per volume")
    for r in rows:
        _, _, png_bytes = r["png"]
        *_, m, an, at = r["niivue"]
        print(f"  {r['grid']:22s} PNG of three panels {png_bytes / 1e3:7.0f} kB (again on every crosshair move) · "
              f"NiiVue map {m / 1e3:6.0f} kB, anatomy {an / 1e3:6.0f} kB, atlas {at / 1e3:5.0f} kB "
              f"(float32 NIfTI of the map: {r['float32_nifti'] / 1e3:.0f} kB)")
    print("\nNiiVue browser times are software WebGL (SwiftShader) in headless Chromium; a GPU draws faster.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
