"""Transfer learning on the MS demo (Eitel's study 2): from scratch against from the shipped AD model, side by side.

    .venv/bin/python bench/transfer_ms.py [--workspace /tmp/ms-bench] [--subjects 80] [--visits 1]
                                          [--test-fraction 0.3] [--seeds 0 1 2] [--epochs 25] [--patience 25]
                                          [--lr 1e-3] [--batch-size 4] [--n-scans 24]

Builds the MS demo (3 mm, the shipped model's grid) once and holds out ``--test-fraction`` of its subjects
(80 subjects: 24 test scans, so balanced accuracy moves in steps of 1/24, and 44 training scans, the "few
scans" of the comparison), then trains per seed one run from scratch and one
from ``models/demo-boehle2019`` (AD vs HC; its convolution weights copied, the head re-initialised), with the
same split, settings and seed, alternating so that load from elsewhere hits both alike. Prints each run's test
balanced accuracy, the mean ± sd per condition, and for each run the share of positive LRP relevance (β = 0,
explaining MS) inside the test patients' lesion masks against chance (the masks' share of the brain): the
Evaluation page's localisation on the MS demo. Runs already finished in the workspace are reused.

Every run trains all its epochs (patience = epochs) and keeps its best validation checkpoint: on 12 validation
scans the balanced accuracy moves in steps of 1/12 and, from scratch, sits at 0.5 for most epochs even while the
validation AUC is 0.9–1.0 (the outputs stay close to 0.5), so a short patience stops a run before its first
epoch above chance (the earlier failure: every run stopped at epoch 7).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402

from lib.analysis import evaluation as ev  # noqa: E402
from lib.core import atomic  # noqa: E402
from lib.cli import main  # noqa: E402
from lib.data import demo_ms  # noqa: E402
from lib.data.workspace import Workspace  # noqa: E402
from lib.learn.runs import load_run  # noqa: E402

SOURCE = "demo-boehle2019"


def _train(ws: Workspace, run_id: str, seed: int, args, extra: list[str]):
    d = ws.runs_dir / run_id
    if not ((d / "summary.json").exists()):
        t0 = time.monotonic()
        code = main(["--workspace", str(ws.root), "train", "--resolution", "3", "--epochs", str(args.epochs),
                     "--patience", str(args.patience), "--lr", str(args.lr), "--batch-size", str(args.batch_size),
                     "--seeds", str(seed), "--run-id", run_id, *extra])
        if code != 0:
            raise SystemExit(f"training {run_id} failed")
        print(f"  trained {run_id} in {time.monotonic() - t0:.0f} s", flush=True)
    return load_run(ws, run_id)


def _localisation(ws: Workspace, run, n_scans: int) -> tuple[float, float, int]:
    """(mean relevance mass inside the lesion masks, mean chance, scans) of LRP β = 0 on the test split."""
    results = ev.evaluate(ws, run, ["lrp:beta=0"], ev.Settings(split="test", n_scans=n_scans),
                          checks=["localisation"])
    loc = ev.localisation_table(results)
    return float(loc["mass"].mean()), float(loc["chance_mass"].mean()), len(loc)


def _ms(values, digits: int = 3) -> str:
    m = f"{statistics.mean(values):.{digits}f}"
    return f"{m} ± {statistics.stdev(values):.{digits}f}" if len(values) > 1 else m


def run(args) -> None:
    ws = Workspace.open(args.workspace)
    if not demo_ms.is_complete(ws):
        assert main(["--workspace", str(ws.root), "demo", "--disease", "ms", "--subjects", str(args.subjects),
                     "--resolution", "3", "--visits", str(args.visits), "--seed", "0"]) == 0
        assert main(["--workspace", args.workspace, "split", "--test-fraction", str(args.test_fraction)]) == 0
        ws = Workspace.open(args.workspace)
    parts = pd.Series(atomic.read_json(ws.splits_json)["parts"]).value_counts().to_dict()
    print(f"MS demo: {ws.config['n_scans']} scans of {ws.config['n_subjects']} subjects, 3 mm, subjects per part "
          f"{parts}; {args.epochs} epochs max, patience {args.patience}, lr {args.lr:g}, batch {args.batch_size}, "
          f"seeds {args.seeds}", flush=True)
    rows = []
    for seed in args.seeds:
        for cond, extra in (("scratch", []), ("transfer", ["--init-from", SOURCE])):
            r = _train(ws, f"{cond}-s{seed}", seed, args, extra)
            test = r.summary()["test"]
            bacc, auc = test["balanced_accuracy"], test["auc"]
            mass, chance, n = _localisation(ws, r, args.n_scans)
            rows.append({"condition": cond, "seed": seed, "bacc": bacc, "auc": auc, "mass": mass, "chance": chance,
                         "n": n, "epochs": r.summary().get("epochs_run"), "best": r.summary().get("best_epoch")})
            print(f"  {cond:8s} seed {seed}: test balanced accuracy {bacc:.3f}, AUC {auc:.3f} (kept epoch "
                  f"{rows[-1]['best'] + 1} of {rows[-1]['epochs']}); LRP mass in lesions {mass:.4f} vs chance "
                  f"{chance:.4f} ({n} scans)", flush=True)
    print("\ncondition   test balanced accuracy        test AUC   LRP relevance in lesions   chance   ratio")
    for cond in ("scratch", "transfer"):
        sel = [r for r in rows if r["condition"] == cond]
        mass = [r["mass"] for r in sel]
        chance = [r["chance"] for r in sel]
        ratio = statistics.mean(mass) / statistics.mean(chance)
        print(f"{cond:10s}  {_ms([r['bacc'] for r in sel]):>22s}   {_ms([r['auc'] for r in sel]):>13s}   "
              f"{_ms(mass, 4):>24s}   {statistics.mean(chance):.4f}   {ratio:5.2f}×")
    diff = [t["bacc"] - s["bacc"] for s, t in zip([r for r in rows if r["condition"] == "scratch"],
                                                  [r for r in rows if r["condition"] == "transfer"])]
    print(f"transfer − scratch, paired by seed: {_ms(diff)}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workspace", default="/tmp/ms-bench")
    p.add_argument("--subjects", type=int, default=80)
    p.add_argument("--visits", type=int, default=1)
    p.add_argument("--test-fraction", type=float, default=0.3)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=25)
    p.add_argument("--patience", type=int, default=25)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--n-scans", type=int, default=24)
    run(p.parse_args())
