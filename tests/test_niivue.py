"""Volumes for the 3D viewer (lib.views.viewer_volumes) and the component's Python side (components.niivue)."""

from __future__ import annotations

import gzip
import json
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import components.niivue as niivue
from lib.views import viewer, viewer_volumes as vv
from lib.views.render import Overlay, _colormap
from lib.data.templates import Grid

ROOT = Path(__file__).resolve().parent.parent


def _map(shape=(20, 24, 18), seed=0):
    rng = np.random.default_rng(seed)
    return rng.gamma(1.0, 1.0, shape).astype(np.float32) * 1e-3


def test_encoded_map_keeps_the_affine_and_values_within_one_step():
    grid = Grid(3.0)
    vol = _map(grid.shape)
    ov = viewer.overlay(vol, "paper")
    data = vv.encode_overlay(ov, grid.affine)
    assert data[:2] == b"\x1f\x8b"   # gzip
    img = nib.Nifti1Image.from_bytes(gzip.decompress(data))
    assert img.get_data_dtype() == np.uint8 and img.shape == grid.shape
    assert np.allclose(img.affine, grid.affine) and int(img.header["sform_code"]) == 4
    values, affine = vv.decode(data)
    step = (ov.vmax - ov.vmin) / 254
    inside = (vol >= ov.vmin) & (vol <= ov.vmax)
    assert np.abs(values[inside] - vol[inside]).max() <= step / 2 + 1e-9
    assert np.all(values[vol < ov.vmin] < ov.vmin)                     # drawn transparent in the browser
    assert np.allclose(values[vol > ov.vmax], ov.vmax, atol=step / 2)  # the last colour, as in the PNG
    # far smaller than the float32 NIfTI of the download button
    assert len(data) < len(viewer.nifti_bytes(vol, grid)) / 2


def test_signed_maps_keep_their_lowest_colour_below_the_scale():
    vol = np.linspace(-2, 2, 1000, dtype=np.float32).reshape(10, 10, 10)
    ov = Overlay(vol, -1.0, 1.0, cmap="RdBu_r", threshold=0.02, fade=True)
    values, _ = vv.decode(vv.encode_overlay(ov, np.eye(4)))
    assert np.allclose(values[vol < -1], -1.0, atol=1e-6)
    codes, slope, inter = vv.quantise(vol, -1.0, 1.0)
    assert codes[vol < -1].max() == 0 and codes[vol > 1].min() == 255


def test_quantise_rejects_a_range_that_is_not_finite():
    with pytest.raises(ValueError, match="finite"):
        vv.quantise(np.zeros((2, 2, 2)), 0.0, float("nan"))


def test_labels_stay_integers_and_large_atlases_use_int16():
    small = np.arange(27, dtype=np.int32).reshape(3, 3, 3)
    big = small * 100
    for labels, dtype in ((small, np.uint8), (big, np.int16)):
        img = nib.Nifti1Image.from_bytes(gzip.decompress(vv.encode_labels(labels, np.eye(4))))
        assert img.get_data_dtype() == dtype
        assert np.array_equal(np.asarray(img.dataobj), labels)
    with pytest.raises(ValueError, match="0–32767"):
        vv.encode_labels(small - 1, np.eye(4))


def test_cache_makes_each_key_once_and_rejects_paths(tmp_path):
    calls = []

    def make():
        calls.append(1)
        return b"volume"

    key = vv.content_key("group", "abc", 3.0, 0.1, 0.9)
    assert vv.cached(tmp_path, key, make) == b"volume"
    assert vv.cached(tmp_path, key, make) == b"volume"
    assert len(calls) == 1 and (tmp_path / f"{key}.nii.gz").read_bytes() == b"volume"
    assert vv.content_key("group", "abc", 3.0, 0.1, 0.9) == key != vv.content_key("group", "abd", 3.0, 0.1, 0.9)
    with pytest.raises(ValueError, match="content key"):
        vv.cached(tmp_path, "../escape", make)


def test_layer_has_the_png_colours_and_threshold():
    vol = _map()
    paper = viewer.overlay(vol, "paper", alpha=0.6)
    lay = vv.layer(paper)
    hot = _colormap("hot")
    assert lay["cmap"]["R"] == hot[:, 0].tolist() and lay["cmap"]["B"] == hot[:, 2].tolist()
    assert (lay["cal_min"], lay["cal_max"], lay["opacity"]) == (paper.vmin, paper.vmax, 0.6)
    assert lay["threshold"] == paper.vmin and not lay["signed"]
    assert lay["cmap"]["A"][0] == 0 and set(lay["cmap"]["A"][1:]) == {255}   # below vmin: transparent
    cut = viewer.overlay(vol, "threshold", threshold=float(np.percentile(vol, 90)))
    assert vv.layer(cut)["threshold"] == pytest.approx(np.percentile(vol, 90))
    diverging = vv.layer(viewer.overlay(vol - vol.mean(), "diverging"))
    assert diverging["signed"] and diverging["cmap"]["A"][0] == 255 and min(diverging["cmap"]["A"]) < 5
    json.dumps(lay)   # travels as JSON


def test_component_falls_back_without_a_build(monkeypatch, tmp_path):
    monkeypatch.setattr(niivue, "BUILD", tmp_path / "build")
    assert not niivue.available()
    assert "./setup.sh" in niivue.BUILD_HINT
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "index.html").write_text("<html></html>")
    (tmp_path / "build" / "viewer.js").write_text("")
    assert niivue.available()


def test_lib_never_imports_streamlit():
    out = subprocess.run(["python", "-c", "import sys, lib.views.viewer_volumes; print('streamlit' in sys.modules)"],
                         cwd=ROOT, capture_output=True, text=True, check=True,
                         env={"PATH": str(Path(__import__("sys").executable).parent)})
    assert out.stdout.strip() == "False"


def test_frontend_is_built_from_the_lock_file_not_committed():
    fe = ROOT / "components" / "niivue" / "frontend"
    lock = json.loads((fe / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/@niivue/niivue"]["version"] == \
        json.loads((fe / "package.json").read_text())["dependencies"]["@niivue/niivue"]
    ignored = subprocess.run(["git", "check-ignore", "-q", str(fe / "build" / "viewer.js")], cwd=ROOT)
    assert ignored.returncode == 0, "the bundle is build output: it must stay out of git"
    setup = (ROOT / "setup.sh").read_text()
    assert "npm ci" in setup and "npm run --silent build" in setup
