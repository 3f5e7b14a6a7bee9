"""relevance-atlas: explain 3D CNN decisions on structural brain MRI.

The library never imports Streamlit; every page of the dashboard calls into it,
and every long job is also reachable headless through ``python -m lib``.
"""

__version__ = "0.1.0"
