"""Orthogonal slice views rendered to compact PNG images.

Slices reach the browser as small PNGs rather than as volumes or large plotly
figures. Orientation follows nilearn's neurological convention: the subject's
left on the left of coronal and axial panels, superior up, anterior up in the
axial panel and to the right in the sagittal one.
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from lib.core import memo

AXES = ("sagittal", "coronal", "axial")


def slice_2d(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    """One slice of an ``(X, Y, Z)`` RAS+ volume as a display array (rows top→bottom)."""
    index = int(np.clip(index, 0, volume.shape[axis] - 1))
    plane = volume[(slice(None),) * axis + (index,)]   # a view (np.take copies through a slow generic path)
    return plane.T[::-1, :]


def label_outlines(labels_2d: np.ndarray) -> np.ndarray:
    """Boolean mask of pixels where the label differs from a 4-neighbour (region borders)."""
    edge = np.zeros(labels_2d.shape, bool)
    down = labels_2d[:-1, :] != labels_2d[1:, :]
    right = labels_2d[:, :-1] != labels_2d[:, 1:]
    edge[:-1, :] |= down
    edge[1:, :] |= down
    edge[:, :-1] |= right
    edge[:, 1:] |= right
    return edge & (labels_2d > 0)


@functools.lru_cache(maxsize=16)
def _colormap(name: str) -> np.ndarray:
    """``(256, 3)`` uint8 lookup table of a matplotlib colour map ("hot": black → red → yellow → white)."""
    import matplotlib

    return (matplotlib.colormaps[name](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)


@dataclass
class Overlay:
    """A map drawn over the anatomy. Values in ``[vmin, vmax]`` go through ``cmap`` (values outside
    take the end colours); values with ``|v| < threshold`` stay transparent, and so do values
    below ``transparent_below`` (a signed cut, e.g. Fig 8's 90th percentile). With ``fade`` the opacity
    grows with |v| up to ``max(|vmin|, |vmax|)``, so near-zero parts of a signed map let the anatomy show."""

    volume: np.ndarray
    vmin: float
    vmax: float
    cmap: str = "hot"
    alpha: float = 0.7
    threshold: float | None = None
    transparent_below: float | None = None
    fade: bool = False


def _panel(background: np.ndarray, axis: int, index: int, bg_range: tuple[float, float],
           overlay: Overlay | None, labels: np.ndarray | None, crosshair: tuple[int, int, int] | None,
           scale: int, outline_color: tuple[int, int, int] = (60, 190, 255), outline_alpha: float = 0.7,
           outline_width: int = 1) -> Image.Image:
    bg = slice_2d(background, axis, index).astype(np.float32)
    lo, hi = bg_range
    gray = np.clip((bg - lo) / max(hi - lo, 1e-6), 0, 1)
    rgb = np.repeat((gray * 255).astype(np.uint8)[..., None], 3, axis=2).astype(np.float32)
    if overlay is not None:
        ov = slice_2d(overlay.volume, axis, index).astype(np.float32)
        t = np.clip((ov - overlay.vmin) / max(overlay.vmax - overlay.vmin, 1e-12), 0, 1)
        colors = _colormap(overlay.cmap)[(t * 255).astype(int)].astype(np.float32)
        visible = np.isfinite(ov)
        if overlay.threshold is not None:
            visible &= np.abs(ov) >= overlay.threshold
        if overlay.transparent_below is not None:
            visible &= ov >= overlay.transparent_below
        a = overlay.alpha * visible[..., None]
        if overlay.fade:
            top = max(abs(overlay.vmin), abs(overlay.vmax), 1e-30)
            a = a * np.clip(np.abs(np.nan_to_num(ov)) / top, 0, 1)[..., None]
        rgb = rgb * (1 - a) + colors * a
    rgb = np.repeat(np.repeat(rgb, scale, axis=0), scale, axis=1)
    if labels is not None:
        # borders drawn at display resolution: one-pixel lines instead of whole border voxels
        lab = slice_2d(labels, axis, index)
        edge = label_outlines(np.repeat(np.repeat(lab, scale, axis=0), scale, axis=1))
        if scale > 1:  # keep one side of each border only
            edge &= np.pad(label_outlines(np.repeat(np.repeat(lab, scale, axis=0), scale, axis=1))[1:, 1:],
                           ((0, 1), (0, 1)))
        for _ in range(outline_width - 1):   # thicker lines: grown by a pixel inwards and downwards
            edge = edge | np.pad(edge[:-1], ((1, 0), (0, 0))) | np.pad(edge[:, :-1], ((0, 0), (1, 0)))
        # drawn after the overlay, so an opaque outline stays visible over the brightest relevance
        rgb[edge] = ((1 - outline_alpha) * rgb[edge] + outline_alpha * np.array(outline_color)).astype(np.float32)
    img = Image.fromarray(rgb.clip(0, 255).astype(np.uint8))
    if crosshair is not None:
        # (row, col) in display coordinates of the two in-plane axes
        others = [a for a in range(3) if a != axis]
        col = (crosshair[others[0]] + 0.5) * scale
        row = (background.shape[others[1]] - 1 - crosshair[others[1]] + 0.5) * scale
        draw = ImageDraw.Draw(img)
        draw.line([(col, 0), (col, img.height)], fill=(0, 255, 120), width=1)
        draw.line([(0, row), (img.width, row)], fill=(0, 255, 120), width=1)
    return img


def ortho_image(background: np.ndarray, ijk: tuple[int, int, int], *, overlay: Overlay | None = None,
                labels: np.ndarray | None = None, crosshair: bool = True, height: int = 260,
                bg_range: tuple[float, float] | None = None,
                outline_color: tuple[int, int, int] = (60, 190, 255), outline_alpha: float = 0.7,
                outline_width: int = 1) -> Image.Image:
    """Sagittal, coronal and axial panels through voxel ``ijk`` side by side.

    Parameters
    ----------
    background : (X, Y, Z) array, anatomy in RAS+ voxel order
    ijk : voxel indices of the crosshair
    overlay : optional map drawn in colour on top
    labels : optional (X, Y, Z) integer atlas whose region borders are outlined (in ``outline_color``, blended
        by ``outline_alpha`` over the overlay, ``outline_width`` pixels wide)
    height : target panel height in pixels (an integer upscale of the slice)
    """
    if bg_range is None:
        nz = background[background > 0]
        bg_range = (0.0, float(np.percentile(nz, 99.5)) if nz.size else 1.0)
    scale = max(1, int(round(height / background.shape[2])))
    panels = [_panel(background, axis, ijk[axis], bg_range, overlay, labels,
                     tuple(ijk) if crosshair else None, scale, outline_color, outline_alpha, outline_width)
              for axis in range(3)]
    gap = 6
    out = Image.new("RGB", (sum(p.width for p in panels) + gap * 2, max(p.height for p in panels)), (14, 17, 23))
    x = 0
    for p in panels:
        out.paste(p, (x, (out.height - p.height) // 2))
        x += p.width + gap
    _annotate(out, panels, gap)
    return out


def _annotate(img: Image.Image, panels: list[Image.Image], gap: int) -> None:
    """Orientation letters: L/R on coronal and axial (neurological), A/P on sagittal."""
    draw = ImageDraw.Draw(img)
    x0 = 0
    letters = [("P", "A"), ("L", "R"), ("L", "R")]
    for p, (left, right) in zip(panels, letters):
        draw.text((x0 + 4, 4), left, fill=(230, 230, 230))
        draw.text((x0 + p.width - 12, 4), right, fill=(230, 230, 230))
        x0 += p.width + gap


def colorbar(cmap: str, vmin: float, vmax: float, *, width: int = 260, height: int = 12,
             transparent_below: bool = False, label: str = "", start: float | None = None) -> Image.Image:
    """A horizontal colour bar with its end values (and a chequered stub when values below are transparent).

    ``start``: a value in ``[vmin, vmax]`` where the bar begins (a cut below which nothing is drawn); the
    colours stay those of the ``vmin``–``vmax`` mapping and the left label shows ``start``.
    """
    lo = 0.0 if start is None else float(np.clip((start - vmin) / max(vmax - vmin, 1e-30), 0, 1))
    bar = np.repeat(_colormap(cmap)[np.linspace(lo * 255, 255, width).astype(int)][None], height, axis=0)
    pad_l = 14 if transparent_below else 0
    out = Image.new("RGB", (width + pad_l + 2, height + 17), (255, 255, 255))
    if transparent_below:
        chk = ((np.add.outer(np.arange(height) // 4, np.arange(pad_l - 2) // 4) % 2) * 60 + 170).astype(np.uint8)
        out.paste(Image.fromarray(np.repeat(chk[..., None], 3, axis=2)), (0, 0))
    out.paste(Image.fromarray(bar), (pad_l, 0))
    draw = ImageDraw.Draw(out)
    font = _font(11)
    draw.text((pad_l, height + 2), _fmt(vmin if start is None else start), fill=(40, 40, 40), font=font)
    right = _fmt(vmax)
    draw.text((out.width - draw.textlength(right, font=font) - 2, height + 2), right, fill=(40, 40, 40), font=font)
    if label:
        draw.text(((out.width - draw.textlength(label, font=font)) // 2, height + 2), label, fill=(90, 90, 90),
                  font=font)
    return out


@functools.lru_cache(maxsize=4)
def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def _fmt(v: float) -> str:
    return f"{v:.2e}" if v != 0 and (abs(v) < 1e-2 or abs(v) >= 1e4) else f"{v:.3g}"


def titled(img: Image.Image, title: str, *, size: int = 14) -> Image.Image:
    """``img`` with a one-line title above it (white background), for exports that must stand alone."""
    font = _font(size)
    out = Image.new("RGB", (img.width, img.height + size + 8), (255, 255, 255))
    ImageDraw.Draw(out).text((4, 3), title, fill=(20, 20, 20), font=font)
    out.paste(img, (0, size + 8))
    return out


def stack(images: list[Image.Image], *, vertical: bool = True, gap: int = 6) -> Image.Image:
    """Images one below the other (or side by side), on white."""
    if vertical:
        out = Image.new("RGB", (max(i.width for i in images), sum(i.height for i in images) + gap * (len(images) - 1)),
                        (255, 255, 255))
        y = 0
        for i in images:
            out.paste(i, (0, y))
            y += i.height + gap
    else:
        out = Image.new("RGB", (sum(i.width for i in images) + gap * (len(images) - 1), max(i.height for i in images)),
                        (255, 255, 255))
        x = 0
        for i in images:
            out.paste(i, (x, 0))
            x += i.width + gap
    return out


def to_png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    # level 3: half the time of the default 6 for ~5 % larger slices (PNGs are made on every crosshair move)
    img.save(buf, format="PNG", optimize=False, compress_level=3)
    return buf.getvalue()


# --- drawings shared by every session ---------------------------------------------------------------------------
_DRAWN = memo.Memo("lib.views.render.shared_png", 256)


def overlay_key(ov: Overlay | None) -> tuple | None:
    """How an overlay looks (everything but its volume, which the caller names)."""
    return None if ov is None else (ov.vmin, ov.vmax, ov.cmap, ov.alpha, ov.threshold, ov.transparent_below, ov.fade)


def shared_png(key: tuple, make) -> bytes:
    """PNG of the drawing ``make()`` named by ``key`` (what it shows: the map's content key, the crosshair, the
    look): drawn and encoded once and shared by every session, so ten users opening one view encode it once.
    A key without a cheap fingerprint draws every time."""
    try:
        k = memo.fingerprint(key)
    except memo.Unkeyable:
        return to_png(make())
    return _DRAWN.get(k, lambda: to_png(make()))
