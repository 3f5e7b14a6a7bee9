"""Guided backpropagation (computed in :mod:`lib.explain.gradients`)."""

from lib.explain.catalogue import Method, Preset, register
from lib.explain.gradients import GradientParams, guided_backprop

register(Method(
    "guided_backprop", "Guided backprop", guided_backprop, GradientParams,
    "Guided backpropagation: |gradient| with negative gradients zeroed at every ReLU",
    "Springenberg et al. 2015, ICLR workshop; as used by Rieke et al. 2018 and Böhle et al. 2019",
    absolute=True, presets=(Preset(default=True),), order=10))
