"""Streamlit components with their own browser code (built by ``./setup.sh``)."""
