"""What the dataset overview shows: counts, demographics, the region under the crosshair.

Everything here takes a workspace or its cohort and returns plain tables or images, so the page only renders.
The data it shows comes from :mod:`lib.data.scans` (the cohort, a scan, the demo's ground truth) and
:mod:`lib.data.cohort_means` (the cohort's mean AD and HC images); both are re-exported here, the page's one
model.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lib.core import memo
from lib.data.cohort_means import (brain_normalised, compute_group_means, group_means, group_means_path,  # noqa: F401
                                   read_group_means)
from lib.data.scans import ground_truth, load_cohort, load_scan  # noqa: F401


@memo.memoized(8)
def counts(cohort: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Scans and subjects by diagnosis, and scans by split, visit and site (a column per class)."""
    out = {"diagnosis": pd.DataFrame({
        "scans": cohort.groupby("diagnosis").size(),
        "subjects": cohort.groupby("diagnosis")["subject_id"].nunique(),
    }).T}
    for col, name in (("split", "split"), ("session", "visit"), ("site", "site")):
        if col in cohort and cohort[col].notna().any():
            t = cohort.groupby([col, "diagnosis"]).size().unstack(fill_value=0)
            if col == "split":
                t = t.reindex([p for p in ("train", "validation", "test") if p in t.index])
            t.index.name = name
            out[name] = t
    return out


@memo.memoized(8)
def demographics(cohort: pd.DataFrame) -> pd.DataFrame:
    """Per diagnosis, at the first visit of each subject: n, age, % female, MMSE, CDR (mean ± SD).

    A display table: every cell is text ("75.4 ± 8.2", "40"), so each column has one type (Arrow, which
    Streamlit serialises tables with, refuses a column mixing numbers and text).
    """
    first = cohort.sort_values([c for c in ("subject_id", "session") if c in cohort]).groupby("subject_id").head(1)
    rows = {}
    for dx, g in first.groupby("diagnosis"):
        row = {"subjects": str(len(g))}
        for col, label in (("age", "age (years)"), ("mmse", "MMSE"), ("cdr", "CDR"),
                           ("hippocampal_volume", "hippocampal volume (mm³)")):
            if col in g and pd.to_numeric(g[col], errors="coerce").notna().any():
                v = pd.to_numeric(g[col], errors="coerce")
                row[label] = f"{v.mean():.1f} ± {v.std():.1f}"
        if "sex" in g:
            row["female"] = f"{(g['sex'] == 'F').mean():.0%}"
        rows[dx] = row
    return pd.DataFrame(rows)


@memo.memoized(8)
def demographic_histograms(cohort: pd.DataFrame, colours: dict) -> list:
    """(column, plotly histogram by diagnosis) of age, MMSE and hippocampal volume at each subject's first
    visit; built once per cohort and shared (a figure takes a tenth of a second to build)."""
    import plotly.express as px

    first = cohort.sort_values(["subject_id", "session"] if "session" in cohort else ["subject_id"]) \
        .groupby("subject_id").head(1)
    out = []
    for name in (c for c in ("age", "mmse", "hippocampal_volume") if c in first and first[c].notna().any()):
        fig = px.histogram(first, x=name, color="diagnosis", barmode="overlay", opacity=0.65,
                           color_discrete_map=colours, height=280,
                           labels={"mmse": "MMSE", "age": "age (years)",
                                   "hippocampal_volume": "hippocampal volume (mm³)"})
        fig.update_layout(margin=dict(l=10, r=10, t=30, b=10), legend_title_text="")
        out.append((name, fig))
    return out


def region_at(labels: np.ndarray, table: pd.DataFrame, ijk) -> str:
    """Atlas region name at voxel ``ijk`` ('outside the atlas' for background)."""
    i, j, k = (int(np.clip(v, 0, s - 1)) for v, s in zip(ijk, labels.shape))
    value = int(labels[i, j, k])
    if value == 0:
        return "outside the atlas"
    names = table.loc[table["index"] == value, "name"]
    return names.iat[0].replace("_", " ") if len(names) else f"label {value}"
