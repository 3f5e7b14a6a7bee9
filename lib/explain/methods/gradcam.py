"""Grad-CAM in 3D (computed in :mod:`lib.explain.gradients`)."""

from lib.explain.catalogue import Method, Preset, register
from lib.explain.gradients import GradCAMParams, gradcam

register(Method(
    "gradcam", "Grad-CAM", gradcam, GradCAMParams,
    "Grad-CAM in 3D on the last convolution block, upsampled trilinearly",
    "Selvaraju et al. 2017, ICCV",
    presets=(Preset(default=True),), order=60))
