"""Choosing a cluster, and chunked heatmap stores, without Ray: an in-process distributor stands in for it."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from lib import jobs
from lib.core import distribute
from lib.core.distribute import ClusterError
from lib.core.progress import Cancelled
from lib.data.workspace import Workspace
from lib.explain import heatmaps
from lib.jobs.cluster import ENV, cluster_address


class InProcess:
    """A distributor that runs each call here; ``stop_after``: raise Cancelled after that many results, once
    every call has run (chunks that arrived while the driver stopped)."""

    name = "inprocess-test"

    def __init__(self, stop_after=None):
        self.stop_after, self.calls = stop_after, []

    def workers(self, gpu=False):
        return 2

    def run(self, calls, on_wait=None):
        self.calls += list(calls)
        results = [(i, c.fn(*c.args, **c.kwargs)) for i, c in enumerate(calls)]
        for n, item in enumerate(results):
            if self.stop_after is not None and n == self.stop_after:
                raise Cancelled()
            yield item


@pytest.fixture()
def fresh_cache(demo_ws):
    shutil.rmtree(demo_ws.cache_dir / "heatmaps", ignore_errors=True)
    yield
    shutil.rmtree(demo_ws.cache_dir / "heatmaps", ignore_errors=True)


def test_cluster_named_by_option_then_environment_then_workspace(tmp_path, monkeypatch):
    ws = Workspace.create(tmp_path / "ws", cluster="ray://head:10001")
    monkeypatch.delenv(ENV, raising=False)
    assert cluster_address(ws) == "ray://head:10001"
    assert cluster_address(Workspace.create(tmp_path / "plain")) is None
    monkeypatch.setenv(ENV, "auto")
    assert cluster_address(ws) == "auto"
    assert cluster_address(ws, "10.0.0.1:6379") == "10.0.0.1:6379"
    assert cluster_address(ws, "local") is None   # the command line keeps a job here whatever the settings say
    executor = jobs.default_executor(ws)
    assert executor.name == "ray" and executor.address == "auto"
    monkeypatch.setenv(ENV, "local")
    assert jobs.default_executor(ws).name == "local"


def test_a_malformed_cluster_address_is_one_message(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV, "head-without-port")
    with pytest.raises(ClusterError, match="expected auto, HOST:PORT or ray://HOST:PORT"):
        cluster_address(None)


def test_without_a_cluster_nothing_imports_ray(tmp_path):
    code = ("import sys; from lib.data.workspace import Workspace; import lib.cli, lib.jobs.worker, lib.explain.heatmaps;"
            "from lib import jobs; ws = Workspace.create(sys.argv[1]);"
            "assert jobs.default_executor(ws).name == 'local'; assert 'ray' not in sys.modules, 'ray imported'")
    env = {k: v for k, v in __import__("os").environ.items() if k != ENV}
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "ws")], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr


def test_chunks_are_whole_batches_of_a_local_run():
    rows = list(range(3, 40))
    chunks = distribute.chunk_rows(rows, batch_size=4, workers=2)
    assert [r for c in chunks for r in c] == rows
    assert all(len(c) % 4 == 0 for c in chunks[:-1]) and len(chunks) >= 4
    assert distribute.chunk_rows(rows, 4, 2, per_chunk=10)[0] == rows[:12]   # rounded up to whole batches
    assert distribute.chunk_rows([], 4, 2) == []


def _arrays(store):
    return np.asarray(store.maps), np.asarray(store.scale), json.loads((store.folder / "index.json").read_text())


def test_chunked_store_is_the_local_store_and_resumes_from_arrived_chunks(demo_ws, demo_run, fresh_cache):
    local = _arrays(heatmaps.compute_store(demo_ws, demo_run, "lrp", beta=0.0, distributor=None))
    shutil.rmtree(demo_ws.cache_dir / "heatmaps")

    stopping = InProcess(stop_after=1)   # every chunk ran, one was absorbed, then the driver was stopped
    with pytest.raises(Cancelled):
        heatmaps.compute_store(demo_ws, demo_run, "lrp", beta=0.0, distributor=stopping)
    assert heatmaps.find_store(demo_ws, demo_run, "lrp", beta=0.0) is None
    left = list((demo_ws.cache_dir / "heatmaps").glob("*.partial/chunks/*.npz"))
    assert len(left) == len(stopping.calls) - 1 > 0

    again = InProcess()
    with distribute.using(again):   # the running job's distributor is the default
        store = heatmaps.compute_store(demo_ws, demo_run, "lrp", beta=0.0)
    assert again.calls == []   # the arrived chunks were absorbed, nothing computed twice
    maps, scale, index = _arrays(store)
    assert np.array_equal(maps, local[0]) and np.array_equal(scale, local[1]) and index == local[2]
    assert not list((demo_ws.cache_dir / "heatmaps").glob("*.partial"))
    assert not (store.folder / "chunks").exists()


def test_chunked_predictions_are_the_local_predictions(demo_ws, demo_run):
    from lib.learn.prediction import finish_run

    local = finish_run(demo_ws, demo_run)
    table = pd.read_csv(demo_run.dir / "predictions.csv")
    chunked = InProcess()
    with distribute.using(chunked):
        assert finish_run(demo_ws, demo_run) == local
    assert len(chunked.calls) > 1
    pd.testing.assert_frame_equal(pd.read_csv(demo_run.dir / "predictions.csv"), table)
