"""Gradient-based maps: sensitivity, guided backprop, gradient × input and Grad-CAM."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from lib.explain.canonizers import AffineOp, LinearOp, PatchOp, ReLUOp, plan_for
from lib.explain.engine import gradient_sweep


def check_output(output: str) -> str:
    if output not in ("probability", "logit"):
        raise ValueError(f"output must be 'probability' or 'logit', not {output!r}")
    return output


@dataclass(frozen=True)
class GradientParams:
    """output : "probability" (softmax of the target, Rieke et al. 2018) or "logit";
    absolute : take |gradient| (as both papers did)."""

    output: str = "probability"
    absolute: bool = True

    def canonical(self) -> dict:
        return {"output": check_output(self.output), "absolute": bool(self.absolute)}


@dataclass(frozen=True)
class GradientXInputParams:
    """output : "probability" or "logit" (the explained scalar)."""

    output: str = "probability"

    def canonical(self) -> dict:
        return {"output": check_output(self.output)}


@dataclass(frozen=True)
class GradCAMParams:
    """layer : index of the convolution block whose activation is used (-1: the last one); the activation is
    the block's ReLU output (before its max-pooling), so the map keeps the block's full resolution.
    output : "logit" (the class score before softmax, Selvaraju et al. 2017) or "probability".
    relu : clip the weighted map at 0 (Grad-CAM's ReLU)."""

    layer: int = -1
    output: str = "logit"
    relu: bool = True

    def canonical(self) -> dict:
        return {"layer": int(self.layer), "output": check_output(self.output), "relu": bool(self.relu)}


def gradient_plan(model, volumes):
    """The plan every gradient method sweeps (BatchNorm merged)."""
    # BatchNorm merging is exact for gradients, so every gradient method uses the merged plan
    return plan_for(model, volumes.device, volumes.dtype, "merge")


def sensitivity(model: nn.Module, volumes: torch.Tensor, target: torch.Tensor, params: GradientParams):
    """Sensitivity analysis (Simonyan et al. 2014): ∂ output / ∂ input, absolute by default."""
    p = params.canonical()
    g = gradient_sweep(gradient_plan(model, volumes), volumes, target, p["output"])
    return g.abs() if p["absolute"] else g


def guided_backprop(model: nn.Module, volumes: torch.Tensor, target: torch.Tensor, params: GradientParams):
    """Guided backpropagation (Springenberg et al. 2015): negative gradients zeroed at each ReLU."""
    p = params.canonical()
    g = gradient_sweep(gradient_plan(model, volumes), volumes, target, p["output"], guided=True)
    return g.abs() if p["absolute"] else g


def summed_gradients(plan, volume: torch.Tensor, target: torch.Tensor, output: str, n: int,
                     points: Callable[[int, int], tuple[torch.Tensor, torch.Tensor | None]], batch_size: int,
                     absolute: bool = False) -> torch.Tensor:
    """``Σ_k w_k · ∂ output / ∂ x (x_k)`` over ``n`` inputs ``x_k`` derived from one volume ``(1, C, ...)``
    (SmoothGrad's noisy copies, the points of Integrated Gradients' path), ``batch_size`` at a time.

    ``points(start, stop)`` returns the inputs ``(stop − start, C, ...)`` and their weights ``(stop − start,)``
    (None: all 1); ``target`` is the volume's class index ``(1,)``; ``absolute`` sums ``|gradient|``.
    """
    acc = torch.zeros_like(volume)
    for start in range(0, n, batch_size):
        x, w = points(start, min(start + batch_size, n))
        g = gradient_sweep(plan, x, target.expand(x.shape[0]), output)
        if absolute:
            g = g.abs()
        if w is not None:
            g = g * w.view((-1,) + (1,) * (g.dim() - 1))
        acc += g.sum(0, keepdim=True)
    return acc


def gradient_x_input(model: nn.Module, volumes: torch.Tensor, target: torch.Tensor, params: GradientXInputParams):
    """Gradient × input (Shrikumar et al. 2016): ``x ⊙ ∂ output / ∂ x``."""
    p = params.canonical()
    return volumes * gradient_sweep(gradient_plan(model, volumes), volumes, target, p["output"])


def gradcam_layer_index(plan, layer: int) -> int:
    """Index into ``plan.ops`` of the activation Grad-CAM uses for convolution block ``layer``."""
    convs = [i for i, op in enumerate(plan.ops) if isinstance(op, LinearOp) and op.is_conv]
    if not convs:
        raise ValueError("Grad-CAM needs a convolution layer")
    try:
        i = convs[layer]
    except IndexError:
        raise ValueError(f"Grad-CAM layer {layer} out of range: the model has {len(convs)} convolution blocks")
    j = i
    while j + 1 < len(plan.ops) and isinstance(plan.ops[j + 1], AffineOp):
        j += 1  # an unmerged BatchNorm belongs to the block
    if j + 1 < len(plan.ops) and isinstance(plan.ops[j + 1], ReLUOp):
        j += 1
    return j


def gradcam(model: nn.Module, volumes: torch.Tensor, target: torch.Tensor, params: GradCAMParams):
    """Grad-CAM (Selvaraju et al. 2017) in 3D: channel weights are the gradients averaged over all spatial
    axes; the weighted activation map is upsampled trilinearly to the input grid."""
    p = params.canonical()
    plan = gradient_plan(model, volumes)
    stop = gradcam_layer_index(plan, p["layer"])

    def cam(act, grad):
        dims = tuple(range(2, act.dim()))
        weights = grad.mean(dim=dims, keepdim=True)
        m = (weights * act).sum(1, keepdim=True)
        return F.relu(m) if p["relu"] else m

    conv = max(i for i in range(stop + 1) if isinstance(plan.ops[i], LinearOp))
    split = plan.ops[conv - 1] if conv > 0 else None
    if isinstance(split, PatchOp):
        # a patch-individual filter block: each channel lives in its own patch, so the map is formed per
        # patch (summed over that patch's filters), resized to the patch and placed back on the grid
        def cam_pif(act, grad):
            weights = grad.mean(dim=tuple(range(2, act.dim())), keepdim=True)
            wa = (weights * act).unflatten(1, (split.n_patches, -1)).sum(2)
            wa = F.relu(wa) if p["relu"] else wa
            wa = F.interpolate(wa, size=split.patch, mode="trilinear", align_corners=False)
            return split.assemble(wa)

        m = gradient_sweep(plan, volumes, target, p["output"], stop_at=stop, on_stop=cam_pif)
    else:
        m = gradient_sweep(plan, volumes, target, p["output"], stop_at=stop, on_stop=cam)
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[m.dim() - 2]
    return F.interpolate(m, size=volumes.shape[2:], mode=mode, align_corners=False)
