"""A workspace's own task: declared classes and table labels, ambiguous labels refused, other groups kept."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from conftest_cohort_helpers import write_csv
from lib.data import cohort
from lib.data.classes import DEFAULT_CLASSES, Classes, TaskError
from lib.data.validation import validate_table
from lib.data.workspace import Workspace, WorkspaceError
from lib.jobs import RequestError
from lib.jobs.kinds import CreateWorkspace

MS = Classes("MS", "HC", positive_labels=("MS", "RRMS"), negative_labels=("control", "HC"))


def _rows(labels):
    return [{"subject_id": f"S{i}", "scan_id": f"s{i}", "path": f"s{i}.nii.gz", "diagnosis": d}
            for i, d in enumerate(labels)]


def test_patient_labels_without_a_declared_task_fail_naming_label_and_file(tmp_path):
    f = write_csv(tmp_path / "cohort.csv", _rows(["patient", "control", "patient"]))
    report = validate_table(f, Workspace(root=tmp_path), check_images=False)
    amb = [i for i in report.issues if i.code == "ambiguous_diagnosis"]
    assert len(amb) == 2 and not report.ok
    assert all(i.severity == "error" and '"patient"' in i.message and str(f) in i.message for i in amb)
    assert [i.row for i in amb] == [2, 4]


def test_declared_labels_map_to_the_task_and_other_groups_are_kept(tmp_path):
    f = write_csv(tmp_path / "cohort.csv", _rows(["RRMS", "control", "MS", "AD", "HC"]))
    df = cohort.read_table(f, MS)
    assert df["diagnosis"].tolist()[:3] == ["MS", "HC", "MS"] and pd.isna(df["diagnosis"].iat[3])
    assert df["diagnosis"].iat[4] == "HC" and df["diagnosis_raw"].iat[3] == "AD"
    ws = Workspace(root=tmp_path, config={"task": MS.to_json()})
    report = validate_table(f, ws, check_images=False)
    other = [i for i in report.issues if i.code == "not_in_task"]
    assert len(other) == 1 and "MS/HC task" in other[0].message and other[0].severity == "warning"
    # a declared generic word is no longer ambiguous
    assert cohort.map_diagnosis("patient", Classes("MS", "HC", positive_labels=("patient",))) == "MS"


def test_task_round_trip_and_refusals(tmp_path):
    assert Classes.from_json(MS.to_json()) == MS and DEFAULT_CLASSES.labels_of("AD")[0] == "AD"
    assert MS.title("MS") == "multiple sclerosis" and MS.index("MS") == 1
    with pytest.raises(TaskError, match="both"):
        Classes("MS", "HC", positive_labels=("MS", "control"), negative_labels=("control",))
    with pytest.raises(TaskError, match="positive class"):
        Classes("multiple sclerosis", "HC")
    (tmp_path / "workspace.json").write_text(json.dumps({"task": {"positive": "MS", "negative": "MS"}}))
    with pytest.raises(WorkspaceError, match="workspace.json: the positive and the negative class are both"):
        Workspace.open(tmp_path)


def test_init_declares_the_task_in_workspace_json(tmp_path):
    f = write_csv(tmp_path / "t" / "cohort.csv", _rows(["RRMS", "control", "MS", "HC"]))
    req = CreateWorkspace(table=str(f), no_images=True, positive="MS",
                          negative="HC", positive_labels="MS,RRMS", negative_labels="control,HC")
    # the files do not exist: refused, and nothing is written
    with pytest.raises(RequestError):
        req.prepare(Workspace(root=tmp_path)).work(lambda *a: None)
    for i in range(4):
        (tmp_path / "t" / f"s{i}.nii.gz").write_bytes(b"")
    req.prepare(Workspace(root=tmp_path)).work(lambda *a: None)
    ws = Workspace.open(tmp_path / "t")
    assert ws.classes == MS
    assert pd.read_csv(ws.cohort_csv)["diagnosis"].tolist() == ["MS", "HC", "MS", "HC"]
    bad = CreateWorkspace(table=str(f), directory=str(tmp_path / "x"), positive="MS", negative="ms")
    with pytest.raises(RequestError, match="both"):
        bad.prepare(Workspace(root=tmp_path)).work(lambda *a: None)
