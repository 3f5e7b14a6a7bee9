"""The report's methods paragraph: every setting its results depend on, read from the run's stored
configuration and the caches' stored parameters, then written as prose."""

from __future__ import annotations

from lib.core import atomic
from lib.data.workspace import Workspace
from lib.data.classes import DEFAULT_CLASSES

from lib.views.report.model import (CROSSHAIR_MNI, FINGERPRINT_MIN_SCORE, OVERLAP_K, PERMUTATIONS, SPLIT, TOP_K,
                                    _store_label)


def stored_settings(ws: Workspace, run, stores, atlas, evaluation: dict, biomarker: dict) -> dict:
    """Every setting the report's results depend on, as stored by the run and the caches."""
    tc = run.config.get("train", {})
    parts = run.config.get("parts", {})
    summ = run.summary() or {}
    return {
        "run": run.id, "checkpoint_sha256": run.checkpoint_hash() if run.best_checkpoint.exists() else None,
        "model": tc.get("model"), "resolution_mm": run.config.get("resolution"),
        "input_shape": run.config.get("input_shape"), "train": tc, "normaliser": run.config.get("normaliser"),
        "subjects_per_part": {k: len(v) for k, v in parts.items()}, "best_epoch": summ.get("best_epoch"),
        "epochs_run": summ.get("epochs_run"), "stopped": summ.get("stopped"), "torch": run.config.get("torch"),
        "cohort_fingerprint": run.config.get("cohort_fingerprint"), "workspace": ws.name, "workspace_kind": ws.kind,
        "n_scans": ws.config.get("n_scans"), "workspace_resolution_mm": ws.config.get("resolution"),
        "demo_config": ws.config.get("demo_config") if ws.is_demo else None, "split": _split_settings(ws),
        "heatmaps": [{"store": s.folder.name, "label": _store_label(s), "method": s.params.get("method"),
                      "params": {k: v for k, v in s.params.items() if k != "method"},
                      "target": s.meta.get("target", run.classes.positive), "scans": len(s)} for s in stores],
        "atlas": {"name": atlas.name, "regions": int(atlas.n_regions), "resolution_mm": atlas.resolution}
        if atlas is not None else None,
        "split_analysed": SPLIT, "top_k": TOP_K, "overlap_k": OVERLAP_K, "permutations": PERMUTATIONS,
        "fingerprint_min_score": FINGERPRINT_MIN_SCORE, "crosshair_mni": list(CROSSHAIR_MNI),
        "biomarker": biomarker, "evaluation": evaluation, "task": run.classes.to_json(),
        "device": (atomic.read_json(run.dir / "state.json") or {}).get("device"),
        "init_from": run.config.get("init_from"),
    }



def _split_settings(ws: Workspace) -> dict | None:
    d = atomic.read_json(ws.splits_json)
    if not d:
        return None
    return {k: d[k] for k in ("test_fraction", "validation_fraction", "k_folds", "seed", "balanced_test") if k in d}



def _heatmap_settings(stores: list[dict]) -> str:
    """Each method's stored parameters, those shared by all its stores said once (LRP over several β)."""
    by_method: dict[str, list[dict]] = {}
    for h in stores:
        by_method.setdefault(str(h["method"]), []).append(h)
    out = []
    for hs in by_method.values():
        shared = {k: v for k, v in hs[0]["params"].items() if all(h["params"].get(k, object()) == v for h in hs)}
        own = [", ".join(f"{k} = {v}" for k, v in sorted(h["params"].items()) if k not in shared) for h in hs]
        labels = "; ".join(f"{h['label']}" + (f" ({o})" if o else "") for h, o in zip(hs, own))
        common = ", ".join(f"{k} = {v}" for k, v in sorted(shared.items())) or "defaults"
        targets = sorted({h["target"] for h in hs})
        out.append(f"{labels} ({common}; class {', '.join(targets)} explained; "
                   f"{', '.join(sorted({str(h['scans']) for h in hs}))} scans)")
    return "; ".join(out)



def _device_phrase(device: str | None, amp: bool | None) -> str:
    """Where the run trained (as its state recorded), with mixed precision only where it applied (CUDA)."""
    if not device:   # a run from before the device was recorded
        return ", mixed precision if on CUDA" if amp else ""
    if device.startswith("cuda"):
        return ", on a CUDA GPU" + (" with mixed precision" if amp else "")
    return f", on the {device.upper()}"


def _origin_sentence(origin: dict | None) -> str:
    """Transfer learning: the run whose weights the training started from (runs record their origin)."""
    if not origin:
        return ""
    source = origin.get("run") or origin.get("source") or origin.get("checkpoint")
    classes = origin.get("classes")
    frozen = int(origin.get("freeze") or 0)
    return (f"The network started from the weights of {source}"
            + (f" (trained to tell {classes[1]} from {classes[0]})" if classes and len(classes) == 2 else "")
            + (f", checkpoint SHA-256 {str(origin['checkpoint_sha256'])[:16]}…" if origin.get("checkpoint_sha256") else "")
            + (f"; its classifier head was {origin['head']}" if origin.get("head") else "")
            + (f" and its first {frozen} convolution block{'s' if frozen > 1 else ''} kept frozen" if frozen else "")
            + " (transfer learning).")


def methods_paragraph(s: dict) -> str:
    """The methods as prose, every number taken from ``s`` (:func:`stored_settings`)."""
    t = s["train"]
    n = s["subjects_per_part"]
    task = s.get("task") or DEFAULT_CLASSES.to_json()
    pos, neg = task["positive"], task["negative"]
    shift = t.get("shift_voxels")
    text = [
        f"We trained the {t.get('model')} 3D CNN (run {s['run']}) to tell {pos} from {neg} on {s['workspace']} ({s['n_scans']} scans; "
        f"{s['workspace_kind']} workspace, cohort fingerprint {s['cohort_fingerprint']}), resampled to a "
        f"{s['resolution_mm']:g} mm MNI grid of {'×'.join(str(v) for v in s['input_shape'] or [])} voxels. Subjects were split "
        f"without overlap into {n.get('train', 0)} training, {n.get('validation', 0)} validation and {n.get('test', 0)} "
        f"test subjects" + (f" (cross-validation fold {t['fold']})" if t.get("fold") is not None else "")
        + (f"; the workspace split holds out {sp['test_fraction']:g} of the subjects for testing and "
           f"{sp['validation_fraction']:g} for validation ({f'as many {pos} as {neg} test subjects, ' if sp.get('balanced_test') else ''}"
           f"{sp.get('k_folds')} folds, seed {sp.get('seed')})" if (sp := s.get("split")) and "test_fraction" in sp else "")
        + ".",
        f"Training used Adam with learning rate {t.get('lr'):g}, weight decay {t.get('weight_decay'):g}, batch size "
        f"{t.get('batch_size')}, at most {t.get('max_epochs')} epochs with early stopping after {t.get('patience')} "
        f"epochs without improvement of the validation balanced accuracy, "
        f"{'class-weighted' if t.get('class_weighted') else 'unweighted'} cross-entropy, random left–right flips "
        f"(p = {t.get('flip_p'):g}) and translations ({'2 mm' if shift is None else f'{shift} voxels'}), "
        f"{t.get('normalisation')} intensity normalisation ({t.get('scan_scaling')} scan scaling), seed {t.get('seed')}"
        f"{_device_phrase(s.get('device'), t.get('amp'))}; the checkpoint of epoch {(s['best_epoch'] or 0) + 1} "
        f"(of {s['epochs_run']}, stopped {s['stopped']}; SHA-256 {str(s['checkpoint_sha256'])[:16]}…) was analysed"
        f" (PyTorch {s['torch']}).",
    ]
    if origin := _origin_sentence(s.get("init_from")):
        text.insert(1, origin)
    if s.get("demo_config"):
        text.insert(1, "The cohort is the synthetic demo of this project (python -m lib demo; "
                    + ", ".join(f"{k} = {v}" for k, v in sorted(s["demo_config"].items())) + ").")
    if s["heatmaps"]:
        text.append(f"Heatmaps were computed for every scan with: {_heatmap_settings(s['heatmaps'])}. Group maps average the {s['split_analysed']} "
                    "split per diagnosis and outcome (TP, FP, TN, FN) and are shown on the paper's shared scale "
                    f"(50th–99.5th percentile of the average {pos} map within the brain).")
    if s["atlas"]:
        a = s["atlas"]
        text.append(f"Relevance was summed per region of the {a['name']} atlas ({a['regions']} regions on the "
                    f"{a['resolution_mm']:g} mm grid); density is the sum per voxel, gain the scan's region sum ÷ the "
                    f"mean {neg} sum of the region; the top {s['top_k']} regions are ranked by the {pos} (or TP) mean, "
                    f"density estimates are Gaussian kernel estimates of the scans' values, robustness is the overlap "
                    f"of the top {s['overlap_k']} regions, and {pos} vs {neg} tests are Mann–Whitney U with "
                    "Benjamini–Hochberg FDR correction over regions.")
    if s["biomarker"].get("measure"):
        text.append(f"For Fig 9 the relevance {s['biomarker']['relevance']} was correlated with "
                    f"{s['biomarker']['measure'].replace('_', ' ')} in each outcome group of the {s['split_analysed']} "
                    f"split, and each region's relevance with it in the true positives (Pearson r, two-sided "
                    f"permutation test with {s['permutations']:,} permutations, Benjamini–Hochberg FDR over regions, "
                    f"Spearman ρ, percentile bootstrap 95 % CI with {s['permutations']:,} resamples); gradient maps "
                    "were read as absolute values.")
    elif s["biomarker"]:
        text.append(f"For Fig 9 the relevance summed over both hippocampi was correlated with {s['biomarker']['volume']} "
                    f"in each outcome group of the {s['split_analysed']} split (Pearson r, two-sided permutation test "
                    f"with {s['permutations']:,} permutations, Spearman ρ, percentile bootstrap 95 % CI with "
                    f"{s['permutations']:,} resamples); gradient maps were read as absolute values.")
    e = s["evaluation"]
    if e:
        text.append(f"The explanation methods ({', '.join(e['methods'])}) were evaluated on {e['scans']} scans of the "
                    f"{e['split']} split by region perturbation ({e['regions']} of {e['cube_mm']:g} mm, {e['steps']} "
                    f"steps, {e['replacement']} replacement, f = {pos} {e['output']}; AOPC against a random order), a "
                    f"cascading randomisation sanity check on {e['sanity_scans']} scans (pass: |ρ| < {e['threshold']:g})"
                    + (f" and localisation of the known atrophy (local volume loss ≥ {e['min_loss']:.0%}) on "
                       f"{e['localisation_scans']} scans" if e["localisation_scans"] else "")
                    + f"; seed {e['seed']}.")
    return " ".join(text)

