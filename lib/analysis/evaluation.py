"""Evaluating explanations: region perturbation (AOPC), cascading randomisation, ground-truth localisation.

Heatmaps have no ground truth on real data, so three measurements stand in for one:

**Region perturbation** (Samek et al. 2017; seed 004 §2.3). The volume is divided into regions,
cubes of ``cube_mm`` on a uniform grid (only cubes touching the brain) or the regions of an atlas.
Each region gets a score from the map (the sum of its relevance, or of its absolute relevance) and
the regions are perturbed cumulatively, most relevant first (MoRF): ``x⁽⁰⁾ = x``,
``x⁽ᵏ⁾ = g(x⁽ᵏ⁻¹⁾, r_k)`` for ``k = 1 … L``. With ``f`` the explained class's softmax probability
(or logit)::

    AOPC = 1/(L+1) · Σ_{k=0}^{L} ( f(x⁽⁰⁾) − f(x⁽ᵏ⁾) ),  averaged over scans

(the k = 0 term is 0, as in Samek's formula). A random order of the same regions is the baseline:
a map is informative about the model when its MoRF AOPC exceeds the random one. The replacement
``g`` writes, in the model's normalised input space, ``zero`` (0 = the training scans' mean
intensity, what :func:`lib.explain.occlusion` fills), ``mean`` (the scan's mean over the brain),
``uniform`` noise between the scan's brain minimum and maximum (Samek's choice; one noise volume
per scan, shared by every order and method) or ``blur`` (the scan smoothed with a Gaussian of
``blur_mm`` standard deviation). Perturbed copies go through the model in batches.

**Sanity check** (Adebayo et al. 2018). The model's weight layers are re-initialised one at a
time from the output layer down to the first convolution (cascading; a convolution's BatchNorm is
reset with it, since its statistics belong to the trained filters), and the map of the same scans
is recomputed at every step. Each map is compared with the original map within the brain by
Spearman rank correlation (of the maps as the method returns them, and of their absolute values),
SSIM (3D, Gaussian window σ = 1.5 voxels, on absolute maps scaled to [0, 1]) and the overlap of the
top ``top_fraction`` voxels by absolute relevance. A method **passes** when |ρ| of its maps after the
whole network is randomised (mean over the scans) falls below the threshold (default 0.5): its maps
depend on what the model learnt. A constant map (e.g. Grad-CAM clipped to zero everywhere) shares
no ranking with another map: ρ = 0 and top-k overlap 0 (1 if both maps are identical).

**Localisation** (demo cohort, where the atrophy is known). The ground-truth mask of a scan is the
set of voxels whose local volume loss (``ground_truth/atrophy/*``) is at least ``min_loss``
(``truth="atrophy"``), or the scan's own labels of the regions the generator displaced by at least
``min_mm`` (``truth="regions"``); resampled to the run's grid with nilearn (linear for the loss map,
nearest for labels). Within the brain (template > 0.05, plus the mask): *relevance mass accuracy*
= positive relevance inside the mask / all positive relevance (Arras et al. 2022); *voxel AUC* =
ROC AUC of voxel relevance against the mask (ties count half); *pointing game* (Zhang et al. 2018)
= whether the most relevant voxel lies in the mask (dilated by ``tolerance_mm``). Chance levels
are reported with them: the mask's share of the brain for mass accuracy and pointing, 0.5 for AUC.

Everything runs on ``lib.learn.models.default_device()``. Results of :func:`evaluate` are cached per
(check, method) in ``<workspace>/cache/evaluation/<key>/`` where the key hashes the checkpoint's
SHA-256, the method's canonical parameters, the settings the check depends on, the scans and their
content key (and, for localisation, the ground-truth table): a second request is read from disk,
and an interrupted job keeps the checks it finished; a result whose files do not match their
checksums (:mod:`lib.core.cache`) counts as missing and is recomputed. Maps come from a finished heatmap store of
the run (:mod:`lib.explain.heatmaps`) when there is one, else they are computed for the chosen scans only.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from scipy import ndimage
from scipy.stats import rankdata
from torch import nn

from lib.core import atomic, cache
from lib.learn.models import CLASSES
from lib.data.templates import Grid, brain_mask
from lib.core.progress import Progress

CACHE_VERSION = 1
CHECKS = ("aopc", "sanity", "localisation")
REPLACEMENTS = ("zero", "mean", "uniform", "blur")
# default comparison: LRP β ∈ {0, 0.5, 1} (Böhle et al.) and the baselines of Rieke et al. and Grad-CAM
DEFAULT_METHODS = ("lrp:beta=0", "lrp:beta=0.5", "lrp:beta=1", "guided_backprop", "gradient_x_input", "occlusion",
                   "gradcam")


# --- settings and method requests ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Settings:
    """What is evaluated and how. Fields marked "not keyed" change nothing that is cached.

    split : "test", "validation", "train" or "all" — the run's part the scans come from.
    n_scans : scans for region perturbation (AD and HC alternating, chosen with ``seed``); localisation
        takes up to as many scans with ground-truth atrophy from the same part.
    seed : scan choice, random orders, uniform noise and re-initialised weights.
    target : the explained class.
    regions : "cubes" or "atlas". cube_mm : cube edge in mm. atlas : atlas name for ``regions="atlas"``.
    steps : L, regions perturbed (capped at the number of regions).
    replacement : "zero", "mean", "uniform" or "blur"; blur_mm : the blur's Gaussian σ in mm.
    order_score : "sum" (a region's relevance) or "abs" (its absolute relevance) orders the regions.
    output : "probability" or "logit" — the f of AOPC.
    random_repeats : random orders per scan for the baseline (averaged).
    sanity_scans : scans of the cascading randomisation (the first of the chosen scans).
    top_fraction : share of brain voxels in the top-k overlap.
    sanity_threshold : rank correlation below which a method passes (not keyed).
    truth : "atrophy" or "regions"; min_loss : local volume loss threshold; min_mm : region displacement
        threshold; tolerance_mm : pointing-game tolerance.
    batch_size : volumes per forward pass (not keyed).
    """

    split: str = "test"
    n_scans: int = 8
    seed: int = 0
    target: str = "AD"
    regions: str = "cubes"
    cube_mm: float = 15.0
    atlas: str = "neuromorphometrics"
    steps: int = 50  # L of the 3D AOPC study on OASIS-2 (CAM vs LRP thesis); Samek et al. perturbed ~16 %
    replacement: str = "uniform"
    blur_mm: float = 6.0
    order_score: str = "sum"
    output: str = "probability"
    random_repeats: int = 1
    sanity_scans: int = 2
    top_fraction: float = 0.02
    sanity_threshold: float = 0.5
    truth: str = "atrophy"
    min_loss: float = 0.05
    min_mm: float = 0.5
    tolerance_mm: float = 0.0
    batch_size: int = 8

    def __post_init__(self):
        if self.split not in ("test", "validation", "train", "all"):
            raise ValueError(f"split must be test, validation, train or all, not {self.split!r}")
        if self.regions not in ("cubes", "atlas"):
            raise ValueError(f"regions must be 'cubes' or 'atlas', not {self.regions!r}")
        if self.replacement not in REPLACEMENTS:
            raise ValueError(f"replacement must be one of {', '.join(REPLACEMENTS)}, not {self.replacement!r}")
        if self.order_score not in ("sum", "abs"):
            raise ValueError(f"order_score must be 'sum' or 'abs', not {self.order_score!r}")
        if self.output not in ("probability", "logit"):
            raise ValueError(f"output must be 'probability' or 'logit', not {self.output!r}")
        if self.truth not in ("atrophy", "regions"):
            raise ValueError(f"truth must be 'atrophy' or 'regions', not {self.truth!r}")
        if min(self.n_scans, self.steps, self.sanity_scans, self.random_repeats, self.batch_size) < 1:
            raise ValueError("n_scans, steps, sanity_scans, random_repeats and batch_size must be >= 1")
        if not 0 < self.top_fraction < 1:
            raise ValueError("top_fraction must be between 0 and 1")
        if self.cube_mm <= 0 or self.blur_mm <= 0:
            raise ValueError("cube_mm and blur_mm must be positive")

    def keyed(self, *names: str) -> dict:
        return {n: getattr(self, n) for n in names}

    @classmethod
    def from_dict(cls, d: dict) -> "Settings":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


SCAN_FIELDS = ("split", "n_scans", "seed", "target")
PERTURB_FIELDS = ("regions", "cube_mm", "atlas", "steps", "replacement", "blur_mm", "output", "seed")
SANITY_FIELDS = ("sanity_scans", "top_fraction", "seed")
TRUTH_FIELDS = ("truth", "min_loss", "min_mm", "tolerance_mm")

_NAMES = {"lrp": "LRP", "guided_backprop": "guided backprop", "sensitivity": "sensitivity",
          "gradient_x_input": "gradient × input", "occlusion": "occlusion", "area_occlusion": "area occlusion",
          "gradcam": "Grad-CAM"}


@dataclass(frozen=True)
class MethodRequest:
    """A method and its (non-default) parameters, e.g. ``MethodRequest("lrp", {"beta": 0.5})``."""

    method: str
    params: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        """Display name: "LRP β=0.5", "Grad-CAM", "occlusion (patch_mm=20)"."""
        params = dict(self.params)
        name = _NAMES.get(self.method, self.method)
        if self.method == "lrp":
            name = f"LRP β={float(params.pop('beta', 0.0)):g}"
        extra = ", ".join(f"{k}={v}" for k, v in sorted(params.items()))
        return f"{name} ({extra})" if extra else name

    @property
    def spec(self) -> str:
        """The command-line form, parsed back by :func:`parse_method`."""
        if not self.params:
            return self.method
        return self.method + ":" + ",".join(f"{k}={json.dumps(v)}" for k, v in sorted(self.params.items()))


def parse_method(text: str) -> MethodRequest:
    """``"lrp:beta=0.5,composite=epsilon_plus"`` → ``MethodRequest("lrp", {"beta": 0.5, ...})``; values are
    JSON where they parse as JSON. Unknown methods and parameters are refused."""
    from lib.explain import METHODS, canonical_params
    from lib.explain.heatmaps import parse_params

    method, _, rest = text.strip().partition(":")
    params = parse_params([p.strip() for p in rest.split(",") if p.strip()], where=f"{text!r}: ")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if method != "area_occlusion":
        canonical_params(method, **params)  # refuses unknown parameters early
    return MethodRequest(method, params)


# --- pure pieces: regions, replacement, curves --------------------------------------------------------------------
def cube_partition(shape: Sequence[int], edge: int, mask: np.ndarray | None = None) -> np.ndarray:
    """Label volume ``(X, Y, Z)`` int32 of a uniform grid of ``edge``-voxel cubes (edge cubes may be smaller).

    Cubes that contain no voxel of ``mask`` get label 0 (never perturbed); the others are numbered 1…n in
    C order.
    """
    shape = tuple(int(s) for s in shape)
    edge = max(1, int(edge))
    nb = [-(-s // edge) for s in shape]
    idx = [np.arange(s) // edge for s in shape]
    lab = (idx[0][:, None, None] * nb[1] + idx[1][None, :, None]) * nb[2] + idx[2][None, None, :]
    n = nb[0] * nb[1] * nb[2]
    keep = np.zeros(n, bool)
    keep[np.unique(lab if mask is None else lab[np.asarray(mask, bool)])] = True
    renumber = np.zeros(n, np.int32)
    renumber[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return renumber[lab]


def compact_labels(labels: np.ndarray) -> np.ndarray:
    """Atlas labels renumbered 1…n in order of their values (0 stays background)."""
    labels = np.asarray(labels)
    values = np.unique(labels[labels != 0])
    lut = np.zeros(int(labels.max(initial=0)) + 1, np.int32)
    lut[values] = np.arange(1, len(values) + 1, dtype=np.int32)
    return lut[np.where(labels > 0, labels, 0)]


def region_scores(relevance: np.ndarray, labels: np.ndarray, how: str = "sum") -> np.ndarray:
    """Score per region 1…n, ``(n,)`` float64: sum of relevance (``"sum"``) or of |relevance| (``"abs"``)."""
    r = np.asarray(relevance, dtype=np.float64).ravel()
    if how == "abs":
        r = np.abs(r)
    elif how != "sum":
        raise ValueError(f"how must be 'sum' or 'abs', not {how!r}")
    lab = np.asarray(labels).ravel()
    return np.bincount(lab, weights=r, minlength=int(lab.max(initial=0)) + 1)[1:]


def morf_order(scores: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Region ids (1-based) most relevant first; ties in random order (no bias towards low ids)."""
    perm = rng.permutation(len(scores))
    return perm[np.argsort(-scores[perm], kind="stable")] + 1


def random_order(n_regions: int, rng: np.random.Generator) -> np.ndarray:
    return rng.permutation(n_regions) + 1


class RegionIndex:
    """Flat voxel indices of every region of a label volume, on a device, for fast cumulative writes."""

    def __init__(self, labels: np.ndarray, device: torch.device | str = "cpu"):
        flat = np.asarray(labels).ravel().astype(np.int64)
        order = np.argsort(flat, kind="stable")
        self.n = int(flat.max(initial=0))
        bounds = np.searchsorted(flat[order], np.arange(self.n + 2))
        self.starts, self.ends = bounds[:-1], bounds[1:]
        self.voxels = torch.from_numpy(order).to(device)
        self.sizes = (self.ends - self.starts)[1:]

    def __call__(self, region: int) -> torch.Tensor:
        return self.voxels[self.starts[region]:self.ends[region]]


def replacement_volume(x: torch.Tensor, kind: str, brain: torch.Tensor, *, rng: np.random.Generator,
                       blur_vox: float = 2.0) -> torch.Tensor:
    """What perturbed voxels are set to, shaped like ``x`` ``(1, 1, X, Y, Z)`` (see the module docstring)."""
    if kind == "zero":
        return torch.zeros_like(x)
    inside = x[0, 0][brain]
    if kind == "mean":
        return torch.full_like(x, float(inside.mean()))
    if kind == "uniform":
        lo, hi = float(inside.min()), float(inside.max())
        noise = rng.uniform(lo, hi, size=tuple(x.shape)).astype(np.float32)
        return torch.from_numpy(noise).to(device=x.device, dtype=x.dtype)
    if kind == "blur":
        smooth = ndimage.gaussian_filter(x[0, 0].float().cpu().numpy(), float(blur_vox), mode="nearest")
        return torch.from_numpy(smooth)[None, None].to(device=x.device, dtype=x.dtype)
    raise ValueError(f"replacement must be one of {', '.join(REPLACEMENTS)}, not {kind!r}")


def _output(logits: torch.Tensor, target: int, output: str) -> torch.Tensor:
    if output == "probability":
        return logits.float().softmax(1)[:, target]
    return logits.float()[:, target]


@torch.no_grad()
def perturbation_curve(model: nn.Module, x: torch.Tensor, order: np.ndarray, index: RegionIndex,
                       replacement: torch.Tensor, *, target: int = 1, output: str = "probability",
                       batch_size: int = 8) -> np.ndarray:
    """``f(x⁽ᵏ⁾)`` for ``k = 0 … len(order)``: the regions of ``order`` replaced cumulatively, ``(L+1,)``.

    ``x`` and ``replacement`` are ``(1, 1, X, Y, Z)`` on the model's device; copies are built and
    evaluated ``batch_size`` at a time, so memory holds one batch.
    """
    cur = x.clone()
    flat, repl = cur.view(-1), replacement.reshape(-1)
    outs, chunk = [], []

    def flush():
        outs.append(_output(model(torch.cat(chunk)), target, output).cpu())
        chunk.clear()

    for k in range(len(order) + 1):
        if k:
            idx = index(int(order[k - 1]))
            flat[idx] = repl[idx]
        chunk.append(cur.clone())
        if len(chunk) == batch_size:
            flush()
    if chunk:
        flush()
    return torch.cat(outs).double().numpy()


def aopc(outputs: np.ndarray) -> np.ndarray:
    """AOPC of curves ``(..., L+1)`` of ``f(x⁽ᵏ⁾)``: mean over k = 0…L of ``f(x⁽⁰⁾) − f(x⁽ᵏ⁾)``."""
    o = np.asarray(outputs, dtype=np.float64)
    return (o[..., :1] - o).mean(-1)


# --- pure pieces: similarity of maps -------------------------------------------------------------------------------
def ssim3d(a: np.ndarray, b: np.ndarray, *, mask: np.ndarray | None = None, sigma: float = 1.5,
           data_range: float | None = None) -> float:
    """Mean structural similarity (Wang et al. 2004) of two volumes, with a Gaussian window of ``sigma`` voxels.

    ``C1 = (0.01 L)²``, ``C2 = (0.03 L)²`` with ``L = data_range`` (default: the joint range of both);
    local statistics use the window over the whole volume, the mean is taken over ``mask``. 1 for
    identical volumes.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    if data_range is None:
        data_range = float(max(a.max(), b.max()) - min(a.min(), b.min())) or 1.0
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2

    def g(v):
        return ndimage.gaussian_filter(v, sigma, mode="reflect", truncate=3.5)

    mu_a, mu_b = g(a), g(b)
    s_aa = g(a * a) - mu_a ** 2
    s_bb = g(b * b) - mu_b ** 2
    s_ab = g(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * s_ab + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (s_aa + s_bb + c2))
    return float(s[mask].mean() if mask is not None else s.mean())


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman ρ; 1 for identical maps, else 0 when either side is constant (no ranking to share)."""
    if np.array_equal(a, b):
        return 1.0
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    ra, rb = rankdata(a), rankdata(b)
    return float(np.corrcoef(ra, rb)[0, 1])


def _top(v: np.ndarray, k: int) -> np.ndarray:
    return np.argpartition(-v, k - 1)[:k]


def map_similarity(original: np.ndarray, other: np.ndarray, mask: np.ndarray | None = None,
                   top_fraction: float = 0.02) -> dict:
    """Spearman ρ of the maps and of their absolute values, SSIM of the absolute maps scaled to [0, 1], and
    the share of the top ``top_fraction`` voxels (by |relevance|) the two maps have in common; all within
    ``mask``."""
    a = np.asarray(original, dtype=np.float64)
    b = np.asarray(other, dtype=np.float64)
    va, vb = (a[mask], b[mask]) if mask is not None else (a.ravel(), b.ravel())
    k = max(1, int(round(top_fraction * va.size)))
    aa, ab = np.abs(va), np.abs(vb)
    if np.array_equal(aa, ab):
        top = 1.0
    elif np.ptp(aa) == 0 or np.ptp(ab) == 0:
        top = 0.0  # a constant map has no top voxels
    else:
        top = len(np.intersect1d(_top(aa, k), _top(ab, k), assume_unique=True)) / k
    sa, sb = np.abs(a), np.abs(b)
    sa = sa / (sa[mask].max() if mask is not None else sa.max()) if sa.max() > 0 else sa
    sb = sb / (sb[mask].max() if mask is not None else sb.max()) if sb.max() > 0 else sb
    return {"spearman": _spearman(va, vb), "spearman_abs": _spearman(aa, ab),
            "ssim": ssim3d(np.clip(sa, 0, 1), np.clip(sb, 0, 1), mask=mask, data_range=1.0), "topk": top}


# --- pure pieces: cascading randomisation ----------------------------------------------------------------------------
def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Convolution and dense layers in forward order, named "conv 1"…, "dense 1"… (the last is the output)."""
    out, n_conv, n_dense = [], 0, 0
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            n_conv += 1
            out.append((f"conv {n_conv}", m))
        elif isinstance(m, nn.Linear):
            n_dense += 1
            out.append((f"dense {n_dense}", m))
    return out


def _norm_after(model: nn.Module) -> dict[int, nn.Module]:
    """id(weight layer) → the BatchNorm that directly follows it in module order."""
    mods = [m for m in model.modules() if not list(m.children())]
    out = {}
    for a, b in zip(mods, mods[1:]):
        if isinstance(a, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)) and isinstance(b, nn.modules.batchnorm._BatchNorm):
            out[id(a)] = b
    return out


def cascade(model: nn.Module, seed: int = 0) -> Iterator[tuple[str, nn.Module]]:
    """``("original", model)``, then copies with the weight layers re-initialised cumulatively from the output
    layer down to the first convolution: ``(layer name, copy)``. The model itself is never changed.

    Each layer is re-drawn with its own ``reset_parameters`` (PyTorch's default initialisation), seeded by
    ``seed`` and its position; a BatchNorm right after it is reset to the identity (γ = 1, β = 0,
    running mean 0, variance 1).
    """
    yield "original", model
    current = copy.deepcopy(model).eval()
    layers = weight_layers(current)
    devices = [p.device for p in current.parameters() if p.device.type == "cuda"][:1]
    for i, (name, layer) in enumerate(reversed(layers)):
        current = copy.deepcopy(current).eval()  # each step is its own model (explanation plans cache per model)
        layer = dict(weight_layers(current))[name]
        norm = _norm_after(current).get(id(layer))
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(int(seed) * 1000 + i)
            with torch.no_grad():
                layer.reset_parameters()
                if norm is not None:
                    norm.reset_parameters()
                    norm.reset_running_stats()
        label = f"{name} (output)" if i == 0 else name
        yield label, current


def sanity_verdict(final_rho: float, threshold: float) -> bool:
    """Passes when |rank correlation| after full randomisation is below ``threshold`` (NaN fails)."""
    return bool(np.isfinite(final_rho) and abs(final_rho) < threshold)


# --- pure pieces: localisation -----------------------------------------------------------------------------------------
def voxel_auc(scores: np.ndarray, truth: np.ndarray) -> float:
    """ROC AUC of ``scores`` against boolean ``truth`` (Mann–Whitney with midranks: ties count half)."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    t = np.asarray(truth, bool).ravel()
    n_pos, n_neg = int(t.sum()), int((~t).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[t].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _ball(radius: float) -> np.ndarray:
    r = int(np.floor(radius))
    g = np.indices((2 * r + 1,) * 3) - r
    return (g ** 2).sum(0) <= radius ** 2 + 1e-9


def localisation_scores(relevance: np.ndarray, truth: np.ndarray, domain: np.ndarray | None = None,
                        tolerance_vox: float = 0.0) -> dict:
    """Relevance mass accuracy, voxel AUC and pointing-game hit of one map against a ground-truth mask.

    ``relevance`` and boolean ``truth`` are ``(X, Y, Z)``; ``domain`` restricts the voxels (default: all);
    the pointing game's mask is dilated by ``tolerance_vox``. Returns ``mass``, ``auc``, ``hit`` (0/1; with
    ties for the maximum, the share of the tied voxels inside the mask),
    ``chance_mass`` (the mask's share of the domain) and ``chance_hit`` (the dilated mask's share).
    """
    r = np.asarray(relevance, dtype=np.float64)
    t = np.asarray(truth, bool)
    d = np.ones(t.shape, bool) if domain is None else np.asarray(domain, bool)
    hit_mask = ndimage.binary_dilation(t, _ball(tolerance_vox)) if tolerance_vox >= 1 else t
    rv, tv = r[d], t[d]
    pos = np.clip(rv, 0, None)
    total = pos.sum()
    mass = float(pos[tv].sum() / total) if total > 0 else float("nan")
    # several voxels sharing the maximum (plateaus of coarse maps): the expected hit of picking one at random
    top = np.flatnonzero(d)[rv == rv.max()]
    return {"mass": mass, "auc": voxel_auc(rv, tv), "hit": float(hit_mask.ravel()[top].mean()),
            "chance_mass": float(tv.mean()), "chance_hit": float(hit_mask[d].mean()), "mask_voxels": int(tv.sum())}


# --- the workspace: scans, ground truth, maps ------------------------------------------------------------------------
def _interleave(cohort: pd.DataFrame, seed: int) -> list[str]:
    """Scan IDs shuffled within diagnosis, then AD, HC, AD, HC, … (AD first)."""
    rng = np.random.default_rng(seed)
    groups = []
    for dx in ("AD", "HC"):
        ids = sorted(cohort.loc[cohort["diagnosis"] == dx, "scan_id"].astype(str))
        groups.append([ids[i] for i in rng.permutation(len(ids))])
    out = []
    for i in range(max(map(len, groups), default=0)):
        out += [g[i] for g in groups if i < len(g)]
    return out


def _part(ws, run, split: str) -> pd.DataFrame:
    from lib.learn.runs import run_cohort as _scan_table

    cohort = _scan_table(ws, run)
    return cohort if split == "all" else cohort[cohort["run_split"] == split]


def _truth_table(ws) -> pd.DataFrame | None:
    path = ws.ground_truth_dir / "atrophy.csv"
    return pd.read_csv(path, dtype={"scan_id": str}) if path.exists() else None


def _atrophied(table: pd.DataFrame | None, settings: Settings) -> set[str]:
    if table is None:
        return set()
    mm = table[[c for c in table.columns if c.startswith("mm_")]]
    return set(table.loc[(mm >= settings.min_mm).any(axis=1) if settings.truth == "regions"
                         else (mm > 0).any(axis=1), "scan_id"])


def select_scans(ws, run, settings: Settings) -> dict[str, list[str]]:
    """``{"aopc": [...], "sanity": [...], "localisation": [...]}`` scan IDs from the run's ``settings.split``.

    Region perturbation: ``n_scans`` scans, AD and HC alternating (seeded). Sanity check: the first
    ``sanity_scans`` of them. Localisation: up to ``n_scans`` scans with ground-truth atrophy (those already
    chosen first), none without a ground truth.
    """
    part = _part(ws, run, settings.split)
    order = _interleave(part, settings.seed)
    chosen = order[:settings.n_scans]
    atrophied = _atrophied(_truth_table(ws), settings)
    loc = [s for s in chosen if s in atrophied] + [s for s in order[settings.n_scans:] if s in atrophied]
    return {"aopc": chosen, "sanity": chosen[:settings.sanity_scans], "localisation": loc[:settings.n_scans]}


def ground_truth_mask(ws, scan_id: str, grid: Grid, settings: Settings = Settings(),
                      table: pd.DataFrame | None = None) -> np.ndarray | None:
    """Boolean ``(X, Y, Z)`` ground-truth mask of a demo scan on ``grid`` (None without a ground truth).

    ``truth="atrophy"``: local volume loss ≥ ``min_loss``, the loss map resampled linearly; ``"regions"``:
    the scan's deformed labels of the units displaced by ≥ ``min_mm``, resampled nearest-neighbour.
    """
    import nibabel as nib
    from nilearn.image import resample_img

    table = _truth_table(ws) if table is None else table
    if table is None:
        return None
    row = table[table["scan_id"] == str(scan_id)]
    if row.empty:
        return None
    row = row.iloc[0]
    if settings.truth == "atrophy":
        img = nib.load(ws.resolve(row["atrophy_map"]))
        interpolation = "linear"
    else:
        img = nib.load(ws.resolve(row["labels"]))
        interpolation = "nearest"
    if not grid.matches(img):
        img = resample_img(img, target_affine=grid.affine, target_shape=grid.shape, interpolation=interpolation,
                           force_resample=True, copy_header=True)
    data = np.asarray(img.dataobj)
    if settings.truth == "atrophy":
        return data.astype(np.float32) >= settings.min_loss
    from lib.data.templates import atlas

    _, names = atlas("neuromorphometrics", ws.grid.resolution)
    index = dict(zip(names["name"], names["index"]))
    units = [c[3:] for c in table.columns if c.startswith("mm_") and float(row[c]) >= settings.min_mm]
    values = [index[u] for u in units if u in index]
    return np.isin(data, values)


def _explain_batches(model, x: torch.Tensor, method: str, call: dict, target: str, batch_size: int) -> np.ndarray:
    from lib.explain import explain

    out = []
    for i in range(0, x.shape[0], batch_size):
        out.append(explain(model, x[i:i + batch_size], method=method, target=target, **call)[:, 0].float().cpu())
    return torch.cat(out).numpy()


# --- cache ---------------------------------------------------------------------------------------------------------
def _key(payload: dict) -> str:
    blob = json.dumps({"v": CACHE_VERSION, **payload}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _read(folder: Path) -> dict | None:
    """A cached result, or None when absent or bad (no marker, truncated, altered: recomputed)."""
    if not cache.ok(folder):
        return None
    try:
        res = atomic.read_json(folder / "result.json")
    except ValueError:
        return None
    if res is not None and (folder / "maps.npy").exists():
        res["maps_path"] = str(folder / "maps.npy")
    return res


def _write(folder: Path, result: dict, maps: np.ndarray | None = None) -> None:
    """A result folder appears whole: written in a temporary folder, then renamed into place."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        if maps is not None:
            np.save(tmp / "maps.npy", maps)
        atomic.write_json(tmp / "result.json", result)
        cache.seal(tmp, kind="evaluation")
        if folder.exists() and not cache.ok(folder):   # corrupted or of an older version: replaced
            cache.discard(folder)
        if folder.exists():  # an identical result written by a concurrent job
            shutil.rmtree(tmp)
            return
        os.rename(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class Evaluation:
    """One request: a run, settings and methods; knows every cache key without loading a model or a scan."""

    def __init__(self, ws, run, methods: Sequence[MethodRequest | str], settings: Settings = Settings()):
        from lib.explain.heatmaps import resolve_params
        from lib.data.volumes import store_path

        self.ws, self.run, self.settings = ws, run, settings
        self.methods = [parse_method(m) if isinstance(m, str) else m for m in methods]
        self.grid = run.grid
        self.scans = select_scans(ws, run, settings)
        part = _part(ws, run, "all")
        self.diagnosis = dict(zip(part["scan_id"].astype(str), part["diagnosis"].astype(str)))
        self.volumes_key = store_path(ws, part.drop(columns=["run_split"]), self.grid).name
        self.checkpoint = run.checkpoint_hash()
        self.root = ws.cache_dir / "evaluation"
        self.canonical = {}
        self.calls = {}
        for m in self.methods:
            self.calls[m.label], self.canonical[m.label] = resolve_params(m.method, m.params, self.grid)
        truth = ws.ground_truth_dir / "atrophy.csv"
        self.truth_key = f"{truth.stat().st_size}:{truth.stat().st_mtime_ns}" if truth.exists() else None

    # keys
    def _base(self, kind: str, scans: list[str]) -> dict:
        return {"kind": kind, "checkpoint": self.checkpoint, "volumes": self.volumes_key, "scans": scans,
                "target": self.settings.target, "grid": self.grid.resolution}

    def folder(self, check: str, m: MethodRequest | None = None) -> Path:
        s = self.settings
        if check == "random":
            payload = {**self._base("aopc_random", self.scans["aopc"]), **s.keyed(*PERTURB_FIELDS),
                       "repeats": s.random_repeats}
        elif check == "aopc":
            payload = {**self._base("aopc", self.scans["aopc"]), **s.keyed(*PERTURB_FIELDS, "order_score"),
                       "params": self.canonical[m.label]}
        elif check == "sanity":
            payload = {**self._base("sanity", self.scans["sanity"]), **s.keyed(*SANITY_FIELDS),
                       "params": self.canonical[m.label]}
        elif check == "localisation":
            payload = {**self._base("localisation", self.scans["localisation"]), **s.keyed(*TRUTH_FIELDS),
                       "truth_table": self.truth_key, "params": self.canonical[m.label], "ties": "expected"}
        else:
            raise ValueError(f"unknown check {check!r}")
        return self.root / _key(payload)

    def job_key(self, checks: Iterable[str] = CHECKS) -> str:
        """Equal requests share one background job."""
        return "evaluate-maps:" + _key({"run": self.run.id, "checkpoint": self.checkpoint,
                                        "methods": [m.spec for m in self.methods],
                                        "settings": asdict(self.settings), "checks": sorted(checks)})

    def cli_args(self, checks: Iterable[str] = CHECKS) -> list[str]:
        """Arguments of ``python -m lib evaluate-maps`` for this request (what the page submits)."""
        s, d = self.settings, Settings()
        args = ["--run", self.run.id, "--methods", *[m.spec for m in self.methods], "--checks", *checks]
        flags = {"split": "--split", "n_scans": "--scans", "seed": "--seed", "target": "--target",
                 "regions": "--regions", "cube_mm": "--cube-mm", "atlas": "--atlas", "steps": "--steps",
                 "replacement": "--replacement", "blur_mm": "--blur-mm", "order_score": "--order-score",
                 "output": "--output", "random_repeats": "--random-repeats", "sanity_scans": "--sanity-scans",
                 "top_fraction": "--top-fraction", "sanity_threshold": "--threshold", "truth": "--truth",
                 "min_loss": "--min-loss", "min_mm": "--min-mm", "tolerance_mm": "--tolerance-mm",
                 "batch_size": "--batch-size"}
        for name, flag in flags.items():
            if getattr(s, name) != getattr(d, name):
                args += [flag, str(getattr(s, name))]
        return args

    def has_truth(self) -> bool:
        return self.truth_key is not None and bool(self.scans["localisation"])

    def results(self) -> dict:
        """Whatever is cached for this request: ``{"random": r | None, "aopc": {label: r}, "sanity": {...},
        "localisation": {...}}`` (a method missing from a check has not been computed)."""
        out = {"random": _read(self.folder("random")), "aopc": {}, "sanity": {}, "localisation": {}}
        for m in self.methods:
            for check in CHECKS:
                r = _read(self.folder(check, m))
                if r is not None:
                    out[check][m.label] = r
        return out

    def missing(self, checks: Iterable[str] = CHECKS) -> list[tuple[str, str]]:
        """``(check, method label)`` pairs not cached yet (localisation only where a ground truth exists)."""
        out = []
        for check in checks:
            if check == "localisation" and not self.has_truth():
                continue
            if check == "aopc" and not cache.ok(self.folder("random")):
                out.append(("aopc", "random order"))
            out += [(check, m.label) for m in self.methods if not cache.ok(self.folder(check, m))]
        return out

    # work
    def run_checks(self, checks: Iterable[str] = CHECKS, *, device: torch.device | str | None = None,
                   progress: Progress | None = None) -> dict:
        """Compute every missing result of ``checks`` (cached as it goes) and return :meth:`results`."""
        from lib.explain.heatmaps import find_store
        from lib.data.volumes import load_batch as _load_batch
        from lib.learn.runs import load_checkpoint
        from lib.data.volumes import volume_store

        checks = [c for c in CHECKS if c in set(checks)]
        unknown = set(checks) - set(CHECKS)
        if unknown:
            raise ValueError(f"unknown check(s) {', '.join(sorted(unknown))}; choose from {', '.join(CHECKS)}")
        todo = self.missing(checks)
        if not todo:
            return self.results()
        s = self.settings
        model, normaliser, _ = load_checkpoint(self.run.best_checkpoint, device)
        dev = next(model.parameters()).device
        store = volume_store(self.ws, _part(self.ws, self.run, "all").drop(columns=["run_split"]), self.grid)
        brain = brain_mask(self.grid)
        brain_t = torch.from_numpy(brain).to(dev)
        target = CLASSES.index(s.target) if s.target in CLASSES else int(s.target)

        need_maps = {m.label: [] for m in self.methods}
        for check, label in todo:
            if check in ("aopc", "localisation") and label in need_maps:
                need_maps[label] += [x for x in self.scans[check] if x not in need_maps[label]]
        n_steps = len(weight_layers(model)) + 1
        units = {"aopc": len(self.scans["aopc"]), "localisation": len(self.scans["localisation"]),
                 "sanity": n_steps * len(self.scans["sanity"])}
        total = sum(units[c] for c, label in todo if label != "random order") + \
            (len(self.scans["aopc"]) if ("aopc", "random order") in todo else 0) + \
            sum(len(v) for v in need_maps.values())
        done = [0]

        def tick(n: int, msg: str):
            done[0] += n
            if progress:
                progress(min(done[0], total), total, msg)

        tick(0, f"evaluating {len(self.methods)} method(s) on {len(self.scans['aopc'])} scans")

        def inputs(ids: list[str]) -> torch.Tensor:
            return torch.from_numpy(_load_batch(store, store.rows(ids), normaliser)).unsqueeze(1).to(dev)

        index = labels = None
        if any(c == "aopc" for c, _ in todo):
            if s.regions == "cubes":
                edge = max(1, int(round(s.cube_mm / self.grid.resolution)))
                labels = cube_partition(self.grid.shape, edge, brain)
            else:
                from lib.data.atlas import load_atlas

                labels = compact_labels(load_atlas(s.atlas, self.grid.resolution).labels)
            index = RegionIndex(labels, dev)
        n_regions = int(labels.max()) if labels is not None else 0
        steps = min(s.steps, n_regions)

        def replacement_for(x, i_scan: int):
            rng = np.random.default_rng([s.seed, i_scan, 7])
            return replacement_volume(x, s.replacement, brain_t, rng=rng, blur_vox=s.blur_mm / self.grid.resolution)

        perturb_meta = {"n_regions": n_regions, "steps": steps}

        # random-order baseline, shared by every method
        if ("aopc", "random order") in todo:
            outs = []
            for i, sid in enumerate(self.scans["aopc"]):
                x = inputs([sid])
                repl = replacement_for(x, i)
                rng = np.random.default_rng([s.seed, i, 11])
                curves = [perturbation_curve(model, x, random_order(n_regions, rng)[:steps], index, repl,
                                             target=target, output=s.output, batch_size=s.batch_size)
                          for _ in range(s.random_repeats)]
                outs.append(np.mean(curves, axis=0))
                tick(1, f"random order: scan {i + 1}/{len(self.scans['aopc'])}")
            outs = np.array(outs)
            _write(self.folder("random"), {
                "kind": "aopc_random", "label": "random order", "scan_ids": self.scans["aopc"],
                "outputs": outs.tolist(), "aopc": aopc(outs).tolist(), "settings": asdict(s), **perturb_meta})

        truth_table = _truth_table(self.ws)
        for m in self.methods:
            label, call = m.label, self.calls[m.label]
            mine = {c for c, lab in todo if lab == label}
            if not mine:
                continue
            maps = {}
            ids = need_maps[label]
            if ids:
                stored = find_store(self.ws, self.run, m.method, target=s.target, **m.params)
                if stored is not None and all(i in stored for i in ids):
                    for i, sid in enumerate(ids):
                        maps[sid] = stored.get(sid)
                    tick(len(ids), f"{label}: maps from the heatmap store")
                else:
                    for j in range(0, len(ids), s.batch_size):
                        chunk = ids[j:j + s.batch_size]
                        for sid, r in zip(chunk, _explain_batches(model, inputs(chunk), m.method, call, s.target,
                                                                  s.batch_size)):
                            maps[sid] = r
                        tick(len(chunk), f"{label}: maps {min(j + s.batch_size, len(ids))}/{len(ids)}")
            common = {"method": m.method, "params": m.params, "canonical": self.canonical[label], "label": label,
                      "settings": asdict(s)}
            if "aopc" in mine:
                outs = []
                for i, sid in enumerate(self.scans["aopc"]):
                    x = inputs([sid])
                    rng = np.random.default_rng([s.seed, i, 13])
                    order = morf_order(region_scores(maps[sid], labels, s.order_score), rng)[:steps]
                    outs.append(perturbation_curve(model, x, order, index, replacement_for(x, i), target=target,
                                                   output=s.output, batch_size=s.batch_size))
                    tick(1, f"{label}: region perturbation {i + 1}/{len(self.scans['aopc'])}")
                outs = np.array(outs)
                _write(self.folder("aopc", m), {**common, "kind": "aopc", "scan_ids": self.scans["aopc"],
                                                "outputs": outs.tolist(), "aopc": aopc(outs).tolist(),
                                                **perturb_meta})
            if "localisation" in mine:
                rows = []
                tol = s.tolerance_mm / self.grid.resolution
                for sid in self.scans["localisation"]:
                    truth = ground_truth_mask(self.ws, sid, self.grid, s, truth_table)
                    if truth is not None and truth.any():
                        rows.append({"scan_id": sid, "diagnosis": self.diagnosis.get(sid),
                                     **localisation_scores(maps[sid], truth, brain | truth, tol)})
                    tick(1, f"{label}: localisation")
                _write(self.folder("localisation", m), {**common, "kind": "localisation",
                                                        "scan_ids": self.scans["localisation"], "rows": rows})
            if "sanity" in mine:
                ids = self.scans["sanity"]
                x = inputs(ids)
                steps_out, sims, example = [], [], []
                original = None
                for name, mod in cascade(model, s.seed):
                    r = _explain_batches(mod, x, m.method, call, s.target, s.batch_size)
                    if original is None:
                        original = r
                    steps_out.append(name)
                    sims.append([map_similarity(original[i], r[i], brain, s.top_fraction) for i in range(len(ids))])
                    peak = np.abs(r[0][brain]).max()
                    example.append((r[0] / peak if peak > 0 else r[0]).astype(np.float16))
                    tick(len(ids), f"{label}: sanity check, randomised down to {name}")
                metrics = {k: [[d[k] for d in step] for step in sims] for k in ("spearman", "spearman_abs", "ssim",
                                                                                 "topk")}
                _write(self.folder("sanity", m), {**common, "kind": "sanity", "scan_ids": ids, "steps": steps_out,
                                                  **metrics, "top_fraction": s.top_fraction,
                                                  "example_scan": ids[0]}, maps=np.stack(example))
        return self.results()


# --- summaries ---------------------------------------------------------------------------------------------------------
def aopc_curves(results: dict) -> pd.DataFrame:
    """Long table ``label, order, k, drop, sem`` of the mean curve ``f(x⁽⁰⁾) − f(x⁽ᵏ⁾)`` over scans (MoRF per
    method, and the random baseline)."""
    rows = []
    items = [(lab, "most relevant first", r) for lab, r in results["aopc"].items()]
    if results.get("random"):
        items.append(("random order", "random", results["random"]))
    for lab, order, r in items:
        o = np.asarray(r["outputs"], dtype=float)
        drop = o[:, :1] - o
        mean = drop.mean(0)
        sem = drop.std(0, ddof=1) / np.sqrt(len(drop)) if len(drop) > 1 else np.zeros_like(mean)
        rows += [{"label": lab, "order": order, "k": k, "drop": float(mean[k]), "sem": float(sem[k])}
                 for k in range(len(mean))]
    return pd.DataFrame(rows, columns=["label", "order", "k", "drop", "sem"])


def sanity_table(results: dict, threshold: float = Settings.sanity_threshold) -> pd.DataFrame:
    """Long table ``label, step, i, spearman, spearman_abs, ssim, topk`` (means over the scans)."""
    rows = []
    for lab, r in results["sanity"].items():
        for i, step in enumerate(r["steps"]):
            rows.append({"label": lab, "step": step, "i": i,
                         **{k: float(np.nanmean(r[k][i])) for k in ("spearman", "spearman_abs", "ssim", "topk")}})
    return pd.DataFrame(rows, columns=["label", "step", "i", "spearman", "spearman_abs", "ssim", "topk"])


def localisation_table(results: dict) -> pd.DataFrame:
    """One row per (method, scan): ``label, scan_id, diagnosis, mass, auc, hit, chance_mass, chance_hit``."""
    rows = [{"label": lab, **row} for lab, r in results["localisation"].items() for row in r["rows"]]
    return pd.DataFrame(rows, columns=["label", "scan_id", "diagnosis", "mass", "auc", "hit", "chance_mass",
                                       "chance_hit", "mask_voxels"])


def summary(results: dict, labels: Sequence[str], threshold: float = Settings.sanity_threshold) -> pd.DataFrame:
    """The ranking table: one row per method with every score, and its rank.

    Columns: ``method``, ``AOPC`` (MoRF), ``AOPC random``, ``AOPC gain`` (MoRF − random, higher = more
    faithful), ``ρ randomised`` (rank correlation with the original map after full randomisation), ``sanity`` ("pass"/
    "fail"), ``mass accuracy``, ``voxel AUC``, ``pointing game``, ``rank`` (mean rank over AOPC gain and
    the three localisation scores, 1 = best; a failed sanity check puts a method after every one that
    passed). Missing scores are NaN.
    """
    rand = results.get("random")
    rand_aopc = float(np.mean(rand["aopc"])) if rand else float("nan")
    loc = localisation_table(results)
    rows = []
    for lab in labels:
        a = results["aopc"].get(lab)
        sres = results["sanity"].get(lab)
        rho = float(np.nanmean(sres["spearman"][-1])) if sres else float("nan")
        g = loc[loc["label"] == lab]
        rows.append({
            "method": lab,
            "AOPC": float(np.mean(a["aopc"])) if a else float("nan"),
            "AOPC random": rand_aopc if a else float("nan"),
            "ρ randomised": rho,
            "sanity": ("pass" if sanity_verdict(rho, threshold) else "fail") if sres else "",
            "mass accuracy": float(g["mass"].mean()) if len(g) else float("nan"),
            "voxel AUC": float(g["auc"].mean()) if len(g) else float("nan"),
            "pointing game": float(g["hit"].mean()) if len(g) else float("nan"),
        })
    t = pd.DataFrame(rows, columns=["method", "AOPC", "AOPC random", "ρ randomised", "sanity", "mass accuracy",
                                    "voxel AUC", "pointing game"])
    t.insert(3, "AOPC gain", t["AOPC"] - t["AOPC random"])
    crit = t[["AOPC gain", "mass accuracy", "voxel AUC", "pointing game"]]
    ranks = crit.rank(ascending=False, method="average")
    mean_rank = ranks.mean(axis=1, skipna=True)
    failed = (t["sanity"] == "fail").astype(float)
    order = pd.DataFrame({"failed": failed, "r": mean_rank}).sort_values(["failed", "r"], na_position="last")
    t["rank"] = pd.array([pd.NA] * len(t), dtype="Int64")   # integers; unranked methods stay empty
    valid = order["r"].notna()
    t.loc[order.index[valid], "rank"] = np.arange(1, int(valid.sum()) + 1)
    return t.sort_values("rank", na_position="last").reset_index(drop=True)


def chance_levels(results: dict) -> dict:
    """Mean chance levels of the localisation scores over the scans (equal for every method)."""
    loc = localisation_table(results)
    if loc.empty:
        return {}
    first = loc[loc["label"] == loc["label"].iloc[0]]
    return {"mass accuracy": float(first["chance_mass"].mean()), "voxel AUC": 0.5,
            "pointing game": float(first["chance_hit"].mean())}


def evaluate(ws, run, methods: Sequence[MethodRequest | str] = DEFAULT_METHODS, settings: Settings = Settings(),
             checks: Iterable[str] = CHECKS, *, device=None, progress: Progress | None = None) -> dict:
    """Run (or read from the cache) ``checks`` for ``methods`` on ``run``; returns :meth:`Evaluation.results`."""
    return Evaluation(ws, run, methods, settings).run_checks(checks, device=device, progress=progress)


# --- command line ------------------------------------------------------------------------------------------------------
CLI_FIELDS = {"split": "split", "scans": "n_scans", "seed": "seed", "target": "target", "regions": "regions",
              "cube_mm": "cube_mm", "atlas": "atlas", "steps": "steps", "replacement": "replacement",
              "blur_mm": "blur_mm", "order_score": "order_score", "output": "output",
              "random_repeats": "random_repeats", "sanity_scans": "sanity_scans", "top_fraction": "top_fraction",
              "threshold": "sanity_threshold", "truth": "truth", "min_loss": "min_loss", "min_mm": "min_mm",
              "tolerance_mm": "tolerance_mm", "batch_size": "batch_size"}


def format_report(ev: Evaluation, results: dict) -> str:
    """Plain-text report: the ranking table, chance levels and the sanity check step by step."""
    s = ev.settings
    lines = [f"run {ev.run.id} · {len(ev.scans['aopc'])} scans ({s.split} split) for region perturbation, "
             f"{len(ev.scans['sanity'])} for the sanity check, {len(ev.scans['localisation'])} with ground truth "
             "for localisation",
             f"region perturbation: {s.regions}"
             + (f" of {s.cube_mm:g} mm" if s.regions == "cubes" else f" of {s.atlas}")
             + f", {s.replacement} replacement, L = {s.steps} steps, f = {s.target} {s.output}", ""]
    table = summary(results, [m.label for m in ev.methods], s.sanity_threshold)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        lines.append(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    chance = chance_levels(results)
    if chance:
        lines.append("chance: " + ", ".join(f"{k} {v:.3f}" for k, v in chance.items()))
    lines.append(f"sanity: passes when |ρ| after randomising every layer < {s.sanity_threshold:g}")
    st = sanity_table(results)
    if not st.empty:
        lines += ["", "sanity check (mean over scans), randomised from the output layer down:"]
        wide = st.pivot(index="i", columns="label", values="spearman")
        wide.index = [st.drop_duplicates("i").set_index("i").loc[i, "step"] for i in wide.index]
        with pd.option_context("display.width", 200, "display.max_columns", 20):
            lines.append("Spearman ρ:\n" + wide.to_string(float_format=lambda v: f"{v:.3f}"))
            for metric, name in (("spearman_abs", "Spearman ρ of |maps|"), ("ssim", "SSIM"),
                                 ("topk", f"top-{s.top_fraction:.0%} overlap")):
                w = st.pivot(index="i", columns="label", values=metric)
                w.index = wide.index
                lines.append(f"{name}:\n" + w.to_string(float_format=lambda v: f"{v:.3f}"))
    lines.append(f"\ncached in {ev.root}")
    return "\n".join(lines)
