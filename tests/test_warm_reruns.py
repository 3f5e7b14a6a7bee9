"""A page's warm rerun recomputes nothing: no table is read, no statistic or figure rebuilt, for a key already
computed, in the same session or another one (results are shared by every session of the server)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from lib.analysis import biomarker, region_analysis as ra, stats
from lib.data import scans
from lib.cli import main
from lib.core import memo
from lib.views import region_figures

APP = str(Path(__file__).resolve().parent.parent / "app.py")


@pytest.fixture(scope="module")
def analysed(demo_ws, demo_run):
    """The small demo with LRP β = 0 heatmaps of the fixture run and their region table."""
    import streamlit as st

    # pages opened in this process by earlier tests keep what they cached (stores, tables): start cold
    st.cache_data.clear()
    st.cache_resource.clear()
    memo.clear_all()
    assert main(["--workspace", str(demo_ws.root), "regions", "--run", demo_run.id, "--method", "lrp",
                 "--beta", "0"]) == 0
    return demo_ws


class Counter:
    """Wraps functions (module, name) and counts their calls (what memoized functions compute, not the memoized
    functions themselves: their calls are cheap lookups)."""

    def __init__(self, monkeypatch, targets):
        self.calls = {}
        for module, name in targets:
            original = getattr(module, name)
            label = f"{module.__name__}.{name}"
            self.calls[label] = 0

            def counted(*args, _original=original, _label=label, **kwargs):
                self.calls[_label] += 1
                return _original(*args, **kwargs)
            monkeypatch.setattr(module, name, counted)

    def reset(self):
        self.calls = dict.fromkeys(self.calls, 0)


def _open(monkeypatch, ws, page, run_id=None):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("RELEVANCE_ATLAS_WORKSPACE", str(ws.root))
    at = AppTest.from_file(APP, default_timeout=240)
    if run_id:   # other tests add runs to the shared demo workspace: explain the one analysed here
        at.query_params["run"] = run_id
    at.run()
    at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


READS = [(pd, "read_csv"), (pd, "read_parquet")]
PAGES = {
    "pages/atlas.py": READS + [(ra, "annotate"), (ra, "top_table"), (ra, "region_tests"), (ra, "distributions"),
                               (region_figures, "ridge_polygons")],
    "pages/biomarker.py": READS + [(stats, "correlate"), (biomarker, "region_values")],
    "pages/overview.py": READS + [(scans, "assign")],
}


@pytest.mark.parametrize("page", list(PAGES))
def test_a_warm_rerun_reads_and_computes_nothing_again(analysed, demo_run, monkeypatch, page):
    memo.clear_all()
    counter = Counter(monkeypatch, PAGES[page])
    at = _open(monkeypatch, analysed, page, run_id=demo_run.id)   # cold: reads and computes what the page shows
    cold = dict(counter.calls)
    assert cold[f"{pd.__name__}.read_csv"] + cold[f"{pd.__name__}.read_parquet"] > 0   # the counters count
    counter.reset()
    at.run()                                  # the same session again
    assert not at.exception
    assert counter.calls == dict.fromkeys(counter.calls, 0), counter.calls
    other = _open(monkeypatch, analysed, page, run_id=demo_run.id)   # another user's first visit: the results are shared
    assert not other.exception
    assert counter.calls == dict.fromkeys(counter.calls, 0), counter.calls


def test_the_heatmaps_individual_view_and_next_read_no_table_again(analysed, demo_run, monkeypatch):
    """The Individual view's warm rerun reads nothing; "Next ▶" reads no table either (the scan's own image is
    the only new thing: its map from the memory-mapped store and its anatomy)."""
    memo.clear_all()
    counter = Counter(monkeypatch, READS + [(scans, "assign")])
    at = _open(monkeypatch, analysed, "pages/heatmaps.py", run_id=demo_run.id)
    at.session_state["hm_view"] = "Individual"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("Scan 1 of" in c.value for c in at.caption)
    counter.reset()
    at.run()
    assert counter.calls == dict.fromkeys(counter.calls, 0), counter.calls
    next(b for b in at.button if b.key == "hm_next").click().run()
    assert not at.exception and any("Scan 2 of" in c.value for c in at.caption)
    assert counter.calls == dict.fromkeys(counter.calls, 0), counter.calls


def test_a_changed_file_is_a_new_key(analysed, monkeypatch):
    """A region table rewritten (a recomputation) is read again: keys are the files' stamps, never stale."""
    import os
    import time

    from lib.analysis import region_tables as rt

    memo.clear_all()
    path = next((analysed.root / "cache" / "regions").glob("*.parquet"))
    first = rt.read_table(path)
    counter = Counter(monkeypatch, [(pd, "read_parquet")])
    assert rt.read_table(path).equals(first) and counter.calls["pandas.read_parquet"] == 0
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))   # as a rewrite would stamp it
    time.sleep(0.01)
    rt.read_table(path)
    assert counter.calls["pandas.read_parquet"] == 1


def test_plotly_bundle_is_requested_on_a_sessions_first_run_only(demo_ws, monkeypatch):
    """The first run sends one hidden, empty chart (the browser then loads plotly while the first page is read);
    a rerun sends none, so no page pays for it again."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("RELEVANCE_ATLAS_WORKSPACE", str(demo_ws.root))
    at = AppTest.from_file(APP, default_timeout=240)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert len(at.sidebar.get("plotly_chart")) == 1
    at.run()
    assert len(at.sidebar.get("plotly_chart")) == 0
