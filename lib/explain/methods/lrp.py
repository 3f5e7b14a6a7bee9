"""LRP with the β-rule of Böhle et al. 2019 (computed in :mod:`lib.explain.lrp`)."""

from lib.explain.catalogue import Method, Param, Preset, register
from lib.explain.lrp import LRPParams, lrp

register(Method(
    "lrp", "LRP", lrp, LRPParams,
    "Layer-wise relevance propagation; β-rule by default, ε/z⁺/z^B/flat rules and composites",
    "Böhle, Eitel, Weygandt, Ritter 2019, Front. Aging Neurosci. 11:194 (eq. 2); "
    "Bach et al. 2015, PLoS ONE 10:e0130140",
    controls=(Param("beta", "float", 0.0, "LRP β", 0.0, 5.0, 0.25, symbol="β",
                    help="β-rule with α = 1 + β; β = 0 is the paper's default"),),
    headline=("beta",),
    presets=tuple(Preset({"beta": b}, default=b in (0.0, 0.5, 1.0)) for b in (0.0, 0.25, 0.5, 0.75, 1.0)),
    order=0))
