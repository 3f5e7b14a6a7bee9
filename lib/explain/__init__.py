"""Explanation methods for the 3D CNNs, by name: one entry point, one registry.

``explain(model, volumes, method="lrp", target="AD", **params)`` returns a map
shaped like ``volumes`` ``(N, 1, X, Y, Z)`` on the volumes' device; positive
values are evidence for the target class (AD by default, as in Böhle et al.
2019, so that maps of all scans are comparable). ``METHODS`` holds, per name,
the callable, its parameter defaults (a frozen dataclass), a one-line
description and the paper to cite. ``canonical_params(method, **params)`` fills
in the defaults and returns a JSON-serialisable dict for content-hash cache
keys (parameters that cannot change the result, like ``batch_size``, are left
out; an atlas is represented by the SHA-256 of its label array).

Explaining never mutates the model: the model is canonised into a cached
functional copy (see :mod:`lib.explain.canonizers`) and every pass is purely
functional, always with inference semantics (BatchNorm running statistics, no
dropout), so several threads can explain with one model at once.

Structure, in zennit's vocabulary: :mod:`.rules` (how a layer redistributes
relevance), :mod:`.composites` (which rule each layer gets), :mod:`.canonizers`
(BatchNorm merging), :mod:`.engine` (one stored forward pass + one backward
sweep), and the methods in :mod:`.lrp`, :mod:`.gradients`, :mod:`.occlusion`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from lib.explain.canonizers import UnsupportedLayerError
from lib.explain.composites import COMPOSITES
from lib.explain.engine import check_volumes, resolve_target
from lib.explain.gradients import (GradCAMParams, GradientParams, GradientXInputParams, gradcam, gradient_x_input,
                        guided_backprop, sensitivity)
from lib.explain.lrp import LRPParams, lrp
from lib.explain.occlusion import AreaOcclusionParams, OcclusionParams, area_occlusion, occlusion
from lib.explain.rules import RULES

__all__ = ["explain", "METHODS", "MethodSpec", "canonical_params", "UnsupportedLayerError", "RULES", "COMPOSITES"]


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: ``fn(model, volumes, target_indices, params)``, its parameter dataclass (defaults:
    ``spec.defaults``), a one-line description and the paper it follows."""

    name: str
    fn: Callable
    params: type
    description: str
    citation: str

    @property
    def defaults(self):
        return self.params()

    def make_params(self, **params):
        names = [f.name for f in dataclasses.fields(self.params)]
        unknown = sorted(set(params) - set(names))
        if unknown:
            raise TypeError(f"unknown parameter(s) {', '.join(unknown)} for method {self.name!r}; "
                            f"it takes {', '.join(names)}")
        return self.params(**params)


METHODS: dict[str, MethodSpec] = {s.name: s for s in (
    MethodSpec("lrp", lrp, LRPParams,
               "Layer-wise relevance propagation; β-rule by default, ε/z⁺/z^B/flat rules and composites",
               "Böhle, Eitel, Weygandt, Ritter 2019, Front. Aging Neurosci. 11:194 (eq. 2); "
               "Bach et al. 2015, PLoS ONE 10:e0130140"),
    MethodSpec("guided_backprop", guided_backprop, GradientParams,
               "Guided backpropagation: |gradient| with negative gradients zeroed at every ReLU",
               "Springenberg et al. 2015, ICLR workshop; as used by Rieke et al. 2018 and Böhle et al. 2019"),
    MethodSpec("sensitivity", sensitivity, GradientParams,
               "Sensitivity analysis: |∂ probability / ∂ voxel|",
               "Simonyan et al. 2014, ICLR workshop; as used by Rieke et al. 2018"),
    MethodSpec("gradient_x_input", gradient_x_input, GradientXInputParams,
               "Gradient × input", "Shrikumar et al. 2016, arXiv:1605.01713"),
    MethodSpec("occlusion", occlusion, OcclusionParams,
               "Drop of the target probability when a sliding 40 mm cube is set to 0",
               "Zeiler & Fergus 2014, ECCV; Rieke et al. 2018, MLCN workshop, LNCS 11038"),
    MethodSpec("area_occlusion", area_occlusion, AreaOcclusionParams,
               "Drop of the target probability when each atlas area is set to 0 in turn",
               "Rieke et al. 2018, MLCN workshop, LNCS 11038"),
    MethodSpec("gradcam", gradcam, GradCAMParams,
               "Grad-CAM in 3D on the last convolution block, upsampled trilinearly",
               "Selvaraju et al. 2017, ICCV"),
)}


def _spec(method: str) -> MethodSpec:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    return METHODS[method]


def canonical_params(method: str, **params) -> dict:
    """Every parameter of ``method`` with defaults filled in, JSON-serialisable, e.g.
    ``{"method": "lrp", "beta": 0.0, ...}``; equal dicts mean equal results (for cache keys)."""
    return {"method": method, **_spec(method).make_params(**params).canonical()}


def explain(model: nn.Module, volumes: torch.Tensor, method: str = "lrp", target="AD", **params) -> torch.Tensor:
    """Explain ``model``'s decision for ``volumes``.

    Parameters
    ----------
    model : nn.Module
        An ``nn.Sequential`` of Conv3d, PatchIndividualFilters3d, BatchNorm3d, ReLU, MaxPool3d, Flatten,
        Dropout and Linear layers returning logits ``(N, K)`` (``lib.learn.models``); never modified.
    volumes : torch.Tensor
        ``(N, 1, X, Y, Z)`` float.
    method : str
        A name in ``METHODS``.
    target : str, int or sequence
        The explained class: "AD"/"HC", a class index (AD = 1), or one of these per volume.
    **params
        The method's parameters (see ``METHODS[method].params``).

    Returns
    -------
    torch.Tensor
        Shaped like ``volumes``, on the volumes' device, in the volumes' dtype.
    """
    spec = _spec(method)
    check_volumes(volumes)
    p = spec.make_params(**params)
    p.canonical()  # validate before any work
    t = resolve_target(target, volumes.shape[0], volumes.device)
    with torch.no_grad():
        return spec.fn(model, volumes.detach(), t, p)
