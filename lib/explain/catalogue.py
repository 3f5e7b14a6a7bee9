"""The catalogue of explanation methods: each method declares itself once, here is how it is read.

A method is one module in :mod:`lib.explain.methods` that calls :func:`register` with a :class:`Method`:
its name (the cache and command-line key), its label, the function that computes it and its parameter
dataclass, the parameters a page may expose (:class:`Param`), whether its maps are read as ``|map|`` by
default, whether it needs an atlas, its presets for the evaluation page and the paper it follows. Every
consumer (labels of heatmap stores, region and biomarker views, evaluation, the pages, the command line)
reads these entries, so adding a method is adding one module.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

__all__ = ["Param", "Preset", "Method", "METHODS", "register", "get", "method_label", "label_in_text",
           "store_label", "absolute_by_default", "canonical_params"]


@dataclass(frozen=True)
class Param:
    """A parameter a page may expose: ``kind`` is "float", "int", "bool" or "choice" (then ``choices``);
    ``low``/``high``/``step`` bound a number input; ``symbol`` names it in labels ("β")."""

    name: str
    kind: str
    default: Any
    label: str = ""
    low: float | None = None
    high: float | None = None
    step: float | None = None
    choices: tuple = ()
    help: str = ""
    symbol: str = ""

    def __post_init__(self):
        if self.kind not in ("float", "int", "bool", "choice"):
            raise ValueError(f"parameter kind must be float, int, bool or choice, not {self.kind!r}")


@dataclass(frozen=True)
class Preset:
    """Parameters the evaluation page offers as one choice; ``default``: chosen unless the user changes it."""

    params: Mapping = field(default_factory=dict)
    default: bool = False


@dataclass(frozen=True)
class Method:
    """One explanation method.

    name : the key in caches and on the command line ("lrp"). label : how it reads in a list ("LRP").
    fn : ``fn(model, volumes, target_indices, params)``; params : its frozen parameter dataclass (whose
    ``canonical()`` validates and returns the keyed parameters). description, citation : one line each.
    controls : the parameters a page may expose. headline : names of parameters always shown in a label
    ("LRP β=0"). absolute : maps read as ``|map|`` by default (gradients: the paper's "susceptibility").
    needs_atlas : computed on an atlas's areas (the atlas name becomes its ``labels``). presets : the
    evaluation page's choices. order : position in lists (smaller first). in_text : the label inside a sentence
    when lower-casing its first letter is wrong (a proper name); by default "Guided backprop" reads "guided
    backprop" and labels starting with an acronym ("LRP", "Grad-CAM") stay.
    """

    name: str
    label: str
    fn: Callable
    params: type
    description: str
    citation: str
    controls: tuple[Param, ...] = ()
    headline: tuple[str, ...] = ()
    absolute: bool = False
    needs_atlas: bool = False
    presets: tuple[Preset, ...] = (Preset(),)
    order: int = 100
    in_text: str = ""

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

    def control(self, name: str) -> Param | None:
        return next((c for c in self.controls if c.name == name), None)


METHODS: dict[str, Method] = {}
"""Registered methods by name, in list order (``Method.order``)."""


def register(method: Method) -> Method:
    """Add ``method`` to :data:`METHODS` (kept sorted by ``order``); returns it."""
    if method.name in METHODS and METHODS[method.name] is not method:
        raise ValueError(f"method {method.name!r} is registered twice")
    entries = sorted({**METHODS, method.name: method}.values(), key=lambda m: (m.order, m.name))
    METHODS.clear()
    METHODS.update((m.name, m) for m in entries)
    return method


def get(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name]


def canonical_params(method: str, **params) -> dict:
    """Every parameter of ``method`` with defaults filled in, JSON-serialisable, e.g.
    ``{"method": "lrp", "beta": 0.0, ...}``; equal dicts mean equal results (for cache keys)."""
    return {"method": method, **get(method).make_params(**params).canonical()}


def absolute_by_default(method: str) -> bool:
    """Whether ``method``'s maps are read as ``|h|`` by default (False for unknown names)."""
    m = METHODS.get(method)
    return bool(m and m.absolute)


def _fmt(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _headline(m: Method | None, params: Mapping) -> list[str]:
    if m is None:
        return []
    out = []
    for name in m.headline:
        c = m.control(name)
        default = c.default if c else getattr(m.defaults, name)
        value = params.get(name, default)
        value = default if value is None else value
        out.append(f"{(c.symbol if c and c.symbol else name)}={_fmt(float(value) if c and c.kind == 'float' else value)}")
    return out


def method_label(params: Mapping, in_text: bool = False) -> str:
    """``"LRP β=0"``, ``"Guided backprop"``: a method's label with its headline parameters; ``in_text``: as it
    reads inside a sentence (``"guided backprop"``)."""
    method = str(params.get("method", "?"))
    m = METHODS.get(method)
    name = label_in_text(method) if in_text else (m.label if m else method)
    return " ".join([name, *_headline(m, params)])


def label_in_text(method: str) -> str:
    """The label as it reads inside a sentence: "guided backprop", but "LRP" and "Grad-CAM" stay."""
    m = METHODS.get(method)
    if m and m.in_text:
        return m.in_text
    label = m.label if m else method
    first = label.split(" ")[0]
    return label if sum(ch.isupper() for ch in first) > 1 else label[:1].lower() + label[1:]


def _non_default(method: str, params: Mapping) -> list[str]:
    """``k=v`` of the parameters of a store's canonical ``params`` that differ from the defaults (an atlas
    method shows only its atlas: its labels hash means nothing to a reader)."""
    m = METHODS.get(method)
    try:
        defaults = canonical_params(method) if m and not m.needs_atlas else {}
    except (TypeError, ValueError):
        defaults = {}
    skip = {"method", *(m.headline if m else ())}
    shown = []
    for k, v in params.items():
        if k in skip or (k in defaults and defaults[k] == v):
            continue
        if m and m.needs_atlas and k != "atlas":
            continue
        shown.append(f"{k}={_fmt(v)}")
    return shown


def store_label(params: Mapping, target: str | None = None, default_target: str | None = None) -> str:
    """How a heatmap store reads in a list: ``"LRP β=0"``, ``"Guided backprop"``, ``"Occlusion (patch_mm=20)"``,
    ``"LRP β=1 (epsilon=0.1)"``; ``", HC explained"`` when ``target`` is not ``default_target``."""
    head = method_label(params)
    shown = _non_default(str(params.get("method", "?")), params)
    label = f"{head} ({', '.join(shown)})" if shown else head
    return label if target is None or target == default_target else f"{label}, {target} explained"
