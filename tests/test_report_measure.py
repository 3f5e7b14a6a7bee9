"""The report's biomarker section on a workspace whose measure is not hippocampal volume (an MS-like task with
lesion load): it correlates relevance with that measure, names it, and never mentions the hippocampus."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest

from lib.cli import main
from lib.data.classes import Classes
from lib.data.workspace import Workspace
from lib.learn.runs import load_run
from lib.views import report

MS = Classes("MS", "HC", positive_title="multiple sclerosis", negative_title="healthy controls")


@pytest.fixture(scope="module")
def ms_like(demo_ws, tmp_path_factory):
    """The small demo cohort relabelled MS vs HC with a lesion load column as the workspace's measure, a briefly
    trained run and its LRP β=0 region metrics."""
    root = tmp_path_factory.mktemp("ms_like")
    cohort = pd.read_csv(demo_ws.cohort_csv, dtype={"subject_id": str, "scan_id": str})
    cohort["path"] = [str(demo_ws.resolve(p)) for p in cohort["path"]]
    ms = cohort["diagnosis"] == "AD"
    cohort["diagnosis"] = np.where(ms, "MS", "HC")
    cohort["lesion_load"] = np.where(ms, np.random.default_rng(0).uniform(1, 12, len(cohort)), 0.0).round(2)
    cohort.to_csv(root / "cohort.csv", index=False)
    shutil.copy(demo_ws.splits_json, root / "splits.json")
    config = {**demo_ws.config, "name": "MS vs HC", "kind": "study", "task": MS.to_json(),
              "biomarker_measure": "lesion_load"}
    (root / "workspace.json").write_text(json.dumps(config))
    ws = Workspace.open(root)
    assert ws.biomarker_measure == "lesion_load"
    assert main(["--workspace", str(root), "train", "--epochs", "2", "--batch-size", "6", "--lr", "1e-3",
                 "--run-id", "ms"]) == 0
    assert main(["--workspace", str(root), "regions", "--run", "ms", "--method", "lrp", "--beta", "0"]) == 0
    return ws, load_run(ws, "ms")


def test_the_biomarker_section_uses_the_workspaces_measure(ms_like, tmp_path):
    ws, run = ms_like
    out = tmp_path / "ms.html"
    assert main(["--workspace", str(ws.root), "report", "--run", run.id, "--out", str(out)]) == 0
    text = out.read_text()
    section = text.split("data-section='biomarker'")[1].split("</section>")[0]
    assert "data-state='filled'" in text.split("data-section='biomarker'")[1][:40]
    assert re.search(r"<h2>Relevance vs lesion load \(Fig 9\)</h2>", section)
    assert "lesion load" in section and "data-figure='fig9_" in section
    assert "Brain relevance vs lesion load per outcome group" in section
    assert "hippocamp" not in section.lower()
    # the methods paragraph says what was correlated, and the contents name the section by its measure
    built = report.build(ws, run)
    assert "correlated with lesion load" in built.methods and "hippocamp" not in built.methods.lower()
    assert built.settings["biomarker"] == {"measure": "lesion_load", "relevance": "summed over the brain"}
    assert [s.title for s in built.sections if s.key == "biomarker"] == ["Relevance vs lesion load (Fig 9)"]


def test_a_workspace_without_a_measure_says_how_to_choose_one(ms_like):
    ws, run = ms_like
    ws.update_config(biomarker_measure="")
    try:
        ws = Workspace.open(ws.root)
        assert ws.biomarker_measure is None
        sec = next(s for s in report.build(ws, run).sections if s.key == "biomarker")
        assert sec.title == "Relevance vs a biomarker (Fig 9)" and not sec.figures
        assert "declares no biomarker measure" in sec.missing[0] and "hippocamp" not in " ".join(sec.missing).lower()
    finally:
        ws.update_config(biomarker_measure="lesion_load")


def test_the_regions_following_the_measure_are_listed_for_the_true_positives(ms_like):
    """With true positives in the test split, the section lists the regions whose relevance follows lesion load
    (here every MS scan is taken as a correctly called test scan, whatever the briefly trained run predicted)."""
    from lib.views import viewer
    from lib.views.report.measure import TOP_REGIONS, measure_section
    from lib.views.report.sections import _regions_cmd

    ws, run = ms_like
    preds = run.predictions().copy()
    test_ms = preds["diagnosis"] == "MS"
    assert test_ms.sum() >= 4
    preds.loc[test_ms, "split"] = "test"
    preds.loc[test_ms, "outcome"] = "TP"
    sec, used = measure_section(ws, run, viewer.stores_of(ws, run.checkpoint_hash()), preds, "lesion_load",
                                _regions_cmd)
    assert used == {"measure": "lesion_load", "relevance": "summed over the brain"}
    groups = sec.tables[0][1].set_index("group")
    assert int(groups.loc["TP", "n"]) == int(test_ms.sum()) and groups.loc["TP", "Pearson r"] != "—"
    caption, top = sec.tables[1]
    assert f"the {TOP_REGIONS} regions whose relevance correlates most with lesion load" in caption
    assert len(top) == TOP_REGIONS and (top["n"] == int(test_ms.sum())).all()
    assert not top["region"].str.contains("_").any()


def test_top_regions_section_of_a_run_without_heatmaps_says_what_to_compute(demo_ws, demo_run):
    from lib.views.report import sections

    sec = sections._top_regions_section(demo_ws, demo_run, [], [], set())
    assert not sec.figures and len(sec.missing) == 1
    assert "Needs heatmaps" in sec.missing[0] and f"explain --run {demo_run.id} --method lrp --beta 0" in sec.missing[0]
