"""Summaries of an evaluation's results: the AOPC curves, the sanity check's steps, the localisation scores,
the ranking table, chance levels, and the plain-text report of ``python -m lib evaluate-maps``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
import pandas as pd

from lib.analysis.evaluation.sanity import sanity_verdict
from lib.analysis.evaluation.settings import Settings

if TYPE_CHECKING:
    from lib.analysis.evaluation.orchestration import Evaluation


def aopc_curves(results: dict) -> pd.DataFrame:
    """Long table ``label, order, k, drop, sem`` of the mean curve ``f(x⁽⁰⁾) − f(x⁽ᵏ⁾)`` over scans (MoRF per
    method, and the random baseline)."""
    rows = []
    items = [(lab, "most relevant first", r) for lab, r in results["aopc"].items()]
    if results.get("random"):
        items.append(("random order", "random", results["random"]))
    for lab, order, r in items:
        o = np.asarray(r["outputs"], dtype=float)
        drop = o[:, :1] - o
        mean = drop.mean(0)
        sem = drop.std(0, ddof=1) / np.sqrt(len(drop)) if len(drop) > 1 else np.zeros_like(mean)
        rows += [{"label": lab, "order": order, "k": k, "drop": float(mean[k]), "sem": float(sem[k])}
                 for k in range(len(mean))]
    return pd.DataFrame(rows, columns=["label", "order", "k", "drop", "sem"])


def sanity_table(results: dict, threshold: float = Settings.sanity_threshold) -> pd.DataFrame:
    """Long table ``label, step, i, spearman, spearman_abs, ssim, topk`` (means over the scans)."""
    rows = []
    for lab, r in results["sanity"].items():
        for i, step in enumerate(r["steps"]):
            rows.append({"label": lab, "step": step, "i": i,
                         **{k: float(np.nanmean(r[k][i])) for k in ("spearman", "spearman_abs", "ssim", "topk")}})
    return pd.DataFrame(rows, columns=["label", "step", "i", "spearman", "spearman_abs", "ssim", "topk"])


def localisation_table(results: dict) -> pd.DataFrame:
    """One row per (method, scan): ``label, scan_id, diagnosis, mass, auc, hit, chance_mass, chance_hit``."""
    rows = [{"label": lab, **row} for lab, r in results["localisation"].items() for row in r["rows"]]
    return pd.DataFrame(rows, columns=["label", "scan_id", "diagnosis", "mass", "auc", "hit", "chance_mass",
                                       "chance_hit", "mask_voxels"])


RANK_CRITERIA = ("AOPC gain", "mass accuracy", "voxel AUC", "pointing game")
"""The scores a method's rank averages its per-score ranks over (each: higher is better)."""


def ranking_rule(threshold: float = Settings.sanity_threshold) -> str:
    """The rule :func:`summary` ranks by, as one sentence for a reader of the table."""
    return (f"Rank = order of the mean of a method's ranks on {', '.join(RANK_CRITERIA[:-1])} and "
            f"{RANK_CRITERIA[-1]} (each score counts equally, so one best score does not make the best method; a "
            f"score not computed is left out of the mean); a method failing the sanity check (|ρ| ≥ {threshold:g} "
            "after randomisation) ranks after every method that passes.")


def summary(results: dict, labels: Sequence[str], threshold: float = Settings.sanity_threshold) -> pd.DataFrame:
    """The ranking table: one row per method with every score, and its rank.

    Columns: ``method``, ``AOPC`` (MoRF), ``AOPC random``, ``AOPC gain`` (MoRF − random, higher = more
    faithful), ``ρ randomised`` (rank correlation with the original map after full randomisation), ``sanity`` ("pass"/
    "fail"), ``mass accuracy``, ``voxel AUC``, ``pointing game``, ``rank`` (mean rank over AOPC gain and
    the three localisation scores, 1 = best; a failed sanity check puts a method after every one that
    passed). Missing scores are NaN.
    """
    rand = results.get("random")
    rand_aopc = float(np.mean(rand["aopc"])) if rand else float("nan")
    loc = localisation_table(results)
    rows = []
    for lab in labels:
        a = results["aopc"].get(lab)
        sres = results["sanity"].get(lab)
        rho = float(np.nanmean(sres["spearman"][-1])) if sres else float("nan")
        g = loc[loc["label"] == lab]
        rows.append({
            "method": lab,
            "AOPC": float(np.mean(a["aopc"])) if a else float("nan"),
            "AOPC random": rand_aopc if a else float("nan"),
            "ρ randomised": rho,
            "sanity": ("pass" if sanity_verdict(rho, threshold) else "fail") if sres else "",
            "mass accuracy": float(g["mass"].mean()) if len(g) else float("nan"),
            "voxel AUC": float(g["auc"].mean()) if len(g) else float("nan"),
            "pointing game": float(g["hit"].mean()) if len(g) else float("nan"),
        })
    t = pd.DataFrame(rows, columns=["method", "AOPC", "AOPC random", "ρ randomised", "sanity", "mass accuracy",
                                    "voxel AUC", "pointing game"])
    t.insert(3, "AOPC gain", t["AOPC"] - t["AOPC random"])
    crit = t[list(RANK_CRITERIA)]
    ranks = crit.rank(ascending=False, method="average")
    mean_rank = ranks.mean(axis=1, skipna=True)
    failed = (t["sanity"] == "fail").astype(float)
    order = pd.DataFrame({"failed": failed, "r": mean_rank}).sort_values(["failed", "r"], na_position="last")
    t["rank"] = pd.array([pd.NA] * len(t), dtype="Int64")   # integers; unranked methods stay empty
    valid = order["r"].notna()
    t.loc[order.index[valid], "rank"] = np.arange(1, int(valid.sum()) + 1)
    return t.sort_values("rank", na_position="last").reset_index(drop=True)


def chance_levels(results: dict) -> dict:
    """Mean chance levels of the localisation scores over the scans (equal for every method)."""
    loc = localisation_table(results)
    if loc.empty:
        return {}
    first = loc[loc["label"] == loc["label"].iloc[0]]
    return {"mass accuracy": float(first["chance_mass"].mean()), "voxel AUC": 0.5,
            "pointing game": float(first["chance_hit"].mean())}


def format_report(ev: Evaluation, results: dict) -> str:
    """Plain-text report: the ranking table, chance levels and the sanity check step by step."""
    s = ev.settings
    lines = [f"run {ev.run.id} · {len(ev.scans['aopc'])} scans ({s.split} split) for region perturbation, "
             f"{len(ev.scans['sanity'])} for the sanity check, {len(ev.scans['localisation'])} with ground truth "
             "for localisation",
             f"region perturbation: {s.regions}"
             + (f" of {s.cube_mm:g} mm" if s.regions == "cubes" else f" of {s.atlas}")
             + f", {s.replacement} replacement, L = {s.steps} steps, f = {s.target} {s.output}", ""]
    table = summary(results, [m.label for m in ev.methods], s.sanity_threshold)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        lines.append(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    lines.append(ranking_rule(s.sanity_threshold))
    chance = chance_levels(results)
    if chance:
        lines.append("chance: " + ", ".join(f"{k} {v:.3f}" for k, v in chance.items()))
    lines.append(f"sanity: passes when |ρ| after randomising every layer < {s.sanity_threshold:g}")
    st = sanity_table(results)
    if not st.empty:
        lines += ["", "sanity check (mean over scans), randomised from the output layer down:"]
        wide = st.pivot(index="i", columns="label", values="spearman")
        wide.index = [st.drop_duplicates("i").set_index("i").loc[i, "step"] for i in wide.index]
        with pd.option_context("display.width", 200, "display.max_columns", 20):
            lines.append("Spearman ρ:\n" + wide.to_string(float_format=lambda v: f"{v:.3f}"))
            for metric, name in (("spearman_abs", "Spearman ρ of |maps|"), ("ssim", "SSIM"),
                                 ("topk", f"top-{s.top_fraction:.0%} overlap")):
                w = st.pivot(index="i", columns="label", values=metric)
                w.index = wide.index
                lines.append(f"{name}:\n" + w.to_string(float_format=lambda v: f"{v:.3f}"))
    lines.append(f"\ncached in {ev.root}")
    return "\n".join(lines)
