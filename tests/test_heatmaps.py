"""Cohort heatmap stores: content keys, caching, resume after interruption, one job per request, exports."""

from __future__ import annotations

import threading

import nibabel as nib
import numpy as np
import pytest
import torch

from lib.explain import heatmaps
from lib import jobs
from lib.cli import main
from lib.explain import explain
from lib.data.volumes import load_batch
from lib.learn.runs import load_checkpoint


def _direct(run, volumes_store, scan_ids, **params):
    model, norm, _ = load_checkpoint(run.best_checkpoint, "cpu")
    x = torch.from_numpy(load_batch(volumes_store, volumes_store.rows(scan_ids), norm)).unsqueeze(1)
    return explain(model, x, **params)[:, 0].numpy()


@pytest.fixture()
def fresh_cache(demo_ws):
    import shutil

    shutil.rmtree(demo_ws.cache_dir / "heatmaps", ignore_errors=True)
    yield
    shutil.rmtree(demo_ws.cache_dir / "heatmaps", ignore_errors=True)


def test_store_matches_direct_explanation_and_keeps_region_sums(demo_ws, demo_run, fresh_cache):
    store = heatmaps.compute_store(demo_ws, demo_run, "lrp", beta=0.0)
    assert len(store) == len(demo_ws_cohort(demo_ws))
    ids = store.scan_ids[:3]
    direct = _direct(demo_run, _volumes(demo_ws, demo_run), ids, method="lrp", beta=0.0)
    from lib.data.templates import atlas

    labels = np.asarray(atlas("neuromorphometrics", demo_run.grid.resolution)[0].dataobj)
    for i, s in enumerate(ids):
        stored = store.get(s)
        assert stored.shape == demo_run.grid.shape
        # float16 with a per-scan scale: region sums within 1e-3 of float32, relative to the region's |relevance|
        for lab in np.unique(labels)[1:]:
            m = labels == lab
            ref_abs = np.abs(direct[i][m]).sum()
            if ref_abs > 0:
                assert abs(stored[m].sum() - direct[i][m].sum()) <= 1e-3 * ref_abs
    # a second request is answered from disk: the engine is not called again
    import lib.explain as ex

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ex, "explain", lambda *a, **k: (_ for _ in ()).throw(AssertionError("recomputed")))
        again = heatmaps.compute_store(demo_ws, demo_run, "lrp", beta=0.0)
    assert again.folder == store.folder
    # another parameter is another store
    assert heatmaps.find_store(demo_ws, demo_run, "lrp", beta=1.0) is None


def demo_ws_cohort(ws):
    from lib.data.scans import load_cohort

    return load_cohort(ws)


def _volumes(ws, run):
    from lib.data.volumes import volume_store

    return volume_store(ws, demo_ws_cohort(ws), run.grid)


def test_interrupted_job_resumes_where_it_stopped(demo_ws, demo_run, fresh_cache):
    calls = []

    def stop_after_two_batches(done, total, msg):
        calls.append(done)
        if done >= 4:
            raise jobs.Cancelled()

    with pytest.raises(jobs.Cancelled):
        heatmaps.compute_store(demo_ws, demo_run, "gradient_x_input", batch_size=2, progress=stop_after_two_batches)
    assert heatmaps.find_store(demo_ws, demo_run, "gradient_x_input") is None
    partial = next((demo_ws.cache_dir / "heatmaps").glob("*.partial"))
    assert np.load(partial / "done.npy").sum() == 4
    seen = []
    store = heatmaps.compute_store(demo_ws, demo_run, "gradient_x_input", batch_size=2,
                                   progress=lambda d, t, m: seen.append(d))
    assert seen[0] == 4  # picked up after the 4 finished scans
    direct = _direct(demo_run, _volumes(demo_ws, demo_run), store.scan_ids, method="gradient_x_input")
    got = store.batch(store.scan_ids)
    assert np.allclose(got, direct, rtol=2e-3, atol=2e-3 * np.abs(direct).max())


def test_two_requests_at_once_compute_once(demo_ws, demo_run, fresh_cache, monkeypatch):
    import lib.explain as ex

    real = ex.explain
    n_volumes = []

    def counting(model, x, **kw):
        n_volumes.append(x.shape[0])
        return real(model, x, **kw)

    monkeypatch.setattr(ex, "explain", counting)
    results = []
    threads = [threading.Thread(target=lambda: results.append(
        heatmaps.compute_store(demo_ws, demo_run, "sensitivity", batch_size=4))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2 and results[0].folder == results[1].folder
    assert sum(n_volumes) == len(results[0])  # every scan explained exactly once


def test_cli_explain_exports_aligned_nifti(demo_ws, demo_run, fresh_cache, tmp_path, capsys):
    scan = demo_ws_cohort(demo_ws)["scan_id"].iat[0]
    out = tmp_path / "map.nii.gz"
    assert main(["--workspace", str(demo_ws.root), "explain", "--run", demo_run.id, "--method", "lrp",
                 "--beta", "0", "--export", scan, "--out", str(out)]) == 0
    img = nib.load(out)
    assert np.allclose(img.affine, demo_run.grid.affine) and img.shape == demo_run.grid.shape
    assert img.header.get_sform(coded=True)[1] == 4  # MNI152 space code
    store = heatmaps.find_store(demo_ws, demo_run, "lrp", beta=0.0)
    assert np.array_equal(np.asarray(img.dataobj), store.get(scan))
    native = tmp_path / "native.nii.gz"
    assert main(["--workspace", str(demo_ws.root), "explain", "--run", demo_run.id, "--method", "lrp",
                 "--beta", "0", "--export", scan, "--out", str(native), "--native"]) == 0
    path = demo_ws.resolve(demo_ws_cohort(demo_ws)["path"].iat[0])
    assert nib.load(native).shape == nib.load(path).shape[:3]
    assert np.allclose(nib.load(native).affine, nib.load(path).affine)
    assert main(["--workspace", str(demo_ws.root), "explain", "--run", demo_run.id, "--param", "nonsense"]) == 1
    assert "KEY=VALUE" in capsys.readouterr().err
