from __future__ import annotations

import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from conftest_cohort_helpers import (RES, colin27, good_data, good_scan, grid, save, truncate, write_csv,  # noqa: F401
                                     ws)
from lib.data.templates import template
from lib.data.images import RESAMPLE_NOTE, ImageError, load_on_grid
from lib.data.validation import Issue, ValidationReport, format_report, validate_table
from lib.data.workspace import Workspace


def row(i, path, **over):
    r = {"subject_id": f"S{i:03d}", "scan_id": f"s{i:03d}", "path": path,
         "diagnosis": "AD" if i % 2 else "HC", "age": 70, "sex": "F", "mmse": 27}
    r.update(over)
    return r


def table(ws: Workspace, rows: list[dict], name="cohort.csv") -> Path:
    return write_csv(ws.root / name, rows)


def of(report: ValidationReport, code: str) -> list[Issue]:
    return [i for i in report.issues if i.code == code]


# --- image builders: each writes one bad scan, returns (file, expected code, severity) ------------------------
def _truncated_gz(d: Path):
    return truncate(good_scan(d / "trunc.nii.gz")), "unreadable_image", "error"


def _truncated_nii(d: Path):
    return truncate(good_scan(d / "trunc.nii")), "unreadable_image", "error"


def _not_nifti(d: Path):
    f = d / "text.nii.gz"
    d.mkdir(parents=True, exist_ok=True)
    f.write_text("this is not an image")
    return f, "unreadable_image", "error"


def _four_d(d: Path):
    data = np.stack([good_data(k) for k in range(3)], axis=-1)
    return save(d / "fourd.nii.gz", data), "not_3d", "error"


def _two_d(d: Path):
    return save(d / "twod.nii.gz", good_data()[:, :, 10]), "not_3d", "error"


def _nan(d: Path):
    data = good_data()
    data[10, 10, 10] = np.nan
    data[11, 10, 10] = np.inf
    return save(d / "nan.nii.gz", data), "non_finite", "error"


def _zeros(d: Path):
    return save(d / "zeros.nii.gz", np.zeros(grid().shape, np.float32)), "empty_volume", "error"


def _constant(d: Path):
    return save(d / "const.nii.gz", np.full(grid().shape, 7, np.int16)), "empty_volume", "error"


def _complex(d: Path):
    return save(d / "complex.nii.gz", good_data().astype(np.complex64)), "bad_dtype", "error"


def _rgb(d: Path):
    data = np.zeros(grid().shape, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    data["R"] = 100
    return save(d / "rgb.nii.gz", data), "bad_dtype", "error"


def _binary(d: Path):
    """A NIfTI with datatype DT_BINARY (1 bit per voxel, i.e. bool), which nibabel cannot read."""
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((8, 8, 8))
    hdr.set_data_dtype(np.uint8)
    hdr["datatype"] = 1
    hdr["bitpix"] = 1
    hdr["vox_offset"] = 352
    f = d / "bool.nii"
    d.mkdir(parents=True, exist_ok=True)
    f.write_bytes(hdr.binaryblock + b"\x00" * 4 + b"\xff" * 64)
    return f, "bad_dtype", "error"


def _off_grid(d: Path):
    src = template(5.0)
    data = np.asarray(src.dataobj) * 100
    return save(d / "offgrid.nii.gz", data, affine=src.affine), "off_grid", "warning"


def _shifted(d: Path):
    aff = grid().affine.copy()
    aff[0, 3] += 40
    return save(d / "shifted.nii.gz", good_data(), affine=aff), "not_registered", "error"


def _noise(d: Path):
    rng = np.random.default_rng(3)
    return save(d / "noise.nii.gz", rng.random(grid().shape).astype(np.float32)), "not_registered", "error"


def _small_fov(d: Path):
    aff = np.diag([1.0, 1.0, 1.0, 1.0])
    aff[:3, 3] = [-10, -10, -10]
    data = np.random.default_rng(4).random((20, 20, 20)).astype(np.float32)
    return save(d / "slab.nii.gz", data, affine=aff), "fov_mismatch", "error"


def _singular(d: Path):
    aff = grid().affine.copy()
    aff[2, 2] = 0
    hdr = nib.Nifti1Header()
    hdr.set_sform(aff, code="aligned")  # nibabel refuses such a qform, so only the sform holds it
    f = d / "singular.nii.gz"
    d.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(good_data(), None, header=hdr), str(f))
    assert np.allclose(nib.load(str(f)).affine, aff)
    return f, "bad_affine", "error"


IMAGE_CASES = [_truncated_gz, _truncated_nii, _not_nifti, _four_d, _two_d, _nan, _zeros, _constant, _complex,
               _rgb, _binary, _off_grid, _shifted, _noise, _small_fov, _singular]


# --- good cohort -----------------------------------------------------------------------------------------
def test_good_cohort_passes(ws):
    rows = [row(i, f"scans/s{i}.nii.gz") for i in range(4)]
    for i in range(4):
        good_scan(ws.root / f"scans/s{i}.nii.gz", seed=i)
    # A 4D image with a singleton 4th dimension is accepted as 3D.
    save(ws.root / "scans/s4.nii.gz", good_data(4)[..., None])
    rows.append(row(4, "scans/s4.nii.gz"))
    calls = []
    rep = validate_table(table(ws, rows), ws, progress=lambda d, t, m: calls.append((d, t, m)))
    assert rep.ok and rep.issues == [], format_report(rep)
    assert rep.summary() == "0 errors, 0 warnings in 5 scans"
    qc = rep.qc
    for col in ("scan_id", "row", "path", "readable", "shape", "voxel_size_mm", "on_grid", "dtype", "min", "max",
                "mean", "std", "nonzero_fraction", "template_corr", "n_errors", "n_warnings", "flags"):
        assert col in qc.columns, col
    assert len(qc) == 5 and qc["readable"].all() and qc["on_grid"].all()
    assert (qc["template_corr"] > 0.9).all()
    assert qc["row"].tolist() == [2, 3, 4, 5, 6]
    assert (qc["n_errors"] == 0).all() and (qc["flags"] == "").all()
    assert calls[0][0] == 0 and calls[-1][:2] == (5, 5) and len(calls) == 6


# --- every image problem on its own ------------------------------------------------------------------------
@pytest.mark.parametrize("build", IMAGE_CASES, ids=lambda f: f.__name__.strip("_"))
def test_each_image_problem(ws, build):
    f, code, severity = build(ws.root / "scans")
    rel = str(f.relative_to(ws.root))
    rows = [row(0, "scans/good.nii.gz"), row(1, rel)]
    good_scan(ws.root / "scans/good.nii.gz")
    rep = validate_table(table(ws, rows), ws)
    hits = of(rep, code)
    assert hits, format_report(rep)
    assert all(h.severity == severity for h in hits)
    h = hits[0]
    assert h.row == 3 and h.scan_id == "s001"
    assert "Row 3" in h.message and f.name in h.message
    # The good scan next to it is untouched.
    assert not [i for i in rep.issues if i.row == 2]
    qc = rep.qc.set_index("scan_id")
    assert code in qc.loc["s001", "flags"].split(",")
    if severity == "error":
        assert not rep.ok and qc.loc["s001", "n_errors"] >= 1
    else:
        assert rep.ok
        assert RESAMPLE_NOTE in h.message
        assert "will be resampled to the template grid (nilearn, continuous interpolation)" in h.message


def test_truncated_gz_reads_header_but_not_data(ws):
    f, _, _ = _truncated_gz(ws.root / "scans")
    nib.load(str(f))  # the header alone still loads: the check must read the voxels
    rep = validate_table(table(ws, [row(0, "scans/trunc.nii.gz")]), ws)
    (h,) = of(rep, "unreadable_image")
    assert "truncated" in h.message
    assert rep.qc["readable"].tolist() == [False]


# --- table problems ------------------------------------------------------------------------------------------
def _scans(ws, n):
    for i in range(n):
        good_scan(ws.root / f"scans/s{i}.nii.gz", seed=i)
    return [f"scans/s{i}.nii.gz" for i in range(n)]


def test_duplicate_scan_ids_name_both_rows(ws):
    p = _scans(ws, 3)
    rep = validate_table(table(ws, [row(0, p[0]), row(1, p[1]), row(2, p[2], scan_id="s000")]), ws,
                         check_images=False)
    (h,) = of(rep, "duplicate_scan_id")
    assert h.severity == "error" and "Rows 2 and 4" in h.message and "s000" in h.message


def test_duplicate_paths_warn(ws):
    p = _scans(ws, 1)
    rep = validate_table(table(ws, [row(0, p[0]), row(1, p[0])]), ws, check_images=False)
    (h,) = of(rep, "duplicate_path")
    assert h.severity == "warning" and "Rows 2 and 3" in h.message


def test_unknown_diagnosis_with_suggestion(ws):
    p = _scans(ws, 2)
    rep = validate_table(table(ws, [row(0, p[0], diagnosis="Contrl"), row(1, p[1], diagnosis="qqq")]), ws,
                         check_images=False)
    a, b = of(rep, "unknown_diagnosis")
    assert a.row == 2 and "Row 2" in a.message and '"Contrl"' in a.message and 'Did you mean "Control" (HC)' in a.message
    assert b.row == 3 and "Known labels" in b.message


def test_mci_is_a_warning(ws):
    p = _scans(ws, 2)
    rep = validate_table(table(ws, [row(0, p[0], diagnosis="MCI"), row(1, p[1], diagnosis="LMCI")]), ws,
                         check_images=False)
    hits = of(rep, "not_in_task")
    assert [h.row for h in hits] == [2, 3] and all(h.severity == "warning" for h in hits)
    assert "not part of the AD/HC task" in hits[0].message and "Row 2" in hits[0].message
    assert rep.ok


def test_subject_conflicts_name_rows(ws):
    p = _scans(ws, 4)
    rows = [row(0, p[0], subject_id="X", sex="F", diagnosis="AD"), row(1, p[1], subject_id="X", sex="M", diagnosis="AD"),
            row(2, p[2], subject_id="Y", diagnosis="AD"), row(3, p[3], subject_id="Y", diagnosis="CN")]
    rep = validate_table(table(ws, rows), ws, check_images=False)
    (s,) = of(rep, "subject_sex_conflict")
    assert "Subject X" in s.message and "F in row 2" in s.message and "M in row 3" in s.message
    (d,) = of(rep, "subject_diagnosis_conflict")
    assert "Subject Y" in d.message and "AD in row 4" in d.message and "HC in row 5" in d.message


def test_missing_values_and_non_numeric(ws):
    p = _scans(ws, 3)
    rows = [row(0, p[0], subject_id=None, diagnosis=None), row(1, p[1], age="seventy"),
            row(2, p[2], mmse="n.a.", sex="?")]
    rep = validate_table(table(ws, rows), ws, check_images=False)
    (m,) = of(rep, "missing_value")
    assert m.row == 2 and "subject_id" in m.message and "diagnosis" in m.message and "Row 2" in m.message
    a, b = of(rep, "non_numeric")
    assert a.row == 3 and 'age "seventy"' in a.message
    assert b.row == 4 and 'mmse "n.a."' in b.message
    (s,) = of(rep, "unknown_sex")
    assert s.severity == "warning" and s.row == 4


def test_age_out_of_range_is_warning(ws):
    p = _scans(ws, 3)
    rep = validate_table(table(ws, [row(0, p[0], age=7), row(1, p[1], age=140), row(2, p[2], age=18)]), ws,
                         check_images=False)
    hits = of(rep, "age_out_of_range")
    assert [h.row for h in hits] == [2, 3] and all(h.severity == "warning" for h in hits)
    assert rep.ok


def test_path_escaping_workspace_and_data_roots(ws, tmp_path):
    outside = good_scan(tmp_path / "elsewhere" / "x.nii.gz")
    rows = [row(0, str(outside)), row(1, "../elsewhere/x.nii.gz")]
    rep = validate_table(rows_df := pd.DataFrame(rows), ws, check_images=False)
    hits = of(rep, "path_outside_workspace")
    assert [h.row for h in hits] == [2, 3]
    assert "path escapes the workspace; add its folder to data_roots in workspace.json" in hits[0].message
    ws.update_config(data_roots=[str(tmp_path / "elsewhere")])
    rep = validate_table(rows_df, ws)
    assert not of(rep, "path_outside_workspace")
    assert of(rep, "duplicate_path")  # the same file twice, via two spellings


def test_missing_file_and_folder(ws):
    (ws.root / "scans" / "adir.nii.gz").mkdir(parents=True)
    rep = validate_table(table(ws, [row(0, "scans/nope.nii.gz"), row(1, "scans/adir.nii.gz")]), ws)
    (m,) = of(rep, "missing_file")
    assert m.row == 2 and "scans/nope.nii.gz" in m.message and "does not exist" in m.message
    (d,) = of(rep, "not_a_file")
    assert d.row == 3


def test_read_warnings_become_issues(ws):
    root = ws.root / "bids"
    root.mkdir()
    (root / "participants.tsv").write_text("participant_id\tdx\nsub-01\tAD\nsub-02\tHC\n")
    good_scan(root / "sub-01/anat/sub-01_T1w.nii.gz")
    rep = validate_table(root, ws)
    (w,) = of(rep, "read_warning")
    assert "sub-02" in w.message and w.severity == "warning"
    assert rep.ok and len(rep.qc) == 1 and rep.qc["template_corr"].iat[0] > 0.9


# --- unusable tables become one error ----------------------------------------------------------------------
def test_bad_table_is_a_single_error(ws, tmp_path):
    rep = validate_table(tmp_path / "missing.csv", ws)
    assert [i.code for i in rep.issues] == ["table_not_found"] and not rep.ok
    assert "missing.csv" in rep.issues[0].message
    f = tmp_path / "cols.csv"
    f.write_text("subject,scan,file\nS1,a,a.nii\n")
    rep = validate_table(f, ws)
    assert [i.code for i in rep.issues] == ["missing_columns"] and "diagnosis" in rep.issues[0].message
    rep = validate_table(pd.DataFrame({"a": [1]}), ws)
    assert [i.code for i in rep.issues] == ["missing_columns"]
    f.write_text("subject_id,scan_id,path,diagnosis\n")
    rep = validate_table(f, ws)
    assert [i.code for i in rep.issues] == ["empty_table"]


# --- everything at once --------------------------------------------------------------------------------------
def test_all_problems_in_one_report(ws, tmp_path):
    scans = ws.root / "scans"
    rows, expected = [], {}
    for k, build in enumerate(IMAGE_CASES):
        f, code, _ = build(scans)
        rows.append(row(k, str(f.relative_to(ws.root))))
        expected.setdefault(code, set()).add(k + 2)
    n = len(rows)
    p = _scans(ws, 10)
    outside = good_scan(tmp_path / "out" / "o.nii.gz")
    extra = [
        (row(n + 0, p[0], scan_id="s000"), "duplicate_scan_id"),
        (row(n + 1, p[1], diagnosis="Contrl"), "unknown_diagnosis"),
        (row(n + 2, p[2], diagnosis="MCI"), "not_in_task"),
        (row(n + 3, p[3], subject_id="S000", sex="M"), "subject_sex_conflict"),
        (row(n + 4, p[4], subject_id="S001", diagnosis="HC"), "subject_diagnosis_conflict"),
        (row(n + 5, p[5], subject_id=None), "missing_value"),
        (row(n + 6, p[6], age="old"), "non_numeric"),
        (row(n + 7, p[7], age=150), "age_out_of_range"),
        (row(n + 8, str(outside)), "path_outside_workspace"),
        (row(n + 9, "scans/absent.nii.gz"), "missing_file"),
    ]
    for k, (r, code) in enumerate(extra):
        rows.append(r)
        expected.setdefault(code, set()).add(n + k + 2)
    calls = []
    rep = validate_table(table(ws, rows), ws, progress=lambda d, t, m: calls.append(d))
    text = format_report(rep)
    for code, lines in expected.items():
        hits = of(rep, code)
        named = {r for r in lines for i in hits
                 if i.row == r or re.search(rf"\b(rows?|and) {r}\b", i.message)}
        assert named, f"{code} not reported for rows {lines}:\n{text}"
    assert len(rep.qc) == len(rows) and calls[-1] == len(rows)
    assert rep.summary().endswith(f"in {len(rows)} scans")
    m = re.match(r"(\d+) errors, (\d+) warnings", rep.summary())
    assert int(m.group(1)) == len(rep.errors) >= len(expected) - 3
    # Every message names its row (or, for subject-level issues, the subject and its rows).
    for i in rep.issues:
        assert re.search(r"\brows? \d+", i.message, re.I), i.message
    # The terminal output has one line per issue plus the summary.
    lines = text.splitlines()
    assert len(lines) == len(rep.issues) + 1
    assert any(re.match(r"error\s+row \d+\s+scan s\d+\s+missing_file: ", ln) for ln in lines)


# --- report plumbing ------------------------------------------------------------------------------------------
def test_report_json_roundtrip_and_frame(ws):
    p = _scans(ws, 2)
    rep = validate_table(table(ws, [row(0, p[0], diagnosis="MCI"), row(1, "scans/none.nii.gz")]), ws)
    back = ValidationReport.from_json(rep.to_json())
    assert back.issues == rep.issues
    assert back.summary() == rep.summary() == "1 error, 1 warning in 2 scans"
    assert list(back.qc.columns) == list(rep.qc.columns) and len(back.qc) == 2
    assert json.loads(rep.to_json())["ok"] is False
    fr = rep.to_frame()
    assert list(fr.columns) == ["severity", "code", "message", "row", "scan_id", "path"]
    assert fr["code"].tolist() == ["not_in_task", "missing_file"]
    line = format_report(rep).splitlines()[1]
    assert line.startswith("error   row 3") and "scan s001  missing_file: Row 3" in line


def test_dataframe_source(ws):
    p = _scans(ws, 2)
    df = pd.DataFrame([row(0, p[0]), row(1, p[1], dx="x")]).rename(columns={"subject_id": "Subject"})
    rep = validate_table(df, ws)
    assert rep.ok and rep.qc["row"].tolist() == [2, 3]


# --- load_on_grid ------------------------------------------------------------------------------------------------
def test_load_on_grid(ws):
    g = grid()
    f = good_scan(ws.root / "a.nii.gz")
    img, warns = load_on_grid(f, g)
    assert warns == [] and img.get_data_dtype() == np.float32 and np.allclose(img.affine, g.affine)
    assert img.shape == g.shape
    np.testing.assert_allclose(np.asarray(img.dataobj), good_data(), rtol=1e-6)
    f2, _, _ = _off_grid(ws.root)
    img, warns = load_on_grid(f2, g)
    assert img.shape == g.shape and np.allclose(img.affine, g.affine)
    assert len(warns) == 1 and "resampled to the template grid" in warns[0] and "5.00×5.00×5.00 mm" in warns[0]
    f3 = save(ws.root / "b.nii.gz", good_data()[..., None])
    assert load_on_grid(f3, g)[0].shape == g.shape
    with pytest.raises(ImageError, match="3D"):
        load_on_grid(_four_d(ws.root)[0], g)
    with pytest.raises(ImageError, match="truncated"):
        load_on_grid(_truncated_gz(ws.root)[0], g)


# --- a real T1: Colin27 from mricron-data ---------------------------------------------------------------------
@pytest.fixture
def colin_ws(tmp_path):
    src = colin27()
    return Workspace.create(tmp_path / "cws", resolution=RES, data_roots=[str(Path(src.get_filename()).parent)]), src


def test_colin27_is_ingested_and_registered(colin_ws):
    cws, src = colin_ws
    img, warns = load_on_grid(src.get_filename(), cws.grid)
    assert img.shape == cws.grid.shape and np.allclose(img.affine, cws.grid.affine)
    assert len(warns) == 1 and "resampled" in warns[0] and "181×217×181" in warns[0] and "nilearn" in warns[0]
    rep = validate_table(pd.DataFrame([row(0, src.get_filename())]), cws)
    assert rep.ok, format_report(rep)
    assert [i.code for i in rep.issues] == ["off_grid"]
    assert RESAMPLE_NOTE in rep.issues[0].message
    assert rep.qc["template_corr"].iat[0] > 0.45
    assert rep.qc["fov_overlap"].iat[0] > 0.95


def test_colin27_shifted_or_scrambled_is_not_registered(colin_ws):
    cws, src = colin_ws
    data = np.asarray(src.dataobj)
    shifted = src.affine.copy()
    shifted[0, 3] += 40
    save(cws.root / "shift_x.nii", data, affine=shifted)
    shifted = src.affine.copy()
    shifted[2, 3] -= 40
    save(cws.root / "shift_z.nii", data, affine=shifted)
    scrambled = np.random.default_rng(0).permutation(data.ravel()).reshape(data.shape)
    save(cws.root / "scrambled.nii", scrambled, affine=src.affine)
    rows = [row(0, "shift_x.nii"), row(1, "shift_z.nii"), row(2, "scrambled.nii")]
    rep = validate_table(table(cws, rows), cws)
    hits = of(rep, "not_registered")
    assert [h.row for h in hits] == [2, 3, 4], format_report(rep)
    assert "does not look registered to MNI space" in hits[0].message and "shift_x.nii" in hits[0].message
    assert (rep.qc["template_corr"] < 0.2).all()
