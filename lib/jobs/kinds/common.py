"""What several kinds of job share: reading a training run, method parameters from the command line."""

from __future__ import annotations

from lib.data.workspace import Workspace
from lib.jobs.request import RequestError

SPLITS = ("test", "validation", "train", "all")


def parse_params(pairs: list[str]) -> dict:
    """``--param KEY=VALUE`` strings of the command line → a method's parameters."""
    from lib.explain.heatmaps import parse_params as parse

    return parse(pairs)


def given(params: dict, **values) -> dict:
    """``params`` with those of ``values`` that are given (not None)."""
    return {**params, **{k: v for k, v in values.items() if v is not None}}


def load_run(ws: Workspace, run_id: str):
    """The training run ``run_id``; an unknown or unreadable one refuses the request."""
    from lib.learn.training import TrainingError, load_run

    try:
        return load_run(ws, run_id)
    except TrainingError as exc:
        raise RequestError(str(exc)) from exc
