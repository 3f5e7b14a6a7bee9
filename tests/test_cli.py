"""The headless CLI: exit codes and messages a cluster script can rely on."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from lib.views import overview
from lib.data.templates import Grid, template
from lib.data.workspace import WORKSPACE_ENV, Workspace

ROOT = Path(__file__).resolve().parent.parent
# commands given no --workspace record their job in the default workspace: a scratch one, never the repo's
_DEFAULT_WS = Path(tempfile.mkdtemp(prefix="cli-default-ws-")) / "ws"


def _cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "lib", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={**os.environ, WORKSPACE_ENV: str(_DEFAULT_WS)})


def _scan(path: Path, seed: int) -> str:
    g = Grid(4.0)
    data = np.asarray(template(4.0).dataobj) * 900 + np.random.default_rng(seed).normal(0, 5, g.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data.astype(np.float32), g.affine), path)
    return str(path.name if path.parent.name == "" else path.relative_to(path.parents[1]))


def _good_table(root: Path, n: int = 8) -> Path:
    rows = [{"subject_id": f"p{i}", "scan_id": f"p{i}_1", "path": _scan(root / "scans" / f"p{i}.nii.gz", i),
             "diagnosis": "AD" if i % 2 else "CN", "age": 70 + i, "sex": "F" if i % 3 else "M"} for i in range(n)]
    table = root / "cohort_in.csv"
    pd.DataFrame(rows).to_csv(table, index=False)
    return table


def test_validate_exits_nonzero_and_names_each_problem(tmp_path):
    table = _good_table(tmp_path)
    df = pd.read_csv(table)
    truncated = tmp_path / "scans" / "p1.nii.gz"
    truncated.write_bytes(truncated.read_bytes()[:2000])
    df.loc[2, "path"] = "scans/absent.nii.gz"
    df.loc[3, "diagnosis"] = "Contrl"
    df.loc[4, "scan_id"] = df.loc[5, "scan_id"]
    df.to_csv(table, index=False)
    res = _cli("validate", str(table))
    assert res.returncode == 1, res.stdout + res.stderr
    out = res.stdout
    for code, row in [("unreadable_image", 3), ("missing_file", 4), ("unknown_diagnosis", 5),
                      ("duplicate_scan_id", 7)]:
        line = next((ln for ln in out.splitlines() if code in ln), None)
        assert line is not None, f"{code} missing from:\n{out}"
        assert f"row {row}" in line or f"rows" in line, line
    assert "errors" in out.splitlines()[-1]


def test_validate_clean_table_exits_zero(tmp_path):
    res = _cli("validate", str(_good_table(tmp_path)))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "0 errors" in res.stdout


def test_init_makes_a_workspace_the_pages_can_read(tmp_path):
    table = _good_table(tmp_path)
    res = _cli("init", "--table", str(table), "--resolution", "4")
    assert res.returncode == 0, res.stdout + res.stderr
    ws = Workspace.open(tmp_path)
    assert ws.exists and ws.grid.resolution == 4.0
    cohort = overview.load_cohort(ws)
    assert set(cohort["diagnosis"]) == {"AD", "HC"}  # CN mapped to HC
    assert cohort["split"].notna().all()
    assert not any(Path(p).is_absolute() for p in cohort["path"])  # relative to the workspace


def test_init_refuses_a_bad_table_and_writes_no_cohort(tmp_path):
    table = _good_table(tmp_path)
    df = pd.read_csv(table)
    df.loc[0, "path"] = "scans/absent.nii.gz"
    df.to_csv(table, index=False)
    res = _cli("init", "--table", str(table))
    assert res.returncode == 1
    assert "missing_file" in res.stdout and "not initialised" in res.stderr
    assert not (tmp_path / "cohort.csv").exists()
    assert not (tmp_path / "workspace.json").exists()


def test_unknown_table_is_one_clear_error(tmp_path):
    res = _cli("validate", str(tmp_path / "nope.csv"), "--report", str(tmp_path / "r.json"))
    assert res.returncode == 1
    assert "nope.csv" in res.stdout
