"""Quality control of one registered scan: the measures, the thresholds and the verdict.

Measures (all on the template grid of the chosen resolution):

``corr_template``          Pearson correlation of the registered, brain-extracted scan with the ICBM152 2009c
                           template inside the template's brain mask.
``dice_brain``             Dice of the scan's own tissue (Otsu threshold of the bias-corrected scan near the
                           template brain, holes filled) with the template brain mask: the head must land on
                           the template's brain, not merely correlate with it.
``dice_hippocampus``       Dice of the scan's hippocampus labels (a segmentation in the scan's space, such as a
                           demo scan's ground truth, warped with nearest neighbour) with the template atlas'
                           hippocampus (Neuromorphometrics); NaN when the scan has no labels. Reported, not
                           judged: an atrophied (AD) hippocampus overlaps the atlas' less however well it is
                           registered (0.51-0.56 on the demo), so flagging on it would leave out patients more
                           often than controls. Only a Dice against the scan's own ground truth on the template
                           grid (``hippocampus_reference="labels"``) decides.
``jacobian_*``             nonlinear registration only: share of brain voxels whose Jacobian determinant is
                           ≤ 0 (folded) and its extremes.

A scan below any "failed" bound did not register (the optimiser diverged or the input is no brain); one below a
"flagged" bound registered poorly. Neither goes into the training split of the new workspace. Registration
"none" (pad/crop, Eitel's baseline) is unaligned by design: its measures are reported, the bounds not applied
(the input checks before registration still refuse a bad file).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

THRESHOLDS = {
    # calibrated on Colin27 (mricron's ch2, a real T1 with skull) at 3 mm: registered to the population
    # template (another brain) it correlates 0.66 after the affine stage and 0.72 after SyN (its own
    # brain-extracted ch2bet with SyN: 0.70), so a real scan's ceiling is far below 1; unregistered with
    # skull 0.55-0.6 (lib.data.images), shifted by 20 mm below 0.2
    "corr_template": {"failed_below": 0.4, "flagged_below": 0.55},
    "dice_brain": {"failed_below": 0.7, "flagged_below": 0.85},
    "dice_hippocampus": {"failed_below": 0.4, "flagged_below": 0.6},
    "jacobian_folded_share": {"failed_above": 0.01, "flagged_above": 0.001},
}

COLUMNS = ("scan_id", "status", "message", "registration", "corr_template", "dice_brain", "dice_hippocampus",
           "jacobian_folded_share", "jacobian_min", "jacobian_max", "seconds")
STATUSES = ("ok", "flagged", "failed", "passed_through")
EXCLUDED = ("flagged", "failed")
"""Statuses kept out of the training split."""
UNALIGNED = ("none",)
"""Registrations that do not align a scan to the template, so no alignment bound applies to them."""
HIPPOCAMPUS_REFERENCES = ("atlas", "labels")
"""What the hippocampus Dice was measured against: the template atlas (reported only) or the scan's own
ground-truth labels on the template grid (judged by its bounds)."""


def correlation(data: np.ndarray, template: np.ndarray, mask: np.ndarray) -> float:
    x, y = np.asarray(data, np.float64)[mask], np.asarray(template, np.float64)[mask]
    if x.size < 2 or x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = int(a.sum()) + int(b.sum())
    return float(2 * np.logical_and(a, b).sum() / total) if total else float("nan")


def otsu(values: np.ndarray, bins: int = 128) -> float:
    hist, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres) / np.maximum(w0, 1)
    m1 = (np.sum(hist * centres) - np.cumsum(hist * centres)) / np.maximum(w1, 1)
    return float(centres[int(np.argmax(w0 * w1 * (m0 - m1) ** 2))])


def tissue_mask(head: np.ndarray, template_mask: np.ndarray, margin: int = 3) -> np.ndarray:
    """The scan's own brain near the template's: voxels above Otsu's threshold within ``margin`` voxels of the
    template brain, the largest connected part, holes (sulcal CSF, ventricles) filled."""
    near = ndimage.binary_dilation(template_mask, iterations=margin)
    values = head[near]
    if values.size == 0 or values.std() == 0:
        return np.zeros_like(template_mask)
    tissue = (head > otsu(values)) & near
    labels, n = ndimage.label(tissue)
    if n > 1:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        tissue = labels == int(np.argmax(sizes))
    tissue = ndimage.binary_closing(tissue, iterations=2)
    return ndimage.binary_fill_holes(tissue) & near


def jacobian_stats(jacobian: np.ndarray, mask: np.ndarray) -> dict:
    values = np.asarray(jacobian, np.float64)[mask]
    return {"jacobian_folded_share": float(np.mean(values <= 0)), "jacobian_min": float(values.min()),
            "jacobian_max": float(values.max())}


def verdict(measures: dict, registration: str = "nonlinear", hippocampus_reference: str = "atlas"
            ) -> tuple[str, str]:
    """("ok" | "flagged" | "failed", the reasons) from the measures and :data:`THRESHOLDS`; a registration in
    :data:`UNALIGNED` is "ok" with the reason that no bound applies, and the hippocampus Dice counts only
    against the scan's own labels."""
    if hippocampus_reference not in HIPPOCAMPUS_REFERENCES:
        raise ValueError(f"hippocampus_reference must be one of {', '.join(HIPPOCAMPUS_REFERENCES)}, "
                         f"not {hippocampus_reference!r}")
    if registration in UNALIGNED:
        return "ok", f"registration {registration} is unaligned by design: measures reported, not judged"
    judged = {k: v for k, v in THRESHOLDS.items() if k != "dice_hippocampus" or hippocampus_reference == "labels"}
    failed, flagged = [], []
    for name, bounds in judged.items():
        value = measures.get(name)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        for level, out in (("failed", failed), ("flagged", flagged)):
            below, above = bounds.get(f"{level}_below"), bounds.get(f"{level}_above")
            if below is not None and value < below:
                out.append(f"{name} {value:.3g} < {below}")
                break
            if above is not None and value > above:
                out.append(f"{name} {value:.3g} > {above}")
                break
    if failed:
        return "failed", "registration diverged: " + "; ".join(failed + flagged)
    if flagged:
        return "flagged", "poor registration: " + "; ".join(flagged)
    return "ok", ""
