"""SmoothGrad (Smilkov et al. 2017): the sensitivity map averaged over noisy copies of the scan.

Each copy adds Gaussian noise of standard deviation ``noise`` × (the scan's maximum − minimum), the
paper's noise level (10–20 % recommended). The noise is drawn on the CPU from a generator seeded with
``seed`` for every scan on its own, so a scan's map depends neither on the device nor on the batch it is
explained in. Per copy the gradient is taken like :func:`lib.explain.gradients.sensitivity` (``|∂ output /
∂ voxel|`` by default, as Captum's ``NoiseTunnel(Saliency)``); ``batch_size`` copies go through the network at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lib.explain.catalogue import Method, Param, register
from lib.explain.gradients import check_output, gradient_plan, summed_gradients


@dataclass(frozen=True)
class SmoothGradParams:
    """n_samples : noisy copies per scan (Smilkov et al. 2017 used 50; 16 keeps a cohort affordable on a CPU).
    noise : noise σ as a fraction of the scan's intensity range (the paper: 0.1–0.2). seed : of the noise.
    output : "probability" or "logit". absolute : average |gradient| rather than the signed gradient.
    batch_size : noisy copies per forward pass (no effect on the result beyond float rounding)."""

    n_samples: int = 16
    noise: float = 0.15
    seed: int = 0
    output: str = "probability"
    absolute: bool = True
    batch_size: int = 8

    def canonical(self) -> dict:
        if int(self.n_samples) < 1 or int(self.batch_size) < 1:
            raise ValueError("n_samples and batch_size must be >= 1")
        if float(self.noise) < 0:
            raise ValueError("noise must be >= 0")
        return {"n_samples": int(self.n_samples), "noise": float(self.noise), "seed": int(self.seed),
                "output": check_output(self.output), "absolute": bool(self.absolute)}


def smoothgrad(model: nn.Module, volumes: torch.Tensor, target: torch.Tensor, params: SmoothGradParams):
    """Mean over ``n_samples`` noisy copies of each scan of its (absolute) gradient."""
    p = params.canonical()
    plan = gradient_plan(model, volumes)
    n = p["n_samples"]
    out = torch.zeros_like(volumes)
    for i in range(volumes.shape[0]):
        vol = volumes[i:i + 1]
        sigma = p["noise"] * float(vol.max() - vol.min())
        g = torch.Generator().manual_seed(p["seed"])
        noise = torch.randn((n,) + tuple(vol.shape[1:]), generator=g, dtype=volumes.dtype) * sigma
        copies = lambda a, b: (vol + noise[a:b].to(volumes.device), None)  # noqa: E731
        out[i:i + 1] = summed_gradients(plan, vol, target[i:i + 1], p["output"], n, copies, int(params.batch_size),
                                        absolute=p["absolute"]) / n
    return out


register(Method(
    "smoothgrad", "SmoothGrad", smoothgrad, SmoothGradParams,
    "Sensitivity averaged over noisy copies of the scan (Gaussian noise, σ a fraction of its range)",
    "Smilkov, Thorat, Kim, Viégas, Wattenberg 2017, arXiv:1706.03825",
    controls=(Param("n_samples", "int", 16, "Noisy copies", 1, 200, 1,
                    help="Copies averaged per scan (Smilkov et al. 2017: 50)"),
              Param("noise", "float", 0.15, "Noise level", 0.0, 1.0, 0.05,
                    help="σ of the noise as a fraction of the scan's intensity range (the paper: 0.1–0.2)")),
    absolute=True, order=25))
