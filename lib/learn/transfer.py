"""Transfer learning: a new run starts from another run's weights (Eitel's MS study started from a network trained
on ADNI for AD vs HC).

The convolution part of the network (every layer before the flattening: convolutions, PIF layer, batch
normalisation with its running statistics) is copied exactly. The dense head is copied too when the source
was trained on the same two classes; when the classes differ its outputs mean something else, so it keeps the
new run's (seeded) initialisation. ``freeze`` convolution blocks, counted from the input, are then not trained:
their parameters take no gradient and their batch normalisation keeps the source's statistics.

The source is named by what the user has at hand: a run of the workspace, a run folder, a model shipped in
``models/`` or a checkpoint file. What was taken is recorded in the new run's ``config.json`` (``init_from``).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from lib.core import cache
from lib.data.classes import Classes
from lib.data.workspace import REPO_ROOT, Workspace


class TransferError(ValueError):
    """The source cannot start this run; the message names the source and the problem."""


def resolve_source(ws: Workspace, ref: str | os.PathLike) -> tuple[Path, str | None]:
    """``(checkpoint file, source run id or None)`` of ``ref``: a checkpoint file, a run folder, a run of the
    workspace or a model shipped in ``models/``."""
    p = Path(ref).expanduser()
    candidates = [p, ws.runs_dir / str(ref), REPO_ROOT / "models" / str(ref)]
    for c in candidates:
        if c.is_file():
            return c.resolve(), None
        if (c / "best.pt").is_file():
            return (c / "best.pt").resolve(), c.name
    raise TransferError(f"--init-from {ref}: no checkpoint file, run folder, run of {ws.runs_dir} or model in "
                        f"{REPO_ROOT / 'models'} of that name (a run must have finished: best.pt)")


def feature_modules(model: nn.Sequential) -> list[nn.Module]:
    """The modules before the flattening: the convolution part."""
    out = []
    for m in model:
        if isinstance(m, nn.Flatten):
            return out
        out.append(m)
    raise TransferError("the model has no flattening layer: no convolution part to transfer")


def conv_blocks(model: nn.Sequential) -> list[list[nn.Module]]:
    """The convolution blocks from the input: each convolution (or PIF layer) with the batch normalisation
    after it."""
    blocks: list[list[nn.Module]] = []
    for m in nn.Sequential(*feature_modules(model)).modules():
        if isinstance(m, (nn.Conv3d,)) or type(m).__name__ == "PatchIndividualFilters3d":
            blocks.append([m])
        elif isinstance(m, nn.BatchNorm3d) and blocks:
            blocks[-1].append(m)
    return blocks


def _prefixes(model: nn.Sequential) -> tuple[str, ...]:
    """State-dict prefixes of the convolution part (``"0."``, and ``"1."`` for the PIF network)."""
    return tuple(f"{i}." for i in range(len(feature_modules(model))))


def initialise(model: nn.Sequential, payload: dict, classes: Classes, *, freeze: int = 0) -> dict:
    """Copy the source checkpoint's weights into ``model`` (see the module docstring); returns what was done:
    ``copied`` (state-dict keys), ``head`` ("copied" or "re-initialised"), ``frozen_blocks``."""
    state = payload["state_dict"]
    own = model.state_dict()
    conv = _prefixes(model)
    same_task = list(payload.get("classes") or []) == list(classes.names)
    wrong = [k for k, v in state.items() if k in own and own[k].shape != v.shape and k.startswith(conv)]
    missing = [k for k in own if k.startswith(conv) and k not in state]
    if wrong or missing:
        raise TransferError("the source's convolution layers do not fit this model "
                            f"({'shapes differ: ' + ', '.join(wrong[:3]) if wrong else 'missing: ' + ', '.join(missing[:3])})")
    take = {k: v for k, v in state.items() if k.startswith(conv)}
    head = "re-initialised"
    if same_task and all(k in state and state[k].shape == own[k].shape for k in own):
        take = dict(state)
        head = "copied"
    own.update({k: v.clone() for k, v in take.items()})
    model.load_state_dict(own)
    blocks = conv_blocks(model)
    if not 0 <= freeze <= len(blocks):
        raise TransferError(f"--freeze {freeze}: the model has {len(blocks)} convolution blocks")
    for block in blocks[:freeze]:
        for m in block:
            for p in m.parameters():
                p.requires_grad_(False)
    return {"copied": sorted(take), "head": head, "frozen_blocks": int(freeze)}


def keep_frozen_statistics(model: nn.Sequential, freeze: int) -> None:
    """After ``model.train()``: the frozen blocks' batch normalisation stays in eval mode (source statistics)."""
    for block in conv_blocks(model)[:freeze]:
        for m in block:
            if isinstance(m, nn.BatchNorm3d):
                m.eval()


def origin(ws: Workspace, ref: str, *, model: str, input_shape, classes: Classes, freeze: int) -> dict:
    """What a new run records of its source (checked before the run is created)."""
    path, run_id = resolve_source(ws, ref)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise TransferError(f"--init-from {ref}: {path} is not a readable checkpoint ({type(exc).__name__})") from exc
    if not isinstance(payload, dict) or "state_dict" not in payload:
        raise TransferError(f"--init-from {ref}: {path} is not a relevance-atlas checkpoint")
    if payload.get("model") != model:
        raise TransferError(f"--init-from {ref}: the source is a {payload.get('model')} network; train with "
                            f"--model {payload.get('model')}")
    if list(payload.get("input_shape") or []) != list(input_shape):
        raise TransferError(f"--init-from {ref}: the source was trained on a {payload.get('resolution')} mm grid "
                            f"({'×'.join(map(str, payload.get('input_shape') or []))}); train with --resolution "
                            f"{payload.get('resolution')}")
    source_classes = list(payload.get("classes") or [])
    if freeze < 0:
        raise TransferError(f"--freeze {freeze}: give a number of blocks, 0 or more")
    return {"source": str(ref), "run": run_id, "checkpoint": str(path), "checkpoint_sha256": cache.sha256(path),
            "classes": source_classes, "freeze": int(freeze),
            "head": "copied" if source_classes == list(classes.names) else "re-initialised"}
