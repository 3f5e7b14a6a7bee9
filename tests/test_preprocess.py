"""Raw-scan preprocessing: Colin27 (mricron's ch2, a real T1 with skull) moved by a known affine and written in
another orientation comes back to the template at 3 mm; bad inputs each fail with their message while the
batch goes on; results are cached by content; maps go back to the scan's own space.

Colin27 is one brain, the template another: registered, it correlates only about 0.72 with ICBM152 (its own
brain-extracted copy too), and no hippocampus labels ship with it. So the moved copy is measured against
Colin27 unmoved-then-registered with the same settings: correlation of the two registered scans, and Dice of
the hippocampus brought to Colin27's space through the unmoved registration's inverse, then carried by the
moved copy and registered, against the template atlas' hippocampus.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from lib.data.preprocess import Settings, preprocess_scan, preprocess_table, qc, warp_to_native
from lib.data.preprocess.pipeline import HIPPOCAMPUS
from lib.data.preprocess.table import set_threads
from lib.data.templates import Grid, atlas, brain_mask, template

COLIN = Path("/usr/share/mricron/templates/ch2.nii.gz")
pytestmark = pytest.mark.skipif(not COLIN.exists(), reason="Debian's mricron-data (Colin27) is not installed")


def _rotation(axis: int, degrees: float) -> np.ndarray:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    i, j = [k for k in range(3) if k != axis]
    out = np.eye(4)
    out[i, i], out[i, j], out[j, i], out[j, j] = c, -s, s, c
    return out


MOVE = _rotation(0, 12) @ _rotation(1, -9) @ _rotation(2, 14) @ np.diag([1.08, 0.93, 1.05, 1.0])
MOVE[:3, 3] = (15, -18, 12)   # mm
"""The known transform: rotations of 12°, −9°, 14°, scaling by 8 %, −7 %, 5 %, shifts up to 18 mm."""


def _moved(data: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    """The same voxels placed by ``MOVE`` and stored left-to-right flipped (orientation LAS instead of RAS)."""
    flip = np.eye(4)
    flip[0, 0], flip[0, 3] = -1, data.shape[0] - 1
    return nib.Nifti1Image(np.ascontiguousarray(data[::-1]), MOVE @ affine @ flip)


@pytest.fixture(scope="module")
def colin(tmp_path_factory):
    """Colin27 registered unmoved and moved, linear and nonlinear, at 3 mm (four registrations, about 20–40 s
    each on 2 free cores)."""
    set_threads(1)
    root = tmp_path_factory.mktemp("colin")
    out = {reg: preprocess_scan(COLIN, Settings(reg, 3), root / "unmoved" / reg) for reg in ("linear", "nonlinear")}
    src = nib.load(COLIN)
    hippocampus = np.isin(np.asarray(atlas("neuromorphometrics", 3)[0].dataobj), HIPPOCAMPUS).astype(np.float32)
    native = warp_to_native(hippocampus, Grid(3).affine, out["nonlinear"].folder)
    labels = (np.asarray(native.dataobj) > 0.5).astype(np.uint8) * HIPPOCAMPUS[0]
    nib.save(_moved(np.asarray(src.dataobj), src.affine), root / "moved.nii.gz")
    nib.save(_moved(labels, src.affine), root / "moved_labels.nii.gz")
    moved = {reg: preprocess_scan(root / "moved.nii.gz", Settings(reg, 3), root / "moved" / reg,
                                  labels=root / "moved_labels.nii.gz") for reg in ("linear", "nonlinear")}
    return {"unmoved": out, "moved": moved, "root": root}


def _t1(result) -> np.ndarray:
    img = nib.load(result.t1)
    assert img.shape == Grid(3).shape and np.allclose(img.affine, Grid(3).affine)
    return np.asarray(img.dataobj)


# measured at 3 mm: correlation 0.99 linear, 0.98 nonlinear (0.96 and 0.947 before the rigid stage and the
# anti-aliased resampling); the bound is the issue's
@pytest.mark.parametrize("registration, min_corr, min_dice", [("linear", 0.95, 0.70), ("nonlinear", 0.95, 0.80)])
def test_colin27_moved_by_a_known_affine_comes_back(colin, registration, min_corr, min_dice):
    moved, unmoved = colin["moved"][registration], colin["unmoved"][registration]
    assert nib.aff2axcodes(nib.load(colin["root"] / "moved.nii.gz").affine) == ("L", "A", "S")
    assert moved.status == "ok", moved.message
    assert qc.correlation(_t1(moved), _t1(unmoved), brain_mask(3)) >= min_corr
    assert moved.measures["dice_hippocampus"] >= min_dice
    assert moved.measures["dice_brain"] >= 0.9
    assert moved.measures["corr_template"] > 0.6      # another brain than the template's (see the docstring)
    names = {p.name for p in moved.folder.iterdir()}
    assert {"t1.nii.gz", "mask.nii.gz", "qc.json", "fwd_affine.mat", "inv_affine.mat"} <= names
    if registration == "nonlinear":
        assert {"fwd_warp.nii.gz", "inv_warp.nii.gz"} <= names
        assert moved.measures["jacobian_folded_share"] == 0 and moved.measures["jacobian_min"] > 0


def test_map_goes_back_to_the_scans_own_space(colin):
    """The registered scan itself, taken back through the inverse, lies on the moved file's voxels."""
    result = colin["moved"]["nonlinear"]
    raw = nib.load(colin["root"] / "moved.nii.gz")
    native = warp_to_native(_t1(result), Grid(3).affine, result.folder)
    assert native.shape == raw.shape and np.allclose(native.affine, raw.affine)
    back = np.asarray(native.dataobj)
    brain = back > 0.05
    assert 0.8 < brain.sum() / np.count_nonzero(np.asarray(nib.load(result.folder / "mask.nii.gz").dataobj)) / 27 < 1.2
    assert qc.correlation(back, np.asarray(raw.dataobj), brain) > 0.8


def test_cached_scan_is_not_registered_again(colin):
    again = preprocess_scan(colin["root"] / "moved.nii.gz", Settings("linear", 3), colin["moved"]["linear"].folder,
                            labels=colin["root"] / "moved_labels.nii.gz")
    assert again.cached and again.status == "ok"
    assert again.measures == colin["moved"]["linear"].measures


def _save(path: Path, data, affine=None) -> Path:
    nib.save(nib.Nifti1Image(np.asarray(data), np.eye(4) if affine is None else affine), path)
    return path


@pytest.fixture
def bad_scans(tmp_path):
    rng = np.random.default_rng(0)
    head = rng.random((120, 120, 120)).astype(np.float32)
    garbled = tmp_path / "garbled.nii.gz"
    garbled.write_bytes(b"not a nifti file at all")
    nan = head.copy()
    nan[3, 4, 5] = np.nan
    return {
        "4D image": _save(tmp_path / "fmri.nii.gz", rng.random((120, 120, 120, 4)).astype(np.float32)),
        "2D image": _save(tmp_path / "slice.nii.gz", rng.random((200, 200, 1)).astype(np.float32)),
        "empty image": _save(tmp_path / "zeros.nii.gz", np.zeros((120, 120, 120), np.float32)),
        "NaN or infinite": _save(tmp_path / "nan.nii.gz", nan),
        "unreadable as NIfTI": garbled,
        "file not found": tmp_path / "missing.nii.gz",
        "too small for a whole brain": _save(tmp_path / "knee.nii.gz", head[:, :, :40]),
        "registration diverged": _save(tmp_path / "noise.nii.gz", head, np.diag([1.5, 1.5, 1.5, 1])),
    }


def test_bad_inputs_each_fail_with_their_message(bad_scans, tmp_path):
    for problem, path in bad_scans.items():
        # pad/crop ("none") applies no alignment bound, so only a registration can diverge
        registration = "linear" if problem == "registration diverged" else "none"
        result = preprocess_scan(path, Settings(registration, 3), tmp_path / "out" / path.name.split(".")[0])
        assert result.status == "failed", problem
        assert problem in result.message and str(path) in result.message, result.message
        assert result.usable is False
    unaligned = preprocess_scan(bad_scans["registration diverged"], Settings("none", 3), tmp_path / "none")
    assert unaligned.status == "ok" and "unaligned by design" in unaligned.message
    assert unaligned.measures["corr_template"] < 0.4   # reported all the same


def test_already_registered_scan_is_passed_through(tmp_path):
    src = tmp_path / "mni.nii.gz"
    nib.save(template(2), src)
    result = preprocess_scan(src, Settings("nonlinear", 3), tmp_path / "out" / "mni")
    assert result.status == "passed_through" and "already on the 2 mm template grid" in result.message
    assert qc.correlation(_t1(result), np.asarray(template(3).dataobj), brain_mask(3)) > 0.95


def test_verdict_thresholds():
    assert qc.verdict({"corr_template": 0.8, "dice_brain": 0.95})[0] == "ok"
    assert qc.verdict({"corr_template": 0.5, "dice_brain": 0.95})[0] == "flagged"
    status, message = qc.verdict({"corr_template": 0.1, "dice_brain": 0.95, "jacobian_folded_share": 0.02})
    assert status == "failed" and "corr_template 0.1 < 0.4" in message and "jacobian_folded_share" in message


def test_registration_none_is_exempt_from_the_alignment_bounds():
    """Pad/crop does not align by design: a poor correlation is reported, not a reason to leave the scan out."""
    poor = {"corr_template": 0.1, "dice_brain": 0.5, "dice_hippocampus": 0.2}
    assert qc.verdict(poor, "linear")[0] == "failed"
    status, message = qc.verdict(poor, "none")
    assert status == "ok" and "unaligned by design" in message


def test_hippocampus_dice_decides_only_against_the_scans_own_labels():
    """An atrophied hippocampus overlaps the template atlas' at 0.51-0.56 however well registered; against the
    atlas that is reported only, against the scan's own labels it flags. Brain, correlation and folding decide."""
    atrophied = {"corr_template": 0.7, "dice_brain": 0.9, "dice_hippocampus": 0.53}
    assert qc.verdict(atrophied, "nonlinear", "atlas") == ("ok", "")
    status, message = qc.verdict(atrophied, "nonlinear", "labels")
    assert status == "flagged" and "dice_hippocampus 0.53 < 0.6" in message
    assert qc.verdict({**atrophied, "dice_brain": 0.8}, "nonlinear", "atlas")[0] == "flagged"
    assert qc.verdict({**atrophied, "corr_template": 0.5}, "nonlinear", "atlas")[0] == "flagged"
    assert qc.verdict({**atrophied, "jacobian_folded_share": 0.005}, "nonlinear", "atlas")[0] == "flagged"
    with pytest.raises(ValueError, match="hippocampus_reference"):
        qc.verdict(atrophied, "nonlinear", "template")


def test_a_stored_scan_is_judged_by_the_current_bounds(tmp_path):
    """A scan registered and failed under older bounds is judged again from its stored measures."""
    from lib.data.preprocess.pipeline import ScanResult, rejudged

    (tmp_path / "t1.nii.gz").write_bytes(b"stand-in")
    stored = ScanResult("sub-01", "failed", "old: registration diverged", tmp_path,
                        measures={"corr_template": 0.2, "dice_brain": 0.6, "dice_hippocampus": 0.55})
    assert rejudged(stored, Path("raw/sub-01.nii.gz"), "none").status == "ok"
    stored.status = "failed"
    assert rejudged(stored, Path("raw/sub-01.nii.gz"), "nonlinear").status == "failed"
    bad_input = ScanResult("sub-02", "failed", "raw/sub-02.nii.gz: not a NIfTI", tmp_path / "sub-02")
    assert rejudged(bad_input, Path("raw/sub-02.nii.gz"), "none").status == "failed"


def test_table_becomes_a_workspace_without_the_failed_scans(tmp_path, bad_scans):
    src = tmp_path / "mni.nii.gz"
    nib.save(template(2), src)
    rows = [("s1", "v1", src, "AD"), ("s2", "v1", bad_scans["4D image"], "HC"),
            ("s3", "v1", bad_scans["registration diverged"], "HC"), ("s4", "v1", src, "HC")]
    table = tmp_path / "raw.csv"
    pd.DataFrame([{"subject_id": s, "scan_id": f"{s}_{v}", "path": str(p), "diagnosis": d, "site": "lab"}
                  for s, v, p, d in rows]).to_csv(table, index=False)
    seen = []
    out = preprocess_table(table, Settings("linear", 3), tmp_path / "ws", progress=lambda d, t, m: seen.append(m),
                           workers=2)
    cohort = pd.read_csv(out / "cohort.csv")
    assert list(cohort["scan_id"]) == ["s1_v1", "s4_v1"] and set(cohort["site"]) == {"lab"}
    assert all((out / p).is_file() for p in cohort["path"])
    report = pd.read_csv(out / "preprocessed" / "qc.csv")
    assert list(report.columns) == list(qc.COLUMNS)
    assert list(report["status"]) == ["passed_through", "failed", "failed", "passed_through"]
    excluded = pd.read_csv(out / "preprocessed" / "excluded.csv")
    assert list(excluded["scan_id"]) == ["s2_v1", "s3_v1"] and excluded["preprocess_message"].str.len().min() > 10
    assert len(seen) == 5 and seen[0] == "4 scans, 2 at a time"
    (out / "preprocessed" / "s4_v1" / "qc.json").unlink()   # as if the run had stopped while writing s4
    again = []
    preprocess_table(table, Settings("linear", 3), tmp_path / "ws", progress=lambda d, t, m: again.append(m),
                     workers=1)
    assert [m.split(":")[0] for m in again[1:] if "cached" not in m] == ["s4_v1"]


def test_native_export_of_a_preprocessed_scan_goes_through_its_inverse(colin):
    """``explain --export SCAN --native`` writes through :func:`lib.explain.heatmaps.to_native_space`: for a
    workspace scan that is a preprocessing result, that is the raw scan's grid, not the registered file's."""
    from lib.explain.heatmaps import to_native_space

    result = colin["moved"]["linear"]
    volume = _t1(result)
    img = to_native_space(volume, Grid(3), result.t1)
    raw = nib.load(colin["root"] / "moved.nii.gz")
    assert img.shape == raw.shape and np.allclose(img.affine, raw.affine)
    assert np.allclose(np.asarray(img.dataobj), np.asarray(warp_to_native(volume, Grid(3).affine,
                                                                          result.folder).dataobj))


def test_preprocess_command(tmp_path, capsys):
    from lib.cli import main

    src, bad = tmp_path / "mni.nii.gz", tmp_path / "slice.nii.gz"
    nib.save(template(2), src)
    _save(bad, np.ones((50, 50, 1), np.float32))
    table = tmp_path / "raw.csv"
    pd.DataFrame({"subject_id": ["a", "b", "c"], "scan_id": ["a1", "b1", "c1"], "path": [src, bad, src],
                  "diagnosis": ["AD", "HC", "HC"], "mmse": [22, 29, 30]}).to_csv(table, index=False)
    ws = tmp_path / "ws"
    assert main(["--workspace", str(tmp_path / "jobs"), "preprocess", "--table", str(table), "--registration", "none",
                 "--resolution", "3", "--out", str(ws), "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert f"workspace ready at {ws}" in out and "1 failed, 2 passed through" in out
    cohort = pd.read_csv(ws / "cohort.csv")
    assert list(cohort["mmse"]) == [22, 30] and (ws / "splits.json").is_file()
    assert set(pd.read_csv(ws / "qc.csv")["scan_id"]) == {"a1", "c1"}   # validated like a workspace from init
    with pytest.raises(SystemExit):   # the resolutions offered are 1, 2 and 3 mm
        main(["--workspace", str(tmp_path / "jobs"), "preprocess", "--table", str(table), "--resolution", "4",
              "--out", str(ws)])
    assert main(["--workspace", str(tmp_path / "jobs"), "preprocess", "--table", str(tmp_path / "none.csv"),
                 "--out", str(ws)]) == 1
    assert "none.csv: no such table" in capsys.readouterr().err


def test_preprocess_command_takes_the_task_of_a_non_ad_cohort(tmp_path, capsys):
    """A raw MS cohort becomes a workspace with its task, as ``init`` makes one (the same options)."""
    from lib.cli import main
    from lib.data.workspace import Workspace

    src = tmp_path / "mni.nii.gz"
    nib.save(template(2), src)
    table = tmp_path / "raw.csv"
    pd.DataFrame({"subject_id": ["a", "b"], "scan_id": ["a1", "b1"], "path": [src, src],
                  "diagnosis": ["RRMS", "control"]}).to_csv(table, index=False)
    ws = tmp_path / "ws"
    assert main(["--workspace", str(tmp_path / "jobs"), "preprocess", "--table", str(table), "--registration", "none",
                 "--resolution", "3", "--out", str(ws), "--workers", "1", "--positive", "MS", "--negative", "HC",
                 "--positive-labels", "RRMS", "--negative-labels", "control",
                 "--biomarker-measure", "lesion_volume"]) == 0, capsys.readouterr().err
    made = Workspace.open(ws)
    assert made.classes.positive == "MS" and made.classes.negative == "HC"
    assert made.config["biomarker_measure"] == "lesion_volume"
    assert sorted(pd.read_csv(ws / "cohort.csv")["diagnosis"]) == ["HC", "MS"]
