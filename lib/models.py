"""3D CNNs from the papers, chosen by name from a registry.

``boehle2019`` is the network of Böhle et al. 2019 §2.2: four blocks of
Conv3d 3×3×3 (8/16/32/64 filters) → BatchNorm3d → ReLU → MaxPool3d (windows
2/3/2/3), then dropout 0.4 → Linear 128 → ReLU → dropout 0.4 → Linear 2. The
two outputs are HC then AD, as in the paper; the model returns logits (softmax
is applied by the caller where probabilities are needed).

``rieke2018`` follows Rieke et al. 2018 §3.2: the same four convolution blocks
(pooling windows 2/3/2/3 as in the authors' published code, an assumption where
the paper is silent), dropout 0.8 before a dense 128 → 64 → 2 head.

Both are input-grid agnostic: the first dense layer is sized from the grid by
a dry run, and a block whose valid convolution would leave fewer voxels than
its pooling window pads the convolution (and pools with ``ceil_mode``) so that
small grids do not vanish. Sequential modules with non-inplace ReLUs keep the
models easy to canonise and explain layer by layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

CLASSES = ("HC", "AD")
FILTERS = (8, 16, 32, 64)
POOLS = (2, 3, 2, 3)


def _conv_blocks(in_shape: tuple[int, int, int]) -> tuple[nn.Sequential, tuple[int, int, int]]:
    layers: list[nn.Module] = []
    shape = list(in_shape)
    channels = 1
    for i, (f, w) in enumerate(zip(FILTERS, POOLS)):
        valid = [s - 2 for s in shape]
        pad = 1 if min(valid) < w else 0
        after_conv = [s - 2 + 2 * pad for s in shape]
        ceil = min(after_conv) < w
        layers += [
            nn.Conv3d(channels, f, kernel_size=3, padding=pad),
            nn.BatchNorm3d(f),
            nn.ReLU(),
            nn.MaxPool3d(w, ceil_mode=ceil),
        ]
        shape = [(-(-s // w) if ceil else s // w) for s in after_conv]
        shape = [max(s, 1) for s in shape]
        channels = f
    return nn.Sequential(*layers), tuple(shape)


class _GridCNN(nn.Sequential):
    """The four convolution blocks followed by ``head(n_flat)``, sized for ``input_shape``."""

    def __init__(self, input_shape: tuple[int, int, int], head: Callable[[int], list[nn.Module]]):
        features, out = _conv_blocks(tuple(input_shape))
        super().__init__(features, nn.Flatten(), *head(FILTERS[-1] * out[0] * out[1] * out[2]))
        self.input_shape = tuple(input_shape)


class Boehle2019(_GridCNN):
    """Böhle et al. 2019 §2.2. Input ``(N, 1, X, Y, Z)``; output logits ``(N, 2)`` = (HC, AD)."""

    def __init__(self, input_shape: tuple[int, int, int], dropout: float = 0.4):
        super().__init__(input_shape, lambda n_flat: [
            nn.Dropout(dropout), nn.Linear(n_flat, 128), nn.ReLU(),
            nn.Dropout(dropout), nn.Linear(128, 2)])


class Rieke2018(_GridCNN):
    """Rieke et al. 2018 §3.2. Input ``(N, 1, X, Y, Z)``; output logits ``(N, 2)`` = (HC, AD)."""

    def __init__(self, input_shape: tuple[int, int, int], dropout: float = 0.8):
        super().__init__(input_shape, lambda n_flat: [
            nn.Dropout(dropout), nn.Linear(n_flat, 128), nn.ReLU(),
            nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 2)])


@dataclass(frozen=True)
class ModelSpec:
    name: str
    build: Callable[..., nn.Module]
    reference: str


REGISTRY: dict[str, ModelSpec] = {
    "boehle2019": ModelSpec("boehle2019", Boehle2019, "Böhle et al. 2019, Front. Aging Neurosci. 11:194, §2.2"),
    "rieke2018": ModelSpec("rieke2018", Rieke2018, "Rieke et al. 2018, MLCN workshop, LNCS 11038, §3.2"),
}


def build_model(name: str, input_shape: tuple[int, int, int], **kwargs) -> nn.Module:
    """A freshly initialised model from the registry for volumes of ``input_shape`` (X, Y, Z)."""
    if name not in REGISTRY:
        raise KeyError(f"unknown model {name!r}; choose one of {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name].build(tuple(int(s) for s in input_shape), **kwargs)


def default_device() -> torch.device:
    """CUDA when present, otherwise the CPU; never hard-coded by callers."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
