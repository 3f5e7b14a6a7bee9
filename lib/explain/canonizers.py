"""Canonisation: a model becomes an immutable list of functional layers (a *plan*).

In zennit's vocabulary a *canonizer* rewrites a model before rules are applied;
the one that matters here merges each BatchNorm into the convolution (or dense
layer) right before it (zennit's ``SequentialMergeBatchNorm``):
``w' = w·γ/σ`` and ``b' = (b − μ)·γ/σ + β`` per output channel, with
``σ = sqrt(running_var + eps)``. With ``batchnorm="pass"`` a BatchNorm is kept as
a per-channel affine map instead, through which relevance passes unchanged (what
the paper's code did, zennit's ``Pass`` rule).

The plan holds *copies* of the parameters on the explaining device, so
explaining never touches the model: no hooks, no parameter changes, no
``train()``/``eval()`` switch. Every forward pass over a plan is purely
functional and uses inference semantics (BatchNorm running statistics, no
dropout) whatever mode the model is in. Plans are cached per model, device,
dtype and BatchNorm handling behind a lock and rebuilt when any parameter or
buffer of the model changed (new storage or an in-place update).
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from lib.learn.models import PatchIndividualFilters3d, merge_patches, split_patches

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_POOL = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
_DROP = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Identity)
SUPPORTED = ("Conv1d/2d/3d", "PatchIndividualFilters3d", "BatchNorm1d/2d/3d", "ReLU", "MaxPool1d/2d/3d", "Flatten",
             "Dropout", "Linear")


class UnsupportedLayerError(TypeError):
    """The model contains a layer the explanation engine cannot propagate through."""


def _ntuple(v, n: int) -> tuple[int, ...]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * n


def _to_groups(t: torch.Tensor, blocks: int, groups: int, dim: int = 1) -> torch.Tensor:
    """Channels along ``dim`` from ``[block][group][c]`` (how rules stack) to ``[group][block][c]`` (how a
    grouped convolution reads them)."""
    if blocks == 1:
        return t
    v = t.reshape(*t.shape[:dim], blocks, groups, t.shape[dim] // (blocks * groups), *t.shape[dim + 1:])
    return v.transpose(dim, dim + 1).reshape(t.shape)


def _from_groups(t: torch.Tensor, blocks: int, groups: int, dim: int = 1) -> torch.Tensor:
    """Inverse of :func:`_to_groups`."""
    if blocks == 1:
        return t
    v = t.reshape(*t.shape[:dim], groups, blocks, t.shape[dim] // (blocks * groups), *t.shape[dim + 1:])
    return v.transpose(dim, dim + 1).reshape(t.shape)


@dataclass(frozen=True, eq=False)
class Op:
    """One functional layer of a plan; ``name`` is the module's path in the model."""

    name: str


@dataclass(frozen=True, eq=False)
class LinearOp(Op):
    """A convolution (``ndim`` = 1, 2, 3) or a dense layer (``ndim`` = 0): ``z = W x + b``."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    ndim: int = 0
    stride: tuple[int, ...] = ()
    padding: tuple[int, ...] = ()
    dilation: tuple[int, ...] = ()
    groups: int = 1
    first: bool = False
    # (1, C_in, …) 1 at real inputs, 0 at zero padding that a patch split inserted as inputs: rules that
    # spread relevance regardless of the input's value (flat, w², z^B) must not send any there
    input_mask: torch.Tensor | None = None

    @property
    def is_conv(self) -> bool:
        return self.ndim > 0

    def fwd(self, x: torch.Tensor, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None,
            groups: int | None = None) -> torch.Tensor:
        """The layer's map with (optionally) other weights/bias; ``bias=None`` means no bias."""
        w = self.weight if weight is None else weight
        if not self.is_conv:
            return F.linear(x, w, bias)
        conv = (F.conv1d, F.conv2d, F.conv3d)[self.ndim - 1]
        if self.groups > 1 and groups is None:
            # rules stack B weight blocks along dim 0 and m input blocks along dim 1 (and x's channels);
            # a grouped convolution wants each group's channels together, so regroup around the call
            b, m = w.shape[0] // self.weight.shape[0], w.shape[1] // self.weight.shape[1]
            if b > 1 or m > 1:
                g = self.groups
                # a weight's input axis is per group already: only its output axis is regrouped
                z = conv(_to_groups(x, m, g), _to_groups(w, b, g, dim=0),
                         None if bias is None else _to_groups(bias, b, g, dim=0), self.stride, self.padding,
                         self.dilation, g)
                return _from_groups(z, b, g)
        return conv(x, w, bias, self.stride, self.padding, self.dilation, self.groups if groups is None else groups)

    def bwd(self, s: torch.Tensor, weight: torch.Tensor | None, in_shape: torch.Size,
            groups: int | None = None) -> torch.Tensor:
        """Transposed map ``Wᵀ s`` (the input gradient of ``fwd`` for upstream gradient ``s``).

        ``weight`` has the layer's weight layout (out, in/groups, k…); it may stack
        several weights along dim 0 when ``s`` stacks the matching channels, so that
        several transposed maps are summed in one call. Stride-1 convolutions use a
        "full" convolution with flipped kernels, which oneDNN runs several times
        faster than ``conv_transpose`` on the CPU (the single-channel first layer
        dominates the cost of a 3D MRI network).
        """
        w = self.weight if weight is None else weight
        g = self.groups if groups is None else groups
        if not self.is_conv:
            return s @ w
        if self.groups > 1 and groups is None:
            b, m = w.shape[0] // self.weight.shape[0], w.shape[1] // self.weight.shape[1]
            if b > 1 or m > 1:  # stacked blocks, as in fwd
                return _from_groups(self.bwd(_to_groups(s, b, g), _to_groups(w, b, g, dim=0), in_shape, groups=g),
                                    m, g)
        n = self.ndim
        if all(v == 1 for v in self.stride) and all(d == 1 for d in self.dilation):
            k = w.shape[2:]
            pad = tuple(ki - 1 - p for ki, p in zip(k, self.padding))
            if all(p >= 0 for p in pad):
                out_c, in_per_g = w.shape[0], w.shape[1]
                # (out, in/g, k) -> (in, out/g, k) per group, kernels flipped
                wt = w.reshape(g, out_c // g, in_per_g, *k).transpose(1, 2).reshape(g * in_per_g, out_c // g, *k)
                wt = wt.flip(tuple(range(2, 2 + n)))
                conv = (F.conv1d, F.conv2d, F.conv3d)[n - 1]
                return conv(s, wt, None, 1, pad, 1, g)
        convt = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[n - 1]
        # output_padding recovers input sizes that the strided forward rounded down
        expect = [(o - 1) * st - 2 * p + d * (k - 1) + 1 for o, st, p, d, k in
                  zip(s.shape[2:], self.stride, self.padding, self.dilation, w.shape[2:])]
        outpad = tuple(int(i - e) for i, e in zip(in_shape[2:], expect))
        return convt(s, w, None, self.stride, self.padding, outpad, g, self.dilation)

    def ones_like_input(self, x: torch.Tensor) -> torch.Tensor:
        """Ones shaped like one input ``x[:1]``, zero at inserted padding."""
        return torch.ones_like(x[:1]) if self.input_mask is None else self.input_mask.to(x.dtype)

    def bias_view(self, b: torch.Tensor) -> torch.Tensor:
        return b.view(1, -1, *([1] * self.ndim))


@dataclass(frozen=True, eq=False)
class AffineOp(Op):
    """An unmerged BatchNorm in inference mode: ``y = x·scale + shift`` per channel."""

    scale: torch.Tensor
    shift: torch.Tensor

    def fwd(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return torch.addcmul(self.shift.view(shape), x, self.scale.view(shape))


@dataclass(frozen=True, eq=False)
class ReLUOp(Op):
    pass


@dataclass(frozen=True, eq=False)
class MaxPoolOp(Op):
    ndim: int
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    ceil_mode: bool

    def fwd(self, x: torch.Tensor, indices: bool = False):
        pool = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[self.ndim - 1]
        return pool(x, self.kernel, self.stride, self.padding, self.dilation, self.ceil_mode, indices)

    def sum_pool(self, x: torch.Tensor) -> torch.Tensor:
        """Sum of each pooling window (for proportional redistribution)."""
        if any(d != 1 for d in self.dilation):
            raise UnsupportedLayerError(f"{self.name}: proportional max-pool relevance needs dilation 1")
        if self.ndim == 1:  # avg_pool1d has no divisor_override
            return F.avg_pool2d(x.unsqueeze(-1), (self.kernel[0], 1), (self.stride[0], 1), (self.padding[0], 0),
                                self.ceil_mode, False, 1).squeeze(-1)
        pool = (None, F.avg_pool2d, F.avg_pool3d)[self.ndim - 1]
        return pool(x, self.kernel, self.stride, self.padding, self.ceil_mode, False, 1)


@dataclass(frozen=True, eq=False)
class FlattenOp(Op):
    start_dim: int
    end_dim: int


@dataclass(frozen=True, eq=False)
class PatchOp(Op):
    """The split stage of a patch-individual filter layer: ``(N, C, *shape)`` → ``(N, P·C, *patch)``.

    A fixed routing (each output is a copy of one input voxel, or a zero of the padding); its transpose adds
    gradients or relevance of every copy back onto the voxel, so it conserves relevance. The layer's per-patch
    filters follow as a grouped :class:`LinearOp` (``groups = P``)."""

    index: torch.Tensor
    shape: tuple[int, ...]
    padded: tuple[int, ...]
    patch: tuple[int, ...]

    @property
    def n_patches(self) -> int:
        return int(self.index.shape[0])

    def fwd(self, x: torch.Tensor) -> torch.Tensor:
        return split_patches(x, self.index, self.padded, self.patch)

    def bwd(self, r: torch.Tensor) -> torch.Tensor:
        return merge_patches(r, self.index, self.padded, self.shape)

    def assemble(self, maps: torch.Tensor) -> torch.Tensor:
        """Per-patch maps ``(N, P, *patch)`` placed back on the grid ``(N, 1, *shape)``; where patches overlap
        their values are averaged (as the thesis averages overlapping patches)."""
        total = merge_patches(maps, self.index, self.padded, self.shape)
        count = merge_patches(torch.ones_like(maps[:1]), self.index, self.padded, self.shape)
        return total / count.clamp(min=1)


@dataclass(frozen=True, eq=False)
class IdentityOp(Op):
    """Dropout (inference: identity) and ``nn.Identity``."""


@dataclass(frozen=True, eq=False)
class Plan:
    """A canonised model: functional layers in forward order, parameters detached and copied."""

    ops: tuple[Op, ...]
    batchnorm: str
    fingerprint: tuple = field(repr=False, default=())

    @property
    def linear_ops(self) -> list[LinearOp]:
        return [op for op in self.ops if isinstance(op, LinearOp)]

    def forward(self, x: torch.Tensor, upto: int | None = None) -> torch.Tensor:
        """Plain inference forward pass over ``ops[:upto]`` (all by default)."""
        for op in self.ops[:upto]:
            x = apply(op, x)
        return x


def apply(op: Op, x: torch.Tensor) -> torch.Tensor:
    """Forward pass of one op."""
    if isinstance(op, LinearOp):
        return op.fwd(x, bias=op.bias)
    if isinstance(op, ReLUOp):
        return F.relu(x)
    if isinstance(op, MaxPoolOp):
        return op.fwd(x)
    if isinstance(op, AffineOp):
        return op.fwd(x)
    if isinstance(op, FlattenOp):
        return x.flatten(op.start_dim, op.end_dim)
    if isinstance(op, PatchOp):
        return op.fwd(x)
    return x


def _leaves(module: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """Leaf modules in forward order, unrolling ``nn.Sequential`` containers only."""
    children = list(module.named_children())
    if not children:
        return [(prefix or type(module).__name__, module)]
    if not isinstance(module, nn.Sequential) or type(module).forward is not nn.Sequential.forward:
        raise UnsupportedLayerError(
            f"{prefix or type(module).__name__} ({type(module).__name__}): only nn.Sequential containers can be "
            "unrolled into layers; the order of other containers' children is not known")
    out = []
    for name, child in children:
        out += _leaves(child, f"{prefix}.{name}" if prefix else name)
    return out


def _bn_affine(bn: nn.Module, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    if bn.running_mean is None or bn.running_var is None:
        raise UnsupportedLayerError(f"{type(bn).__name__} without running statistics cannot be canonised")
    var = bn.running_var.detach().to(device, torch.float64)
    mean = bn.running_mean.detach().to(device, torch.float64)
    scale = torch.rsqrt(var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.detach().to(device, torch.float64)
    shift = -mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias.detach().to(device, torch.float64)
    return scale.to(dtype), shift.to(dtype)


def build_plan(model: nn.Module, device: torch.device, dtype: torch.dtype = torch.float32,
               batchnorm: str = "merge") -> Plan:
    """Canonise ``model`` into a :class:`Plan` on ``device`` (BatchNorm merged or passed through)."""
    if batchnorm not in ("merge", "pass"):
        raise ValueError(f"batchnorm must be 'merge' or 'pass', not {batchnorm!r}")
    leaves = _leaves(model)
    ops: list[Op] = []
    pending = None  # the last LinearOp's fields, still open for merging a BatchNorm
    for name, m in leaves:
        if isinstance(m, PatchIndividualFilters3d):
            if pending is not None:
                ops.append(LinearOp(**pending))
            ops.append(PatchOp(f"{name}.split", m.index.to(device), m.input_shape, m.padded, m.patch_size))
            split = ops[-1]
            mask = split.fwd(torch.ones((1, m.in_channels, *m.input_shape), device=device, dtype=dtype))
            pending = dict(name=name, weight=m.weight.detach().to(device, dtype).clone(),
                           bias=m.bias.detach().to(device, dtype).clone(), ndim=3, stride=(1, 1, 1),
                           padding=tuple(m.conv_padding), dilation=(1, 1, 1), groups=m.n_patches,
                           input_mask=None if bool(mask.all()) else mask)
            continue
        if isinstance(m, _CONV) or isinstance(m, nn.Linear):
            if pending is not None:
                ops.append(LinearOp(**pending))
            pending = _linear_fields(name, m, device, dtype)
            continue
        if isinstance(m, _BN):
            scale, shift = _bn_affine(m, device, dtype)
            if batchnorm == "merge" and pending is not None:
                w, b = pending["weight"], pending["bias"]
                shape = (-1,) + (1,) * (w.dim() - 1)
                pending["weight"] = w * scale.view(shape)
                pending["bias"] = (b * scale if b is not None else 0) + shift
                ops.append(LinearOp(**pending))
                pending = None
                continue
            if pending is not None:
                ops.append(LinearOp(**pending))
                pending = None
            ops.append(AffineOp(name, scale, shift))
            continue
        if pending is not None:
            ops.append(LinearOp(**pending))
            pending = None
        ops.append(_parameterless_op(name, m))
    if pending is not None:
        ops.append(LinearOp(**pending))
    linear = [i for i, op in enumerate(ops) if isinstance(op, LinearOp)]
    if not linear:
        raise UnsupportedLayerError("the model has no convolution or dense layer")
    first = ops[linear[0]]
    ops[linear[0]] = LinearOp(**{**first.__dict__, "first": True})
    return Plan(tuple(ops), batchnorm)


def _linear_fields(name: str, m: nn.Module, device: torch.device, dtype: torch.dtype) -> dict:
    """The fields of the :class:`LinearOp` of a convolution or dense layer (still open for merging a BatchNorm)."""
    w = m.weight.detach().to(device, dtype).clone()
    b = m.bias.detach().to(device, dtype).clone() if m.bias is not None else None
    if isinstance(m, nn.Linear):
        return dict(name=name, weight=w, bias=b)
    n = m.weight.dim() - 2
    if m.padding_mode != "zeros" or m.groups != 1:
        raise UnsupportedLayerError(
            f"layer {name} ({type(m).__name__}): only zero padding and groups=1 are supported")
    if m.padding == "valid":
        pad = (0,) * n
    elif m.padding == "same":
        if any((d * (k - 1)) % 2 for d, k in zip(_ntuple(m.dilation, n), m.kernel_size)):
            raise UnsupportedLayerError(f"layer {name}: padding='same' with an even kernel")
        pad = tuple(d * (k - 1) // 2 for d, k in zip(_ntuple(m.dilation, n), m.kernel_size))
    else:
        pad = _ntuple(m.padding, n)
    return dict(name=name, weight=w, bias=b, ndim=n, stride=_ntuple(m.stride, n), padding=pad,
                dilation=_ntuple(m.dilation, n), groups=m.groups)


def _parameterless_op(name: str, m: nn.Module) -> Op:
    """The op of a layer without weights: ReLU, max-pooling, flatten, dropout (the identity in eval mode)."""
    if isinstance(m, nn.ReLU):
        return ReLUOp(name)
    if isinstance(m, _POOL):
        if m.return_indices:
            raise UnsupportedLayerError(f"{name}: max-pooling that returns indices")
        n = (1, 2, 3)[[nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d].index(type(m))]
        k = _ntuple(m.kernel_size, n)
        return MaxPoolOp(name, n, k, _ntuple(m.stride if m.stride is not None else k, n),
                         _ntuple(m.padding, n), _ntuple(m.dilation, n), bool(m.ceil_mode))
    if isinstance(m, nn.Flatten):
        return FlattenOp(name, m.start_dim, m.end_dim)
    if isinstance(m, _DROP):
        return IdentityOp(name)
    raise UnsupportedLayerError(
        f"layer {name} ({type(m).__name__}) is not supported by the explanation engine; "
        f"supported: {', '.join(SUPPORTED)} in nn.Sequential containers")


def _fingerprint(model: nn.Module) -> tuple:
    return tuple((t.data_ptr(), t._version, tuple(t.shape)) for t in
                 list(model.parameters()) + [b for b in model.buffers() if b is not None])


_CACHE: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def plan_for(model: nn.Module, device: torch.device, dtype: torch.dtype = torch.float32,
             batchnorm: str = "merge") -> Plan:
    """The cached plan of ``model`` for ``device``/``dtype``/``batchnorm``; rebuilt when the model changed."""
    key = (str(torch.device(device)), dtype, batchnorm)
    fp = _fingerprint(model)
    with _LOCK:
        per_model = _CACHE.setdefault(model, {})
        plan = per_model.get(key)
        if plan is not None and plan.fingerprint == fp:
            return plan
        with torch.no_grad():
            plan = build_plan(model, torch.device(device), dtype, batchnorm)
        plan = Plan(plan.ops, plan.batchnorm, fp)
        per_model[key] = plan
        return plan
