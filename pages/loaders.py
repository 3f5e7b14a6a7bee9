"""Cached loaders of the pages, keyed by file path and modification time (never by hashing arrays); the
computations themselves live in ``lib``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import streamlit as st

from lib.data.workspace import Workspace


@st.cache_data(max_entries=16, show_spinner=False)
def _volume(path: str, mtime_ns: int, resolution: float) -> np.ndarray:
    from lib.data.templates import Grid
    from lib.data.validation import load_on_grid

    img, _ = load_on_grid(path, Grid(resolution))
    return np.asarray(img.dataobj, dtype=np.float32)


def volume(ws: Workspace, path: str) -> np.ndarray:
    """A scan on the workspace grid, cached by its path and modification time."""
    p = ws.resolve(path)
    return _volume(str(p), p.stat().st_mtime_ns, ws.grid.resolution)


@st.cache_data(max_entries=2, show_spinner=False)
def group_means(path: str, positive: str = "", negative: str = "") -> dict[str, np.ndarray]:
    """Group means by file path (the name carries the cohort's content key, so it never goes stale), keyed by
    the task's class names."""
    from lib.data.cohort_means import read_group_means

    return read_group_means(path, *((positive, negative) if positive else ()))


@st.cache_resource(show_spinner=False)
def atlas_labels(name: str, resolution: float):
    from lib.data.templates import atlas

    img, table = atlas(name, resolution)
    return np.asarray(img.dataobj), table


@st.cache_resource(show_spinner=False)
def template_volume(resolution: float) -> np.ndarray:
    from lib.data.templates import template

    return np.asarray(template(resolution).dataobj, dtype=np.float32)


@st.cache_data(max_entries=8, show_spinner=False)
def checkpoint_sha(path: str, mtime_ns: int) -> str:
    """SHA-256 of a checkpoint, hashed once per file version."""
    from lib.learn.training import file_hash

    return file_hash(path)


@st.cache_data(max_entries=8, show_spinner=False)
def predictions_csv(path: str, mtime_ns: int):
    import pandas as pd

    return pd.read_csv(path, dtype={"scan_id": str, "subject_id": str})


@st.cache_data(max_entries=4, show_spinner=False)
def cohort_table(cohort_csv: str, mtime_ns: int):
    """The cohort of the workspace that holds ``cohort_csv`` (keyed by that file, so never another's)."""
    from lib.data.scans import load_cohort

    return load_cohort(Workspace.open(Path(cohort_csv).parent))


@st.cache_resource(max_entries=32, show_spinner=False)
def _heatmap_store(folder: str, sealed: int):
    from lib.explain.heatmaps import HeatmapStore

    return HeatmapStore(folder)


def heatmap_store(folder: str):
    """The store of ``folder``, shared by sessions; keyed by its completeness marker's stamp so that a store
    removed and rebuilt (``cache verify --repair``, a recomputation) is opened afresh, never served stale."""
    from lib.core import cache

    try:
        sealed = (Path(folder) / cache.MARKER).stat().st_mtime_ns
    except FileNotFoundError:
        sealed = 0
    return _heatmap_store(folder, sealed)


PRELOAD_KEY = "chart_bundle_preload"


def preload_chart_bundle() -> None:
    """On a session's first run, an empty, hidden plotly chart: the browser then fetches and starts plotly's
    script bundle (about 4.7 MB) while the first page is read, not when the first chart page is opened
    (which took 1.6 s instead of 0.5 s for one user on 2 cores, bench/load.py). Later runs send nothing."""
    if st.session_state.get(PRELOAD_KEY):
        return
    st.session_state[PRELOAD_KEY] = True
    import plotly.graph_objects as go

    with st.sidebar:
        st.html(f"<style>.st-key-{PRELOAD_KEY} {{display: none;}}</style>")
        with st.container(key=PRELOAD_KEY):
            st.plotly_chart(go.Figure(), config={"staticPlot": True})
