"""The review queue's map: a scan's heatmap (a method the reviewer picks among a run's finished ones) drawn over
the scan, so a verdict about an explanation is given looking at the explanation. Blinding is kept: the map
shows neither diagnosis, prediction nor score, and it is scaled by the scan's own map (no group average that
would need the predictions)."""

from __future__ import annotations

import numpy as np

from lib.data.workspace import Workspace
from lib.views import viewer
from lib.views.render import Overlay

NO_MAP = "anatomy only"


def map_choices(ws: Workspace, run_id: str | None) -> dict[str, str]:
    """Finished heatmap stores of run ``run_id`` by label (``"LRP β=0"`` → store folder), the paper's first."""
    from lib.explain import heatmaps
    from lib.learn.runs import load_run

    if not run_id:
        return {}
    run = load_run(ws, run_id)
    stores = sorted(heatmaps.list_stores(ws, run), key=lambda s: (s.params.get("method") != "lrp",
                                                                   s.params.get("method") != "guided_backprop"))
    return {viewer.store_label(s.params, s.meta.get("target")): s.folder.name for s in stores}


def scan_overlay(volume: np.ndarray, absolute: bool, alpha: float = 0.8) -> Overlay:
    """One scan's map scaled by itself as the paper's Fig 8 scales by the AD average: from its 90th to its
    99.5th percentile of positive values (of |map| for gradient methods), transparent below."""
    v = np.abs(volume) if absolute else np.asarray(volume, dtype=np.float32)
    positive = v[v > 0]
    if not positive.size:
        return Overlay(v, 0.0, 1.0, cmap="hot", alpha=alpha, transparent_below=np.inf)
    lo, hi = (float(x) for x in np.percentile(positive, [90, 99.5]))
    return Overlay(v, lo, max(hi, lo * 1.0001 + 1e-30), cmap="hot", alpha=alpha, transparent_below=lo)
