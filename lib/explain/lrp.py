"""Layer-wise relevance propagation (Bach et al. 2015) with the β-rule of Böhle et al. 2019."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lib.explain.canonizers import plan_for
from lib.explain.composites import assign, resolve
from lib.explain.engine import lrp_sweep


@dataclass(frozen=True)
class LRPParams:
    """Parameters of :func:`lrp`.

    beta : float
        β of the β-rule, α = 1 + β (Böhle et al. 2019 eq. 2); 0 is the paper's default, 0.25…1 its robustness
        range. Used by every layer whose rule is ``alpha_beta``.
    composite : str
        Named rule assignment (see ``lib.explain.composites.COMPOSITES``); ``alpha_beta`` (the paper) by default.
    first_rule, conv_rule, dense_rule : str or None
        Override the composite's rule for the first linear layer / other convolutions / other dense layers
        (``alpha_beta``, ``epsilon``, ``zplus``, ``zbox``, ``flat``, ``wsquare``; ``first_rule="same"``: no special
        first layer).
    epsilon : float
        ε of the ε-rule (added with the sign of the denominator).
    stabilizer : float
        Denominator stabiliser of the other rules (zennit's default 1e-6).
    low, high : float or None
        Input bounds of the ``zbox`` rule; ``None`` = each volume's own minimum / maximum.
    batchnorm : {"merge", "pass"}
        ``merge`` folds BatchNorm into the preceding convolution (zennit's SequentialMergeBatchNorm, default);
        ``pass`` keeps it as a layer that relevance passes through unchanged (the paper's code).
    bias : bool
        Include biases in the rules' denominators. Default ``False``: the paper's code ignored them (its
        convolutions ran with ``bias=None`` in the relevance pass), so BatchNorm shifts are ignored too.
    maxpool : {"winner", "proportional"}
        ``winner``: all relevance of a pooled value goes to its window's maximum (default, the paper's code);
        ``proportional``: shared among the window's inputs in proportion to their activations.
    start : {"probability", "logit"}
        Initial relevance at the explained class's output: its softmax probability (the paper's code, default)
        or its logit.
    """

    beta: float = 0.0
    composite: str = "alpha_beta"
    first_rule: str | None = None
    conv_rule: str | None = None
    dense_rule: str | None = None
    epsilon: float = 1e-6
    stabilizer: float = 1e-6
    low: float | None = None
    high: float | None = None
    batchnorm: str = "merge"
    bias: bool = False
    maxpool: str = "winner"
    start: str = "probability"

    def canonical(self) -> dict:
        first, conv, dense = resolve(self.composite, self.first_rule, self.conv_rule, self.dense_rule)
        if self.batchnorm not in ("merge", "pass"):
            raise ValueError(f"batchnorm must be 'merge' or 'pass', not {self.batchnorm!r}")
        if self.maxpool not in ("winner", "proportional"):
            raise ValueError(f"maxpool must be 'winner' or 'proportional', not {self.maxpool!r}")
        if self.start not in ("probability", "logit"):
            raise ValueError(f"start must be 'probability' or 'logit', not {self.start!r}")
        if float(self.beta) < 0:
            raise ValueError("beta must be >= 0")
        return {"beta": float(self.beta), "first_rule": first, "conv_rule": conv, "dense_rule": dense,
                "epsilon": float(self.epsilon), "stabilizer": float(self.stabilizer),
                "low": None if self.low is None else float(self.low),
                "high": None if self.high is None else float(self.high),
                "batchnorm": self.batchnorm, "bias": bool(self.bias), "maxpool": self.maxpool,
                "start": self.start}


def lrp(model: nn.Module, volumes: torch.Tensor, target: torch.Tensor, params: LRPParams,
        keep_layers: bool = False):
    """LRP relevance for ``target`` (``(N,)`` class indices), shaped like ``volumes``.

    Positive relevance is evidence for the target class; with a conserving rule
    and no biases the relevance of a volume sums to its starting value (the
    target's probability by default). ``keep_layers=True`` also returns the
    relevance at each layer's input (used by the conservation tests).
    """
    p = params.canonical()
    plan = plan_for(model, volumes.device, volumes.dtype, p["batchnorm"])
    rules = assign(plan, p["first_rule"], p["conv_rule"], p["dense_rule"], beta=p["beta"], epsilon=p["epsilon"],
                   stabilizer=p["stabilizer"], low=p["low"], high=p["high"], bias=p["bias"])
    return lrp_sweep(plan, volumes, rules, target, p["start"], p["maxpool"], p["stabilizer"], keep=keep_layers)
