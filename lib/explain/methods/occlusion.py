"""Sliding-patch occlusion (computed in :mod:`lib.explain.occlusion`)."""

from lib.explain.catalogue import Method, Preset, register
from lib.explain.occlusion import OcclusionParams, occlusion

register(Method(
    "occlusion", "Occlusion", occlusion, OcclusionParams,
    "Drop of the target probability when a sliding 40 mm cube is set to 0",
    "Zeiler & Fergus 2014, ECCV; Rieke et al. 2018, MLCN workshop, LNCS 11038",
    presets=(Preset(default=True),), order=40))
