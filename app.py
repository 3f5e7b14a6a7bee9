"""relevance-atlas dashboard: a router plus the shared sidebar (workspace).

    streamlit run app.py

The default workspace is the embedded demo cohort (``data/demo``); it is
built in the background the first time the app opens.
"""

import streamlit as st

from pages.workspace_sidebar import sidebar_workspace
from pages.login import login_gate, sidebar_account
from pages.loaders import preload_chart_bundle

st.set_page_config(page_title="relevance-atlas", page_icon=":material/neurology:", layout="wide")

who = login_gate()  # when a sign-in is required, anonymous visitors get only the sign-in page
pages = [
    st.Page("pages/overview.py", title="Dataset overview", icon=":material/dataset:", default=True),
    st.Page("pages/cohort.py", title="Cohort & validation", icon=":material/fact_check:"),
    st.Page("pages/training.py", title="Training", icon=":material/model_training:"),
    st.Page("pages/heatmaps.py", title="Heatmaps", icon=":material/local_fire_department:"),
    st.Page("pages/atlas.py", title="Atlas metrics", icon=":material/grid_view:"),
    st.Page("pages/biomarker.py", title="Biomarkers", icon=":material/scatter_plot:"),
    st.Page("pages/evaluation.py", title="Evaluation", icon=":material/verified:"),
    st.Page("pages/jobs.py", title="Jobs", icon=":material/pending_actions:"),
    st.Page("pages/reviews.py", title="Reviews", icon=":material/rate_review:"),
]
# Streamlit's own sidebar navigation is off (.streamlit/config.toml: it would list the modules of pages/
# to the first visitor after a start), so the sidebar lists the pages itself; deep links still route.
page = st.navigation(pages, position="hidden")
with st.sidebar:
    for p in pages:
        st.page_link(p)
preload_chart_bundle()
ws = sidebar_workspace()
sidebar_account(who)
if ws.problem:
    # an unreadable workspace.json (the sidebar says which and why): no page runs on it, so nothing
    # (a demo build, a review, a job) writes into that folder; another workspace can still be picked
    st.error(f"The workspace cannot be opened: {ws.problem}")
    st.stop()
page.run()
