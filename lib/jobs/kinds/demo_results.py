"""The demo's default results, computed right after its cohort in the same job: the shipped model installed
and applied, its LRP β = 0 and guided-backprop heatmaps, their test-split group means and region tables — what
the Training, Heatmaps, Atlas metrics and Biomarkers pages show on their first visit.

Each step is the request a page would submit (Predict, Explain, GroupMeans, RegionTables), run in this job, so
the results land in the same caches under the same keys; a step whose result exists returns at once, which is
also how a workspace whose runs or caches were deleted gets them back.
"""

from __future__ import annotations

import functools
import sys

from lib.core.progress import Progress
from lib.data.atlases import DEFAULT_ATLAS
from lib.data.workspace import Workspace

METHODS = (("lrp", {"beta": 0.0}, "LRP β = 0"), ("guided_backprop", {}, "guided backprop"))
"""The paper's two methods, as the pages' first view shows them."""

# seconds per scan of each stage, the weights of one honest progress bar: measured on the default first start
# (172 scans, 2 cores): 342 s of CPU time, 71 % building the cohort, 10 % predictions, 10 % and 7 % the two
# methods' heatmaps, under 1 % each group means and region tables
SECONDS_PER_SCAN = {"cohort": 1.4, "predict": 0.2, "explain": 0.17, "means": 0.01, "regions": 0.01}


def applicable_models(ws: Workspace) -> list:
    """Shipped model folders trained on this workspace's cohort (another demo's settings are another cohort)."""
    from lib.core import atomic
    from lib.learn.runs import shipped_models

    folders = shipped_models()
    if not folders or not ws.cohort_csv.exists():
        return []
    fingerprint = _fingerprint(str(ws.root), ws.cohort_csv.stat().st_mtime_ns)
    return [f for f in folders if (atomic.read_json(f / "config.json") or {}).get("cohort_fingerprint") == fingerprint]


@functools.lru_cache(maxsize=16)
def _fingerprint(root: str, mtime_ns: int) -> str:
    """The cohort's fingerprint, read again only when its table changes (pages ask on every view)."""
    from lib.data.scans import load_cohort
    from lib.data.volumes import cohort_fingerprint

    return cohort_fingerprint(load_cohort(Workspace.open(root)))


def missing(ws: Workspace) -> bool:
    """Whether a shipped model that applies here is not installed or not applied yet (cheap: files only)."""
    return any(not (ws.runs_dir / f.name / "predictions.csv").exists() for f in applicable_models(ws))


def weights(n: int, n_models: int) -> tuple[list[float], list[str]]:
    """Stage weights (expected seconds) and labels of :func:`compute` for ``n_models`` shipped runs and ``n``
    scans."""
    out, labels = [], []
    for _ in range(n_models):
        out.append(SECONDS_PER_SCAN["predict"] * n)
        labels.append("predictions of the shipped model")
        for _method, _params, label in METHODS:
            out += [SECONDS_PER_SCAN["explain"] * n, SECONDS_PER_SCAN["means"] * n, SECONDS_PER_SCAN["regions"] * n]
            labels += [f"{label} heatmaps", f"{label} group means", f"{label} region metrics"]
    return out, labels


def compute(ws: Workspace, parts: list[Progress]) -> str:
    """Install and apply every shipped model trained on this cohort and compute its default results; ``parts``
    are the progress of the stages :func:`weights` lists. Returns one line saying what is there."""
    from lib.explain import heatmaps
    from lib.jobs.kinds.maps import Explain, GroupMeans, RegionTables
    from lib.jobs.kinds.training import Predict
    from lib.learn.runs import install_shipped_run

    done = []
    parts_left = iter(parts)

    def next_part() -> Progress:
        return next(parts_left, lambda *report: None)   # more models than weighed: no bar for the extra
    for folder in applicable_models(ws):
        run = install_shipped_run(ws, folder)
        if run.predictions() is None:
            Predict(run_id=run.id).prepare(ws).work(next_part())
        else:
            next_part()
        for method, params, label in METHODS:
            Explain(run_id=run.id, method=method, params=params).prepare(ws).work(next_part())
            store = heatmaps.find_store(ws, run, method, **params)
            GroupMeans(run_id=run.id, store=store.folder.name, split="test").prepare(ws).work(next_part())
            RegionTables(run_ids=(run.id,), stores=(store.folder.name,), atlas=DEFAULT_ATLAS
                         ).prepare(ws).work(next_part())
        done.append(run.id)
    if not done:
        print("no shipped model was trained on this cohort (its settings differ from the shipped model's): "
              "train one on the Training page or with python -m lib train", file=sys.stderr)
        return "no shipped model for this cohort"
    return f"shipped run {', '.join(done)} applied, with LRP β = 0 and guided-backprop heatmaps, group means and " \
           f"{DEFAULT_ATLAS} region metrics"
