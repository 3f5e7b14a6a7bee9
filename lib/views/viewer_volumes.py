"""Volumes for the browser's 3D viewer (NiiVue): compact gzipped NIfTI bytes and colour layers.

A volume travels as an 8-bit NIfTI on the run's grid with the grid's MNI affine kept, so the browser
places it in millimetres exactly where the PNG views do. The float map is quantised over the range the
colour scale shows (:func:`map_range`): codes 1–255 span ``vmin … vmax`` linearly and code 0 holds every
value below ``vmin`` (drawn transparent), so the colours are as precise as 8 bits allow where they vary and
values above ``vmax`` keep the last colour, as in the PNG views. ``scl_slope``/``scl_inter`` carry the real
values, which the browser reads back under the cursor. Atlas labels go as integers (uint8 or int16).

Encoded bytes are cached on disk by a content key (:func:`cached`): the caller names what the bytes are
made from (store folder + scan, grouping key + group, template resolution...), never a hash of the array,
so switching back to a scan reads a file instead of quantising and compressing again.

A colour layer (:func:`layer`) turns a :class:`lib.views.render.Overlay` into what NiiVue needs: a 256-entry
RGBA lookup table of the same matplotlib colour map (transparency of ``threshold``/``fade`` encoded in its
alpha), ``cal_min``/``cal_max`` and the opacity; the viewer changes the threshold and opacity itself.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np

from lib.core import atomic
from lib.views.render import Overlay, _colormap

VERSION = 1
"""Bumped when the encoding changes, so cached files of an older encoding are never read."""
GZIP_LEVEL = 6


def content_key(*parts) -> str:
    """A short key of what a volume is made from (strings, numbers, lists: JSON-serialisable)."""
    blob = json.dumps([VERSION, *parts], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def quantise(volume: np.ndarray, lo: float, hi: float, *, clip_low: bool = False
             ) -> tuple[np.ndarray, float, float]:
    """``volume`` as uint8 codes with ``(slope, inter)``: code 0 below ``lo`` (code 1 with ``clip_low``, for
    signed scales whose lowest colour is shown), codes 1–255 spanning ``lo … hi`` linearly (values above
    ``hi`` clip to 255); ``value ≈ code * slope + inter``."""
    lo, hi = float(lo), float(hi)
    if not np.isfinite(lo) or not np.isfinite(hi):
        raise ValueError(f"the range to quantise must be finite, not ({lo}, {hi})")
    if hi <= lo:
        hi = lo + max(abs(lo), 1.0) * 1e-6
    slope = (hi - lo) / 254.0
    inter = lo - slope   # code 1 is lo, code 255 is hi
    v = np.nan_to_num(np.asarray(volume, dtype=np.float32), nan=lo - 2 * slope)
    codes = np.rint((v - inter) / slope)
    codes[v < lo] = 1 if clip_low else 0
    return np.clip(codes, 0, 255).astype(np.uint8), slope, inter


def _nifti_gz(data: np.ndarray, affine: np.ndarray, slope: float = 1.0, inter: float = 0.0,
              description: str = "") -> bytes:
    img = nib.Nifti1Image(data, np.asarray(affine, dtype=np.float64))
    img.header.set_data_dtype(data.dtype)
    img.header.set_slope_inter(slope, inter)
    img.header.set_qform(img.affine, code=4)   # 4: MNI-152
    img.header.set_sform(img.affine, code=4)
    if description:
        img.header["descrip"] = description.encode()[:79]
    # nibabel would rescale on write when given a float array; the codes are written as they are
    return gzip.compress(img.to_bytes(), compresslevel=GZIP_LEVEL, mtime=0)


def encode(volume: np.ndarray, affine: np.ndarray, lo: float, hi: float, description: str = "", *,
           clip_low: bool = False) -> bytes:
    """A float volume quantised over ``[lo, hi]`` (see :func:`quantise`) as gzipped NIfTI bytes."""
    codes, slope, inter = quantise(volume, lo, hi, clip_low=clip_low)
    return _nifti_gz(codes, affine, slope, inter, description)


def encode_labels(labels: np.ndarray, affine: np.ndarray) -> bytes:
    """An atlas's integer labels as gzipped NIfTI (uint8 when they fit, else int16)."""
    labels = np.asarray(labels)
    top = int(labels.max()) if labels.size else 0
    if labels.size and int(labels.min()) < 0 or top > 32767:
        raise ValueError(f"atlas labels must lie in 0–32767, not {int(labels.min())}–{top}")
    return _nifti_gz(labels.astype(np.uint8 if top < 256 else np.int16), affine)


def decode(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """``(values as float32, affine)`` of bytes from :func:`encode` (what the browser reads)."""
    img = nib.Nifti1Image.from_bytes(gzip.decompress(data))
    return np.asarray(img.get_fdata(), dtype=np.float32), img.affine


def encode_overlay(ov: Overlay, affine: np.ndarray, description: str = "") -> bytes:
    """An overlay's map quantised over its colour scale ``[vmin, vmax]``; values below ``vmin`` keep the
    first colour on signed (``threshold``-only) scales, as in the PNG views, and are transparent otherwise."""
    signed = ov.threshold is not None and ov.transparent_below is None
    return encode(ov.volume, affine, ov.vmin, ov.vmax, description, clip_low=signed)


def cached(folder: Path, key: str, make: Callable[[], bytes]) -> bytes:
    """The bytes cached as ``folder/<key>.nii.gz``, made by ``make()`` and written atomically when missing
    (two users encoding the same volume both leave a whole file)."""
    if not re.fullmatch(r"[0-9a-f]{8,64}", key):
        raise ValueError(f"not a content key: {key!r}")
    path = Path(folder) / f"{key}.nii.gz"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    data = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic.atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)
    return data


def cache_folder(ws) -> Path:
    """Where a workspace keeps the viewer's encoded volumes."""
    return Path(ws.cache_dir) / "viewer"


# --- colour layers ----------------------------------------------------------------------------------------------
def lut(cmap: str, n: int = 256) -> dict[str, list[int]]:
    """A matplotlib colour map as NiiVue's colormap dict (``R, G, B, A, I`` lists of 0–255)."""
    table = _colormap(cmap)
    idx = np.linspace(0, 255, n).round().astype(int)
    return {"R": table[idx, 0].tolist(), "G": table[idx, 1].tolist(), "B": table[idx, 2].tolist(),
            "A": [255] * n, "I": idx.tolist()}


def layer(ov: Overlay) -> dict:
    """What the browser needs to draw ``ov`` as the PNG views do (values below ``vmin`` of an unsigned scale
    are transparent; the PNG of the "paper" style draws them black).

    Returns a dict with ``cmap`` (256-entry RGBA table; ``fade`` in its alpha), ``cal_min``/``cal_max``
    (the scale), ``opacity``, ``threshold`` (values below it transparent: ``transparent_below``, or
    ``|v| < threshold`` when ``signed``), ``signed`` and ``threshold_range`` (the slider's bounds).
    """
    table = lut(ov.cmap)
    vmin, vmax = float(ov.vmin), float(ov.vmax)
    values = vmin + (vmax - vmin) * np.arange(256) / 255.0
    if ov.fade:
        top = max(abs(vmin), abs(vmax), 1e-30)
        table["A"] = np.clip(np.abs(values) / top * 255, 0, 255).round().astype(int).tolist()
    signed = ov.threshold is not None and ov.transparent_below is None
    if not signed:   # entry 0 is what values below vmin (code 0) get: transparent, as the browser draws them
        table["A"][0] = 0
    if signed:
        threshold, rng = float(ov.threshold), [0.0, max(abs(vmin), abs(vmax))]
    else:
        threshold = float(ov.transparent_below) if ov.transparent_below is not None else vmin
        rng = [vmin, vmax]
    return {"cmap": table, "cal_min": vmin, "cal_max": vmax, "opacity": float(ov.alpha),
            "threshold": threshold, "signed": signed, "threshold_range": rng}
