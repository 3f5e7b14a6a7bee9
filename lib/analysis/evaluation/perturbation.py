"""Region perturbation (Samek et al. 2017): regions of the volume, their order by a map's relevance, the
replacement values, the output curve while regions are perturbed cumulatively, and AOPC."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from lib.analysis.evaluation.settings import REPLACEMENTS


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


# --- the runs of one evaluation ------------------------------------------------------------------------------------
def partition(settings, grid, brain: np.ndarray) -> np.ndarray:
    """The regions perturbed: cubes of ``cube_mm`` touching the brain, or the atlas's regions (labels 1…n)."""
    if settings.regions == "cubes":
        edge = max(1, int(round(settings.cube_mm / grid.resolution)))
        return cube_partition(grid.shape, edge, brain)
    from lib.data.atlas import load_atlas

    return compact_labels(load_atlas(settings.atlas, grid.resolution).labels)


class Perturbation:
    """Region perturbation of the request's scans: the regions, the replacement of each scan, the curves."""

    def __init__(self, model: nn.Module, settings, grid, brain: np.ndarray, target: int, device):
        self.model, self.settings, self.target = model, settings, target
        self.labels = partition(settings, grid, brain)
        self.index = RegionIndex(self.labels, device)
        self.n_regions = int(self.labels.max())
        self.steps = min(settings.steps, self.n_regions)
        self.brain_t = torch.from_numpy(brain).to(device)
        self.blur_vox = settings.blur_mm / grid.resolution

    @property
    def meta(self) -> dict:
        return {"n_regions": self.n_regions, "steps": self.steps}

    def replacement_for(self, x: torch.Tensor, i_scan: int) -> torch.Tensor:
        """One replacement volume per scan, shared by every order and method."""
        rng = np.random.default_rng([self.settings.seed, i_scan, 7])
        return replacement_volume(x, self.settings.replacement, self.brain_t, rng=rng, blur_vox=self.blur_vox)

    def _curve(self, x: torch.Tensor, order: np.ndarray, replacement: torch.Tensor) -> np.ndarray:
        s = self.settings
        return perturbation_curve(self.model, x, order, self.index, replacement, target=self.target,
                                  output=s.output, batch_size=s.batch_size)

    def random_outputs(self, inputs, scans: list[str], tick) -> np.ndarray:
        """``(scans, steps + 1)`` outputs with the regions in random order (``random_repeats`` averaged)."""
        s, outs = self.settings, []
        for i, sid in enumerate(scans):
            x = inputs([sid])
            repl = self.replacement_for(x, i)
            rng = np.random.default_rng([s.seed, i, 11])
            curves = [self._curve(x, random_order(self.n_regions, rng)[:self.steps], repl)
                      for _ in range(s.random_repeats)]
            outs.append(np.mean(curves, axis=0))
            tick(1, f"random order: scan {i + 1}/{len(scans)}")
        return np.array(outs)

    def morf_outputs(self, inputs, scans: list[str], maps: dict, label: str, tick) -> np.ndarray:
        """``(scans, steps + 1)`` outputs with the regions most relevant first by each scan's map."""
        s, outs = self.settings, []
        for i, sid in enumerate(scans):
            x = inputs([sid])
            rng = np.random.default_rng([s.seed, i, 13])
            order = morf_order(region_scores(maps[sid], self.labels, s.order_score), rng)[:self.steps]
            outs.append(self._curve(x, order, self.replacement_for(x, i)))
            tick(1, f"{label}: region perturbation {i + 1}/{len(scans)}")
        return np.array(outs)
