"""The Cohort page's preprocessing QC: the per-scan QC table of a preprocessed workspace and the check by eye,
the template's tissue edges drawn over each registered scan.

A preprocessed workspace holds ``preprocessed/qc.csv`` (one row per scan: status ok | flagged | failed |
passed_through, the reason, registration type, correlation with the template, Dice of the brain mask and of
the hippocampus, Jacobian statistics, seconds) and ``preprocessed/<scan_id>/t1.nii.gz`` on the template grid.
"""

from __future__ import annotations

import functools
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from PIL import Image

from lib.data.preprocess import table as preprocessing
from lib.data.templates import Grid, template
from lib.data.workspace import Workspace
from lib.views import render

QC_COLUMNS = ("scan_id", "status", "message", "registration", "corr_template", "dice_brain", "dice_hippocampus",
              "jacobian_folded_share", "jacobian_min", "jacobian_max", "seconds")
STATUSES = ("failed", "flagged", "passed_through", "ok")     # display order: what needs a look first
MARKS = {"failed": "✖ failed", "flagged": "⚠ flagged", "passed_through": "↷ passed through", "ok": "✓ ok"}
WM_LEVEL = 0.72   # template intensity between grey and white matter (the histogram's trough)
# points the three slices cross at (MNI mm)
SLICE_POINTS = {"centre": (0.0, -18.0, 18.0), "left hippocampus": (-26.0, -22.0, -14.0),
                "right hippocampus": (28.0, -22.0, -14.0)}


class QCError(ValueError):
    """A QC table or registered scan that cannot be shown; the message names the file and the problem."""


def preprocessed_dir(ws: Workspace) -> Path:
    return ws.root / "preprocessed"


def qc_csv(ws: Workspace) -> Path:
    return preprocessed_dir(ws) / "qc.csv"


def load_qc(ws: Workspace) -> pd.DataFrame | None:
    """The workspace's QC table, or None when the workspace was not made by preprocessing."""
    path = qc_csv(ws)
    if not path.exists():
        return None
    try:
        frame = pd.read_csv(path, dtype={"scan_id": str, "status": str, "message": str})
    except (OSError, ValueError) as exc:
        raise QCError(f"{path} cannot be read: {exc}") from exc
    missing = [c for c in ("scan_id", "status") if c not in frame.columns]
    if missing:
        raise QCError(f"{path} lacks the column(s) {', '.join(missing)}")
    unknown = sorted(set(frame["status"].dropna()) - set(STATUSES))
    if unknown:
        raise QCError(f"{path}: unknown status {', '.join(unknown)} (expected {', '.join(STATUSES)})")
    for column in QC_COLUMNS:
        if column not in frame.columns:
            frame[column] = np.nan
    return frame


def qc_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The table shown: a mark per status first, failures and flags on top, then by scan."""
    out = frame.copy()
    out.insert(0, "check", out["status"].map(MARKS))
    out["message"] = out["message"].fillna("")
    rank = {s: i for i, s in enumerate(STATUSES)}
    out = out.assign(_rank=out["status"].map(rank)).sort_values(["_rank", "scan_id"]).drop(columns="_rank")
    numeric = [c for c in QC_COLUMNS[4:] if c in out]
    out[numeric] = out[numeric].apply(pd.to_numeric, errors="coerce")
    return out.reset_index(drop=True)


def summary(frame: pd.DataFrame) -> str:
    """One line: how many scans per status, and what training will use."""
    counts = frame["status"].value_counts()
    parts = [f"{int(counts[s])} {s.replace('_', ' ')}" for s in STATUSES if s in counts]
    usable = int(counts.get("ok", 0) + counts.get("passed_through", 0))
    return f"{len(frame)} scans: " + ", ".join(parts) + f". Training uses the {usable} ok or passed-through scans."


def measures_caption(frame: pd.DataFrame) -> str:
    """What decides a scan's status, and what is only reported (the hippocampus Dice against the template atlas,
    every measure of an unaligned registration)."""
    text = ("Flagged or failed: correlation with the template, brain-mask Dice and, after non-linear "
            "registration, folded Jacobians. The hippocampus Dice against the template atlas is reported, not "
            "judged: an atrophied (AD) hippocampus overlaps the atlas less however well registered, and flagging "
            "on it would leave out patients more often than controls.")
    if "none" in set(frame["registration"].dropna().astype(str)):
        text += " Registration none (pad/crop) is unaligned by design: its measures are reported, not judged."
    return text


def needs_attention(frame: pd.DataFrame) -> pd.DataFrame:
    """Flagged and failed scans with their reasons."""
    return frame[frame["status"].isin(("failed", "flagged"))][["scan_id", "status", "message"]]


def registered_path(ws: Workspace, scan_id: str) -> Path:
    """Where the pipeline writes a scan's registered image (in the folder it names after the scan id)."""
    return preprocessed_dir(ws) / preprocessing.folder_name(scan_id) / "t1.nii.gz"


@functools.lru_cache(maxsize=4)
def template_tissue(resolution: float) -> np.ndarray:
    """Background 0, grey matter and CSF 1, white matter 2 of the template: their borders are the template's
    edges, the brain outline and the grey–white boundary (white matter lightly smoothed, so the line is one
    contour, not speckle)."""
    from scipy import ndimage

    from lib.data.templates import brain_mask

    smooth = ndimage.gaussian_filter(np.asarray(template(resolution).dataobj, dtype=np.float32), 0.7)
    return (brain_mask(resolution) * (1 + (smooth >= WM_LEVEL))).astype(np.uint8)


def load_registered(path: Path) -> tuple[np.ndarray, Grid]:
    """A registered scan and its template grid; a scan off every template grid is refused by name."""
    if not path.exists():
        raise QCError(f"{path} does not exist: the scan was not registered (see its QC message)")
    try:
        img = nib.load(path)
        data = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as exc:   # nibabel raises several kinds for a damaged file
        raise QCError(f"{path} cannot be read: {exc}") from exc
    resolution = float(abs(img.affine[0, 0]))
    grid = Grid(resolution)
    if data.ndim != 3 or not grid.matches(img):
        raise QCError(f"{path} is not on the template grid (shape {data.shape}, voxel {resolution:g} mm)")
    return data, grid


def edges_figure(ws: Workspace, scan_id: str, through: str = "centre") -> Image.Image:
    """The registered scan in three orthogonal slices through an MNI point, the template's edges drawn
    over it: a good registration has the lines on the scan's own brain outline and grey–white boundary."""
    data, grid = load_registered(registered_path(ws, scan_id))
    ijk = tuple(int(v) for v in np.clip(grid.mni_to_voxel(SLICE_POINTS[through]), 0, np.array(grid.shape) - 1))
    return render.ortho_image(data, ijk, labels=template_tissue(grid.resolution), crosshair=False,
                              outline_color=(255, 170, 0))

