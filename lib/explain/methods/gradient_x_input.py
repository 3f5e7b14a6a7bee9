"""Gradient × input (computed in :mod:`lib.explain.gradients`)."""

from lib.explain.catalogue import Method, Preset, register
from lib.explain.gradients import GradientXInputParams, gradient_x_input

register(Method(
    "gradient_x_input", "Gradient × input", gradient_x_input, GradientXInputParams,
    "Gradient × input", "Shrikumar et al. 2016, arXiv:1605.01713",
    absolute=True, presets=(Preset(default=True),), order=30))
