"""Integrated Gradients (Sundararajan et al. 2017): ``(x − x') ⊙ ∫₀¹ ∂ output / ∂ x (x' + α (x − x')) dα``.

The baseline ``x'`` is a constant image (0 by default: the training scans' mean intensity in the
normalised input, the value occlusion fills in). The integral is a quadrature over ``steps`` points, as
Captum's ``IntegratedGradients``: Gauss–Legendre by default, or a Riemann sum; ``batch_size`` points of
the path go through the network at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from lib.explain.catalogue import Method, Param, register
from lib.explain.gradients import check_output, gradient_plan, summed_gradients

QUADRATURES = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")


def quadrature(rule: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """``(alphas, weights)`` on [0, 1] of an integration rule with ``steps`` points: Captum's definitions, but
    the trapezoid weights are the textbook ones (they sum to 1; Captum's sum to (steps − 1) / steps)."""
    if rule == "gausslegendre":
        x, w = np.polynomial.legendre.leggauss(steps)
        return 0.5 * (x + 1), 0.5 * w
    if rule == "riemann_trapezoid":
        if steps < 2:
            raise ValueError("the trapezoid rule needs steps >= 2")
        alphas = np.linspace(0, 1, steps)
        weights = np.full(steps, 1 / (steps - 1))
        weights[[0, -1]] /= 2
        return alphas, weights
    offset = {"riemann_left": 0.0, "riemann_right": 1.0, "riemann_middle": 0.5}.get(rule)
    if offset is None:
        raise ValueError(f"integration must be one of {', '.join(QUADRATURES)}, not {rule!r}")
    return (np.arange(steps) + offset) / steps, np.full(steps, 1 / steps)


@dataclass(frozen=True)
class IntegratedGradientsParams:
    """steps : points of the path integral (Sundararajan et al.: 20–300 are usually enough). baseline : the
    constant reference image. integration : quadrature rule (see :data:`QUADRATURES`). output :
    "probability" or "logit". batch_size : path points per forward pass (no effect on the result)."""

    steps: int = 32
    baseline: float = 0.0
    integration: str = "gausslegendre"
    output: str = "probability"
    batch_size: int = 8

    def canonical(self) -> dict:
        if int(self.steps) < 1 or int(self.batch_size) < 1:
            raise ValueError("steps and batch_size must be >= 1")
        quadrature(self.integration, int(self.steps))  # validates the rule
        return {"steps": int(self.steps), "baseline": float(self.baseline), "integration": self.integration,
                "output": check_output(self.output)}


def integrated_gradients(model: nn.Module, volumes: torch.Tensor, target: torch.Tensor,
                         params: IntegratedGradientsParams):
    """Integrated gradients of each scan from the constant baseline, one batch of path points at a time."""
    p = params.canonical()
    plan = gradient_plan(model, volumes)
    alphas, weights = quadrature(p["integration"], p["steps"])
    maps = []
    for i in range(volumes.shape[0]):
        vol = volumes[i:i + 1]
        base = torch.full_like(vol, p["baseline"])
        shape = (-1,) + (1,) * (vol.dim() - 1)

        def path(a, b):
            alpha = torch.as_tensor(alphas[a:b], dtype=vol.dtype, device=vol.device)
            return base + alpha.view(shape) * (vol - base), torch.as_tensor(weights[a:b], dtype=vol.dtype,
                                                                             device=vol.device)

        maps.append((vol - base) * summed_gradients(plan, vol, target[i:i + 1], p["output"], len(alphas), path,
                                                    int(params.batch_size)))
    return torch.cat(maps)

register(Method(
    "integrated_gradients", "Integrated Gradients", integrated_gradients, IntegratedGradientsParams,
    "Gradients integrated along the straight path from a constant baseline to the scan, times the difference",
    "Sundararajan, Taly, Yan 2017, ICML (Axiomatic attribution for deep networks)",
    controls=(Param("steps", "int", 32, "Integration steps", 4, 300, 4,
                    help="Points of the path integral (Gauss–Legendre)"),),
    order=35, in_text="Integrated Gradients"))
