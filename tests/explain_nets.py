"""Small random 3D networks for the explanation tests (imported by tests/test_explain*.py)."""

from __future__ import annotations

import torch
from torch import nn

GRID = (11, 13, 10)


def small_net(seed: int = 0, *, dropout: float = 0.3) -> nn.Sequential:
    """Conv3d → BatchNorm3d → ReLU → MaxPool3d twice (padding, ceil-mode pooling), then a dense head; BatchNorm
    with non-trivial running statistics and affine parameters so that merging it matters. Built for ``GRID``."""
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(
        nn.Sequential(
            nn.Conv3d(1, 4, 3), nn.BatchNorm3d(4), nn.ReLU(), nn.MaxPool3d(2),
            nn.Conv3d(4, 6, 3, padding=1), nn.BatchNorm3d(6), nn.ReLU(), nn.MaxPool3d(3, ceil_mode=True),
        ),
        nn.Flatten(), nn.Dropout(dropout), nn.Linear(6 * 2 * 2 * 2, 12), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(12, 2),
    )
    return randomise(net, g)


def volumes(n: int = 3, seed: int = 1, dtype=torch.float32) -> torch.Tensor:
    """Signed random volumes ``(n, 1, *GRID)`` (normalised MRI intensities are signed too)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn((n, 1) + GRID, generator=g).to(dtype)


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def randomise(net: nn.Module, g: torch.Generator, weighted: tuple[type, ...] = ()) -> nn.Module:
    """He-scaled random weights, small random biases and non-trivial BatchNorm statistics (so that merging it
    matters) for every Conv3d, Linear and ``weighted`` module of ``net``; returns it in eval mode."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv3d, nn.Linear, *weighted)):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / m.weight[0].numel()) ** 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            if isinstance(m, nn.BatchNorm3d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_((torch.rand(m.num_features, generator=g) - 0.5) * 0.4)
    return net.eval()
