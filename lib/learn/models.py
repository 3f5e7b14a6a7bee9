"""3D CNNs from the papers, chosen by name from a registry.

``boehle2019`` is the network of Böhle et al. 2019 §2.2: four blocks of
Conv3d 3×3×3 (8/16/32/64 filters) → BatchNorm3d → ReLU → MaxPool3d (windows
2/3/2/3), then dropout 0.4 → Linear 128 → ReLU → dropout 0.4 → Linear 2. The
two outputs are the negative then the positive class (HC then AD in the paper); the model returns logits (softmax
is applied by the caller where probabilities are needed).

``pif2021`` is ``boehle2019`` with its last convolution block replaced by a
patch-individual filter layer (Eitel et al. 2021a, see :class:`Pif2021`).

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

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from lib.data.classes import DEFAULT_CLASSES

CLASSES = DEFAULT_CLASSES.names  # logit order: (negative, positive) of the default task
POSITIVE_INDEX = 1                # the positive class's logit, whatever the workspace's task
FILTERS = (8, 16, 32, 64)
POOLS = (2, 3, 2, 3)


def _conv_blocks(in_shape: tuple[int, int, int], n_blocks: int = 4) -> tuple[nn.Sequential, tuple[int, int, int]]:
    layers: list[nn.Module] = []
    shape = list(in_shape)
    channels = 1
    for i, (f, w) in enumerate(zip(FILTERS[:n_blocks], POOLS[:n_blocks])):
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


class PatchIndividualFilters3d(nn.Module):
    """Patch-individual filter (PIF) layer, Eitel et al. 2021a (thesis study 5): split, process, reassemble.

    The input feature map ``(N, C, X, Y, Z)`` is cut into a grid of ``patches`` per axis (patch size
    ``ceil(S / n)``; the last patch of an axis is zero-padded at the far end), plus, with ``overlap``, a
    second strain of patches shifted by half a patch (thesis eq. 3) that lie wholly inside the map (no
    border patches that would need padding). Each patch has its own ``filters`` convolutions of size
    ``kernel`` (weights shared within a patch, never across patches). The output keeps one channel block
    per patch, ``(N, P·filters, o, o, o)`` in patch-major order, which the dense head flattens (the
    authors' code ran without reassembly too). A patch smaller than the kernel is convolved with padding
    so that small grids keep one output voxel per patch voxel.

    Implemented as one grouped convolution over the gathered patches (``groups = P``), so the layer is a
    gather (a fixed linear routing) followed by an ordinary linear map: gradients and LRP go through it
    exactly. Overlapping patches are copies of the same input; their gradients and relevance add up at
    the shared voxels (what autograd does; the thesis averages them, which would lose relevance).
    """

    def __init__(self, in_channels: int, input_shape: tuple[int, int, int], *, filters: int = 3,
                 patches: tuple[int, int, int] = (2, 3, 2), kernel: int = 3, overlap: bool = True,
                 patch_size: tuple[int, int, int] | None = None):
        super().__init__()
        shape = tuple(int(s) for s in input_shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"PIF input shape must be three positive sizes, not {input_shape}")
        if patch_size is None:
            n_req = tuple(int(n) for n in patches)
            if len(n_req) != 3 or min(n_req) < 1:
                raise ValueError(f"patches must be three positive counts per axis, not {patches}")
            size = tuple(-(-s // min(n, s)) for s, n in zip(shape, n_req))
        else:
            size = tuple(min(int(p), s) for p, s in zip(patch_size, shape))
            if len(size) != 3 or min(size) < 1:
                raise ValueError(f"patch_size must be three positive sizes, not {patch_size}")
        grid = tuple(-(-s // p) for s, p in zip(shape, size))
        padded = tuple(n * p for n, p in zip(grid, size))
        origins = [(i * size[0], j * size[1], k * size[2])
                   for i in range(grid[0]) for j in range(grid[1]) for k in range(grid[2])]
        if overlap:
            shift = tuple(p // 2 for p in size)
            count = tuple((s - h) // p if h else 0 for s, h, p in zip(shape, shift, size))
            origins += [(shift[0] + i * size[0], shift[1] + j * size[1], shift[2] + k * size[2])
                        for i in range(count[0]) for j in range(count[1]) for k in range(count[2])]
        self.in_channels, self.filters, self.kernel = int(in_channels), int(filters), int(kernel)
        self.input_shape, self.patch_size, self.grid, self.padded = shape, size, grid, padded
        self.origins = tuple(origins)
        self.n_patches = len(origins)
        self.conv_padding = tuple((kernel - 1) // 2 if p < kernel else 0 for p in size)
        self.out_patch = tuple(p - kernel + 1 + 2 * q for p, q in zip(size, self.conv_padding))
        # flat indices into the padded map, one row per patch (not saved: rebuilt from the sizes)
        ar = [torch.arange(p) for p in size]
        local = ((ar[0][:, None, None] * padded[1] + ar[1][None, :, None]) * padded[2] + ar[2][None, None, :]).flatten()
        starts = torch.tensor([(o[0] * padded[1] + o[1]) * padded[2] + o[2] for o in origins])
        self.register_buffer("index", starts[:, None] + local[None, :], persistent=False)
        p_out = self.n_patches * self.filters
        self.weight = nn.Parameter(torch.empty(p_out, self.in_channels, kernel, kernel, kernel))
        self.bias = nn.Parameter(torch.empty(p_out))
        # the initialisation of nn.Conv3d, per patch (same fan-in)
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        bound = 1 / math.sqrt(self.in_channels * kernel ** 3)
        nn.init.uniform_(self.bias, -bound, bound)

    @property
    def out_shape(self) -> tuple[int, int, int, int]:
        """Output ``(channels, o, o, o)`` per volume."""
        return (self.n_patches * self.filters, *self.out_patch)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, X, Y, Z)`` → ``(N, P·C, px, py, pz)``: the patches, patch-major."""
        return split_patches(x, self.index, self.padded, self.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != (self.in_channels, *self.input_shape):
            raise ValueError(f"PIF layer built for inputs (N, {self.in_channels}, "
                             f"{', '.join(map(str, self.input_shape))}), got {tuple(x.shape)}")
        return F.conv3d(self.split(x), self.weight, self.bias, 1, self.conv_padding, 1, self.n_patches)

    def extra_repr(self) -> str:
        extra = self.n_patches - math.prod(self.grid)
        return (f"{self.in_channels}, {self.filters} filters × {self.n_patches} patches of "
                f"{'×'.join(map(str, self.patch_size))} (grid {'×'.join(map(str, self.grid))}"
                f"{f' + {extra} overlapping' if extra else ''}), kernel {self.kernel}")


def split_patches(x: torch.Tensor, index: torch.Tensor, padded, size) -> torch.Tensor:
    """Gather patches: ``x`` zero-padded at the far end to ``padded``, then rows of ``index`` (P, px·py·pz)."""
    pad = []
    for s, p in zip(reversed(x.shape[2:]), reversed(padded)):
        pad += [0, p - s]
    xp = F.pad(x, pad) if any(pad) else x
    n, c = x.shape[:2]
    g = xp.flatten(2)[:, :, index.flatten()]                      # (N, C, P·s)
    p = index.shape[0]
    return g.view(n, c, p, -1).transpose(1, 2).reshape(n, p * c, *size)


def merge_patches(r: torch.Tensor, index: torch.Tensor, padded, shape) -> torch.Tensor:
    """Transpose of :func:`split_patches`: ``(N, P·C, px, py, pz)`` summed back into ``(N, C, *shape)``."""
    n, p = r.shape[0], index.shape[0]
    c = r.shape[1] // p
    src = r.reshape(n, p, c, -1).transpose(1, 2).reshape(n, c, -1)
    out = r.new_zeros(n, c, math.prod(padded))
    out.index_add_(2, index.flatten(), src)
    out = out.view(n, c, *padded)
    return out[:, :, :shape[0], :shape[1], :shape[2]]


class Pif2021(nn.Sequential):
    """Böhle et al. 2019's network with its last convolution block (conv 64 → BatchNorm → ReLU → max-pool 3)
    replaced by a patch-individual filter layer → BatchNorm → ReLU, as in Eitel et al. 2021a (the last
    convolution and pooling layer replaced; dense head unchanged). Defaults follow the authors' published
    code for ADNI: 3 filters of 3×3×3 per patch, patches overlapping by half; the grid is the thesis's
    2 × 3 × 2 split of the feature map (at 1 mm this is the authors' 14 patches: 12 + 2 overlapping)."""

    def __init__(self, input_shape: tuple[int, int, int], dropout: float = 0.4, filters: int = 3,
                 patches: tuple[int, int, int] = (2, 3, 2), kernel: int = 3, overlap: bool = True,
                 patch_size: tuple[int, int, int] | None = None):
        features, shape = _conv_blocks(tuple(input_shape), n_blocks=3)
        pif = PatchIndividualFilters3d(FILTERS[2], shape, filters=filters, patches=patches, kernel=kernel,
                                       overlap=overlap, patch_size=patch_size)
        n_flat = math.prod(pif.out_shape)
        super().__init__(features, nn.Sequential(pif, nn.BatchNorm3d(pif.out_shape[0]), nn.ReLU()), nn.Flatten(),
                         nn.Dropout(dropout), nn.Linear(n_flat, 128), nn.ReLU(), nn.Dropout(dropout),
                         nn.Linear(128, 2))
        self.input_shape = tuple(input_shape)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    build: Callable[..., nn.Module]
    reference: str


REGISTRY: dict[str, ModelSpec] = {
    "boehle2019": ModelSpec("boehle2019", Boehle2019, "Böhle et al. 2019, Front. Aging Neurosci. 11:194, §2.2"),
    "rieke2018": ModelSpec("rieke2018", Rieke2018, "Rieke et al. 2018, MLCN workshop, LNCS 11038, §3.2"),
    "pif2021": ModelSpec("pif2021", Pif2021,
                         "Eitel et al. 2021a, 'Patch individual filter layers in CNNs to harness the spatial "
                         "homogeneity of neuroimaging data' (Eitel's PhD thesis, study 5)"),
}


def build_model(name: str, input_shape: tuple[int, int, int], **kwargs) -> nn.Module:
    """A freshly initialised model from the registry for volumes of ``input_shape`` (X, Y, Z)."""
    if name not in REGISTRY:
        raise KeyError(f"unknown model {name!r}; choose one of {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name].build(tuple(int(s) for s in input_shape), **kwargs)


def default_device() -> torch.device:
    """CUDA when present, otherwise the CPU; never hard-coded by callers."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
