"""Training page panel: Eitel's study 4 (registration none / linear / non-linear) on the raw demo."""

from __future__ import annotations

import streamlit as st

from lib.learn.registration_study import THESIS_SOURCE
from lib.views import registration_study


def panel(ws) -> None:
    found = registration_study.load(ws)
    if found is None:
        return
    table, meta = found
    settings = meta.get("settings", {})
    with st.expander("Registration study (Eitel, study 4) on the raw demo", expanded=True):
        st.dataframe(table, hide_index=True, width="stretch")
        st.caption(
            f"Demo: test balanced accuracy (gain: points over none), mean ± sd over seeds "
            f"{', '.join(str(x) for x in settings.get('seeds', [])) or '?'}, model "
            f"{settings.get('model', '?')} on the {settings.get('resolution', '?')} mm grid, the same split for every "
            f"registration type. Hippocampus probe: ROC AUC of one number per scan, its mean intensity in the "
            f"template atlas's hippocampus over the brain's, with no training (0.5: the atrophy is not where the "
            f"template's hippocampus is). Thesis: {THESIS_SOURCE}. Rerun: `python -m lib registration-study`.")
