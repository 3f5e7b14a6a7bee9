"""The embedded demo cohort: synthetic but anatomically real scans with known atrophy.

Every scan is the ICBM152 2009c template warped by one displacement field,
the sum of

* an individual smooth random deformation (anatomy varies between subjects),
* age-related atrophy (ventricles expand, the whole brain shrinks slightly),
* for AD (and a few "mild" controls) region-specific atrophy in temporal-lobe
  structures, plus frontal or parietal involvement for some subtypes.

Region atrophy is produced by deformation, not by painting intensities: for a
region R with smoothed indicator φ_R = G_σ * 1_R, sampling the template at
``x − k ∇φ_R(x)`` pulls the region's boundary inwards (tissue shrinks) and
stretches its surroundings (CSF and sulci grow). Expanding ventricles use the
opposite sign. The Neuromorphometrics labels are warped by the same field with
nearest-neighbour sampling, so every region volume in the ground truth is
exactly the deformed label count × voxel volume of the saved image.

Scanner effects per site (contrast, gain, bias field, Rician noise) make the
intensities realistic enough that intensity normalisation matters.

Everything is deterministic for a seed and independent of the number of worker
processes: each scan draws from its own ``numpy`` generator seeded by
``(seed, subject, visit)``.
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
from lib.data.templates import BRAIN_THRESHOLD, Grid, atlas, template
from lib.data.workspace import Workspace
from lib.data.atlases import DEFAULT_ATLAS
from lib.data.classes import DEFAULT_CLASSES

POSITIVE, NEGATIVE = DEFAULT_CLASSES.positive, DEFAULT_CLASSES.negative



# Bumped whenever the generator's output changes, so an older demo workspace is rebuilt.
DEMO_VERSION = 2

# Units of atrophy: (name, atlas labels). Left and right are separate units so
# that severity can be asymmetric, as in real patients.
TEMPORAL_CORE = ["Hippocampus", "Amygdala", "Ent_entorhinal_area", "PHG_parahippocampal_gyrus"]
TEMPORAL_NEOCORTEX = ["ITG_inferior_temporal_gyrus", "MTG_middle_temporal_gyrus"]
FRONTAL = ["MFG_middle_frontal_gyrus", "SFG_superior_frontal_gyrus", "TrIFG_triangular_part_of_the_inferior_frontal_gyrus",
           "OrIFG_orbital_part_of_the_inferior_frontal_gyrus"]
PARIETAL = ["PCu_precuneus", "AnG_angular_gyrus", "SPL_superior_parietal_lobule", "SMG_supramarginal_gyrus",
            "PCgG_posterior_cingulate_gyrus"]
VENTRICLES = ["Lateral_Ventricle", "Inf_Lat_Vent"]
HEMIS = ("Left", "Right")

# How strongly each subtype affects each group of regions (× subject severity).
SUBTYPES = {
    "temporal": {"core": 1.0, "neo": 0.7, "frontal": 0.0, "parietal": 0.1},
    "frontal": {"core": 0.7, "neo": 0.5, "frontal": 0.9, "parietal": 0.1},
    "parietal": {"core": 0.7, "neo": 0.5, "frontal": 0.1, "parietal": 0.9},
    # the MS demo (lib.data.demo_ms): diffuse, milder grey-matter loss; never drawn for AD
    "ms": {"core": 0.4, "neo": 0.5, "frontal": 0.6, "parietal": 0.6},
}
SUBTYPE_P = {"temporal": 0.6, "frontal": 0.2, "parietal": 0.2}
SITES = {  # contrast (gamma), gain, noise σ (fraction of max), bias-field strength
    "site-A": (1.00, 1000.0, 0.020, 0.08),
    "site-B": (0.85, 850.0, 0.030, 0.12),
    "site-C": (1.15, 1200.0, 0.025, 0.10),
}


@dataclass
class DemoConfig:
    """Parameters of the demo cohort. Defaults build in about a minute on 2 CPU cores."""

    n_subjects: int = 80
    resolution: float = 2.0
    max_visits: int = 3
    seed: int = 0
    ad_fraction: float = 0.5
    # mean displacement (mm) of an AD subject's temporal-core boundary at severity 1
    atrophy_mm: float = 2.2
    # fraction of AD subjects with little atrophy and of HC subjects with mild AD-like atrophy
    mild_ad_fraction: float = 0.15
    atrophic_hc_fraction: float = 0.15
    anatomy_mm: float = 1.5
    # SD of individual region size, as a boundary displacement in mm (HC hippocampus ≈ ±10 %)
    individual_mm: float = 0.6
    workers: int = field(default_factory=lambda: max(1, min(2, os.cpu_count() or 1)))


# --------------------------------------------------------------------------- fields
class _Fields:
    """Per-grid precomputation shared by all scans (built once, read by workers)."""

    def __init__(self, resolution: float):
        self.grid = Grid(resolution)
        self.template = template(resolution).get_fdata(dtype=np.float32)
        labels_img, self.label_table = atlas(DEFAULT_ATLAS, resolution)  # its region names place the atrophy
        self.labels = np.asarray(labels_img.dataobj).astype(np.int16)
        name_to_index = dict(zip(self.label_table["name"], self.label_table["index"]))
        r = float(resolution)
        self.units: dict[str, np.ndarray] = {}   # unit name -> potential φ (float32), normalised
        self.unit_group: dict[str, str] = {}
        groups = {"core": TEMPORAL_CORE, "neo": TEMPORAL_NEOCORTEX, "frontal": FRONTAL,
                  "parietal": PARIETAL, "ventricles": VENTRICLES}
        sigma = max(3.0 / r, 1.0)  # smoothing of ≈3 mm: deformation follows each region's shape
        for group, regions in groups.items():
            for region in regions:
                for hemi in HEMIS:
                    idx = name_to_index.get(f"{hemi}_{region}")
                    if idx is None:
                        continue
                    mask = (self.labels == idx).astype(np.float32)
                    phi = ndimage.gaussian_filter(mask, sigma)
                    # scale so that max |∇φ| (in voxels) is 1: severity is then a displacement in voxels
                    g = np.sqrt(sum(gi ** 2 for gi in np.gradient(phi)))
                    phi /= max(float(g.max()), 1e-6)
                    self.units[f"{hemi}_{region}"] = phi
                    self.unit_group[f"{hemi}_{region}"] = group
        brain = (self.template > BRAIN_THRESHOLD).astype(np.float32)
        phi = ndimage.gaussian_filter(brain, max(8.0 / r, 2.0))
        g = np.sqrt(sum(gi ** 2 for gi in np.gradient(phi)))
        self.brain_phi = phi / max(float(g.max()), 1e-6)
        self.coords = np.indices(self.grid.shape, dtype=np.float32)


_FIELDS: _Fields | None = None


def _fields(resolution: float) -> _Fields:
    global _FIELDS
    if _FIELDS is None or _FIELDS.grid.resolution != resolution:
        _FIELDS = _Fields(resolution)
    return _FIELDS


def _smooth_noise(rng: np.random.Generator, shape, coarse: int, amplitude: float) -> np.ndarray:
    """A smooth random field: Gaussian noise on a coarse grid, cubic-upsampled to ``shape``."""
    small = rng.standard_normal((coarse,) * 3).astype(np.float32)
    zoom = [s / coarse for s in shape]
    # trilinear: a cubic spline costs 6× more at 1M voxels for no visible gain at this smoothness
    field = ndimage.zoom(small, zoom, order=1, mode="nearest", grid_mode=True)[: shape[0], : shape[1], : shape[2]]
    field = field / max(float(np.abs(field).max()), 1e-6)
    return amplitude * field


# --------------------------------------------------------------------------- subjects
def _draw_subjects(cfg: DemoConfig) -> list[dict]:
    """Demographics and disease parameters per subject (ADNI/OASIS-like distributions)."""
    rng = np.random.default_rng([cfg.seed, 7919])
    n_ad = int(round(cfg.n_subjects * cfg.ad_fraction))
    subjects = []
    for i in range(cfg.n_subjects):
        is_ad = i < n_ad
        age = float(np.clip(rng.normal(75.0 if is_ad else 76.0, 7.5 if is_ad else 6.0), 60, 93))
        sex = "F" if rng.random() < (0.47 if is_ad else 0.52) else "M"
        if is_ad:
            subtype = rng.choice(list(SUBTYPE_P), p=list(SUBTYPE_P.values()))
            mild = rng.random() < cfg.mild_ad_fraction
            severity = float(rng.uniform(0.15, 0.35) if mild else np.clip(rng.normal(1.0, 0.3), 0.45, 1.8))
        else:
            subtype = "temporal"
            mild = rng.random() < cfg.atrophic_hc_fraction
            severity = float(rng.uniform(0.35, 0.6)) if mild else 0.0
        n_visits = int(rng.integers(1, cfg.max_visits + 1))
        subjects.append({
            "subject_index": i,
            "subject_id": f"sub-{i + 1:03d}",
            "diagnosis": POSITIVE if is_ad else NEGATIVE,
            "age": age, "sex": sex, "subtype": str(subtype), "severity": severity,
            "atypical": bool(mild),
            "asymmetry": float(rng.uniform(0.75, 1.25)),  # left/right ratio
            "progression": float(rng.uniform(0.08, 0.18) if is_ad else rng.uniform(0.0, 0.04)),
            "site": str(rng.choice(list(SITES))),
            "n_visits": n_visits,
        })
    # shuffle subject order so AD and HC interleave in IDs
    order = rng.permutation(len(subjects))
    for new_i, old_i in enumerate(order):
        subjects[old_i]["subject_id"] = f"sub-{new_i + 1:03d}"
    return sorted(subjects, key=lambda s: s["subject_id"])


def _unit_severities(subject: dict, visit: int, fields: _Fields, cfg: DemoConfig,
                     rng: np.random.Generator) -> tuple[dict[str, float], dict[str, float]]:
    """Boundary displacement in mm per unit: (disease atrophy, individual size + ageing).

    The first dict is the ground truth (what the classifier should find); the
    second is normal anatomy: region sizes that vary between healthy people
    (fixed across visits; negative = larger) and ventricles that grow with age.
    """
    years = visit
    sev = subject["severity"] * (1.0 + subject["progression"] * years) if subject["severity"] > 0 else 0.0
    weights = SUBTYPES[subject["subtype"]]
    indiv_rng = np.random.default_rng([cfg.seed, subject["subject_index"], 20_000])
    age = subject["age"] + years
    disease, normal = {}, {}
    for unit, group in fields.unit_group.items():
        hemi = unit.split("_", 1)[0]
        lateral = subject["asymmetry"] if hemi == "Left" else 1.0 / subject["asymmetry"]
        size = cfg.individual_mm * float(indiv_rng.normal())
        if group == "ventricles":
            # ventricles grow with age and with disease (both count as normal-looking anatomy here)
            normal[unit] = -(0.04 * max(age - 60.0, 0.0) + 1.2 * sev) * lateral ** 0.5 + 2 * size
        else:
            jitter = float(np.exp(rng.normal(0.0, 0.15)))  # region-level individuality of the disease
            disease[unit] = cfg.atrophy_mm * sev * weights[group] * lateral * jitter
            normal[unit] = size
    return disease, normal


def _deformation(subject: dict, visit: int, cfg: DemoConfig):
    """Sampling coordinates of one scan, its disease-only displacement, unit severities and its RNG."""
    fields = _fields(cfg.resolution)
    grid = fields.grid
    r = float(cfg.resolution)
    rng = np.random.default_rng([cfg.seed, subject["subject_index"], visit])
    # individual anatomy stays fixed across visits: its generator ignores the visit
    anat_rng = np.random.default_rng([cfg.seed, subject["subject_index"], 10_000])

    severities, normal = _unit_severities(subject, visit, fields, cfg, rng)
    # φ of the disease-specific atrophy (the ground truth) and of normal anatomy and ageing
    phi_disease = np.zeros(grid.shape, np.float32)
    phi_ageing = np.zeros(grid.shape, np.float32)
    for unit, s_mm in severities.items():
        if s_mm:
            phi_disease += (s_mm / r) * fields.units[unit]
    for unit, s_mm in normal.items():
        phi_ageing += (s_mm / r) * fields.units[unit]
    age = subject["age"] + visit
    phi_ageing += (0.02 * max(age - 60.0, 0.0) / r) * fields.brain_phi
    # displacement in voxels; sampling the template at x − ∇φ shrinks tissue where φ peaks
    disease = [-g for g in np.gradient(phi_disease)]
    ageing = [-g for g in np.gradient(phi_ageing)]
    anatomy = [_smooth_noise(anat_rng, grid.shape, 6, cfg.anatomy_mm / r) for _ in range(3)]
    coords = [fields.coords[a] + disease[a] + ageing[a] + anatomy[a] for a in range(3)]
    return coords, disease, severities, rng


def _deformed_labels(subject: dict, visit: int, cfg: DemoConfig) -> np.ndarray:
    coords, *_ = _deformation(subject, visit, cfg)
    return ndimage.map_coordinates(_fields(cfg.resolution).labels, coords, order=0, mode="constant", cval=0)


def _make_scan(task: tuple[dict, int, DemoConfig]) -> dict:
    subject, visit, cfg = task
    fields = _fields(cfg.resolution)
    grid = fields.grid
    coords, disease, severities, rng = _deformation(subject, visit, cfg)
    age = subject["age"] + visit

    image = ndimage.map_coordinates(fields.template, coords, order=1, mode="constant", cval=0.0)
    labels = ndimage.map_coordinates(fields.labels, coords, order=0, mode="constant", cval=0)

    # ground-truth atrophy map of the disease alone: sampling x → x + d compresses content
    # where det J > 1, so the local volume loss is det J − 1 (clipped at 0)
    jac = _jacobian_det(disease)
    atrophy_map = np.clip(jac - 1.0, 0.0, None).astype(np.float32)
    atrophy_map *= fields.template > BRAIN_THRESHOLD

    image = scanner_effects(image, subject["site"], rng)

    scan_id = f"{subject['subject_id']}_ses-{visit + 1}"
    scan_rel = Path("scans") / f"{scan_id}_T1w.nii.gz"
    atrophy_rel = Path("ground_truth") / "atrophy" / f"{scan_id}_atrophy.nii.gz"
    labels_rel = Path("ground_truth") / "labels" / f"{scan_id}_labels.nii.gz"
    write_scan(cfg_root(cfg) / scan_rel, image, grid.affine, b"relevance-atlas synthetic demo scan")
    amap = nib.Nifti1Image(atrophy_map, grid.affine)
    amap.set_data_dtype(np.int16)  # nibabel chooses scl_slope: ≈1e-5 precision, a quarter of the bytes
    atomic.write_nifti(cfg_root(cfg) / atrophy_rel, amap)
    # the deformed Neuromorphometrics labels: a per-scan segmentation with exact region volumes
    atomic.write_nifti(cfg_root(cfg) / labels_rel, nib.Nifti1Image(labels.astype(np.uint8), grid.affine))

    counts = np.bincount(labels.ravel().astype(np.int64), minlength=int(fields.labels.max()) + 1)
    volumes = {name: float(counts[idx]) * grid.voxel_volume
               for idx, name in zip(fields.label_table["index"], fields.label_table["name"]) if idx < len(counts)}
    sev_now = subject["severity"] * (1.0 + subject["progression"] * visit) if subject["severity"] > 0 else 0.0
    return {
        "scan": {
            "subject_id": subject["subject_id"], "scan_id": scan_id, "session": visit + 1,
            "path": str(scan_rel), "diagnosis": subject["diagnosis"],
            "age": round(age, 1), "sex": subject["sex"], "site": subject["site"],
            "severity": sev_now,
        },
        "volumes": {"scan_id": scan_id, **volumes},
        "atrophy": {"scan_id": scan_id, "subtype": subject["subtype"], "severity": round(sev_now, 4),
                    "atypical": subject["atypical"], "atrophy_map": str(atrophy_rel),
                    "labels": str(labels_rel),
                    **{f"mm_{u}": round(v, 4) for u, v in severities.items()}},
        "intracranial_volume": float(np.count_nonzero(labels)) * grid.voxel_volume,
    }


def scanner_effects(image: np.ndarray, site: str, rng: np.random.Generator) -> np.ndarray:
    """A site's contrast, bias field and Rician noise applied to a noiseless image (float32)."""
    gamma, gain, noise, bias = SITES[site]
    image = np.clip(image, 0, None) ** gamma
    image *= 1.0 + _smooth_noise(rng, image.shape, 3, bias)
    sigma_n = noise * float(image.max())
    image = np.sqrt((image + rng.normal(0, sigma_n, image.shape)) ** 2 + rng.normal(0, sigma_n, image.shape) ** 2)
    return (gain * image).astype(np.float32)


def write_scan(path: Path, image: np.ndarray, affine: np.ndarray, descrip: bytes) -> None:
    """A synthetic scan as int16 NIfTI in mm, written atomically."""
    img = nib.Nifti1Image(np.rint(image).clip(0, 32767).astype(np.int16), affine)
    img.header.set_xyzt_units("mm")
    img.header["descrip"] = descrip
    atomic.write_nifti(path, img)


def map_scans(make, tasks: list, workers: int, progress, describe) -> list:
    """``make`` over ``tasks`` in order, in ``workers`` forked processes when more than one, with progress."""
    results = []
    if workers > 1:
        import multiprocessing as mp

        # Pool.__exit__ terminates the workers, so a cancelled build stops at once
        with mp.get_context("fork").Pool(workers, initializer=_worker_init) as pool:
            for res in pool.imap(make, tasks, chunksize=2):
                results.append(res)
                progress(len(results), len(tasks), describe(res))
    else:
        for task in tasks:
            results.append(make(task))
            progress(len(results), len(tasks), describe(results[-1]))
    return results


def _worker_init() -> None:
    # workers die on SIGTERM (cancel) instead of inheriting the job's "cancelled" handler
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def cfg_root(cfg: DemoConfig) -> Path:
    return Path(cfg._root)  # type: ignore[attr-defined]


def _jacobian_det(disp: list[np.ndarray]) -> np.ndarray:
    """det of ∂(x + d)/∂x for a displacement field d given in voxels."""
    g = [np.gradient(d) for d in disp]  # g[i][j] = ∂d_i/∂x_j
    a = [[g[i][j] + (1.0 if i == j else 0.0) for j in range(3)] for i in range(3)]
    return (a[0][0] * (a[1][1] * a[2][2] - a[1][2] * a[2][1])
            - a[0][1] * (a[1][0] * a[2][2] - a[1][2] * a[2][0])
            + a[0][2] * (a[1][0] * a[2][1] - a[1][1] * a[2][0]))


# --------------------------------------------------------------------------- clinical scores
def _clinical(df: pd.DataFrame, seed: int) -> pd.DataFrame:
    """MMSE and CDR that track atrophy (HC ≈ 29, AD ≈ 23 as in ADNI), with noise."""
    rng = np.random.default_rng([seed, 31337])
    sev = df["severity"].to_numpy()
    mmse = 29.3 - 5.5 * sev + rng.normal(0, 1.2, len(df))
    mmse = np.where(df["diagnosis"] == NEGATIVE, np.clip(mmse, 25, 30), np.clip(mmse, 12, 28))
    df["mmse"] = np.rint(mmse).astype(int)
    cdr = np.where(df["diagnosis"] == NEGATIVE, 0.0, np.where(sev > 1.2, 2.0, 1.0))
    df["cdr"] = cdr
    return df


# --------------------------------------------------------------------------- entry point
def generate(root: str | os.PathLike, cfg: DemoConfig | None = None,
             progress: Progress | None = None) -> Workspace:
    """Build the demo workspace at ``root`` (cohort table, scans, ground truth, splits).

    Files are written atomically; the cohort table, written last, marks the
    workspace as complete, so an interrupted build is simply rebuilt.
    """
    from lib.data.splits import make_splits, save_splits

    cfg = cfg or DemoConfig()
    root = Path(root).expanduser().resolve()
    ws = Workspace.create(root, name="Demo cohort (synthetic)", kind="demo", resolution=cfg.resolution,
                          demo_config={k: v for k, v in asdict(cfg).items() if k != "workers"}, complete=False)
    cfg._root = str(root)  # type: ignore[attr-defined]
    progress = progress or (lambda done, total, msg: None)

    subjects = _draw_subjects(cfg)
    tasks = [(s, v, cfg) for s in subjects for v in range(s["n_visits"])]
    total = len(tasks)
    progress(0, total, "preparing template, atlas and deformation fields")
    _fields(cfg.resolution)  # build once before forking so workers share it copy-on-write

    results = map_scans(_make_scan, tasks, cfg.workers, progress, lambda res: f"scan {res['scan']['scan_id']}")

    cohort = pd.DataFrame([r["scan"] for r in results])
    volumes = pd.DataFrame([r["volumes"] for r in results])
    cohort["hippocampal_volume"] = volumes["Left_Hippocampus"] + volumes["Right_Hippocampus"]
    cohort["intracranial_volume"] = [r["intracranial_volume"] for r in results]
    cohort = _clinical(cohort, cfg.seed).drop(columns=["severity"])
    atrophy = pd.DataFrame([r["atrophy"] for r in results])

    atomic.write_csv(ws.ground_truth_dir / "region_volumes.csv", volumes)
    atomic.write_csv(ws.ground_truth_dir / "atrophy.csv", atrophy)
    save_splits(ws, make_splits(cohort, seed=cfg.seed))
    atomic.write_csv(ws.cohort_csv, cohort)
    ws.update_config(complete=True, n_scans=len(cohort), n_subjects=cfg.n_subjects, demo_version=DEMO_VERSION)
    progress(total, total, f"done: {len(cohort)} scans of {cfg.n_subjects} subjects")
    return ws


def expected_scans(cfg: DemoConfig) -> int:
    """How many scans :func:`generate` makes with ``cfg`` (subjects × their visits; drawn, nothing built)."""
    return sum(s["n_visits"] for s in _draw_subjects(cfg))


def is_complete(ws: Workspace) -> bool:
    """The demo workspace is built by the current generator (of its disease: AD here, MS in demo_ms)."""
    if ws.config.get("disease", "ad") != "ad":
        from lib.data import demo_ms

        return demo_ms.is_complete(ws)
    return (ws.exists and bool(ws.config.get("complete")) and ws.cohort_csv.exists()
            and ws.config.get("demo_version") == DEMO_VERSION)
