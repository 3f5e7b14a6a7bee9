"""relevance-atlas dashboard: a router plus the shared sidebar (workspace).

    streamlit run app.py

The default workspace is the embedded demo cohort (``data/demo``); it is
built in the background the first time the app opens.
"""

import streamlit as st

from pages.common import sidebar_workspace

st.set_page_config(page_title="relevance-atlas", page_icon=":material/neurology:", layout="wide")

ws = sidebar_workspace()

pages = [
    st.Page("pages/overview.py", title="Dataset overview", icon=":material/dataset:", default=True),
    st.Page("pages/cohort.py", title="Cohort & validation", icon=":material/fact_check:"),
    st.Page("pages/training.py", title="Training", icon=":material/model_training:"),
    st.Page("pages/jobs.py", title="Jobs", icon=":material/pending_actions:"),
]
st.navigation(pages).run()
