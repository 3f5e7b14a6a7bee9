"""A workspace with its own task (pMCI vs sMCI) trains, explains and analyses end to end, named by its classes;
transfer learning from a run of another task copies the convolution weights exactly and re-initialises the
head."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
import torch

from lib.analysis import groups as gm, region_analysis as ra, region_tables as rt
from lib.cli import main
from lib.data.classes import Classes
from lib.data.workspace import Workspace
from lib.explain.heatmaps import list_stores
from lib.learn import transfer
from lib.learn.models import build_model
from lib.learn.runs import load_checkpoint, load_run
from lib.views import viewer

MCI = Classes("pMCI", "sMCI")
TRAIN = ["--epochs", "2", "--batch-size", "6", "--lr", "1e-3"]


@pytest.fixture(scope="module")
def mci_ws(demo_ws, tmp_path_factory) -> Workspace:
    """The small demo cohort relabelled as progressive (pMCI) vs stable MCI (sMCI), plus 2 scans of another group
    (kept, never trained on)."""
    root = tmp_path_factory.mktemp("mci_ws")
    cohort = pd.read_csv(demo_ws.cohort_csv, dtype={"subject_id": str, "scan_id": str})
    cohort["path"] = [str(demo_ws.resolve(p)) for p in cohort["path"]]
    cohort["diagnosis"] = cohort["diagnosis"].map({"AD": "pMCI", "HC": "sMCI"})
    cohort.loc[cohort.index[-2:], "diagnosis"] = pd.NA   # e.g. "MCI, no follow-up": another group
    cohort.to_csv(root / "cohort.csv", index=False)
    shutil.copy(demo_ws.splits_json, root / "splits.json")
    config = {**demo_ws.config, "name": "pMCI vs sMCI", "kind": "study", "task": MCI.to_json()}
    (root / "workspace.json").write_text(json.dumps(config))
    ws = Workspace.open(root)
    assert ws.classes == MCI
    return ws


def test_a_custom_task_trains_explains_and_analyses(mci_ws):
    assert main(["--workspace", str(mci_ws.root), "train", *TRAIN, "--run-id", "mci"]) == 0
    run = load_run(mci_ws, "mci")
    assert run.classes == MCI and run.config["task"]["positive"] == "pMCI"
    _, _, meta = load_checkpoint(run.best_checkpoint, "cpu")
    assert meta["classes"] == ["sMCI", "pMCI"]
    preds = run.predictions()
    assert set(preds["predicted"]) <= {"pMCI", "sMCI"}
    assert ((preds["ad_score"] >= 0.5) == (preds["predicted"] == "pMCI")).all()
    other = preds["diagnosis"].isna()
    assert other.sum() == 2 and preds.loc[other, "outcome"].isna().all()   # predicted, never scored
    pos = preds["diagnosis"] == "pMCI"
    assert set(preds.loc[pos, "outcome"]) <= {"TP", "FN"} and set(preds.loc[preds["diagnosis"] == "sMCI",
                                                                             "outcome"]) <= {"TN", "FP"}

    # explaining targets the positive class by default; the store and its label say so
    assert main(["--workspace", str(mci_ws.root), "explain", "--run", "mci", "--method", "lrp", "--beta", "0"]) == 0
    store = list_stores(mci_ws, run)[0]
    assert store.meta["target"] == "pMCI" and store.meta["positive"] == "pMCI"
    assert "explained" not in viewer.label_of(store)

    # group means are keyed by the task's classes and the outcomes
    means = viewer.run_group_means(mci_ws, run, store, split="all")
    labels = [e.label for e in means.entries]
    assert labels[:2] == ["pMCI", "sMCI"] and "AD" not in labels and means.count("pMCI") == int(pos.sum())

    # region metrics and the class test between pMCI and sMCI
    assert main(["--workspace", str(mci_ws.root), "regions", "--run", "mci", "--method", "lrp", "--beta", "0"]) == 0
    path = rt.find_table(mci_ws, store, rt.get_atlas(mci_ws, rt.DEFAULT_ATLAS, run.grid.resolution, False))
    table = ra.annotate(rt.read_table(path), preds, split="all", classes=MCI)
    tests = ra.region_tests(table, "density", classes=MCI)
    assert {"n_pMCI", "n_sMCI", "mean_pMCI"} <= set(tests.columns)
    assert int(tests["n_pMCI"].max()) == int(pos.sum())
    assert list(ra.ranking(table, "density", classes=MCI).index) == list(ra.ranking(table, "density", "pMCI").index)


def test_init_from_copies_convolutions_exactly_and_reinitialises_the_head(mci_ws, demo_run):
    source = torch.load(demo_run.best_checkpoint, map_location="cpu", weights_only=True)
    assert source["classes"] == ["HC", "AD"]
    # the bare operation: a seeded fresh model, the source's convolution part copied into it
    torch.manual_seed(0)
    fresh = build_model("boehle2019", tuple(source["input_shape"]))
    fresh_head = {k: v.clone() for k, v in fresh.state_dict().items() if not k.startswith("0.")}
    done = transfer.initialise(fresh, source, MCI)
    assert done["head"] == "re-initialised" and all(k.startswith("0.") for k in done["copied"])
    got = fresh.state_dict()
    conv = [k for k in got if k.startswith("0.")]
    assert conv and all(torch.equal(got[k], source["state_dict"][k]) for k in conv)
    assert all(torch.equal(got[k], v) for k, v in fresh_head.items())          # the seeded initialisation
    assert not torch.equal(got["6.weight"], source["state_dict"]["6.weight"])  # not the source's AD head
    same = build_model("boehle2019", tuple(source["input_shape"]))
    assert transfer.initialise(same, source, Classes())["head"] == "copied"
    assert all(torch.equal(v, source["state_dict"][k]) for k, v in same.state_dict().items())

    # a run started from the AD run with every convolution block frozen keeps them bit for bit
    assert main(["--workspace", str(mci_ws.root), "train", *TRAIN, "--run-id", "mci-transfer",
                 "--init-from", str(demo_run.dir), "--freeze", "4"]) == 0
    run = load_run(mci_ws, "mci-transfer")
    assert run.origin["run"] == demo_run.id and run.origin["head"] == "re-initialised"
    assert run.origin["classes"] == ["HC", "AD"] and run.origin["freeze"] == 4
    assert run.train_config.init_from == str(demo_run.dir)
    trained = torch.load(run.best_checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    assert all(torch.equal(trained[k], source["state_dict"][k]) for k in conv)   # BN statistics included
    assert not torch.equal(trained["6.weight"], source["state_dict"]["6.weight"])


def test_init_from_refuses_what_cannot_start_the_run(mci_ws, demo_run, capsys):
    capsys.readouterr()
    assert main(["--workspace", str(mci_ws.root), "train", "--init-from", "no-such-run"]) != 0
    assert "--init-from no-such-run" in capsys.readouterr().err
    assert main(["--workspace", str(mci_ws.root), "train", "--init-from", str(demo_run.dir),
                 "--resolution", "4"]) != 0
    assert "train with --resolution 3" in capsys.readouterr().err
    assert main(["--workspace", str(mci_ws.root), "train", "--freeze", "2"]) != 0
    assert "--freeze needs --init-from" in capsys.readouterr().err
