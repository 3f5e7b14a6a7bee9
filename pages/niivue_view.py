"""The 3D viewer (NiiVue) on a page: the toggle that chooses it over the PNG slices, volumes encoded once
per content key, and a click that moves the page's crosshair."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import streamlit as st

import components.niivue as niivue
from lib.views import viewer, viewer_volumes as vv
from lib.views.render import Overlay


def use_3d(key: str) -> bool:
    """The "3D viewer" toggle; without a built viewer, one caption saying how to build it, and False."""
    if not niivue.available():
        st.caption(niivue.BUILD_HINT)
        return False
    return st.toggle("3D viewer (NiiVue)", value=True, key=key,
                     help="Slices and a 3D rendering in the browser: threshold and opacity change at once, the "
                          "region under the cursor is shown, a click moves the crosshair. Off: the slice images "
                          "(also what the PNG export holds).")


@st.cache_data(max_entries=48, show_spinner=False)
def _encoded(key: str, folder: str, _make: Callable[[], bytes]) -> bytes:
    """Encoded volume bytes by content key (on disk in ``folder``, and in memory here)."""
    return vv.cached(Path(folder), key, _make)


def anatomy_bytes(ws, key_parts: Sequence, volume: np.ndarray, grid, bg_range) -> tuple[bytes, str]:
    key = vv.content_key("anatomy", *key_parts, grid.resolution, [float(v) for v in bg_range])
    return _encoded(key, str(vv.cache_folder(ws)),
                    lambda: vv.encode(volume, grid.affine, bg_range[0], bg_range[1], "anatomy")), key


def overlay_bytes(ws, key_parts: Sequence, ov: Overlay, grid) -> tuple[bytes, str]:
    signed = ov.threshold is not None and ov.transparent_below is None
    key = vv.content_key("map", *key_parts, grid.resolution, float(ov.vmin), float(ov.vmax), signed)
    return _encoded(key, str(vv.cache_folder(ws)), lambda: vv.encode_overlay(ov, grid.affine, "map")), key


def atlas_bytes(ws, name: str, labels: np.ndarray, grid) -> tuple[bytes, str]:
    key = vv.content_key("atlas", name, grid.resolution)
    return _encoded(key, str(vv.cache_folder(ws)), lambda: vv.encode_labels(labels, grid.affine)), key


def show(ws, grid, *, anatomy: tuple[bytes, str], bg_range, ijk, set_crosshair: Callable[[tuple], None],
         key: str, overlay: tuple[bytes, str] | None = None, ov: Overlay | None = None,
         atlas: tuple[bytes, str] | None = None, atlas_names=None, height: int = 520) -> None:
    """The viewer at voxel ``ijk``; a click calls ``set_crosshair`` with the grid voxel nearest to it."""
    niivue.viewer(anatomy=anatomy[0], anatomy_key=anatomy[1], anatomy_range=bg_range,
                  overlay=overlay[0] if overlay else None, overlay_key=overlay[1] if overlay else "",
                  layer=vv.layer(ov) if overlay and ov is not None else None,
                  atlas=atlas[0] if atlas else None, atlas_key=atlas[1] if atlas else "",
                  atlas_names=atlas_names, crosshair_mm=[float(v) for v in grid.voxel_to_mni(ijk)],
                  height=height, key=key, on_click=lambda mm: set_crosshair(viewer.voxel_of(grid, mm)))
