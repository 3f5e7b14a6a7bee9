"""The sanity check (Adebayo et al. 2018): similarity of two maps (Spearman ρ, 3D SSIM, top-k overlap) and
the cascading randomisation of the model's weight layers, output layer first."""

from __future__ import annotations

import copy
from typing import Iterator

import numpy as np
import torch
from scipy import ndimage
from scipy.stats import rankdata
from torch import nn


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


def sanity_run(model: nn.Module, x: torch.Tensor, explain_maps, brain: np.ndarray, settings, label: str,
               tick) -> tuple[dict, np.ndarray]:
    """The maps of ``x`` at every step of the cascading randomisation compared with the original ones.

    ``explain_maps(model, x)`` returns the maps as an array; returns (the result's steps and metrics, the first
    scan's map at every step scaled to its peak, as float16)."""
    steps_out, sims, example = [], [], []
    original = None
    for name, mod in cascade(model, settings.seed):
        r = explain_maps(mod, x)
        if original is None:
            original = r
        steps_out.append(name)
        sims.append([map_similarity(original[i], r[i], brain, settings.top_fraction) for i in range(len(x))])
        peak = np.abs(r[0][brain]).max()
        example.append((r[0] / peak if peak > 0 else r[0]).astype(np.float16))
        tick(len(x), f"{label}: sanity check, randomised down to {name}")
    metrics = {k: [[d[k] for d in step] for step in sims] for k in ("spearman", "spearman_abs", "ssim", "topk")}
    return {"steps": steps_out, **metrics}, np.stack(example)
