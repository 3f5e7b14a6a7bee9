"""Architectures compared over several seeds: test scores, epochs and time to the best epoch, and how much the
top regions of their LRP maps agree (Eitel et al. 2021a compared a CNN with its patch-individual filter
variant by balanced accuracy, sensitivity, specificity, AUC and training time).

``comparison(ws, runs)`` reads only what the runs and the region-table cache already hold; a run whose
default LRP region table is missing (``python -m lib regions --run RUN``) simply has no overlap entries.
"""

from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np
import pandas as pd

from lib.analysis import region_tables
from lib.data.atlas import DEFAULT_ATLAS
from lib.analysis.region_analysis import ROBUSTNESS_METRICS, annotate, top_rankings
from lib.analysis.similarity import top_k_overlap
from lib.learn.runs import Run
from lib.data.workspace import Workspace

SCORES = ("balanced_accuracy", "auc", "sensitivity", "specificity")
THESIS_FINDING = ("We found no difference in terms of predictive performance (measured in balanced accuracy, "
                  "sensitivity, specificity and ROC AUC) on the small data sets. However, the PIF model led to a "
                  "reduction in training time in every experiment up to a maximum of 28%. Furthermore, the "
                  "improvement in training time did not result in a decrease in predictive performance.")
"""Eitel's PhD thesis, §5.5 (study 5, Eitel et al. 2021a), verbatim."""


def run_row(run: Run) -> dict:
    """One finished run: model, seed, test scores, best epoch (1-based), epochs run, seconds to the best epoch
    (training wall time as logged, validation included) and in all."""
    cfg, summ, st = run.config.get("train", {}), run.summary() or {}, run.state
    best = summ.get("best_epoch", st.get("best_epoch"))
    _, epochs = run.metrics()
    t_best = t_all = None
    if len(epochs) and best is not None:
        at = epochs.loc[epochs["epoch"] == best, "time"]
        t_best = float(at.iloc[-1]) if len(at) else None
        t_all = float(epochs["time"].iloc[-1])
    test = summ.get("test", {})
    return {"run": run.id, "model": cfg.get("model"), "seed": cfg.get("seed"), "status": run.status,
            **{k: test.get(k) for k in SCORES},
            "best_epoch": None if best is None else int(best) + 1,
            "epochs_run": summ.get("epochs_run", st.get("epoch", -1) + 1),
            "time_to_best_s": t_best, "time_total_s": t_all}


def _rankings(ws: Workspace, runs: Sequence[Run], k: int, atlas_name: str) -> dict[str, dict[str, list[str]]]:
    """Per run with a cached default-LRP region table: metric → its top ``k`` regions of the positive class (test scans)."""
    out = {}
    atlases = {}
    for r in runs:
        preds = r.predictions()
        if preds is None or not r.best_checkpoint.exists():
            continue
        store = region_tables.matching_store(ws, r.checkpoint_hash(), "lrp")
        if store is None:
            continue
        res = r.grid.resolution
        if res not in atlases:
            atlases[res] = region_tables.get_atlas(ws, atlas_name, res)
        path = region_tables.find_table(ws, store, atlases[res])
        if path is None:
            continue
        table = annotate(region_tables.read_table(path), preds, split="test", classes=r.classes)
        out[r.id] = {m: top_rankings({r.id: table}, m, k=k, classes=r.classes)[r.id] for m in ROBUSTNESS_METRICS}
    return out


def comparison(ws: Workspace, runs: Sequence[Run], *, k: int = 10,
               atlas: str = DEFAULT_ATLAS) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """``(per run, per model, top-k overlap)`` for ``runs`` (finished ones count).

    per model: ``model, runs`` and mean and standard deviation of every score, the best epoch and the time
    to it. overlap: for each metric of Eitel's robustness study (sum, density, gain), the mean % overlap of
    the top ``k`` AD regions over run pairs of each kind (``A × B`` across models, paired by seed where
    seeds match, else all pairs; ``A × A`` across the seeds of one model, the retraining baseline).
    """
    rows = pd.DataFrame([run_row(r) for r in runs if r.status == "done"])
    if rows.empty:
        return rows, pd.DataFrame(), pd.DataFrame()
    cols = [*SCORES, "best_epoch", "time_to_best_s"]
    agg = rows.groupby("model", sort=True)[cols].agg(["mean", "std"])
    agg.columns = [f"{c}_{s}" for c, s in agg.columns]
    per_model = agg.reset_index()
    per_model.insert(1, "runs", rows.groupby("model", sort=True).size().to_numpy())

    ranks = _rankings(ws, [r for r in runs if r.id in set(rows["run"])], k, atlas)
    by_model = {m: [r for r in rows.loc[rows["model"] == m, "run"] if r in ranks] for m in sorted(rows["model"])}
    seed_of = dict(zip(rows["run"], rows["seed"]))
    pairs: dict[str, list[tuple[str, str]]] = {}
    models = list(by_model)
    for a, b in itertools.combinations_with_replacement(models, 2):
        if a == b:
            pairs[f"{a} × {a}"] = list(itertools.combinations(by_model[a], 2))
        else:
            same = [(x, y) for x in by_model[a] for y in by_model[b] if seed_of[x] == seed_of[y]]
            pairs[f"{a} × {b}"] = same or [(x, y) for x in by_model[a] for y in by_model[b]]
    overlap = []
    for kind, ps in pairs.items():
        if not ps:
            continue
        row = {"pairs": kind, "n": len(ps)}
        for m in ROBUSTNESS_METRICS:
            row[f"top{k}_{m}_%"] = float(np.mean([top_k_overlap(ranks[x][m], ranks[y][m], k) for x, y in ps]))
        overlap.append(row)
    return rows, per_model, pd.DataFrame(overlap)


def markdown(per_model: pd.DataFrame, overlap: pd.DataFrame) -> str:
    """The per-model table (mean ± sd) and the overlap table as markdown (for the README)."""
    def pm(r, c, fmt):
        m, s = r[f"{c}_mean"], r[f"{c}_std"]
        return "—" if m != m else (fmt.format(m) + ("" if s != s else " ± " + fmt.format(s)))

    lines = ["| model | runs | balanced accuracy | AUC | sensitivity | specificity | best epoch | s to best epoch |",
             "|---|---|---|---|---|---|---|---|"]
    for _, r in per_model.iterrows():
        lines.append(f"| {r['model']} | {r['runs']} | {pm(r, 'balanced_accuracy', '{:.3f}')} | {pm(r, 'auc', '{:.3f}')}"
                     f" | {pm(r, 'sensitivity', '{:.3f}')} | {pm(r, 'specificity', '{:.3f}')}"
                     f" | {pm(r, 'best_epoch', '{:.1f}')} | {pm(r, 'time_to_best_s', '{:.0f}')} |")
    if len(overlap):
        cols = [c for c in overlap.columns if c.startswith("top")]
        lines += ["", "| run pairs | n | " + " | ".join(c.replace("_%", " %").replace("_", " ") for c in cols) + " |",
                  "|---|---|" + "---|" * len(cols)]
        for _, r in overlap.iterrows():
            lines.append(f"| {r['pairs']} | {r['n']} | " + " | ".join(f"{r[c]:.0f}" for c in cols) + " |")
    return "\n".join(lines)
