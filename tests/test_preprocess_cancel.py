"""A preprocessing job cancelled mid-batch, as the Cohort page's Cancel does it (SIGTERM to the job's process
group, its scan workers included), stops within seconds, leaves every scan folder whole or absent and no new
workspace, and the same request submitted again computes only the scans that were missing."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pandas as pd
import pytest

from lib import jobs
from lib.data.preprocess.pipeline import Settings, load_cached, scan_key
from lib.data.workspace import Workspace
from lib.reviews import auth
from test_cli_jobs import _wait as _until

COLIN = Path("/usr/share/mricron/templates/ch2.nii.gz")
pytestmark = pytest.mark.skipif(not COLIN.exists(), reason="Debian's mricron-data (Colin27) is not installed")
ADMIN = auth.Identity("tester", "admin")
SCANS = [f"colin{i}" for i in range(4)]


def _group_gone(pgid: int) -> bool:
    """No running process is left in the job's process group (its worker, which this test process started and
    so keeps as a zombie until reaped, counts as gone)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return False
    return True


def _finished(root: Path) -> dict[str, int]:
    """The scan folders with a complete result, and when their qc.json was written."""
    return {p.parent.name: p.stat().st_mtime_ns for p in root.glob("*/qc.json")}


def test_cancelled_preprocess_job_stops_promptly_and_resumes_with_the_missing_scans(tmp_path):
    table = tmp_path / "raw.csv"
    pd.DataFrame({"subject_id": SCANS, "scan_id": SCANS, "path": [str(COLIN)] * len(SCANS),
                  "diagnosis": ["AD", "HC"] * (len(SCANS) // 2)}).to_csv(table, index=False)
    ws = Workspace.create(tmp_path / "jobs", kind="study")
    out = tmp_path / "new"
    request = jobs.Preprocess(table=str(table), out=str(out), registration="none", resolution=3, workers=2)
    job = jobs.submit(ws, request, who=ADMIN)
    root = out / "preprocessed"
    _until(lambda: _finished(root), 240, "the first scan")
    running = jobs.get(ws, job.id)
    assert running.state == "running", running.record
    pgid = os.getpgid(running.record["pid"])
    assert jobs.cancel(ws, job.id, who=ADMIN)
    stopped = time.time()
    _until(lambda: jobs.get(ws, job.id).state == "cancelled", 20, "the job to read cancelled")
    _until(lambda: _group_gone(pgid), 20, "the scan workers to stop")
    assert time.time() - stopped < 20

    before = _finished(root)
    assert 0 < len(before) < len(SCANS), "cancelled after the batch had finished: nothing to resume"
    # nothing half written: each visible scan folder is a whole result; a killed worker's folder is hidden
    # under a temporary name (removed by the next run), and the workspace is not made
    visible = [p for p in root.iterdir() if not p.name.startswith(".")]
    assert sorted(p.name for p in visible) == sorted(before)
    settings = Settings("none", 3)
    assert all(load_cached(root / name, scan_key(COLIN, settings)) for name in before)
    assert not (out / "cohort.csv").exists() and not (root / "qc.csv").exists()

    again = jobs.submit(ws, request, who=ADMIN)
    assert again.id != job.id
    final = _until(lambda: (j := jobs.get(ws, again.id)).state in ("done", "failed", "cancelled") and j, 300,
                   "the resubmitted job")
    assert final.state == "done", final.error
    after = _finished(root)
    assert sorted(after) == sorted(SCANS)
    assert {name: after[name] for name in before} == before   # the finished scans were not computed again
    assert not [p for p in root.iterdir() if p.name.startswith(".")]   # the killed run's leftovers are gone
    assert sorted(pd.read_csv(out / "cohort.csv")["scan_id"]) == sorted(SCANS)
