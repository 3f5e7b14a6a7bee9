"""Explanation methods for the 3D CNNs, by name: one entry point, one catalogue.

``explain(model, volumes, method="lrp", target=None, **params)`` returns a map
shaped like ``volumes`` ``(N, 1, X, Y, Z)`` on the volumes' device; positive
values are evidence for the target class (the positive class by default, AD in
Böhle et al. 2019, so that maps of all scans are comparable). ``METHODS`` is the catalogue
(:mod:`lib.explain.catalogue`): per name, the callable, its parameter defaults
(a frozen dataclass), its label, the parameters a page may expose, how its maps
are read and the paper to cite; each method registers itself from its own module
in :mod:`lib.explain.methods`. ``canonical_params(method, **params)`` fills in
the defaults and returns a JSON-serialisable dict for content-hash cache keys
(parameters that cannot change the result, like ``batch_size``, are left out; an
atlas is represented by the SHA-256 of its label array).

Explaining never mutates the model: the model is canonised into a cached
functional copy (see :mod:`lib.explain.canonizers`) and every pass is purely
functional, always with inference semantics (BatchNorm running statistics, no
dropout), so several threads can explain with one model at once.

Structure, in zennit's vocabulary: :mod:`.rules` (how a layer redistributes
relevance), :mod:`.composites` (which rule each layer gets), :mod:`.canonizers`
(BatchNorm merging), :mod:`.engine` (one stored forward pass + one backward
sweep), the computations in :mod:`.lrp`, :mod:`.gradients`, :mod:`.occlusion`
and one catalogue entry per method in :mod:`.methods`.
"""

from __future__ import annotations

import torch
from torch import nn

import lib.explain.methods  # noqa: F401  (registers every method in the catalogue)
from lib.explain.canonizers import UnsupportedLayerError
from lib.explain.catalogue import METHODS, Method, canonical_params, get
from lib.explain.composites import COMPOSITES
from lib.explain.engine import check_volumes, resolve_target
from lib.explain.rules import RULES
from lib.data.classes import DEFAULT_CLASSES, Classes

__all__ = ["explain", "METHODS", "Method", "canonical_params", "UnsupportedLayerError", "RULES",
           "COMPOSITES"]


def explain(model: nn.Module, volumes: torch.Tensor, method: str = "lrp", target=None, *,
            classes: Classes = DEFAULT_CLASSES, **params) -> torch.Tensor:
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
        The explained class (default: the positive class): a name of ``classes`` ("AD"/"HC" by default), a class index (positive = 1), or
        one of these per volume.
    classes : Classes
        The task whose names ``target`` uses (the run's, ``run.classes``).
    **params
        The method's parameters (see ``METHODS[method].params``).

    Returns
    -------
    torch.Tensor
        Shaped like ``volumes``, on the volumes' device, in the volumes' dtype.
    """
    spec = get(method)
    check_volumes(volumes)
    p = spec.make_params(**params)
    p.canonical()  # validate before any work
    t = resolve_target(classes.positive if target is None else target, volumes.shape[0], volumes.device, classes)
    with torch.no_grad():
        return spec.fn(model, volumes.detach(), t, p)
