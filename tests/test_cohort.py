from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd
import pytest

from conftest_cohort_helpers import write_csv  # noqa: F401  (also puts the repo on sys.path)
from lib.data import cohort
from lib.data.cohort import CohortError, read_table


def _rows(n=3, **over):
    rows = []
    for i in range(n):
        r = {"subject_id": f"S{i:03d}", "scan_id": f"scan{i}", "path": f"scans/s{i}.nii.gz",
             "diagnosis": "AD" if i % 2 else "HC", "age": 70 + i, "sex": "F"}
        r.update({k: (v[i] if isinstance(v, list) else v) for k, v in over.items()})
        rows.append(r)
    return rows


# --- canonical tables ------------------------------------------------------------------------------
def test_csv_canonical_columns_rows_and_extras(tmp_path):
    rows = _rows(3)
    for r in rows:
        r["apoe4"] = 1
        r["notes"] = "ok"
    f = write_csv(tmp_path / "t.csv", rows)
    df = read_table(f)
    assert list(df.columns[:5]) == ["row", "subject_id", "scan_id", "path", "diagnosis"]
    assert df["row"].tolist() == [2, 3, 4]
    assert df["diagnosis"].tolist() == ["HC", "AD", "HC"]
    assert df["age"].dtype.kind == "f"
    # Extra columns are kept, numeric ones as numbers.
    assert df["apoe4"].tolist() == [1, 1, 1] and df["notes"].tolist() == ["ok"] * 3
    # Relative paths are made absolute against the table's folder.
    assert df["path"].iat[0] == str((tmp_path / "scans" / "s0.nii.gz").resolve())
    assert df.attrs["read_warnings"] == []


def test_tsv_and_sniffed_delimiters(tmp_path):
    rows = _rows(2)
    tsv = write_csv(tmp_path / "t.tsv", rows, sep="\t")
    semi = write_csv(tmp_path / "t.csv", rows, sep=";")  # European spreadsheet export
    txt = write_csv(tmp_path / "t.txt", rows, sep="\t")
    for f in (tsv, semi, txt):
        df = read_table(f)
        assert df["subject_id"].tolist() == ["S000", "S001"], f
        assert df["diagnosis"].tolist() == ["HC", "AD"], f


def test_blank_lines_keep_spreadsheet_row_numbers(tmp_path):
    f = tmp_path / "t.csv"
    f.write_text("subject_id,scan_id,path,diagnosis\nS1,a,a.nii,AD\n\nS2,b,b.nii,HC\n")
    df = read_table(f)
    assert df["scan_id"].tolist() == ["a", "b"]
    assert df["row"].tolist() == [2, 4]


def test_ids_keep_leading_zeros(tmp_path):
    f = tmp_path / "t.csv"
    f.write_text("subject_id,scan_id,path,diagnosis\n007,0012,a.nii,AD\n")
    df = read_table(f)
    assert df["subject_id"].iat[0] == "007" and df["scan_id"].iat[0] == "0012"


def test_aliases_case_insensitive(tmp_path):
    f = tmp_path / "t.csv"
    f.write_text("Participant_ID,Image_ID,Filename,DX,Gender,Hippocampus,AGE,Site\n"
                 "P1,i1,x.nii.gz,Dementia,Female,3100.5,71,berlin\n"
                 "P2,i2,y.nii.gz,CN,male,3500,68,berlin\n")
    df = read_table(f)
    for col in ("subject_id", "scan_id", "path", "diagnosis", "sex", "hippocampal_volume", "age", "site"):
        assert col in df.columns, col
    assert df["diagnosis"].tolist() == ["AD", "HC"]
    assert df["sex"].tolist() == ["F", "M"]
    assert df["hippocampal_volume"].tolist() == [3100.5, 3500.0]
    assert df["diagnosis_raw"].tolist() == ["Dementia", "CN"]


@pytest.mark.parametrize("alias,canon", [("subject", "subject_id"), ("PTID", "subject_id"), ("scan", "scan_id"),
                                         ("file", "path"), ("NIFTI", "path"), ("group", "diagnosis"),
                                         ("Label", "diagnosis"), ("gender", "sex")])
def test_each_alias(tmp_path, alias, canon):
    base = {"subject_id": "S1", "scan_id": "a", "path": "a.nii", "diagnosis": "AD", "sex": "F"}
    row = {(alias if k == canon else k): v for k, v in base.items()}
    df = read_table(write_csv(tmp_path / "t.csv", [row]))
    assert canon in df.columns
    assert df[canon].iat[0] is not pd.NA


def test_diagnosis_mapping_all_labels():
    for label in ["AD", "ad", " Dementia ", "DEM", "Alzheimer", "Alzheimer's disease", "alzheimer’s disease",
                  "ALZ"]:
        assert cohort.map_diagnosis(label) == "AD", label
    for label in ["HC", "cn", "NC", "Control", "healthy", "Normal", "CTL", " ctl "]:
        assert cohort.map_diagnosis(label) == "HC", label
    # generic words name no diagnosis: never mapped unless a task declares them
    for label in ["MCI", "Contrl", "", None, "2", "1", 1, 1.0, "0", 0, "patient", "PATIENT"]:
        assert cohort.map_diagnosis(label) is None, label
    assert cohort.is_ambiguous("patient") and cohort.is_ambiguous(1) and not cohort.is_ambiguous("MCI")
    assert cohort.is_other_group("EMCI") and cohort.is_other_group("lmci") and not cohort.is_other_group("AD")


def test_unknown_diagnosis_kept_raw_with_suggestion(tmp_path):
    f = write_csv(tmp_path / "t.csv", _rows(3, diagnosis=["Contrl", "Alzheimers disease", "xyz"]))
    df = read_table(f)  # unknown labels are not raised here
    assert df["diagnosis"].isna().tolist() == [True, False, True]
    assert df["diagnosis_raw"].tolist() == ["Contrl", "Alzheimers disease", "xyz"]
    assert cohort.suggest_diagnosis("Contrl") == "Control"
    assert cohort.suggest_diagnosis("Alzhiemer") == "Alzheimer"
    assert cohort.suggest_diagnosis("xyz") is None


def test_sex_mapping_numeric_convention(tmp_path):
    f = write_csv(tmp_path / "t.csv", _rows(8, sex=["F", "female", "W", "woman", "2", "M", "1", "x"]))
    df = read_table(f)
    assert df["sex"].tolist()[:7] == ["F", "F", "F", "F", "F", "M", "M"]
    assert df["sex"].isna().iat[7] and df["sex_raw"].iat[7] == "x"
    assert cohort.map_sex("Man") == "M" and cohort.map_sex(2) == "F" and cohort.map_sex(1) == "M"


def test_non_numeric_values_keep_raw(tmp_path):
    df = read_table(write_csv(tmp_path / "t.csv", _rows(2, age=["seventy", 71], mmse=[28, "n.a."])))
    assert df["age"].isna().iat[0] and df["age_raw"].iat[0] == "seventy"
    assert df["age"].iat[1] == 71
    assert df["mmse_raw"].iat[1] == "n.a."


# --- errors ------------------------------------------------------------------------------------------
def test_missing_file_raises(tmp_path):
    with pytest.raises(CohortError, match="does not exist") as e:
        read_table(tmp_path / "nope.csv")
    assert "nope.csv" in str(e.value) and isinstance(e.value, ValueError)


def test_missing_columns_listed_with_suggestions(tmp_path):
    f = tmp_path / "t.csv"
    f.write_text("subjekt,scan_id,pth,diagnose\nS1,a,a.nii,AD\n")
    with pytest.raises(CohortError) as e:
        read_table(f)
    msg = str(e.value)
    assert "t.csv" in msg
    for missing, close in (("subject_id", "subjekt"), ("path", "pth"), ("diagnosis", "diagnose")):
        assert missing in msg and repr(close) in msg
    assert e.value.code == "missing_columns"


@pytest.mark.parametrize("content,match", [
    (b"", "empty"),
    (b"\x00\x01\x02binary\x00", "binary"),
    (b"\xff\xfe\xfa\xfb\x80\x81", "not a readable text table"),
    (b'subject_id,scan_id,path,diagnosis\nS1,a,"unterminated\n', "could not be parsed"),
    (b"just one column\nvalue\n", "single column"),
])
def test_unparsable_tables(tmp_path, content, match):
    f = tmp_path / "bad.csv"
    f.write_bytes(content)
    with pytest.raises(CohortError, match=match) as e:
        read_table(f)
    assert "bad.csv" in str(e.value)


def test_gzipped_csv(tmp_path):
    f = tmp_path / "t.csv.gz"
    with gzip.open(f, "wt") as fh:
        fh.write("subject_id,scan_id,path,diagnosis\nS1,a,a.nii,AD\n")
    assert read_table(f)["diagnosis"].tolist() == ["AD"]


def test_canonicalize_is_idempotent(tmp_path):
    df = read_table(write_csv(tmp_path / "t.csv", _rows(3, diagnosis=["AD", "MCI", "control"], sex=["2", "M", "?"])))
    again = cohort.canonicalize(df)
    pd.testing.assert_frame_equal(df, again)


# --- ADNIMERGE ---------------------------------------------------------------------------------------
def test_adnimerge(tmp_path):
    f = tmp_path / "ADNIMERGE.csv"
    f.write_text(
        "RID,PTID,VISCODE,SITE,DX_bl,DX,AGE,PTGENDER,MMSE,CDRSB,Hippocampus,IMAGEUID,EXAMDATE,path\n"
        "2,011_S_0002,bl,11,CN,CN,74.3,Male,28,0,8336,35475,2005-09-08,scans/a.nii.gz\n"
        "2,011_S_0002,m06,11,CN,CN,74.3,Male,29,0,8300,,2006-03-06,scans/b.nii.gz\n"
        "3,011_S_0003,bl,11,AD,Dementia,81.3,Male,20,4.5,5319,32237,2005-09-12,scans/c.nii.gz\n"
        "4,022_S_0004,bl,22,LMCI,MCI,67.5,Female,27,1,6869,64631,2005-11-08,scans/d.nii.gz\n")
    df = read_table(f)
    assert df["subject_id"].tolist() == ["011_S_0002", "011_S_0002", "011_S_0003", "022_S_0004"]
    assert df["session"].tolist() == ["bl", "m06", "bl", "bl"]
    assert df["scan_id"].tolist() == ["35475", "011_S_0002_m06", "32237", "64631"]
    assert df["diagnosis"].tolist()[:3] == ["HC", "HC", "AD"]
    assert df["diagnosis"].isna().iat[3] and df["diagnosis_raw"].iat[3] == "MCI"
    assert df["sex"].tolist() == ["M", "M", "M", "F"]
    assert df["cdr"].tolist() == [0, 0, 4.5, 1]
    assert df["hippocampal_volume"].iat[2] == 5319
    assert df["mmse"].iat[2] == 20 and df["age"].iat[0] == pytest.approx(74.3)
    assert df["site"].iat[0] == "11"
    assert df["row"].tolist() == [2, 3, 4, 5]
    # Unmapped columns stay as they were.
    assert "RID" in df.columns and "EXAMDATE" in df.columns and "DX_bl" in df.columns
    assert df["path"].iat[0] == str((tmp_path / "scans" / "a.nii.gz").resolve())


def test_adnimerge_dx_bl_fallback_and_missing_path(tmp_path):
    f = tmp_path / "adni.csv"
    f.write_text("PTID,VISCODE,DX_bl,file\n011_S_0002,bl,AD,a.nii\n")
    df = read_table(f)
    assert df["diagnosis"].tolist() == ["AD"] and df["scan_id"].tolist() == ["011_S_0002_bl"]
    g = tmp_path / "adni2.csv"
    g.write_text("PTID,VISCODE,DX\n011_S_0002,bl,AD\n")
    with pytest.raises(CohortError, match="path") as e:
        read_table(g)
    assert "adni2.csv" in str(e.value)


# --- BIDS --------------------------------------------------------------------------------------------------
def _touch(p: Path):
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"")


def test_bids_folder(tmp_path):
    root = tmp_path / "bids"
    (root).mkdir()
    (root / "participants.tsv").write_text(
        "participant_id\tgroup\tage\tsex\tapoe\n"
        "sub-01\tAD\t71\tF\t1\n"
        "sub-02\tCN\t65\tM\tn/a\n"
        "sub-03\tAD\t80\tM\t0\n")
    _touch(root / "sub-01/ses-01/anat/sub-01_ses-01_T1w.nii.gz")
    _touch(root / "sub-01/ses-02/anat/sub-01_ses-02_T1w.nii.gz")
    _touch(root / "sub-01/ses-02/anat/sub-01_ses-02_T2w.nii.gz")  # not a T1w: ignored
    _touch(root / "sub-02/anat/sub-02_T1w.nii")
    _touch(root / "sub-04/anat/sub-04_T1w.nii.gz")  # not in participants.tsv
    df = read_table(root)
    assert sorted(df["scan_id"]) == ["sub-01_ses-01_T1w", "sub-01_ses-02_T1w", "sub-02_T1w", "sub-04_T1w"]
    by = df.set_index("scan_id")
    assert by.loc["sub-01_ses-02_T1w", "session"] == "ses-02"
    assert pd.isna(by.loc["sub-02_T1w", "session"])
    assert by.loc["sub-01_ses-01_T1w", "diagnosis"] == "AD" and by.loc["sub-02_T1w", "diagnosis"] == "HC"
    assert by.loc["sub-02_T1w", "sex"] == "M" and by.loc["sub-01_ses-01_T1w", "age"] == 71
    assert by.loc["sub-01_ses-01_T1w", "row"] == 2 and by.loc["sub-02_T1w", "row"] == 3
    assert pd.isna(by.loc["sub-04_T1w", "row"]) and pd.isna(by.loc["sub-04_T1w", "diagnosis"])
    # Absolute paths.
    p = Path(by.loc["sub-02_T1w", "path"])
    assert p.is_absolute() and p == (root / "sub-02/anat/sub-02_T1w.nii").resolve()
    assert "apoe" in df.columns
    warnings = df.attrs["read_warnings"]
    assert any("sub-03" in w and "no T1w scan" in w and "line 4" in w for w in warnings)
    assert any("sub-04" in w and "not listed" in w for w in warnings)


def test_bids_errors(tmp_path):
    root = tmp_path / "b"
    (root / "sub-01/anat").mkdir(parents=True)
    with pytest.raises(CohortError, match="participants.tsv"):
        read_table(root)
    (root / "participants.tsv").write_text("participant_id\tage\nsub-01\t70\n")
    with pytest.raises(CohortError, match="diagnosis") as e:
        read_table(root)
    assert "participants.tsv" in str(e.value)
    other = tmp_path / "plain"
    other.mkdir()
    with pytest.raises(CohortError, match="not a BIDS dataset"):
        read_table(other)


def test_saved_canonical_table_reads_back_and_honours_edits(tmp_path):
    src = write_csv(tmp_path / "in.csv", _rows(3, diagnosis=["Dementia", "Contrl", "CN"], age=["seventy", 70, 71],
                                               sex=["woman", "1", "?"]))
    df = read_table(src)
    out = tmp_path / "cohort.csv"
    df.drop(columns="row").to_csv(out, index=False)
    back = read_table(out)
    pd.testing.assert_frame_equal(back.drop(columns="path"), df.drop(columns="path"), check_dtype=False)
    # A user fixes the bad values in the saved table's canonical columns.
    edited = pd.read_csv(out, dtype=str)
    edited.loc[0, "diagnosis"] = "HC"
    edited.loc[1, "diagnosis"] = "AD"
    edited.loc[0, "age"] = "69"
    edited.loc[2, "sex"] = "M"
    edited.to_csv(out, index=False)
    fixed = read_table(out)
    assert fixed["diagnosis"].tolist() == ["HC", "AD", "HC"]
    assert fixed["diagnosis_raw"].tolist() == ["HC", "AD", "CN"]
    assert fixed["age"].tolist() == [69, 70, 71] and "age_raw" not in fixed.columns
    assert fixed["sex"].tolist() == ["F", "M", "M"]
