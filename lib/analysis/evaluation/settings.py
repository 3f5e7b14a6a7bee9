"""What an evaluation is asked for: its settings, the methods compared (:class:`MethodRequest`) and the
fields each check's cache key depends on."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Mapping

from lib.data.atlases import DEFAULT_ATLAS
from lib.explain import catalogue

CACHE_VERSION = 1
CHECKS = ("aopc", "sanity", "localisation")
REPLACEMENTS = ("zero", "mean", "uniform", "blur")


def preset_text(method: str, params: Mapping) -> str:
    """The :func:`parse_method` text of a catalogue preset: ``"lrp:beta=0.5"``, ``"gradcam"``."""
    pairs = [f"{k}={v:g}" if isinstance(v, float) else f"{k}={json.dumps(v)}" for k, v in params.items()]
    return method + (":" + ",".join(pairs) if pairs else "")


def method_choices() -> list[str]:
    """Every preset of every catalogued method, in catalogue order (what the evaluation page offers)."""
    return [preset_text(name, p.params) for name, m in catalogue.METHODS.items() for p in m.presets]


# default comparison, the catalogue's default presets: LRP β ∈ {0, 0.5, 1} (Böhle et al.), the baselines of
# Rieke et al. and Grad-CAM
DEFAULT_METHODS = tuple(preset_text(name, p.params) for name, m in catalogue.METHODS.items() for p in m.presets
                        if p.default)


@dataclass(frozen=True)
class Settings:
    """What is evaluated and how. Fields marked "not keyed" change nothing that is cached.

    split : "test", "validation", "train" or "all" — the run's part the scans come from.
    n_scans : scans for region perturbation (positive and negative class alternating, chosen with ``seed``); localisation
        takes up to as many scans with ground-truth atrophy from the same part.
    seed : scan choice, random orders, uniform noise and re-initialised weights.
    target : the explained class (None: the run's positive class, AD by default).
    regions : "cubes" or "atlas". cube_mm : cube edge in mm. atlas : atlas name for ``regions="atlas"``.
    steps : L, regions perturbed (capped at the number of regions).
    replacement : "zero", "mean", "uniform" or "blur"; blur_mm : the blur's Gaussian σ in mm.
    order_score : "sum" (a region's relevance) or "abs" (its absolute relevance) orders the regions.
    output : "probability" or "logit" — the f of AOPC.
    random_repeats : random orders per scan for the baseline (averaged).
    sanity_scans : scans of the cascading randomisation (the first of the chosen scans).
    top_fraction : share of brain voxels in the top-k overlap.
    sanity_threshold : rank correlation below which a method passes (not keyed).
    truth : "atrophy" or "regions"; min_loss : local volume loss threshold; min_mm : region displacement
        threshold; tolerance_mm : pointing-game tolerance.
    batch_size : volumes per forward pass (not keyed).
    """

    split: str = "test"
    n_scans: int = 8
    seed: int = 0
    target: str | None = None            # None: the run's positive class
    regions: str = "cubes"
    cube_mm: float = 15.0
    atlas: str = DEFAULT_ATLAS
    steps: int = 50  # L of the 3D AOPC study on OASIS-2 (CAM vs LRP thesis); Samek et al. perturbed ~16 %
    replacement: str = "uniform"
    blur_mm: float = 6.0
    order_score: str = "sum"
    output: str = "probability"
    random_repeats: int = 1
    sanity_scans: int = 2
    top_fraction: float = 0.02
    sanity_threshold: float = 0.5
    truth: str = "atrophy"
    min_loss: float = 0.05
    min_mm: float = 0.5
    tolerance_mm: float = 0.0
    batch_size: int = 8

    def __post_init__(self):
        if self.split not in ("test", "validation", "train", "all"):
            raise ValueError(f"split must be test, validation, train or all, not {self.split!r}")
        if self.regions not in ("cubes", "atlas"):
            raise ValueError(f"regions must be 'cubes' or 'atlas', not {self.regions!r}")
        if self.replacement not in REPLACEMENTS:
            raise ValueError(f"replacement must be one of {', '.join(REPLACEMENTS)}, not {self.replacement!r}")
        if self.order_score not in ("sum", "abs"):
            raise ValueError(f"order_score must be 'sum' or 'abs', not {self.order_score!r}")
        if self.output not in ("probability", "logit"):
            raise ValueError(f"output must be 'probability' or 'logit', not {self.output!r}")
        if self.truth not in ("atrophy", "regions"):
            raise ValueError(f"truth must be 'atrophy' or 'regions', not {self.truth!r}")
        if min(self.n_scans, self.steps, self.sanity_scans, self.random_repeats, self.batch_size) < 1:
            raise ValueError("n_scans, steps, sanity_scans, random_repeats and batch_size must be >= 1")
        if not 0 < self.top_fraction < 1:
            raise ValueError("top_fraction must be between 0 and 1")
        if self.cube_mm <= 0 or self.blur_mm <= 0:
            raise ValueError("cube_mm and blur_mm must be positive")

    def keyed(self, *names: str) -> dict:
        return {n: getattr(self, n) for n in names}

    @classmethod
    def from_dict(cls, d: dict) -> "Settings":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


SCAN_FIELDS = ("split", "n_scans", "seed", "target")
PERTURB_FIELDS = ("regions", "cube_mm", "atlas", "steps", "replacement", "blur_mm", "output", "seed")
SANITY_FIELDS = ("sanity_scans", "top_fraction", "seed")
TRUTH_FIELDS = ("truth", "min_loss", "min_mm", "tolerance_mm")

@dataclass(frozen=True)
class MethodRequest:
    """A method and its (non-default) parameters, e.g. ``MethodRequest("lrp", {"beta": 0.5})``."""

    method: str
    params: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        """Display name: "LRP β=0.5", "Grad-CAM", "occlusion (patch_mm=20)"."""
        m = catalogue.METHODS.get(self.method)
        name = catalogue.method_label({"method": self.method, **self.params}, in_text=True)
        extra = ", ".join(f"{k}={v}" for k, v in sorted(self.params.items()) if not m or k not in m.headline)
        return f"{name} ({extra})" if extra else name

    @property
    def spec(self) -> str:
        """The command-line form, parsed back by :func:`parse_method`."""
        if not self.params:
            return self.method
        return self.method + ":" + ",".join(f"{k}={json.dumps(v)}" for k, v in sorted(self.params.items()))


def parse_method(text: str) -> MethodRequest:
    """``"lrp:beta=0.5,composite=epsilon_plus"`` → ``MethodRequest("lrp", {"beta": 0.5, ...})``; values are
    JSON where they parse as JSON. Unknown methods and parameters are refused."""
    from lib.explain import METHODS, canonical_params
    from lib.explain.heatmaps import parse_params

    method, _, rest = text.strip().partition(":")
    params = parse_params([p.strip() for p in rest.split(",") if p.strip()], where=f"{text!r}: ")
    if not catalogue.get(method).needs_atlas:  # refuses unknown methods
        catalogue.canonical_params(method, **params)  # refuses unknown parameters early
    return MethodRequest(method, params)
