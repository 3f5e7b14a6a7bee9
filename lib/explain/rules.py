"""LRP rules: how one convolution or dense layer redistributes relevance to its inputs.

Vocabulary and semantics follow zennit (``zennit.rules``), which is the
reference in the tests: a rule sees the layer's input ``x``, computes a
rule-specific output ``z`` (the denominator), divides the upper relevance by the
stabilised ``z`` and maps it back with the transposed layer, weighting by the
rule's input ("gradient × input"). Each rule here does that with one fused
forward call and one fused transposed call per layer instead of zennit's four
modified module copies and autograd graph.

Stabiliser: ``z + eps·sign(z)`` with ``sign(0) = +1`` (zennit's ``Stabilizer``).
Bias: ``bias=False`` drops the bias from every rule's denominator (zennit's
``zero_params=["bias"]``, what the paper's code did); the layer's real output, and
so every activation of the forward pass, always keeps its bias.
"""

from __future__ import annotations

import torch

from lib.explain.canonizers import LinearOp


def stabilize(z: torch.Tensor, eps: float) -> torch.Tensor:
    """``z + eps·sign(z)`` with ``sign(0) = +1``."""
    return z + torch.where(z >= 0, eps, -eps)


class Rule:
    """Base class. ``forward`` returns the layer's real output and a context for ``backward``."""

    name = "rule"

    def __init__(self, bias: bool = False):
        self.bias = bias

    def _real(self, op: LinearOp, z_nobias: torch.Tensor) -> torch.Tensor:
        return z_nobias if op.bias is None else z_nobias + op.bias_view(op.bias)

    def forward(self, op: LinearOp, x: torch.Tensor, nonneg: bool = False) -> tuple[torch.Tensor, object]:
        """``nonneg=True`` promises ``x >= 0`` (the input follows a ReLU), saving a check."""
        raise NotImplementedError

    def backward(self, op: LinearOp, ctx, relevance: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class Epsilon(Rule):
    """LRP-ε (Bach et al. 2015): ``R_i = Σ_j x_i w_ij / (z_j + ε·sign z_j) · R_j``; ε = 0 is LRP-0."""

    name = "epsilon"

    def __init__(self, epsilon: float = 1e-6, bias: bool = False):
        super().__init__(bias)
        self.epsilon = float(epsilon)

    def forward(self, op, x, nonneg=False):
        z_nb = op.fwd(x, bias=None)
        z = self._real(op, z_nb)
        return z, (x, z if self.bias else z_nb)

    def backward(self, op, ctx, relevance):
        x, z = ctx
        s = relevance / stabilize(z, self.epsilon)
        return x * op.bwd(s, op.weight, x.shape)


class AlphaBeta(Rule):
    """LRP-αβ with α = 1 + β (Bach et al. 2015; the β-rule of Böhle et al. 2019, eq. 2).

    Contributions are split on the sign of the *products* ``x_i w_ij`` (inputs
    may be negative): ``R_i = Σ_j (α (x_i w_ij)⁺ / z⁺_j − β (x_i w_ij)⁻ / z⁻_j) R_j``
    with ``z^± = Σ_i (x_i w_ij)^± (+ b^±)``. β = 0 is the z⁺ rule.

    Cost: for non-negative inputs (every layer after a ReLU) ``(x w)⁺ = x w⁺``, so
    one extra forward channel block (fused with the real output) and one transposed
    call; for signed inputs (the first layer of an MRI network) the input is split
    into ``[x⁺, x⁻]`` channels and the same single forward / single transposed call
    handles all four sign combinations.
    """

    name = "alpha_beta"

    def __init__(self, beta: float = 0.0, stabilizer: float = 1e-6, bias: bool = False):
        super().__init__(bias)
        if beta < 0:
            raise ValueError("beta must be >= 0 (alpha = 1 + beta)")
        self.beta = float(beta)
        self.alpha = 1.0 + self.beta
        self.stabilizer = float(stabilizer)

    def forward(self, op, x, nonneg=False):
        w = op.weight
        wp, wn = w.clamp(min=0), w.clamp(max=0)
        c = w.shape[0]
        signed = not nonneg and bool((x < 0).any())
        if signed:
            xs = torch.cat([x.clamp(min=0), x.clamp(max=0)], 1)
            blocks = [torch.cat([w, w], 1), torch.cat([wp, wn], 1)]
            if self.beta:
                blocks.append(torch.cat([wn, wp], 1))
            zz = op.fwd(xs, torch.cat(blocks, 0))
            z_nb, zp = zz[:, :c], zz[:, c:2 * c]
            zn = zz[:, 2 * c:] if self.beta else None
            saved = xs
        else:
            zz = op.fwd(x, torch.cat([w, wp], 0))
            z_nb, zp = zz[:, :c], zz[:, c:]
            zn = z_nb - zp if self.beta else None
            saved = x
        if self.bias and op.bias is not None:
            zp = zp + op.bias_view(op.bias.clamp(min=0))
            if zn is not None:
                zn = zn + op.bias_view(op.bias.clamp(max=0))
        return self._real(op, z_nb), (saved, signed, zp, zn)

    def backward(self, op, ctx, relevance):
        saved, signed, zp, zn = ctx
        w = op.weight
        wp, wn = w.clamp(min=0), w.clamp(max=0)
        eps = self.stabilizer
        # z⁺ >= 0 and z⁻ <= 0 by construction, so the stabiliser is a plain shift (done in place: the
        # context is this call's own). Where z⁻ is exactly 0 zennit shifts by +eps instead of -eps; all
        # numerators are exactly 0 there, so the relevance is the same.
        c = w.shape[0]
        if self.beta:
            s = relevance.new_empty((relevance.shape[0], 2 * c) + relevance.shape[2:])
            torch.div(relevance, zp.add_(eps), out=s[:, :c])
            torch.div(relevance, zn.clamp_(max=0).sub_(eps), out=s[:, c:])
        else:
            s = relevance / zp.add_(eps)
        a, b = self.alpha, self.beta
        if not signed:
            if not b:
                return saved * op.bwd(s, wp, saved.shape)
            return saved * op.bwd(s, torch.cat([a * wp, -b * wn], 0), saved.shape)
        cin = saved.shape[1] // 2  # the input's channels (w.shape[1] is per group in a grouped layer)
        if not b:
            g = op.bwd(s, torch.cat([wp, wn], 1), saved.shape)
        else:
            g = op.bwd(s, torch.cat([torch.cat([a * wp, a * wn], 1), torch.cat([-b * wn, -b * wp], 1)], 0),
                       saved.shape)
        # saved = [x⁺, x⁻]: x⁺ pairs with α w⁺ and -β w⁻, x⁻ with α w⁻ and -β w⁺
        return (saved * g).unflatten(1, (2, cin)).sum(1)


class ZPlus(AlphaBeta):
    """LRP-z⁺ (Montavon et al. 2017): α = 1, β = 0."""

    name = "zplus"

    def __init__(self, stabilizer: float = 1e-6, bias: bool = False):
        super().__init__(0.0, stabilizer, bias)


class ZBox(Rule):
    """LRP-z^B for a bounded input ``low ≤ x ≤ high`` (Montavon et al. 2017); meant for the first layer.

    ``low``/``high`` are numbers or ``None`` for each volume's own minimum/maximum.
    ``R_i = Σ_j (x_i w_ij − l_i w⁺_ij − h_i w⁻_ij) / z_j · R_j``; biases cancel.
    """

    name = "zbox"

    def __init__(self, low: float | None = None, high: float | None = None, stabilizer: float = 1e-6,
                 bias: bool = False):
        super().__init__(bias)
        self.low, self.high, self.stabilizer = low, high, float(stabilizer)

    def _bound(self, op, x, value, lowest: bool):
        ones = op.ones_like_input(x)
        if value is None:
            flat = x.flatten(1)
            if op.input_mask is not None:  # inserted padding is not part of the volume's range
                flat = flat.masked_fill((ones == 0).flatten(1), float("inf") if lowest else float("-inf"))
            value = (flat.min(1) if lowest else flat.max(1)).values.view(-1, *([1] * (x.dim() - 1)))
        return (ones * value).expand_as(x)  # zero at inserted padding: no bound there, so no relevance either

    def forward(self, op, x, nonneg=False):
        low = self._bound(op, x, self.low, True)
        high = self._bound(op, x, self.high, False)
        w = op.weight
        xs = torch.cat([x, low, high], 1)
        zb = op.fwd(xs, torch.cat([w, -w.clamp(min=0), -w.clamp(max=0)], 1))
        return op.fwd(x, bias=op.bias), (xs, zb)

    def backward(self, op, ctx, relevance):
        xs, z = ctx
        w = op.weight
        s = relevance / stabilize(z, self.stabilizer)
        g = op.bwd(s, torch.cat([w, -w.clamp(min=0), -w.clamp(max=0)], 1), xs.shape)
        return (xs * g).unflatten(1, (3, xs.shape[1] // 3)).sum(1)


class Flat(Rule):
    """Flat rule (Lapuschkin et al. 2019): relevance spread uniformly over each receptive field."""

    name = "flat"

    def __init__(self, stabilizer: float = 1e-6, bias: bool = False):
        super().__init__(bias)  # zennit's Flat always drops the bias
        self.stabilizer = float(stabilizer)

    def _weight(self, op):
        return torch.ones_like(op.weight)

    def _bias(self, op):
        return None

    def forward(self, op, x, nonneg=False):
        z = op.fwd(x, bias=op.bias)
        zr = op.fwd(op.ones_like_input(x), self._weight(op), self._bias(op))
        return z, (x.shape, zr)

    def backward(self, op, ctx, relevance):
        shape, zr = ctx
        s = relevance / stabilize(zr, self.stabilizer)
        r = op.bwd(s, self._weight(op), shape)
        return r if op.input_mask is None else r * op.input_mask.to(r.dtype)


class WSquare(Flat):
    """w² rule (Montavon et al. 2017): relevance spread in proportion to the squared weights."""

    name = "wsquare"

    def __init__(self, stabilizer: float = 1e-6, bias: bool = False):
        super().__init__(stabilizer, bias)

    def _weight(self, op):
        return op.weight ** 2

    def _bias(self, op):
        return op.bias ** 2 if (self.bias and op.bias is not None) else None


RULES = {cls.name: cls for cls in (Epsilon, AlphaBeta, ZPlus, ZBox, Flat, WSquare)}
