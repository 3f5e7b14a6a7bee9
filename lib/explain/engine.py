"""The propagation engine: one stored forward pass over a plan, then one backward sweep.

Both LRP and the gradient methods run here instead of through autograd hooks:
the forward pass keeps only what the sweep needs (rule contexts, ReLU masks,
max-pool winner indices), and the sweep applies one transposed call per linear
layer. Everything stays on the volumes' device; nothing is copied to the CPU.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from lib.data.classes import DEFAULT_CLASSES, Classes
from lib.explain.canonizers import AffineOp, FlattenOp, LinearOp, MaxPoolOp, PatchOp, Plan, ReLUOp
from lib.explain.rules import Rule, stabilize


def resolve_target(target, n: int, device: torch.device, classes: Classes = DEFAULT_CLASSES) -> torch.Tensor:
    """Class index per volume, ``(N,)`` long. ``target``: a class name of ``classes``, an index, or one of
    those per volume."""
    def one(t) -> int:
        if not isinstance(t, str):
            return int(t)
        try:
            return classes.index(t)
        except ValueError as exc:   # say which argument was wrong
            raise ValueError(f"target: {exc}") from None

    if isinstance(target, (str, int)) or (isinstance(target, torch.Tensor) and target.dim() == 0):
        idx = [one(target if not isinstance(target, torch.Tensor) else target.item())] * n
    else:
        idx = [one(t.item() if isinstance(t, torch.Tensor) else t) for t in target]
        if len(idx) != n:
            raise ValueError(f"{len(idx)} targets for {n} volumes")
    return torch.tensor(idx, dtype=torch.long, device=device)


def check_volumes(volumes: torch.Tensor) -> None:
    if not isinstance(volumes, torch.Tensor) or volumes.dim() < 3:
        raise ValueError("volumes must be a tensor shaped (N, C, ...), e.g. (N, 1, X, Y, Z)")
    if not volumes.is_floating_point():
        raise ValueError(f"volumes must be floating point, not {volumes.dtype}")


def output_of(logits: torch.Tensor, target: torch.Tensor, output: str) -> torch.Tensor:
    """The explained scalar per volume, ``(N,)``: softmax probability or logit of ``target``."""
    if output == "probability":
        return logits.softmax(1).gather(1, target[:, None])[:, 0]
    if output == "logit":
        return logits.gather(1, target[:, None])[:, 0]
    raise ValueError(f"output/start must be 'probability' or 'logit', not {output!r}")


def output_gradient(logits: torch.Tensor, target: torch.Tensor, output: str) -> torch.Tensor:
    """∂ output / ∂ logits, ``(N, K)``: one-hot for the logit, ``p_t (δ_tk − p_k)`` for the probability."""
    onehot = F.one_hot(target, logits.shape[1]).to(logits.dtype)
    if output == "logit":
        return onehot
    if output == "probability":
        p = logits.softmax(1)
        pt = p.gather(1, target[:, None])
        return pt * (onehot - p)
    raise ValueError(f"output must be 'probability' or 'logit', not {output!r}")


def _unpool(op: MaxPoolOp, grad: torch.Tensor, indices: torch.Tensor, in_shape: torch.Size) -> torch.Tensor:
    """Route each pooled value to its window's winner (accumulating where windows overlap)."""
    out = grad.new_zeros(in_shape[0], in_shape[1], int(torch.Size(in_shape[2:]).numel()))
    out.scatter_add_(2, indices.flatten(2), grad.flatten(2))
    return out.view(in_shape)


def lrp_sweep(plan: Plan, x: torch.Tensor, rules: Sequence[Rule | None], target: torch.Tensor, start: str,
              maxpool: str, stabilizer: float, keep: bool = False):
    """Relevance at the input, shaped like ``x``; with ``keep=True`` also the relevance at every op's input."""
    if maxpool not in ("winner", "proportional"):
        raise ValueError(f"maxpool must be 'winner' or 'proportional', not {maxpool!r}")
    saved = []
    a = x
    nonneg = False  # known without looking: the input follows a ReLU (through pooling/flatten/dropout)
    for op, rule in zip(plan.ops, rules):
        if isinstance(op, LinearOp):
            a, ctx = rule.forward(op, a, nonneg)
            saved.append(ctx)
            nonneg = False
        elif isinstance(op, ReLUOp):
            a = F.relu(a)
            saved.append(None)
            nonneg = True
        elif isinstance(op, MaxPoolOp):
            if maxpool == "winner":
                out, idx = op.fwd(a, indices=True)
                saved.append((idx, a.shape))
            else:
                out = op.fwd(a)
                saved.append(a)
            a = out
        elif isinstance(op, AffineOp):
            a = op.fwd(a)
            saved.append(None)
            nonneg = False
        elif isinstance(op, FlattenOp):
            saved.append(a.shape)
            a = a.flatten(op.start_dim, op.end_dim)
        elif isinstance(op, PatchOp):
            a = op.fwd(a)  # copies of the input: its sign is kept
            saved.append(None)
        else:
            saved.append(None)
    logits = a
    r = F.one_hot(target, logits.shape[1]).to(logits.dtype) * output_of(logits, target, start)[:, None]
    per_layer = [r] if keep else None
    for op, rule, ctx in zip(reversed(plan.ops), reversed(rules), reversed(saved)):
        if isinstance(op, LinearOp):
            r = rule.backward(op, ctx, r)
        elif isinstance(op, MaxPoolOp):
            if maxpool == "winner":
                idx, shape = ctx
                r = _unpool(op, r, idx, shape)
            else:
                xin = ctx.detach().requires_grad_(True)
                with torch.enable_grad():
                    pooled = op.sum_pool(xin)
                    (g,) = torch.autograd.grad(pooled, xin, r / stabilize(pooled.detach(), stabilizer))
                r = ctx * g
        elif isinstance(op, FlattenOp):
            r = r.reshape(ctx)
        elif isinstance(op, PatchOp):
            r = op.bwd(r)
        if keep:
            per_layer.append(r)
        # ReLU, BatchNorm passed through, Dropout: relevance passes unchanged
    if keep:
        return r, per_layer[::-1]
    return r


def gradient_sweep(plan: Plan, x: torch.Tensor, target: torch.Tensor, output: str, guided: bool = False,
                   stop_at: int | None = None, on_stop: Callable | None = None):
    """∂ output / ∂ x (``guided``: negative gradients zeroed at every ReLU, Springenberg et al. 2015).

    With ``stop_at=i`` the sweep stops at the output of op ``i`` and returns
    ``on_stop(activation, gradient)`` there (used by Grad-CAM).
    """
    saved = []
    acts = {}
    a = x
    for i, op in enumerate(plan.ops):
        if isinstance(op, LinearOp):
            saved.append(a.shape)
            a = op.fwd(a, bias=op.bias)
        elif isinstance(op, ReLUOp):
            a = F.relu(a)
            saved.append(a > 0)
        elif isinstance(op, MaxPoolOp):
            shape = a.shape
            a, idx = op.fwd(a, indices=True)
            saved.append((idx, shape))
        elif isinstance(op, AffineOp):
            a = op.fwd(a)
            saved.append(None)
        elif isinstance(op, FlattenOp):
            saved.append(a.shape)
            a = a.flatten(op.start_dim, op.end_dim)
        elif isinstance(op, PatchOp):
            a = op.fwd(a)
            saved.append(None)
        else:
            saved.append(None)
        if stop_at is not None and i == stop_at:
            acts[i] = a
    g = output_gradient(a, target, output)
    for i in range(len(plan.ops) - 1, -1, -1):
        if stop_at is not None and i == stop_at:
            return on_stop(acts[i], g)
        op, ctx = plan.ops[i], saved[i]
        if isinstance(op, LinearOp):
            g = op.bwd(g, op.weight, ctx)
        elif isinstance(op, ReLUOp):
            g = g * ctx
            if guided:
                g = g.clamp(min=0)
        elif isinstance(op, MaxPoolOp):
            g = _unpool(op, g, *ctx)
        elif isinstance(op, AffineOp):
            g = g * op.scale.view((1, -1) + (1,) * (g.dim() - 2))
        elif isinstance(op, FlattenOp):
            g = g.reshape(ctx)
        elif isinstance(op, PatchOp):
            g = op.bwd(g)
    return g
