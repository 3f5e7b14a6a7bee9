"""Composites: which LRP rule each layer of a plan gets (zennit's ``composites`` vocabulary).

A composite names a rule for the first linear layer, for the remaining
convolutions and for the remaining dense layers. BatchNorm (when passed through)
and ReLU pass relevance unchanged, max-pooling is winner-take-all or proportional
(an LRP parameter, not a rule), and Flatten/Dropout are identities.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

from lib.explain.canonizers import LinearOp, Plan
from lib.explain.rules import RULES, Rule


@dataclass(frozen=True)
class Composite:
    """Rule names per layer kind; ``first=None`` means the first layer gets its kind's rule."""

    conv: str
    dense: str
    first: str | None = None
    description: str = ""


COMPOSITES: dict[str, Composite] = {
    "alpha_beta": Composite("alpha_beta", "alpha_beta", None,
                            "β-rule (α = 1 + β) in every layer: Böhle et al. 2019, the default"),
    "epsilon": Composite("epsilon", "epsilon", None, "ε-rule in every layer"),
    "zplus": Composite("zplus", "zplus", None, "z⁺ rule in every layer"),
    "epsilon_alpha_beta": Composite(
        "alpha_beta", "epsilon", None,
        "β-rule for convolutions, ε for dense layers (zennit EpsilonAlpha2Beta1 at β = 1)"),
    "epsilon_plus": Composite(
        "zplus", "epsilon", None, "z⁺ for convolutions, ε for dense layers (zennit EpsilonPlus)"),
    "epsilon_plus_flat": Composite("zplus", "epsilon", "flat",
                                   "flat first layer, z⁺ convolutions, ε dense layers (zennit EpsilonPlusFlat)"),
    "epsilon_alpha_beta_box": Composite("alpha_beta", "epsilon", "zbox",
                                        "bounded z^B first layer, β-rule convolutions, ε dense layers"),
}


def resolve(composite: str, first: str | None, conv: str | None, dense: str | None) -> tuple[str, str, str]:
    """Explicit per-kind rule names (overrides win over the composite's); ``first='same'`` = its kind's rule."""
    if composite not in COMPOSITES:
        raise ValueError(f"unknown composite {composite!r}; choose one of {', '.join(COMPOSITES)}")
    c = COMPOSITES[composite]
    conv = conv or c.conv
    dense = dense or c.dense
    first = first or c.first or "same"
    for name in (conv, dense) + ((first,) if first != "same" else ()):
        if name not in RULES:
            raise ValueError(f"unknown LRP rule {name!r}; choose one of {', '.join(RULES)}")
    return first, conv, dense


def make_rule(name: str, **settings) -> Rule:
    """The rule ``name`` of :data:`RULES`, built from the settings its constructor takes (``beta``,
    ``epsilon``, ``stabilizer``, ``low``, ``high``, ``bias``; the others are ignored)."""
    if name not in RULES:
        raise ValueError(f"unknown LRP rule {name!r}; choose one of {', '.join(RULES)}")
    cls = RULES[name]
    takes = inspect.signature(cls).parameters
    return cls(**{k: v for k, v in settings.items() if k in takes})


def assign(plan: Plan, first: str, conv: str, dense: str, **rule_kwargs) -> list[Rule | None]:
    """A rule per op of ``plan`` (``None`` for ops that are not linear layers)."""
    out: list[Rule | None] = []
    for op in plan.ops:
        if not isinstance(op, LinearOp):
            out.append(None)
            continue
        name = conv if op.is_conv else dense
        if op.first and first != "same":
            name = first
        out.append(make_rule(name, **rule_kwargs))
    return out
