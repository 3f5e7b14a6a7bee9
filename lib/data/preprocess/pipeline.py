"""One raw scan to the template: reorientation, N4, registration (ANTsPy), brain extraction, normalisation, QC.

Per scan, in ``OUT/preprocessed/<scan_id>/``::

    t1.nii.gz          the scan on the template grid (``Grid(resolution)``, the MNI affine of ICBM152 2009c)
    fwd_*              template → scan transforms (ANTs ``apply_transforms(fixed=template, moving=scan)``)
    inv_*              scan → template transforms (``fixed=scan``): maps go back to the patient's anatomy
    mask.nii.gz        the brain in the scan's space: the template brain mask through the inverse transform
    native_grid.nii.gz the scan's own grid (zeros), the space :func:`warp_to_native` writes maps in
    qc.json            status, message, QC measures, settings, the cache key, the transform lists

Registration (ANTsPy 0.6, at the target resolution so that 2 mm stays near 30 s per scan on 2 cores):

- ``none``: Eitel's baseline, pad/crop: the scan (RAS, resampled to the target voxel size) is centred in the
  template's dimensions; one translation, written as an affine so every scan has the same kind of transforms.
- ``linear``: ``type_of_transform="Rigid"`` (6 parameters, initialised by the centres of mass), then
  ``"Affine"`` (12) from there, Mattes mutual information (32 bins, 20 % random sampling), in two stages: the
  head, rigid then affine, at shrink factors 4/2 (smoothing 2/1 voxels, 500/250 iterations), then, from there,
  the brain extracted through it at 2/1 (1/0 voxels, 100/20) with the metric sampled in the template's brain
  mask dilated by 3 voxels; at 1 mm 6/4/2 (3/2/1, 500/250/100), then 4/2/1 (2/1/0, 100/50/10).
- ``nonlinear``: the affine above, then ``"SyNOnly"`` initialised by it on the brain-extracted scan, neighbourhood
  cross-correlation (radius 1 voxel), gradient step 0.2, update/total field smoothing 3/0 voxels, 40/20/0
  iterations at shrink factors 4/2/1 (ANTsPy's; on the 3 mm grid 40/20/10, see :func:`syn_iterations`), the
  metric sampled in the same dilated template brain mask.
  Cross-correlation, the usual metric between two T1 scans, in place of Mattes: on the raw demo (6 scans at
  2 mm) hippocampus Dice against the scan's own labels 0.82 → 0.86 and against the template atlas 0.80 → 0.83,
  alignment correlation 0.953 → 0.968 (every scan ≥ 0.95), for 1.4 s more per scan. A level at full
  resolution (40/20/10) scored alike and took 44 s instead of 17 s per scan at 2 mm.

The scan is brought to the target voxel size anti-aliased (:func:`at_resolution`).

Brain extraction: the template brain mask brought to the scan through the inverse of the affine stage (for
``nonlinear``, the SyN stage then registers the extracted brain); on the template grid the scan is multiplied
by the template brain mask. Intensity normalisation: inside the brain, divided by its 99.5th percentile and
clipped to 0–1 (the template's range). N4 runs on the resampled scan inside a head mask (shrunk to about 6 mm
voxels, 3 fitting levels of 20 iterations).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from lib.core import atomic
from lib.data.preprocess import antsio, qc
from lib.data.preprocess.checks import InputProblem, load_raw
from lib.data.templates import Grid, brain_mask, template

REGISTRATIONS = ("none", "linear", "nonlinear")
RESOLUTIONS = (1, 2, 3)
VERSION = 4
"""Part of every scan's cache key: raise it when the pipeline's output changes."""

PASS_THROUGH_CORR = 0.8
"""A scan that correlates at least this much with the template without registration is already registered
(a raw T1 near MNI space, skull on, scores 0.55–0.6; see :mod:`lib.data.images`)."""

RANDOM_SEED = 20090
HIPPOCAMPUS = (47, 48)   # Neuromorphometrics right and left hippocampus (lib.data.atlases)
HIPPOCAMPUS_REFERENCE = "atlas"   # the hippocampus Dice compares with the template atlas: reported, not judged


def affine_params(resolution: float) -> tuple[dict, dict]:
    """Levels of the affine stages: the head (rigid, then affine), coarse only; then the extracted brain, fine
    levels only."""
    if resolution <= 1:
        return (dict(aff_shrink_factors=(6, 4, 2), aff_smoothing_sigmas=(3, 2, 1), aff_iterations=(500, 250, 100)),
                dict(aff_shrink_factors=(4, 2, 1), aff_smoothing_sigmas=(2, 1, 0), aff_iterations=(100, 50, 10)))
    return (dict(aff_shrink_factors=(4, 2), aff_smoothing_sigmas=(2, 1), aff_iterations=(500, 250)),
            dict(aff_shrink_factors=(2, 1), aff_smoothing_sigmas=(1, 0), aff_iterations=(100, 20)))


AFFINE = dict(type_of_transform="Affine", aff_metric="mattes", aff_sampling=32, aff_random_sampling_rate=0.2)
RIGID = dict(type_of_transform="Rigid")
SYN = dict(type_of_transform="SyNOnly", syn_metric="CC", syn_sampling=1, grad_step=0.2, flow_sigma=3,
           total_sigma=0)


def syn_iterations(resolution: float) -> tuple[int, int, int]:
    """SyN's iterations at shrink factors 4/2/1. On the 3 mm grid the full-resolution level is cheap and
    needed: without it the finest level has 6 mm voxels (a raw demo scan's alignment 0.948 → 0.937 at 3 mm).
    At 2 mm it would cost 44 s instead of 17 s per scan and scored alike; at 1 mm its finest level is 2 mm."""
    return (40, 20, 10) if resolution >= 3 else (40, 20, 0)


@dataclass(frozen=True)
class Settings:
    registration: str = "nonlinear"
    resolution: int = 2
    brain_extraction: bool = True
    threads: int = 1
    """ITK threads per worker process (not part of the result, so not of the cache key)."""

    def __post_init__(self):
        if self.registration not in REGISTRATIONS:
            raise ValueError(f"registration must be one of {', '.join(REGISTRATIONS)}, not {self.registration!r}")
        if self.resolution not in RESOLUTIONS:
            raise ValueError(f"resolution must be one of {RESOLUTIONS} mm, not {self.resolution!r}")
        if self.threads < 1:
            raise ValueError("threads must be at least 1")

    def canonical(self) -> dict:
        return {"registration": self.registration, "resolution": int(self.resolution),
                "brain_extraction": bool(self.brain_extraction), "version": VERSION}


@dataclass
class ScanResult:
    scan_id: str
    status: str
    message: str
    folder: Path
    measures: dict = field(default_factory=dict)
    seconds: float = 0.0
    cached: bool = False

    @property
    def t1(self) -> Path:
        return self.folder / "t1.nii.gz"

    @property
    def usable(self) -> bool:
        return self.status not in qc.EXCLUDED

    def row(self, registration: str) -> dict:
        row = {c: self.measures.get(c, float("nan")) for c in qc.COLUMNS}
        row.update(scan_id=self.scan_id, status=self.status, message=self.message, registration=registration,
                   seconds=round(self.seconds, 2))
        return row


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def scan_key(src: Path, settings: Settings, labels: Path | None = None) -> str:
    """The content key of one scan's result: its file's bytes, the settings and the reference labels."""
    try:
        content = file_digest(src)
    except OSError:
        content = f"missing:{src}"
    parts = {"scan": content, "settings": settings.canonical(),
             "labels": file_digest(labels) if labels and Path(labels).is_file() else None}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def _result(folder: Path, record: dict, cached: bool) -> ScanResult:
    return ScanResult(scan_id=folder.name, status=record["status"], message=record.get("message", ""),
                      folder=folder, measures=record.get("measures", {}), seconds=record.get("seconds", 0.0),
                      cached=cached)


def load_cached(folder: Path, key: str) -> ScanResult | None:
    """The stored result of ``key`` in ``folder`` when it is complete (its qc.json is written last)."""
    record = atomic.read_json(folder / "qc.json") if (folder / "qc.json").is_file() else None
    if not record or record.get("key") != key or record.get("retry"):
        return None
    needed = ([] if record["status"] == "failed" else
              ["t1.nii.gz", "native_grid.nii.gz", *record.get("forward", []), *record.get("inverse", [])])
    if not all((folder / n).is_file() for n in needed):
        return None
    return _result(folder, record, cached=True)


def rejudged(result: ScanResult, src: Path, registration: str) -> ScanResult:
    """A stored registration judged by the current :func:`qc.verdict`: the verdict is a rule over the stored
    measures, so a changed rule needs no new registration. Input failures and passed-through scans stay."""
    if result.status == "passed_through" or not result.measures or not result.t1.is_file():
        return result
    status, message = qc.verdict(result.measures, registration, HIPPOCAMPUS_REFERENCE)
    result.status, result.message = status, f"{src}: {message}" if message else ""
    return result


def preprocess_scan(src: str | os.PathLike, settings: Settings, out_dir: str | os.PathLike, *,
                    labels: str | os.PathLike | None = None) -> ScanResult:
    """Preprocess one scan into ``out_dir`` (``…/preprocessed/<scan_id>``; its name is the scan id).

    ``labels``: an optional segmentation in the scan's space with Neuromorphometrics hippocampus labels (the
    raw demo's ground truth) for the hippocampus Dice. A result of the same input bytes and settings is reused;
    the folder is written under a temporary name and renamed, so it is whole or absent. Never raises for a bad
    scan: the result's status is "failed" and its message names the file and the problem."""
    src, out_dir = Path(src), Path(out_dir)
    labels = Path(labels) if labels else None
    key = scan_key(src, settings, labels)
    cached = load_cached(out_dir, key)
    if cached:
        return rejudged(cached, src, settings.registration)
    start = time.perf_counter()
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        try:
            record = _register(src, settings, tmp, labels)
        except InputProblem as exc:
            record = {"status": "failed", "message": str(exc)}
        except Exception as exc:  # an ITK error on an odd input: this scan fails, the batch goes on
            record = {"status": "failed", "retry": True,
                      "message": f"{src}: preprocessing failed ({type(exc).__name__}: "
                                 f"{' '.join(str(exc).split())[:200]})"}
        record.update(scan_id=out_dir.name, source=str(src), key=key, settings=settings.canonical(),
                      seconds=time.perf_counter() - start)
        for leftover in tmp.glob("ants_*"):
            leftover.unlink()
        atomic.write_json(tmp / "qc.json", record)
        _replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _result(out_dir, record, cached=False)


def _replace(tmp: Path, folder: Path) -> None:
    old = folder.parent / f".{folder.name}.old-{os.getpid()}"
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def already_registered(img: nib.Nifti1Image, data: np.ndarray) -> tuple[bool, str]:
    """Whether a scan is already on a template grid or correlates with the template without registration."""
    from lib.data.images import load_on_grid, template_correlation

    for r in RESOLUTIONS:
        if Grid(r).matches(img):
            return True, f"already on the {r} mm template grid"
    on_grid, _ = load_on_grid(nib.Nifti1Image(data, img.affine), Grid(3))
    corr = template_correlation(np.asarray(on_grid.dataobj), 3)
    if np.isfinite(corr) and corr >= PASS_THROUGH_CORR:
        return True, f"already registered (correlation {corr:.2f} with the template without registration)"
    return False, ""


def _register(src: Path, settings: Settings, out: Path, labels: Path | None) -> dict:
    import ants

    img, data = load_raw(src)
    r = float(settings.resolution)
    grid = Grid(r)
    fixed = antsio.from_nib(template(r))
    tmask = brain_mask(r)
    nib.save(nib.Nifti1Image(np.zeros(img.shape, np.uint8), img.affine), out / "native_grid.nii.gz")
    passed, note = already_registered(img, data)
    moving = antsio.from_nib(nib.as_closest_canonical(img))   # reoriented to RAS
    if not passed:
        moving = at_resolution(moving, r)
        moving = ants.n4_bias_field_correction(moving, mask=ants.get_mask(moving),
                                               shrink_factor=max(2, round(6 / r)),
                                               convergence={"iters": [20, 20, 20], "tol": 1e-4})
    if passed or settings.registration == "none":
        forward, inverse = _centre(moving, fixed, out, identity=passed)
    else:
        forward, inverse = _ants_register(moving, fixed, tmask, settings, out)
    warped = ants.apply_transforms(fixed, moving, [str(out / t) for t in forward], interpolator="linear",
                                   whichtoinvert=[False] * len(forward))
    head = warped.numpy()
    measures = _measures(head, tmask, r, settings, out, forward, labels, fixed)
    t1 = np.where(tmask, head, 0) if settings.brain_extraction else head
    inside = t1[tmask]
    scale = float(np.percentile(inside, 99.5)) if inside.size else 0.0
    t1 = np.clip(t1 / scale, 0, 1) if scale > 0 else np.zeros_like(t1)
    nib.save(nib.Nifti1Image(t1.astype(np.float32), grid.affine), out / "t1.nii.gz")
    native_mask = ants.apply_transforms(moving, antsio.from_nib(template(r), tmask.astype(np.float32)),
                                        [str(out / t) for t in inverse], interpolator="nearestNeighbor",
                                        whichtoinvert=[False] * len(inverse))
    nib.save(antsio.to_nib(native_mask, dtype=np.uint8), out / "mask.nii.gz")
    status, message = qc.verdict(measures, settings.registration, HIPPOCAMPUS_REFERENCE)
    if passed:
        status, message = "passed_through", f"{src}: {note}; passed through without registration" + (
            f" ({message})" if message else "")
    elif message:
        message = f"{src}: {message}"
    return {"status": status, "message": message, "measures": measures, "forward": forward,
            "inverse": inverse}


def at_resolution(image, r: float):
    """``image`` resampled (linear) to ``r`` mm voxels, anti-aliased: a Gaussian of FWHM √(r² − s²) per axis of
    voxel size ``s`` first, so a finer scan's voxels are averaged rather than every (r/s)-th picked, which
    would depend on where the head lies in the grid (Colin27 moved comes back closer to Colin27 unmoved)."""
    import ants

    spacing = np.asarray(image.spacing, dtype=float)
    if np.allclose(spacing, r, atol=1e-3):
        return image
    fwhm = np.sqrt(np.clip(r ** 2 - spacing ** 2, 1e-6, None))
    smooth = ants.smooth_image(image, [float(f) for f in fwhm], sigma_in_physical_coordinates=True, FWHM=True)
    return ants.resample_image(smooth, (r, r, r), use_voxels=False, interp_type=0)


def _centre(moving, fixed, out: Path, identity: bool) -> tuple[list[str], list[str]]:
    """Pad/crop as one transform: the scan's voxel array centred in the template's (whole voxels), or the
    identity for a scan already in template space."""
    if identity:
        matrix = np.eye(4)
    else:
        a_s, a_t = antsio.affine_of(moving), antsio.affine_of(fixed)
        shift = np.eye(4)
        shift[:3, 3] = -np.round((np.asarray(fixed.shape) - np.asarray(moving.shape)) / 2)
        matrix = a_s @ shift @ np.linalg.inv(a_t)
    antsio.write_affine(out / "fwd_affine.mat", matrix)
    antsio.write_affine(out / "inv_affine.mat", np.linalg.inv(matrix))
    return ["fwd_affine.mat"], ["inv_affine.mat"]


def _ants_register(moving, fixed, tmask: np.ndarray, settings: Settings, out: Path
                   ) -> tuple[list[str], list[str]]:
    import ants

    # a fixed seed for the metric's random sampling: the same scan registers the same way every time
    # (ANTsPy passes --random-seed only from this setting; set_ants_deterministic would also force 1 thread)
    ants.config._random_seed = RANDOM_SEED
    prefix = str(out / "ants_")
    coarse, fine = affine_params(fixed.spacing[0])
    # rigid first: twelve parameters started from the centres of mass alone can settle in a turned or
    # flipped minimum (Colin27 moved by 12-14° correlated 0.16 with the template, its brain box still in place)
    rigid = ants.registration(fixed, moving, outprefix=prefix + "rigid_", **{**AFFINE, **coarse, **RIGID})
    head = ants.registration(fixed, moving, initial_transform=rigid["fwdtransforms"][0], outprefix=prefix + "head_",
                             **AFFINE, **coarse)
    brain = moving
    if settings.brain_extraction:
        mask = ants.apply_transforms(moving, fixed.new_image_like(tmask.astype(np.float32)), head["invtransforms"],
                                     interpolator="nearestNeighbor", whichtoinvert=[True])
        brain = moving * ants.iMath(mask, "MD", 2)   # a margin for the first affine's error
    # the affine refined on the extracted brain: the template has no skull, so the head alone leaves
    # the scaling loose (Colin27 moved by a known affine comes back markedly closer)
    # the metric sampled in the template's brain (a margin around it) only: the rest of the grid is the
    # extracted scan's zeros against the template's, which says little and cost most of the stage's time
    region = ants.iMath(fixed.new_image_like(tmask.astype(np.float32)), "MD", 3) if settings.brain_extraction else None
    aff = ants.registration(fixed, brain, initial_transform=head["fwdtransforms"][0], outprefix=prefix + "aff_",
                            mask=region, **AFFINE, **fine)
    shutil.move(aff["fwdtransforms"][0], out / "fwd_affine.mat")
    antsio.write_inverse_affine(out / "fwd_affine.mat", out / "inv_affine.mat")
    if settings.registration == "linear":
        return ["fwd_affine.mat"], ["inv_affine.mat"]
    syn = ants.registration(fixed, brain, initial_transform=str(out / "fwd_affine.mat"), outprefix=prefix + "syn_",
                            mask=region, reg_iterations=syn_iterations(fixed.spacing[0]), **SYN)
    warp = [t for t in syn["fwdtransforms"] if t.endswith("Warp.nii.gz")][0]
    inv_warp = [t for t in syn["invtransforms"] if t.endswith("InverseWarp.nii.gz")][0]
    shutil.move(warp, out / "fwd_warp.nii.gz")
    shutil.move(inv_warp, out / "inv_warp.nii.gz")
    return ["fwd_warp.nii.gz", "fwd_affine.mat"], ["inv_affine.mat", "inv_warp.nii.gz"]


def _measures(head: np.ndarray, tmask: np.ndarray, r: float, settings: Settings, out: Path, forward: list[str],
              labels: Path | None, fixed) -> dict:
    import ants

    from lib.data.templates import atlas

    tpl = np.asarray(template(r).dataobj)
    extracted = np.where(tmask, head, 0)
    measures = {"corr_template": qc.correlation(extracted, tpl, tmask),
                "dice_brain": qc.dice(qc.tissue_mask(head, tmask), tmask)}
    if labels is not None:
        warped = ants.apply_transforms(fixed, antsio.from_nib(nib.load(str(labels))),
                                       [str(out / t) for t in forward], interpolator="nearestNeighbor",
                                       whichtoinvert=[False] * len(forward))
        reference = np.isin(np.asarray(atlas("neuromorphometrics", r)[0].dataobj), HIPPOCAMPUS)
        measures["dice_hippocampus"] = qc.dice(np.isin(np.rint(warped.numpy()), HIPPOCAMPUS), reference)
    if "fwd_warp.nii.gz" in forward:
        jac = ants.create_jacobian_determinant_image(fixed, str(out / "fwd_warp.nii.gz"), do_log=False)
        measures.update(qc.jacobian_stats(jac.numpy(), tmask))
    return measures
