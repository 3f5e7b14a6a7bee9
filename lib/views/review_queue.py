"""The review queue's map: a scan's heatmap (a method the reviewer picks among a run's finished ones) drawn over
the scan, so a verdict about an explanation is given looking at the explanation. Blinding is kept: the map
shows neither diagnosis, prediction nor score, and it is scaled by the scan's own map (no group average that
would need the predictions)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lib.core import cache, memo
from lib.data.workspace import Workspace
from lib.views import viewer
from lib.views.render import Overlay

NO_MAP = "anatomy only"


@memo.memoized(maxsize=64)
def _checkpoint_hash(path: Path) -> str:
    """A checkpoint's hash, computed once per file version (the memo keys a path by its stamp)."""
    return cache.sha256(path)


def map_choices(ws: Workspace, preferred_run: str | None = None) -> dict[str, tuple[str, str]]:
    """Finished heatmap stores of every run, as ``"LRP β=0 of run R"`` → (run, store folder): the runs newest
    first with ``preferred_run`` ahead of them, and within a run the paper's methods first. A blinded
    reviewer can pick any run's map, since a map shows no prediction; the newest run with predictions
    may have no heatmaps yet."""
    from lib.explain import heatmaps
    from lib.learn.runs import list_runs

    stores = heatmaps.list_stores(ws)
    if not stores:
        return {}
    runs = sorted(list_runs(ws), key=lambda r: r.id != preferred_run)   # stable: newest first otherwise
    out: dict[str, tuple[str, str]] = {}
    for run in runs:
        ckpt = run.best_checkpoint
        if not ckpt.exists():
            continue
        sha = _checkpoint_hash(ckpt)
        mine = [s for s in stores if s.meta.get("checkpoint_sha256") == sha]
        mine.sort(key=lambda s: (s.params.get("method") != "lrp", s.params.get("method") != "guided_backprop"))
        for s in mine:
            out.setdefault(f"{viewer.store_label(s.params, s.meta.get('target'))} of run {run.id}",
                           (run.id, s.folder.name))
    return out


def scan_overlay(volume: np.ndarray, absolute: bool, alpha: float = 0.8) -> Overlay:
    """One scan's map scaled by itself as the paper's Fig 8 scales by the AD average: from its 90th to its
    99.5th percentile of positive values (of |map| for gradient methods), transparent below."""
    v = np.abs(volume) if absolute else np.asarray(volume, dtype=np.float32)
    positive = v[v > 0]
    if not positive.size:
        return Overlay(v, 0.0, 1.0, cmap="hot", alpha=alpha, transparent_below=np.inf)
    lo, hi = (float(x) for x in np.percentile(positive, [90, 99.5]))
    return Overlay(v, lo, max(hi, lo * 1.0001 + 1e-30), cmap="hot", alpha=alpha, transparent_below=lo)
