"""Occlusion (Zeiler & Fergus 2014) and brain-area occlusion (Rieke et al. 2018), batched.

Relevance of a voxel is the drop of the explained output (the target's softmax
probability by default, as in Rieke et al.) when it is occluded: for patches,
the mean drop over all patch positions that cover the voxel (a full-resolution
map, like Captum's ``Occlusion``); for atlas areas, the drop when its whole area
is occluded. Many occluded copies go through the network in one forward batch.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lib.data.templates import BASE_SHAPE, Grid
from lib.explain.canonizers import FlattenOp, LinearOp, MaxPoolOp, PatchOp, Plan, apply, plan_for
from lib.explain.engine import output_of

KNOWN_RESOLUTIONS = (1.0, 1.5, 2.0, 2.5, 3.0, 4.0)


def infer_voxel_size(shape) -> float:
    """Voxel size (mm) of a grid covering the template's field of view: exact for template grids, else
    the mean of ``193/X, 229/Y, 193/Z``."""
    shape = tuple(int(s) for s in shape)
    for r in KNOWN_RESOLUTIONS:
        if Grid(r).shape == shape:
            return r
    if len(shape) != 3:
        raise ValueError(f"cannot infer the voxel size of a {len(shape)}D grid; pass voxel_size")
    return float(np.mean([b / s for b, s in zip(BASE_SHAPE, shape)]))


def patch_starts(length: int, patch: int, stride: int) -> list[int]:
    """Start indices along one axis so that patches of ``patch`` voxels every ``stride`` cover the axis."""
    if patch >= length:
        return [0]
    starts = list(range(0, length - patch + 1, stride))
    if starts[-1] + patch < length:
        starts.append(length - patch)
    return starts


@dataclass(frozen=True)
class OcclusionParams:
    """patch_mm : edge of the cubic patch in mm (Rieke et al. 2018: 40 mm, i.e. 40³ voxels at 1 mm; scaled to the
    grid's voxel size). stride_mm : step between patch positions in mm (``None``: half a patch; the paper does
    not state it, the authors' code used half a patch). fill : value written into the patch (paper: 0).
    voxel_size : mm per voxel; ``None`` infers it from the grid (template field of view). output :
    "probability" or "logit". positive_only : clip the map at 0 (the authors' code clipped its per-patch map).
    batch_size : occluded copies per forward pass (no effect on the result beyond float rounding)."""

    patch_mm: float = 40.0
    stride_mm: float | None = None
    fill: float = 0.0
    voxel_size: float | None = None
    output: str = "probability"
    positive_only: bool = False
    batch_size: int = 16

    def canonical(self) -> dict:
        if self.output not in ("probability", "logit"):
            raise ValueError(f"output must be 'probability' or 'logit', not {self.output!r}")
        if self.patch_mm <= 0 or (self.stride_mm is not None and self.stride_mm <= 0):
            raise ValueError("patch_mm and stride_mm must be positive")
        return {"patch_mm": float(self.patch_mm),
                "stride_mm": float(self.patch_mm / 2 if self.stride_mm is None else self.stride_mm),
                "fill": float(self.fill), "voxel_size": None if self.voxel_size is None else float(self.voxel_size),
                "output": self.output, "positive_only": bool(self.positive_only)}

    def voxels(self, shape) -> tuple[int, int]:
        """(patch, stride) in voxels for a grid of ``shape``."""
        p = self.canonical()
        vs = p["voxel_size"] or infer_voxel_size(shape)
        return max(1, int(round(p["patch_mm"] / vs))), max(1, int(round(p["stride_mm"] / vs)))


def _labels_hash(labels) -> str:
    a = np.ascontiguousarray(np.asarray(labels))
    h = hashlib.sha256(str((a.shape, a.dtype.str)).encode())
    h.update(a.tobytes())
    return "sha256:" + h.hexdigest()


@dataclass(frozen=True)
class AreaOcclusionParams:
    """labels : int array (X, Y, Z) of atlas labels on the volumes' grid (0 = background, never occluded); each
    label is occluded in turn. fill, output, positive_only, batch_size : as for occlusion."""

    labels: object = field(default=None, compare=False)
    fill: float = 0.0
    output: str = "probability"
    positive_only: bool = False
    batch_size: int = 16

    def canonical(self) -> dict:
        if self.labels is None:
            raise ValueError("area_occlusion needs labels: an int array (X, Y, Z) of atlas labels")
        if self.output not in ("probability", "logit"):
            raise ValueError(f"output must be 'probability' or 'logit', not {self.output!r}")
        return {"labels": _labels_hash(self.labels), "fill": float(self.fill), "output": self.output,
                "positive_only": bool(self.positive_only)}


class _Incremental:
    """Forward passes of one volume with a box of it replaced, recomputing only what the box can change.

    Through the convolution/pooling stages (until the first Flatten or dense
    layer) each occluded copy only carries the part of every feature map that
    its box can reach (its receptive-field footprint, rounded to whole pooling
    windows); the rest is the unoccluded volume's, computed once. On the paper's
    network a 40 mm patch touches a few percent of the first, most expensive
    layers, so this is where batched occlusion gets its speed on a CPU too.
    Numerically it is the same forward pass, cropped.
    """

    def __init__(self, plan: Plan, vol: torch.Tensor):
        self.plan = plan
        ops = plan.ops
        k = 0
        # a patch split (PIF layer) is not local either: the full forward pass takes over there
        while k < len(ops) and not isinstance(ops[k], (FlattenOp, PatchOp)) and not (
                isinstance(ops[k], LinearOp) and not ops[k].is_conv):
            k += 1
        self.k = k
        # per op < k: None (elementwise) or (effective kernel, stride, padding, output size, padded input)
        self.levels: list = []
        a = vol
        for op in ops[:k]:
            out = apply(op, a)
            if isinstance(op, (LinearOp, MaxPoolOp)):
                kernel = op.weight.shape[2:] if isinstance(op, LinearOp) else op.kernel
                ke = tuple(d * (kk - 1) + 1 for d, kk in zip(op.dilation, kernel))
                osz = tuple(out.shape[2:])
                hi = [max(0, (o - 1) * st - p + e - i) for o, st, p, e, i in
                      zip(osz, op.stride, op.padding, ke, a.shape[2:])]
                pads = [v for p, h in zip(op.padding[::-1], hi[::-1]) for v in (p, h)]
                # zero padding for convolutions; -inf for pooling (out-of-range inputs never win)
                value = 0.0 if isinstance(op, LinearOp) else float("-inf")
                self.levels.append((ke, op.stride, op.padding, osz, F.pad(a, pads, value=value)))
            else:
                self.levels.append(None)
            a = out
        self.tail_input = a  # input of op k, unoccluded

    @staticmethod
    def _cropped(op, x: torch.Tensor) -> torch.Tensor:
        """``op`` on an already padded crop."""
        if isinstance(op, LinearOp):
            conv = (F.conv1d, F.conv2d, F.conv3d)[op.ndim - 1]
            return conv(x, op.weight, op.bias, op.stride, 0, op.dilation)
        pool = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[op.ndim - 1]
        return pool(x, op.kernel, op.stride, 0, op.dilation)

    def forward(self, boxes: list) -> torch.Tensor:
        """Logits ``(B, K)``, one row per ``(lo, values)``: the volume with the box at ``lo`` set to ``values``
        (``(C, *size)``)."""
        regions = [(tuple(int(v) for v in lo), vals) for lo, vals in boxes]
        batched = None  # (B, C, *size) once all regions share a shape
        for op, level in zip(self.plan.ops[:self.k], self.levels):
            if level is None:
                if batched is not None:
                    batched = apply(op, batched)
                    regions = [(lo, batched[b]) for b, (lo, _) in enumerate(regions)]
                else:
                    regions = [(lo, apply(op, v[None])[0]) for lo, v in regions]
                continue
            ke, stride, pad, osz, padded = level
            nd = len(ke)
            ranges = []
            for lo, v in regions:
                r = []
                for d in range(nd):
                    a, b = lo[d], lo[d] + v.shape[1 + d]  # changed inputs [a, b)
                    o0 = max(0, -(-(a + pad[d] - ke[d] + 1) // stride[d]))
                    o1 = min(osz[d], (b - 1 + pad[d]) // stride[d] + 1)
                    r.append((o0, max(o1, o0 + 1)))
                ranges.append(r)
            # one output box size for the whole batch: the largest, shifted to stay inside the map
            count = [min(osz[d], max(r[d][1] - r[d][0] for r in ranges)) for d in range(nd)]
            size = [(count[d] - 1) * stride[d] + ke[d] for d in range(nd)]
            crops = padded.new_empty((len(regions), padded.shape[1], *size))
            starts = []
            for i, ((lo, v), r) in enumerate(zip(regions, ranges)):
                o0 = [min(r[d][0], osz[d] - count[d]) for d in range(nd)]
                c0 = [o0[d] * stride[d] for d in range(nd)]  # crop start in padded coordinates
                crop = crops[i]
                crop.copy_(padded[(0, slice(None)) + tuple(slice(a, a + n) for a, n in zip(c0, size))])
                src, dst = [], []
                for d in range(nd):
                    a = max(lo[d] + pad[d], c0[d])
                    b = max(a, min(lo[d] + pad[d] + v.shape[1 + d], c0[d] + size[d]))
                    src.append(slice(a - lo[d] - pad[d], b - lo[d] - pad[d]))
                    dst.append(slice(a - c0[d], b - c0[d]))
                crop[(slice(None),) + tuple(dst)] = v[(slice(None),) + tuple(src)]
                starts.append(tuple(o0))
            batched = self._cropped(op, crops)
            regions = [(lo, batched[b]) for b, lo in enumerate(starts)]
        full = self.tail_input.expand(len(regions), *self.tail_input.shape[1:]).clone()
        for b, (lo, v) in enumerate(regions):
            full[(b, slice(None)) + tuple(slice(s, s + n) for s, n in zip(lo, v.shape[1:]))] = v
        return _forward_from(self.plan, full, self.k)


def _forward_from(plan: Plan, x: torch.Tensor, start: int) -> torch.Tensor:
    for op in plan.ops[start:]:
        x = apply(op, x)
    return x


def _drops(plan: Plan, vol: torch.Tensor, target: int, boxes, batch_size: int, output: str) -> torch.Tensor:
    """Output drop per occluded copy of one volume ``(1, C, ...)``: base − occluded, ``(len(boxes),)``.

    ``boxes[i] = (lo, make_values)``: the copy's box starts at ``lo`` and holds ``make_values()`` (``(C, *size)``).
    """
    t = torch.tensor([target], device=vol.device)
    inc = _Incremental(plan, vol)
    base = output_of(_forward_from(plan, inc.tail_input, inc.k), t, output)[0]
    drops = []
    for b0 in range(0, len(boxes), batch_size):
        chunk = [(lo, make()) for lo, make in boxes[b0:b0 + batch_size]]
        out = output_of(inc.forward(chunk), t.expand(len(chunk)), output)
        drops.append(base - out)
    return torch.cat(drops)


def occlusion(model: nn.Module, volumes: torch.Tensor, target: torch.Tensor, params: OcclusionParams):
    """Sliding-patch occlusion; each voxel gets the mean output drop of the patches covering it."""
    p = params.canonical()
    if int(params.batch_size) < 1:
        raise ValueError("batch_size must be >= 1")
    plan = plan_for(model, volumes.device, volumes.dtype, "merge")
    spatial = tuple(volumes.shape[2:])
    patch, stride = params.voxels(spatial)
    axes = [patch_starts(n, patch, stride) for n in spatial]
    corners = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(spatial))
    starts = [tuple(int(v) for v in c) for c in corners]
    size = tuple(min(patch, n) for n in spatial)
    block = torch.full((volumes.shape[1],) + size, p["fill"], dtype=volumes.dtype, device=volumes.device)
    boxes = [(lo, lambda: block) for lo in starts]

    index = torch.tensor(starts, device=volumes.device)
    count = _box_sum(torch.ones(len(starts), dtype=volumes.dtype, device=volumes.device), index, size, spatial)
    out = torch.zeros_like(volumes)
    for n in range(volumes.shape[0]):
        drops = _drops(plan, volumes[n:n + 1], int(target[n]), boxes, int(params.batch_size), p["output"])
        out[n, :] = _box_sum(drops, index, size, spatial) / count.clamp(min=1)
    return out.clamp(min=0) if p["positive_only"] else out


def _box_sum(values: torch.Tensor, starts: torch.Tensor, size: tuple[int, ...], shape: tuple[int, ...]):
    """Sum over patches of ``values[i]`` on the box ``[starts[i], starts[i] + size)``, as a ``shape`` map:
    impulses at the box corners, then a cumulative sum along each axis (cost independent of the patch size)."""
    nd = len(shape)
    grid = values.new_zeros(tuple(s + 1 for s in shape))
    for corner in range(2 ** nd):  # inclusion–exclusion over the 2^nd corners of each box
        offs = [(corner >> d) & 1 for d in range(nd)]
        sign = (-1) ** sum(offs)
        idx = tuple(starts[:, d] + offs[d] * size[d] for d in range(nd))
        grid.index_put_(idx, sign * values, accumulate=True)
    for d in range(nd):
        grid = grid.cumsum(d)
    return grid[tuple(slice(0, s) for s in shape)]


def area_occlusion(model: nn.Module, volumes: torch.Tensor, target: torch.Tensor, params: AreaOcclusionParams):
    """Each atlas area occluded in turn; every voxel of an area gets that area's output drop."""
    p = params.canonical()
    if int(params.batch_size) < 1:
        raise ValueError("batch_size must be >= 1")
    plan = plan_for(model, volumes.device, volumes.dtype, "merge")
    labels = torch.as_tensor(np.asarray(params.labels), device=volumes.device)
    if tuple(labels.shape) != tuple(volumes.shape[2:]):
        raise ValueError(f"labels shape {tuple(labels.shape)} does not match the volumes' grid "
                         f"{tuple(volumes.shape[2:])}")
    ids = [int(v) for v in torch.unique(labels).tolist() if v != 0]
    areas = []
    for v in ids:
        mask = labels == v
        idx = mask.nonzero()
        lo, hi = idx.min(0).values.tolist(), (idx.max(0).values + 1).tolist()
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        areas.append((mask, tuple(lo), box))
    fill = p["fill"]

    out = torch.zeros_like(volumes)
    for n in range(volumes.shape[0]):
        vol = volumes[n:n + 1]

        def values(mask_box, box):
            crop = vol[(0, slice(None)) + box]
            return torch.where(mask_box, torch.as_tensor(fill, dtype=vol.dtype, device=vol.device), crop)

        boxes = [(lo, (lambda m=mask, b=box: values(m[b], b))) for mask, lo, box in areas]
        drops = _drops(plan, vol, int(target[n]), boxes, int(params.batch_size), p["output"])
        acc = torch.zeros(volumes.shape[2:], dtype=volumes.dtype, device=volumes.device)
        for (mask, _, _), d in zip(areas, drops):
            acc[mask] = d
        out[n, :] = acc
    return out.clamp(min=0) if p["positive_only"] else out
