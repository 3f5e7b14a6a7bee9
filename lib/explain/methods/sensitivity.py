"""Sensitivity analysis (computed in :mod:`lib.explain.gradients`)."""

from lib.explain.catalogue import Method, register
from lib.explain.gradients import GradientParams, sensitivity

register(Method(
    "sensitivity", "Sensitivity", sensitivity, GradientParams,
    "Sensitivity analysis: |∂ probability / ∂ voxel|",
    "Simonyan et al. 2014, ICLR workshop; as used by Rieke et al. 2018",
    absolute=True, order=20))
