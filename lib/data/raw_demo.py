"""The demo cohort in "scanner" space, with the true transform kept as ground truth.

Every demo scan (on the template grid) is moved into the space a scanner would
write: head position and size differ (a random rigid + affine transform:
rotations ±15°, shifts ±20 mm, per-axis scaling ±10 %), anatomy is bent by a
smooth non-linear warp, intensities carry a multiplicative bias field, the
voxels are anisotropic, the orientation code is the site's protocol (LPS, PSR,
LIP) and the field of view is the head plus a random margin. A skull-like rim
(bone, marrow, scalp) surrounds the brain, so brain extraction has work to do.

The true transform maps a template point ``x`` (world mm) to the scanner point

    T(x) = A (x + w(x))

with ``A`` the affine (4×4, ``affine.json``) and ``w`` a displacement in mm
stored on the template grid (``warp.nii.gz``, shape X×Y×Z×3, RAS axes). This is
the direction a registration of the raw scan to the template estimates: the
registered scan is the raw scan sampled at ``T(x)`` for every template voxel
``x`` (:func:`to_template`). The raw scan itself is the template-space scan
sampled at ``T⁻¹(y)``, the warp being inverted by fixed-point iteration.

The demo's Neuromorphometrics labels of each scan are resampled into the raw
space (nearest neighbour), so a pipeline's registration is scored by the Dice
of its warped labels against them (:func:`dice`), not assumed.

Layout, inside the demo workspace::

    raw/participants.csv           the cohort table, paths pointing at raw scans, ``labels`` at their labels
    raw/scans/<scan>_T1w.nii.gz    the scanner-space scan
    raw/truth/<scan>_affine.json   A, its parameters, the protocol
    raw/truth/<scan>_warp.nii.gz   w on the template grid (mm)
    raw/truth/<scan>_labels.nii.gz the demo labels in raw space
    raw/truth/<scan>_bias.nii.gz   the multiplicative bias field in raw space

Colin27 (Debian's ``ch2.nii.gz``, a real T1 with skull) moved the same way is a second, real test case
(:func:`colin27_raw`); the template itself moved, with its atlas labels, measures registration free of
anatomy (:func:`template_raw`).

Deterministic for the demo's seed: each scan draws from a generator seeded by
``(seed, CRC-32 of its scan id)``.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from lib.core import atomic
from lib.core.progress import Progress
from lib.data.templates import Grid
from lib.data.workspace import Workspace
from lib.data.demo import map_scans

RAW_DIR = "raw"
COLIN27 = Path("/usr/share/mricron/templates/ch2.nii.gz")   # Debian's mricron-data
RAW_VERSION = 3
# site → (orientation code of the voxel axes, voxel size in units of RAW_VOXEL × the demo's resolution)
PROTOCOLS = {
    "site-A": ("LPS", (1.0, 1.0, 1.2)),    # axial, DICOM-like
    "site-B": ("PSR", (1.0, 1.0, 1.5)),    # sagittal slices, thick
    "site-C": ("LIP", (1.1, 1.1, 1.3)),    # coronal slices
}
# raw voxels finer than the template grid, as a scanner's are (1 mm against the 2 mm grid), at a cost in
# voxels the generator can afford
RAW_VOXEL = 0.75
MAX_ROTATION_DEG = 15.0
MAX_SHIFT_MM = 20.0
MAX_SCALING = 0.10
WARP_MM = 3.0          # peak displacement of the non-linear warp
BIAS = 0.20            # peak relative amplitude of the bias field
NOISE = 0.01           # Rician noise σ of the whole field of view, as a share of the head's 99th percentile
# skull-like rim: (from, to) mm outside the brain surface → intensity relative to the brain's median
RIM = (((3.0, 5.0), 0.08), ((5.0, 8.0), 0.55), ((8.0, 10.0), 0.08), ((10.0, 14.0), 0.8))


@dataclass(frozen=True)
class Truth:
    """The known transform of one raw scan: template world → scanner world is ``affine @ (x + warp(x))``."""

    affine: np.ndarray          # 4×4
    warp: nib.Nifti1Image       # X×Y×Z×3 displacement in mm on the template grid

    def template_to_scanner(self, xyz: np.ndarray) -> np.ndarray:
        """Scanner world points (N×3) of template world points ``xyz`` (N×3)."""
        moved = xyz + _sample_field(self.warp, xyz)
        return moved @ self.affine[:3, :3].T + self.affine[:3, 3]

    def scanner_to_template(self, yyy: np.ndarray, iterations: int = 6) -> np.ndarray:
        """Template world points of scanner points (fixed point of x = A⁻¹y − w(x); |∇w| ≪ 1)."""
        inv = np.linalg.inv(self.affine)
        z = yyy @ inv[:3, :3].T + inv[:3, 3]
        x = z.copy()
        for _ in range(iterations):
            x = z - _sample_field(self.warp, x)
        return x


def _sample_field(field: nib.Nifti1Image, xyz: np.ndarray) -> np.ndarray:
    """A vector field on a grid sampled (trilinear, zero outside) at world points ``xyz`` (N×3)."""
    data = np.asarray(field.dataobj, dtype=np.float32)
    ijk = nib.affines.apply_affine(np.linalg.inv(field.affine), xyz).T
    return np.stack([ndimage.map_coordinates(data[..., a], ijk, order=1, mode="nearest")
                     for a in range(3)], axis=1)


def _rotation(angles_deg) -> np.ndarray:
    rx, ry, rz = np.deg2rad(angles_deg)
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
    r_x = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    r_y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    r_z = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return r_z @ r_y @ r_x


def draw_affine(rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """A random head pose and size: ``A = shift · rotation · scaling`` about the template origin."""
    angles = rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG, 3)
    shift = rng.uniform(-MAX_SHIFT_MM, MAX_SHIFT_MM, 3)
    scale = rng.uniform(1 - MAX_SCALING, 1 + MAX_SCALING, 3)
    affine = np.eye(4)
    affine[:3, :3] = _rotation(angles) @ np.diag(scale)
    affine[:3, 3] = shift
    params = {"rotation_deg": angles.round(4).tolist(), "shift_mm": shift.round(4).tolist(),
              "scaling": scale.round(5).tolist()}
    return affine, params


def _smooth(rng: np.random.Generator, shape, coarse: int, order: int = 3) -> np.ndarray:
    """Smooth noise in [−1, 1]: a coarse Gaussian grid, spline-upsampled (``order``) to ``shape``."""
    small = rng.standard_normal((coarse,) * 3)
    field = ndimage.zoom(small, [s / coarse for s in shape], order=order, mode="nearest", grid_mode=True)
    field = field[: shape[0], : shape[1], : shape[2]]
    return (field / max(float(np.abs(field).max()), 1e-6)).astype(np.float32)


def draw_warp(rng: np.random.Generator, grid: Grid) -> nib.Nifti1Image:
    """A smooth displacement field (mm) on ``grid``, peak ``WARP_MM`` per axis."""
    data = np.stack([WARP_MM * _smooth(rng, grid.shape, 4) for _ in range(3)], axis=-1)
    return nib.Nifti1Image(data.astype(np.float32), grid.affine)


def raw_affine(orientation: str, voxel: tuple[float, float, float], lower: np.ndarray,
               upper: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Voxel-to-world affine and shape of a grid with axis codes ``orientation`` covering the box
    [lower, upper] (scanner world mm, RAS)."""
    ornt = nib.orientations.axcodes2ornt(tuple(orientation))
    affine = np.zeros((4, 4))
    affine[3, 3] = 1.0
    shape = []
    for axis, (world_axis, sign) in enumerate(ornt.astype(int)):
        n = int(np.ceil((upper[world_axis] - lower[world_axis]) / voxel[axis])) + 1
        affine[world_axis, axis] = sign * voxel[axis]
        affine[world_axis, 3] = lower[world_axis] if sign > 0 else upper[world_axis]
        shape.append(n)
    return affine, tuple(shape)


def _head(scan: np.ndarray, labels: np.ndarray, resolution: float) -> np.ndarray:
    """The scan with a skull-like rim around its brain (labels > 0), on the same grid."""
    brain = labels > 0
    outside = ndimage.distance_transform_edt(~brain, sampling=resolution)
    level = float(np.median(scan[brain])) if brain.any() else 1.0
    head = scan.copy()
    for (near, far), rel in RIM:
        head[(outside > near) & (outside <= far)] = rel * level
    return head


def _field_of_view(truth: Truth, head: np.ndarray, grid: Grid, rng: np.random.Generator):
    """Scanner-world box holding the head: the box of the mask ``head`` + the rim, moved by T, + random
    margins."""
    idx = np.argwhere(head)
    lo, hi = idx.min(0), idx.max(0)
    corners = np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])])
    world = nib.affines.apply_affine(grid.affine, corners)
    world = world + np.sign(world - world.mean(0)) * (RIM[-1][0][1] + WARP_MM)
    moved = world @ truth.affine[:3, :3].T + truth.affine[:3, 3]
    return moved.min(0) - rng.uniform(5, 25, 3), moved.max(0) + rng.uniform(5, 25, 3)


def _linear_coords(matrix: np.ndarray, shape) -> list[np.ndarray]:
    """Per output axis, ``matrix @ (i, j, k, 1)`` over a grid of ``shape`` (float32, by broadcasting)."""
    ijk = np.ogrid[tuple(slice(0, n) for n in shape)]
    return [sum(np.float32(matrix[a, b]) * ijk[b].astype(np.float32) for b in range(3)) + np.float32(matrix[a, 3])
            for a in range(3)]


def _template_voxels(truth: Truth, raw_aff: np.ndarray, raw_shape, grid: Grid, step: int = 4) -> np.ndarray:
    """Template-grid voxel coordinates (3 × raw shape) of every raw voxel, ``G⁻¹ T⁻¹(y)``.

    ``T⁻¹(y) = A⁻¹y + u(y)``: the linear part is exact; the warp's inverse ``u`` is smooth, so it is solved on
    every ``step``-th raw voxel and interpolated (trilinear) in between."""
    coarse_shape = tuple(int(np.ceil((n - 1) / step)) + 1 for n in raw_shape)
    coarse_ijk = np.indices(coarse_shape, dtype=np.float64).reshape(3, -1).T * step
    z = nib.affines.apply_affine(np.linalg.inv(truth.affine) @ raw_aff, coarse_ijk)
    u = (truth.scanner_to_template(nib.affines.apply_affine(raw_aff, coarse_ijk)) - z).T.reshape(3, *coarse_shape)
    linear = _linear_coords(np.linalg.inv(grid.affine) @ np.linalg.inv(truth.affine) @ raw_aff, raw_shape)
    zoom = np.diag([1.0 / step] * 3)
    return np.stack([linear[a] + ndimage.affine_transform(u[a].astype(np.float32), zoom, output_shape=raw_shape,
                                                          order=1, mode="nearest") / np.float32(grid.resolution)
                     for a in range(3)])


def make_raw_scan(scan_img: nib.Nifti1Image, labels_img: nib.Nifti1Image | None, site: str, seed: int,
                  scan_id: str) -> dict:
    """One scan on the template grid moved into scanner space: the raw image and bias field (and, given the
    scan's labels, its labels and a skull-like rim around them) on the raw grid, and the true transform.
    Without labels (a real head such as Colin27) the field of view follows the head's own intensities."""
    rng = np.random.default_rng([seed, zlib.crc32(scan_id.encode())])
    grid = Grid(float(abs(scan_img.affine[0, 0])))
    if not grid.matches(scan_img):
        raise ValueError(f"{scan_id}: the scan is not on the template grid")
    affine, params = draw_affine(rng)
    truth = Truth(affine, draw_warp(rng, grid))
    scan = np.asarray(scan_img.dataobj, dtype=np.float32)
    labels = None if labels_img is None else np.asarray(labels_img.dataobj).astype(np.uint8)
    head = labels > 0 if labels is not None else scan > 0.1 * float(np.percentile(scan[scan > 0], 99))
    orientation, voxel_units = PROTOCOLS.get(site, PROTOCOLS["site-A"])
    voxel = tuple(round(v * RAW_VOXEL * grid.resolution, 4) for v in voxel_units)
    lower, upper = _field_of_view(truth, head, grid, rng)
    raw_aff, raw_shape = raw_affine(orientation, voxel, lower, upper)

    src = _template_voxels(truth, raw_aff, raw_shape, grid)
    source = _head(scan, labels, grid.resolution) if labels is not None else scan
    image = ndimage.map_coordinates(source, src, order=1, mode="constant", cval=0.0)
    bias = (1.0 + BIAS * _smooth(rng, raw_shape, 3, order=1)).astype(np.float32)   # trilinear: 4× cheaper
    image *= bias
    # the whole field of view is noisy, as a scanner's is (the template-space scan is noisy inside its grid only)
    sigma = NOISE * float(np.percentile(image[image > 0], 99))
    image = np.sqrt((image + rng.normal(0, sigma, raw_shape)) ** 2 + rng.normal(0, sigma, raw_shape) ** 2)
    made = {"image": nib.Nifti1Image(np.rint(image).clip(0, 32767).astype(np.int16), raw_aff),
            "bias": nib.Nifti1Image(bias, raw_aff), "truth": truth,
            "params": {**params, "orientation": orientation, "voxel_mm": [round(v, 4) for v in voxel],
                       "shape": list(raw_shape)}}
    if labels is not None:
        raw_labels = ndimage.map_coordinates(labels, src, order=0, mode="constant", cval=0)
        made["labels"] = nib.Nifti1Image(raw_labels.astype(np.uint8), raw_aff)
    return made


def write_raw(made: dict, out: Path, scan_id: str, template_space_scan: str) -> dict:
    """Write one raw scan and its truth under ``out`` (``scans/``, ``truth/``); relative paths written."""
    made["image"].header.set_xyzt_units("mm")
    made["image"].header["descrip"] = b"relevance-atlas synthetic raw scan"
    written = {"path": str(Path("scans") / f"{scan_id}_T1w.nii.gz")}
    atomic.write_nifti(out / written["path"], made["image"])
    if "labels" in made:
        written["labels"] = str(Path("truth") / f"{scan_id}_labels.nii.gz")
        atomic.write_nifti(out / written["labels"], made["labels"])
    bias = made["bias"]
    bias.set_data_dtype(np.int16)   # nibabel picks the scale: 1e-5 precision, half the bytes
    atomic.write_nifti(out / "truth" / f"{scan_id}_bias.nii.gz", bias)
    atomic.write_nifti(out / "truth" / f"{scan_id}_warp.nii.gz", made["truth"].warp)
    atomic.write_json(out / "truth" / f"{scan_id}_affine.json", {
        "convention": "scanner = A @ (template + warp(template)), world mm (RAS); warp in "
                      f"{scan_id}_warp.nii.gz on the template grid",
        "template_to_scanner": made["truth"].affine.round(8).tolist(),
        "scanner_to_template_linear": np.linalg.inv(made["truth"].affine).round(8).tolist(),
        "template_space_scan": template_space_scan, **made["params"]})
    return written


def colin27_raw(out: str | os.PathLike, resolution: float = 2.0, seed: int = 0, site: str = "site-A") -> Path:
    """Colin27 (``ch2.nii.gz``: a real T1 with skull, in MNI space) on the template grid, moved into scanner
    space by a known transform like the demo's; the raw scan's path (truth in ``out/truth/``, the template-grid
    original in ``out/colin27_template_grid.nii.gz``)."""
    from nilearn.image import resample_img

    if not COLIN27.exists():
        raise FileNotFoundError(f"{COLIN27} is missing: install Debian's mricron-data")
    grid = Grid(float(resolution))
    src = nib.load(COLIN27)
    on_grid = resample_img(nib.Nifti1Image(np.asarray(src.dataobj, dtype=np.float32), src.affine),
                           target_affine=grid.affine, target_shape=grid.shape, interpolation="continuous",
                           force_resample=True, copy_header=True)
    original = nib.Nifti1Image(np.clip(on_grid.get_fdata(dtype=np.float32), 0, None) * 4, grid.affine)
    return _moved_reference(original, None, Path(out), "colin27", seed, site)


def template_raw(out: str | os.PathLike, resolution: float = 2.0, seed: int = 0, site: str = "site-B") -> Path:
    """The ICBM152 template itself (with a skull-like rim) moved into scanner space, its Neuromorphometrics
    labels beside it: no atrophy and no individual anatomy, so after registration the hippocampus Dice against
    the atlas measures the registration alone. The raw scan's path; labels in ``out/truth/``."""
    from lib.data.atlases import DEFAULT_ATLAS
    from lib.data.templates import atlas, template

    grid = Grid(float(resolution))
    image = nib.Nifti1Image(np.asarray(template(resolution).dataobj, dtype=np.float32) * 1000, grid.affine)
    labels = nib.Nifti1Image(np.asarray(atlas(DEFAULT_ATLAS, resolution)[0].dataobj).astype(np.uint8), grid.affine)
    return _moved_reference(image, labels, Path(out), "icbm152", seed, site)


def _moved_reference(original: nib.Nifti1Image, labels: nib.Nifti1Image | None, out: Path, name: str, seed: int,
                     site: str) -> Path:
    atomic.write_nifti(out / f"{name}_template_grid.nii.gz", original)
    made = make_raw_scan(original, labels, site, seed, name)
    return out / write_raw(made, out, name, f"{name}_template_grid.nii.gz")["path"]


# --------------------------------------------------------------------------- reading the truth back
def load_truth(raw_root: str | os.PathLike, scan_id: str) -> Truth:
    truth_dir = Path(raw_root) / "truth"
    info = atomic.read_json(truth_dir / f"{scan_id}_affine.json")
    return Truth(np.asarray(info["template_to_scanner"], float), nib.load(truth_dir / f"{scan_id}_warp.nii.gz"))


def to_template(raw_img: nib.Nifti1Image, truth: Truth, grid: Grid, order: int = 1) -> nib.Nifti1Image:
    """The raw image brought onto the template grid through the true transform (what a perfect
    registration returns): the raw scan sampled at ``T(x)`` for every template voxel ``x``."""
    warp = np.asarray(truth.warp.dataobj, dtype=np.float32)
    if warp.shape[:3] != grid.shape:
        raise ValueError(f"the true warp is on a {warp.shape[:3]} grid, not the template's {grid.shape}")
    moved = _linear_coords(grid.affine, grid.shape)   # template world mm of every voxel, + the warp
    moved = [moved[a] + warp[..., a] for a in range(3)]
    to_raw = np.linalg.inv(raw_img.affine) @ truth.affine
    src = np.stack([sum(np.float32(to_raw[a, b]) * moved[b] for b in range(3)) + np.float32(to_raw[a, 3])
                    for a in range(3)])
    data = np.asarray(raw_img.dataobj)
    out = ndimage.map_coordinates(data.astype(np.float32) if order else data, src, order=order,
                                  mode="constant", cval=0)
    return nib.Nifti1Image(out.astype(np.float32 if order else data.dtype), grid.affine)


def dice(a: np.ndarray, b: np.ndarray, labels) -> float:
    """Dice overlap of the voxels carrying any of ``labels`` in two label images on one grid."""
    in_a, in_b = np.isin(a, list(labels)), np.isin(b, list(labels))
    total = int(in_a.sum() + in_b.sum())
    return 2.0 * int((in_a & in_b).sum()) / total if total else 1.0


def hippocampus_labels() -> tuple[int, ...]:
    """Label indices of the left and right hippocampus in the demo's (Neuromorphometrics) labels."""
    from lib.data.atlases import DEFAULT_ATLAS
    from lib.data.templates import atlas

    table = atlas(DEFAULT_ATLAS, 3.0)[1]
    return tuple(int(i) for i, n in zip(table["index"], table["name"]) if n in ("Left_Hippocampus",
                                                                                 "Right_Hippocampus"))


# --------------------------------------------------------------------------- the raw cohort
def raw_root(ws: Workspace) -> Path:
    return ws.root / RAW_DIR


def is_complete(ws: Workspace) -> bool:
    marker = atomic.read_json(raw_root(ws) / "raw.json", default={}) or {}
    return (raw_root(ws) / "participants.csv").exists() and marker.get("version") == RAW_VERSION


def _write_scan(task: tuple[Path, Path, dict, int]) -> dict:
    ws_root, out, row, seed = task
    scan_id = row["scan_id"]
    labels_path = ws_root / "ground_truth" / "labels" / f"{scan_id}_labels.nii.gz"
    made = make_raw_scan(nib.load(ws_root / row["path"]), nib.load(labels_path), row.get("site", ""),
                         seed, scan_id)
    # ``labels``: the scan's own segmentation in its space, which the preprocessing QC scores its
    # hippocampus Dice with
    return {**row, **write_raw(made, out, scan_id, str(Path("..") / row["path"]))}


def generate_raw(ws: Workspace, seed: int = 0, workers: int = 1, progress: Progress | None = None) -> Path:
    """Write the raw version of the demo workspace ``ws``; returns ``raw/participants.csv``."""
    progress = progress or (lambda done, total, msg: None)
    out = raw_root(ws)
    cohort = pd.read_csv(ws.cohort_csv)
    tasks = [(ws.root, out, row, seed) for row in cohort.to_dict("records")]
    rows = map_scans(_write_scan, tasks, workers, progress, lambda row: f"raw scan {row['scan_id']}")
    table = out / "participants.csv"
    atomic.write_csv(table, pd.DataFrame(rows))
    atomic.write_json(out / "raw.json", {"version": RAW_VERSION, "seed": seed, "n_scans": len(rows)})
    return table


# --------------------------------------------------------------------------- scoring a registration
def registration_accuracy(demo: Workspace, preprocessed: str | os.PathLike) -> pd.DataFrame:
    """Per raw demo scan registered by the preprocessing pipeline (``preprocessed``: its output workspace), the
    hippocampus Dice of the raw-space labels brought to the template by the pipeline's forward transforms

    * ``dice_truth``: against the scan's labels on the template grid before it was moved into scanner space
      (what undoing the scanner transform exactly gives; a non-linear registration also moves anatomy towards
      the template, which this counts as error),
    * ``dice_atlas``: against the template atlas's hippocampus (what a registration to the template aims at;
      the pipeline's QC measure),
    * ``dice_ceiling``: the true transform's own ``dice_truth`` (interpolation loss only),

    and the correlations in the scan's brain (its labels on the template grid)

    * ``corr_truth``: of the registered scan (the pipeline's output: bias-corrected, brain-extracted,
      normalised) with the template-space scan before it was moved. Bounded well below 1 by what the scanner
      added: the raw scan through the true transform itself reaches only ``corr_ceiling`` (bias field, noise,
      two interpolations), and the template-space scan correlates 0.88-0.94 with the ICBM152 template;
    * ``corr_alignment``: of the raw scan brought to the template by the pipeline's transforms with the raw
      scan brought by the true transform. The same image on both sides, so only the alignment differs: 1 for
      a perfect registration. This is the issue's "correlation with the template after registration" for a
      scan whose truth is known (a linear registration cannot undo the demo's non-linear warp, nor does a
      non-linear one aim at the truth rather than the template, so each stays somewhat under 1)."""
    import ants

    from lib.data.atlases import DEFAULT_ATLAS
    from lib.data.templates import atlas

    raw_dir = raw_root(demo)
    cohort = pd.read_csv(demo.cohort_csv).set_index("scan_id")
    cohort_raw = pd.read_csv(raw_dir / "participants.csv").set_index("scan_id")
    hippocampus = hippocampus_labels()
    rows = []
    for qc_file in sorted((Path(preprocessed) / "preprocessed").glob("*/qc.json")):
        record = atomic.read_json(qc_file)
        scan_id, forward = record.get("scan_id"), record.get("forward")
        if not forward or scan_id not in cohort.index:
            continue
        t1 = nib.load(qc_file.parent / "t1.nii.gz")
        grid = Grid(float(abs(t1.affine[0, 0])))
        truth_labels = np.asarray(nib.load(demo.ground_truth_dir / "labels" / f"{scan_id}_labels.nii.gz").dataobj)
        raw_labels = nib.load(raw_dir / "truth" / f"{scan_id}_labels.nii.gz")
        fixed = _to_ants(nib.Nifti1Image(np.zeros(grid.shape, np.float32), grid.affine))
        transforms = [str(qc_file.parent / t) for t in forward]
        warped = ants.apply_transforms(fixed, _to_ants(raw_labels), transforms, interpolator="nearestNeighbor").numpy()
        truth = load_truth(raw_dir, scan_id)
        ideal = np.asarray(to_template(raw_labels, truth, grid, order=0).dataobj)
        raw_scan = nib.load(raw_dir / cohort_raw.loc[scan_id, "path"])
        registered = ants.apply_transforms(fixed, _to_ants(raw_scan), transforms, interpolator="linear").numpy()
        true_scan = to_template(raw_scan, truth, grid).get_fdata()
        template_space = nib.load(demo.root / cohort.loc[scan_id, "path"]).get_fdata()
        brain = truth_labels > 0
        atlas_labels = np.asarray(atlas(DEFAULT_ATLAS, grid.resolution)[0].dataobj)
        rows.append({"scan_id": scan_id, "registration": record.get("settings", {}).get("registration"),
                     "status": record.get("status"),
                     "dice_truth": dice(np.rint(warped), truth_labels, hippocampus),
                     "dice_atlas": dice(np.rint(warped), atlas_labels, hippocampus),
                     "dice_ceiling": dice(ideal, truth_labels, hippocampus),
                     "corr_truth": _corr(t1.get_fdata(), template_space, brain),
                     "corr_ceiling": _corr(true_scan, template_space, brain),
                     "corr_alignment": _corr(registered, true_scan, brain)})
    return pd.DataFrame(rows)


def _corr(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    return float(np.corrcoef(a[mask], b[mask])[0, 1])


def _lps(affine: np.ndarray) -> tuple[tuple, np.ndarray]:
    """ITK origin and direction (LPS) of a RAS voxel-to-world affine."""
    flip = np.diag([-1.0, -1.0, 1.0])
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(0))
    return tuple(flip @ affine[:3, 3]), flip @ affine[:3, :3] / zooms


def _to_ants(img: nib.Nifti1Image):
    import ants

    origin, direction = _lps(img.affine)
    return ants.from_numpy(np.asarray(img.dataobj, dtype=np.float32), origin=origin,
                           spacing=tuple(float(z) for z in img.header.get_zooms()[:3]), direction=direction)
