"""Widgets for the parameters a catalogued method exposes (``Method.controls``), so that a page offers any
method without naming it."""

from __future__ import annotations

from lib.explain.catalogue import Method, Param


def param_input(container, param: Param, key: str):
    """One widget for ``param`` in ``container`` (a column or the page), returning its value."""
    if param.kind == "bool":
        return container.toggle(param.label or param.name, value=bool(param.default), key=key, help=param.help)
    if param.kind == "choice":
        return container.selectbox(param.label or param.name, list(param.choices), key=key, help=param.help,
                                   index=list(param.choices).index(param.default))
    cast = int if param.kind == "int" else float
    return container.number_input(
        param.label or param.name, min_value=None if param.low is None else cast(param.low),
        max_value=None if param.high is None else cast(param.high), value=cast(param.default),
        step=None if param.step is None else cast(param.step), key=key, help=param.help)


def method_params(container, method: Method, key: str) -> dict:
    """The values of ``method``'s controls, one widget each, stacked in ``container``."""
    return {p.name: param_input(container, p, f"{key}_{method.name}_{p.name}") for p in method.controls}
