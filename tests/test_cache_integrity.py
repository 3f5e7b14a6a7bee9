"""Cache integrity: every kind of cached result, corrupted three ways, is recomputed or reported, never served.

One copy of the demo workspace holds one entry of every kind; each test corrupts one entry, reads it through
the library as a page or command would, and checks that the result equals the intact one (recomputed by
the normal path) or that the error names the entry and the repair command. Recomputing restores the entry,
so the tests share the copy.
"""

from __future__ import annotations

import gzip
import shutil
import tracemalloc

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from lib.analysis import biomarker, evaluation, region_tables
from lib.core import cache
from lib.explain import heatmaps
from lib.views import overview
from lib.views import viewer
from lib.cli import main
from lib.learn.runs import load_run, run_cohort
from lib.data.volumes import store_path, volume_store
from lib.data.workspace import Workspace

SETTINGS = evaluation.Settings(n_scans=2, steps=3, sanity_scans=1, batch_size=4)


class World:
    """The copied workspace, its run and the intact result of every kind (to compare with)."""

    def __init__(self, root):
        self.ws = Workspace.open(root)
        self.run = load_run(self.ws, "fixture-run")
        self.cohort = run_cohort(self.ws, self.run).drop(columns=["run_split"])
        seg = pd.read_csv(self.ws.ground_truth_dir / "atrophy.csv", dtype={"scan_id": str})
        self.seg_cohort = seg[["scan_id", "labels"]].head(3)


@pytest.fixture(scope="module")
def world(demo_ws, demo_run, tmp_path_factory):
    root = tmp_path_factory.mktemp("cache_ws") / "ws"
    shutil.copytree(demo_ws.root, root, ignore=shutil.ignore_patterns("cache", "jobs"))
    w = World(root)
    readers = {k: r for k, (r, *_rest) in KINDS.items()}
    w.fresh = {k: readers[k](w) for k in KINDS}   # computes every entry once
    return w


# --- each kind: (read through the library, the entry, the file to damage) ----------------------------------
def _store(w):
    return heatmaps.compute_store(w.ws, w.run, "lrp", beta=0.0)


def read_volumes(w):
    return volume_store(w.ws, w.cohort, w.run.grid).get(w.cohort["scan_id"][:4])


def read_heatmaps(w):
    found = heatmaps.find_store(w.ws, w.run, "lrp", beta=0.0)
    if found is None:                       # absent or bad: the explain job's path recomputes it
        assert not [s for s in heatmaps.list_stores(w.ws, w.run) if s.params.get("beta") == 0.0]
    store = _store(w)
    return np.stack([store.get(s) for s in store.scan_ids])


def read_group_means(w):
    means = viewer.run_group_means(w.ws, w.run, _store(w), split="all")
    return {lab: np.array(means[lab]) for lab in means.labels if lab in means}


def read_regions(w):
    return biomarker.region_table(w.ws, _store(w)).sort_values(["scan_id", "region"]).reset_index(drop=True)


def read_overview(w):
    if overview.group_means(w.ws) is None:  # absent or bad: the page offers `python -m lib means`
        overview.compute_group_means(w.ws)
    return overview.group_means(w.ws)


def read_segmentation(w):
    return biomarker.segmentation_volumes(w.ws, w.seg_cohort, "labels", [1, 2, 3])


def read_evaluation(w):
    e = evaluation.Evaluation(w.ws, w.run, ["lrp:beta=0"], SETTINGS)
    res = e.run_checks(["sanity"], device="cpu")["sanity"]["LRP β=0"]
    return {"result": {k: v for k, v in res.items() if k not in ("maps_path", "seconds")},
            "maps": np.load(res["maps_path"])}


def read_predictions(w):
    preds = w.run.predictions()
    if preds is None:                        # bad: removed, and the predict job recomputes it
        assert main(["--workspace", str(w.ws.root), "predict", "--run", w.run.id]) == 0
        preds = w.run.predictions()
    return preds


def _entry(kind, w):
    """The entry of ``kind`` (computed first if an earlier test left it absent)."""
    KINDS[kind][0](w)
    if kind == "volumes":
        return store_path(w.ws, w.cohort, w.run.grid)
    store = _store(w)
    if kind == "heatmaps":
        return store.folder
    if kind == "group_means":   # (a recomputed store starts without group means)
        return viewer.run_group_means(w.ws, w.run, store, split="all").folder
    if kind == "regions":
        return region_tables.table_path(w.ws, store, region_tables.get_atlas(w.ws, "neuromorphometrics",
                                                                             store.grid.resolution))
    if kind == "overview":
        return overview.group_means_path(w.ws, overview.load_cohort(w.ws))
    if kind == "biomarker":
        return next((w.ws.cache_dir / "biomarker" / "volumes").glob("*.csv"))
    if kind == "evaluation":
        e = evaluation.Evaluation(w.ws, w.run, ["lrp:beta=0"], SETTINGS)
        return e.folder("sanity", e.methods[0])
    return w.run.dir / "predictions.csv"


KINDS = {
    "volumes": (read_volumes, "volumes.npy"),
    "heatmaps": (read_heatmaps, "maps.npy"),
    "group_means": (read_group_means, "000_AD.npy"),
    "regions": (read_regions, None),
    "overview": (read_overview, None),
    "biomarker": (read_segmentation, None),
    "evaluation": (read_evaluation, "maps.npy"),
    "predictions": (read_predictions, None),
}


def damage(entry, file, how):
    """Truncate ``file`` of the entry, overwrite its second half with garbage (same size), or delete the
    entry's completeness marker."""
    target = entry / file if file else entry
    if how == "marker":
        cache.marker_of(entry).unlink()
        return
    data = target.read_bytes()
    if how == "truncate":
        target.write_bytes(data[: len(data) // 2])
    else:
        half = len(data) // 2
        garbage = np.random.default_rng(0).integers(0, 256, len(data) - half, dtype=np.uint8).tobytes()
        target.write_bytes(data[:half] + garbage)
        assert target.stat().st_size == len(data)


def same(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            same(a[k], b[k])
    elif isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))
    elif isinstance(a, pd.Series):
        pd.testing.assert_series_equal(a, b)
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b)
    else:
        assert a == b


@pytest.mark.parametrize("how", ["truncate", "garbage", "marker"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_a_damaged_entry_is_recomputed_never_served(world, kind, how):
    read, file = KINDS[kind]
    entry = _entry(kind, world)
    assert cache.problem(entry) is None
    damage(entry, file, how)
    assert cache.problem(entry) is not None or kind == "predictions"   # predictions: see below
    same(world.fresh[kind], read(world))
    assert cache.problem(entry) is None, "the entry is whole again"


def test_predictions_without_marker_are_checked_before_being_kept(world):
    path = world.run.dir / "predictions.csv"
    full = path.read_text()
    cache.marker_of(path).unlink()
    lines = full.splitlines(keepends=True)
    path.write_text("".join(lines[:-3]))          # a clean cut at a line: parses, but lacks three scans
    assert world.run.predictions() is None and not path.exists()
    same(world.fresh["predictions"], read_predictions(world))


def test_readers_that_cannot_recompute_name_the_entry_and_the_repair_command(world):
    path = _entry("overview", world)
    damage(path, None, "garbage")
    with pytest.raises(cache.CacheError, match=r"cache verify --repair") as err:
        overview.read_group_means(path)
    assert str(path) in str(err.value)
    store_folder = _entry("heatmaps", world)
    damage(store_folder, "scale.npy", "garbage")   # a wrong scale: peaks many times too large
    with pytest.raises(cache.CacheError, match="scale.npy"):
        heatmaps.HeatmapStore(store_folder)
    same(world.fresh["overview"], read_overview(world))
    same(world.fresh["heatmaps"], read_heatmaps(world))


def test_a_region_table_that_lacks_scans_is_never_used(world):
    store = _store(world)
    path = _entry("regions", world)
    full = pd.read_parquet(path)
    part = full[full["scan_id"].isin(store.scan_ids[:7])]
    part.to_parquet(path, index=False)
    cache.seal(path, scans=store.scan_ids[:7])    # a sealed table of 7 scans: whole, but not of this store
    with pytest.raises(cache.CacheError, match=f"lacks {len(store) - 7} of the {len(store)} scans"):
        region_tables.read_table(path, store)
    assert biomarker.find_region_table(world.ws, store) is None
    same(world.fresh["regions"], read_regions(world))


def test_cache_verify_reports_every_bad_entry_and_repair_removes_them(world, capsys):
    root = str(world.ws.root)
    assert main(["--workspace", root, "cache", "verify"]) == 0
    assert "all intact" in capsys.readouterr().out
    bad = {kind: _entry(kind, world) for kind in KINDS}   # (finding an entry may rebuild a damaged one)
    for kind, entry in bad.items():
        damage(entry, KINDS[kind][1], "truncate")
    assert main(["--workspace", root, "cache", "verify"]) == 1
    out = capsys.readouterr().out
    for entry in bad.values():
        assert f"{entry}:" in out
    assert f"{len(bad)} of " in out and "--repair" in out
    assert main(["--workspace", root, "cache", "verify", "--repair"]) == 0
    out = capsys.readouterr().out
    assert "python -m lib predict --run RUN" in out and "python -m lib means" in out
    assert all(not e.exists() for e in bad.values())
    assert main(["--workspace", root, "cache", "verify"]) == 0
    capsys.readouterr()
    for kind in sorted(KINDS, key=lambda k: k != "predictions"):   # group means need the predictions
        same(world.fresh[kind], KINDS[kind][0](world))
    assert main(["--workspace", root, "cache", "verify"]) == 0


def test_a_command_reading_a_bad_entry_prints_the_error_not_a_traceback(world, capsys, monkeypatch):
    import lib.cli as cli
    import lib.cli.admin as admin_commands

    path = _entry("overview", world)
    damage(path, None, "truncate")
    monkeypatch.setattr(admin_commands, "_cmd_runs", lambda args, ws: overview.read_group_means(path) and 0)
    assert cli.main(["--workspace", str(world.ws.root), "runs"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: cohort mean images at {path} is not usable") and "Traceback" not in err
    same(world.fresh["overview"], read_overview(world))


# --- atlas uploads: a small gzip cannot expand to hundreds of MiB --------------------------------------------
def test_a_gzip_bomb_atlas_is_refused_from_its_header(tmp_path):
    from lib.data.atlas import MAX_LABELS_DATA, AtlasError, read_labels_image

    shape = (1024, 1024, 640)                         # 640 MiB of uint8 zeros, < 1 MiB gzipped
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(np.uint8)
    hdr["vox_offset"] = 352
    path = tmp_path / "bomb.nii.gz"
    zeros = bytes(16 << 20)
    member = gzip.compress(zeros, 9)                  # gzip members concatenate into one stream
    with open(path, "wb") as fh:
        fh.write(gzip.compress(hdr.binaryblock + b"\0" * 4))
        for _ in range(int(np.prod(shape)) // len(zeros)):
            fh.write(member)
    assert path.stat().st_size < 1 << 20
    assert int(np.prod(shape)) > MAX_LABELS_DATA
    with gzip.open(path) as fh:                       # a valid NIfTI: the header is what refuses it
        assert nib.Nifti1Header.from_fileobj(fh).get_data_shape() == shape
    tracemalloc.start()
    with pytest.raises(AtlasError) as err:
        read_labels_image(path, 3.0)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert str(path) in str(err.value) and "640 MiB uncompressed" in str(err.value)
    assert peak < 32 << 20


def test_an_oversized_labels_file_is_refused_before_reading(tmp_path, monkeypatch):
    from lib.data import atlas
    from lib.data.atlas import AtlasError, read_labels_image

    img = nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), np.eye(4))
    path = tmp_path / "labels.nii.gz"
    nib.save(img, path)
    monkeypatch.setattr(atlas, "MAX_LABELS_FILE", 16)
    with pytest.raises(AtlasError, match=r"labels\.nii\.gz: the file has"):
        read_labels_image(path, 3.0)
