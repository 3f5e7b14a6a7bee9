"""The second embedded demo disease: multiple sclerosis (MS) against healthy controls, with known lesions.

Scans are made as in :mod:`lib.data.demo` (the ICBM152 2009c template warped per subject and visit, with
individual anatomy, site effects and noise), with the MS picture instead of Alzheimer's atrophy:

* T1-hypointense white-matter lesions ("black holes"), about three in five periventricular (cerebral white
  matter 2–10 mm from the lateral ventricles) and the rest juxtacortical (white matter within 4 mm of the
  cortex), as in the McDonald criteria's typical locations. A lesion is a smooth ellipsoid placed in template
  space and warped with the scan, so it stays where it was at later visits; a few appear at later visits.
* some atrophy: enlarged ventricles and a diffuse cortical and deep grey-matter loss (the demo's deformation
  units, subtype ``ms``), milder than in the AD demo.

Ground truth per scan: the lesion mask (``ground_truth/lesions/<scan>_lesions.nii.gz``, listed as the scan's
``atrophy_map`` in ``ground_truth/atrophy.csv`` so that every reader of the demo's ground truth, the
Evaluation page's localisation included, uses the lesions), its lesion load in ml (also the cohort column
``lesion_load``, the Biomarkers page's default measure here) and the number of lesions. Deterministic for a seed.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from lib.core import atomic
from lib.core.progress import Progress
from lib.data import demo
from lib.data.classes import Classes
from lib.data.templates import BRAIN_THRESHOLD
from lib.data.workspace import Workspace

MS_CLASSES = Classes("MS", "HC", positive_title="multiple sclerosis", negative_title="healthy controls")
MS_DEMO_VERSION = 2
_NOT_CORTEX = ("White_Matter", "Vent", "CSF", "Caudate", "Putamen", "Pallidum", "Thalamus", "Accumbens", "Amygdala",
               "Hippocampus", "Cerebellum", "Brain_Stem", "Ventral_DC", "vessel", "Optic", "Basal_Forebrain")


@dataclass
class MSDemoConfig:
    """Parameters of the MS demo cohort (the deformation fields are the AD demo's)."""

    n_subjects: int = 80
    resolution: float = 2.0
    max_visits: int = 3
    seed: int = 0
    ms_fraction: float = 0.5
    atrophy_mm: float = 1.2            # boundary displacement of the affected units at severity 1 (AD demo: 2.2)
    lesions_mean: float = 24.0         # lesions of a patient at severity 1 (Poisson mean)
    lesion_radius_mm: tuple[float, float] = (3.0, 7.0)
    lesion_contrast: tuple[float, float] = (0.45, 0.75)  # T1 intensity lost at a lesion's core
    anatomy_mm: float = 1.5
    individual_mm: float = 0.6
    workers: int = field(default_factory=lambda: max(1, min(2, os.cpu_count() or 1)))


class _Zones:
    """Where lesions go, on the template grid: periventricular and juxtacortical white matter."""

    def __init__(self, fields: "demo._Fields"):
        names = dict(zip(fields.label_table["index"], fields.label_table["name"]))
        lab = fields.labels
        wm = np.isin(lab, [i for i, n in names.items() if n.endswith("Cerebral_White_Matter")])
        vent = np.isin(lab, [i for i, n in names.items() if n.endswith("Lateral_Ventricle")])
        cortex = np.isin(lab, [i for i, n in names.items() if not any(s in n for s in _NOT_CORTEX)])
        r = fields.grid.resolution
        d_vent = ndimage.distance_transform_edt(~vent) * r
        d_ctx = ndimage.distance_transform_edt(~cortex) * r
        self.periventricular = np.argwhere(wm & (d_vent >= 2) & (d_vent <= 10))
        self.juxtacortical = np.argwhere(wm & (d_ctx <= 4) & (d_vent > 10))
        self.wm = ndimage.binary_dilation(wm, iterations=1)


_ZONES: dict[float, _Zones] = {}


def _zones(resolution: float) -> _Zones:
    if resolution not in _ZONES:
        _ZONES[resolution] = _Zones(demo._fields(resolution))
    return _ZONES[resolution]


def _draw_subjects(cfg: MSDemoConfig) -> list[dict]:
    """Demographics, severity and lesions (template voxel, radii, contrast, onset visit) per subject."""
    rng = np.random.default_rng([cfg.seed, 4242])
    zones = _zones(cfg.resolution)
    n_ms = int(round(cfg.n_subjects * cfg.ms_fraction))
    subjects = []
    for i in range(cfg.n_subjects):
        is_ms = i < n_ms
        age = float(np.clip(rng.normal(38.0, 9.0), 20, 65))   # MS is diagnosed young; controls age-matched
        sex = "F" if rng.random() < (0.7 if is_ms else 0.6) else "M"
        severity = float(np.clip(rng.normal(1.0, 0.35), 0.3, 2.0)) if is_ms else 0.0
        lesions = []
        for _ in range(max(1, int(rng.poisson(cfg.lesions_mean * severity))) if is_ms else 0):   # MS: ≥ 1 lesion
            zone = zones.periventricular if rng.random() < 0.6 else zones.juxtacortical
            centre = zone[rng.integers(len(zone))]
            lesions.append({"centre": centre.tolist(), "radii": rng.uniform(*cfg.lesion_radius_mm, size=3).tolist(),
                            "contrast": float(rng.uniform(*cfg.lesion_contrast)),
                            "onset": int(rng.choice([0, 0, 0, 0, 1, 2]))})
        subjects.append({
            "subject_index": i, "diagnosis": MS_CLASSES.positive if is_ms else MS_CLASSES.negative,
            "age": age, "sex": sex, "subtype": "ms" if is_ms else "temporal", "severity": severity,
            "atypical": False, "asymmetry": float(rng.uniform(0.85, 1.15)),
            "progression": float(rng.uniform(0.05, 0.12) if is_ms else 0.0),
            "site": str(rng.choice(list(demo.SITES))), "n_visits": int(rng.integers(1, cfg.max_visits + 1)),
            "lesions": lesions,
        })
    order = rng.permutation(len(subjects))   # MS and HC interleave in the IDs
    for new_i, old_i in enumerate(order):
        subjects[old_i]["subject_id"] = f"sub-{new_i + 1:03d}"
    return sorted(subjects, key=lambda s: s["subject_id"])


def _lesion_field(subject: dict, visit: int, shape, resolution: float, wm: np.ndarray) -> np.ndarray:
    """Lesion contrast (0 = none) on the template grid: smooth ellipsoids kept inside the white matter."""
    out = np.zeros(shape, np.float32)
    for les in subject["lesions"]:
        if les["onset"] > visit:
            continue
        radii = np.asarray(les["radii"]) / resolution
        half = np.ceil(radii + 2).astype(int)
        c = np.asarray(les["centre"])
        lo, hi = np.maximum(c - half, 0), np.minimum(c + half + 1, shape)
        idx = np.indices(hi - lo, dtype=np.float32)
        d2 = sum(((idx[a] + lo[a] - c[a]) / radii[a]) ** 2 for a in range(3))
        blob = np.clip(1.5 - d2, 0, 1).astype(np.float32) * les["contrast"]   # flat core, soft rim
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        out[box] = np.maximum(out[box], blob * wm[box])
    return out


def _make_scan(task: tuple[dict, int, MSDemoConfig, str]) -> dict:
    subject, visit, cfg, root = task
    fields = demo._fields(cfg.resolution)
    grid = fields.grid
    coords, disease, severities, rng = demo._deformation(subject, visit, cfg)
    image = ndimage.map_coordinates(fields.template, coords, order=1, mode="constant", cval=0.0)
    labels = ndimage.map_coordinates(fields.labels, coords, order=0, mode="constant", cval=0)
    contrast = _lesion_field(subject, visit, grid.shape, grid.resolution, _zones(cfg.resolution).wm)
    lesion = ndimage.map_coordinates(contrast, coords, order=1, mode="constant", cval=0.0)
    image *= 1.0 - lesion                                  # T1-hypointense: darker towards grey matter
    mask = (lesion >= 0.15) & (fields.template > BRAIN_THRESHOLD)   # the lesion's core and most of its rim

    image = demo.scanner_effects(image, subject["site"], rng)

    scan_id = f"{subject['subject_id']}_ses-{visit + 1}"
    scan_rel = Path("scans") / f"{scan_id}_T1w.nii.gz"
    lesion_rel = Path("ground_truth") / "lesions" / f"{scan_id}_lesions.nii.gz"
    labels_rel = Path("ground_truth") / "labels" / f"{scan_id}_labels.nii.gz"
    demo.write_scan(Path(root) / scan_rel, image, grid.affine, b"relevance-atlas synthetic MS demo scan")
    atomic.write_nifti(Path(root) / lesion_rel, nib.Nifti1Image(mask.astype(np.uint8), grid.affine))
    atomic.write_nifti(Path(root) / labels_rel, nib.Nifti1Image(labels.astype(np.uint8), grid.affine))
    counts = np.bincount(labels.ravel().astype(np.int64), minlength=int(fields.labels.max()) + 1)
    hippo = sum(float(counts[i]) for i, n in zip(fields.label_table["index"], fields.label_table["name"])
                if n.endswith("_Hippocampus") and i < len(counts)) * grid.voxel_volume
    load = float(mask.sum()) * grid.voxel_volume / 1000.0
    n_lesions = int(ndimage.label(mask)[1])
    sev_now = subject["severity"] * (1.0 + subject["progression"] * visit)
    return {
        "scan": {"subject_id": subject["subject_id"], "scan_id": scan_id, "session": visit + 1, "path": str(scan_rel),
                 "diagnosis": subject["diagnosis"], "age": round(subject["age"] + visit, 1), "sex": subject["sex"],
                 "site": subject["site"], "lesion_load": round(load, 3), "hippocampal_volume": hippo,
                 "intracranial_volume": float(np.count_nonzero(labels)) * grid.voxel_volume, "severity": sev_now},
        "truth": {"scan_id": scan_id, "subtype": subject["subtype"] if subject["severity"] else "none",
                  "severity": round(sev_now, 4), "atypical": False, "atrophy_map": str(lesion_rel),
                  "labels": str(labels_rel), "lesion_load_ml": round(load, 3), "n_lesions": n_lesions,
                  **{f"mm_{u}": round(v, 4) for u, v in severities.items()}},
    }


def _edss(df: pd.DataFrame, seed: int) -> pd.Series:
    """A disability score (EDSS-like, 0–9.5 in half steps) that tracks lesion load and atrophy, with noise."""
    rng = np.random.default_rng([seed, 2718])
    raw = 1.0 + 0.25 * df["lesion_load"] + 1.2 * df["severity"] + rng.normal(0, 0.7, len(df))
    return np.where(df["diagnosis"] == MS_CLASSES.negative, 0.0, np.clip(np.round(raw * 2) / 2, 0, 9.5))


def generate(root: str | os.PathLike, cfg: MSDemoConfig | None = None,
             progress: Progress | None = None) -> Workspace:
    """Build the MS demo workspace at ``root`` (cohort table, scans, lesion masks, splits); the cohort table,
    written last, marks it complete."""
    from lib.data.splits import make_splits, save_splits

    cfg = cfg or MSDemoConfig()
    root = Path(root).expanduser().resolve()
    ws = Workspace.create(root, name="Demo cohort: multiple sclerosis (synthetic)", kind="demo",
                          resolution=cfg.resolution, task=MS_CLASSES.to_json(), disease="ms",
                          biomarker_measure="lesion_load", complete=False,
                          demo_config={k: v for k, v in asdict(cfg).items() if k != "workers"})
    progress = progress or (lambda done, total, msg: None)
    subjects = _draw_subjects(cfg)
    tasks = [(s, v, cfg, str(root)) for s in subjects for v in range(s["n_visits"])]
    progress(0, len(tasks), "preparing template, atlas, deformation fields and lesion zones")
    results = demo.map_scans(_make_scan, tasks, cfg.workers, progress, lambda res: f"scan {res['scan']['scan_id']}")
    cohort = pd.DataFrame([r["scan"] for r in results])
    cohort["edss"] = _edss(cohort, cfg.seed)
    cohort = cohort.drop(columns=["severity"])
    atomic.write_csv(ws.ground_truth_dir / "atrophy.csv", pd.DataFrame([r["truth"] for r in results]))
    save_splits(ws, make_splits(cohort, seed=cfg.seed))
    atomic.write_csv(ws.cohort_csv, cohort)
    ws.update_config(complete=True, n_scans=len(cohort), n_subjects=cfg.n_subjects, demo_version=MS_DEMO_VERSION)
    progress(len(tasks), len(tasks), f"done: {len(cohort)} scans of {cfg.n_subjects} subjects")
    return ws


def is_complete(ws: Workspace) -> bool:
    return (ws.exists and bool(ws.config.get("complete")) and ws.cohort_csv.exists()
            and ws.config.get("disease") == "ms" and ws.config.get("demo_version") == MS_DEMO_VERSION)
