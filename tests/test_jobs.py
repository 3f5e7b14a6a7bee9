import os
import signal
import time

import pytest

from lib.reviews import auth
from lib import jobs
from lib.data.workspace import Workspace


def _wait(ws, job_id, states=("done", "failed", "cancelled"), timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = jobs.get(ws, job_id)
        if job.state in states:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still {job.state} after {timeout} s")


def _wait_running(ws, job_id, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = jobs.get(ws, job_id)
        if job.state == "running" and job.record.get("total"):
            return job
        time.sleep(0.2)
    raise AssertionError("job never reported progress")


ADMIN = auth.Identity("tester", "admin")
SLOW_DEMO = jobs.BuildDemo(subjects=60, resolution=2.0, workers=2)


def test_job_runs_in_background_and_records_progress(demo_ws):
    import pandas as pd

    job = jobs.submit(demo_ws, jobs.Validate(), who=ADMIN)
    done = _wait(demo_ws, job.id)
    assert done.state == "done", done.error
    assert done.fraction == 1.0
    assert done.record["total"] == len(pd.read_csv(demo_ws.cohort_csv)) and done.record["pid"]
    assert done.message.startswith("0 errors")
    assert any(j.id == job.id for j in jobs.list_jobs(demo_ws, "validate"))


def test_same_request_while_running_is_not_duplicated(tmp_path):
    ws = Workspace.create(tmp_path / "ws", kind="demo")
    first = jobs.submit(ws, SLOW_DEMO, who=ADMIN)
    second = jobs.submit(ws, SLOW_DEMO, who=ADMIN)
    assert second.id == first.id
    assert jobs.cancel(ws, first.id, who=ADMIN)
    _wait(ws, first.id)


def test_cancel_leaves_no_half_written_results(tmp_path):
    ws = Workspace.create(tmp_path / "ws", kind="demo")
    job = jobs.submit(ws, SLOW_DEMO, who=ADMIN)
    _wait_running(ws, job.id)
    assert jobs.cancel(ws, job.id, who=ADMIN)
    final = _wait(ws, job.id, timeout=15)  # promptly, worker processes included
    assert final.state == "cancelled"
    # the cohort table is written last: a cancelled build has none, and no temporary files remain
    assert not (ws.root / "cohort.csv").exists()
    leftovers = [p for p in ws.root.rglob(".*") if p.is_file() and p.name.startswith(".") and "tmp" not in p.parts]
    assert not [p for p in leftovers if p.suffix in (".gz", ".csv", ".json")], leftovers
    assert not jobs.cancel(ws, job.id, who=ADMIN)  # nothing left to cancel


def test_killed_job_is_reported_failed_not_running(tmp_path):
    ws = Workspace.create(tmp_path / "ws", kind="demo")
    job = jobs.submit(ws, SLOW_DEMO, who=ADMIN)
    running = _wait_running(ws, job.id)
    os.killpg(os.getpgid(running.record["pid"]), signal.SIGKILL)
    time.sleep(0.5)
    final = _wait(ws, job.id, timeout=30)
    assert final.state == "failed"
    assert "ended without finishing" in final.error


def test_failure_is_recorded_with_message(tmp_path):
    ws = Workspace.create(tmp_path / "ws")
    job = jobs.submit(ws, jobs.CohortMeans(), who=ADMIN)  # no cohort table in this workspace
    final = _wait(ws, job.id)
    assert final.state == "failed"
    assert "cohort.csv" in final.error
    assert "Traceback" in final.log_tail(50)


def test_cancel_while_the_process_is_still_starting_reads_cancelled(tmp_path):
    ws = Workspace.create(tmp_path / "ws", kind="demo")
    job = jobs.submit(ws, SLOW_DEMO, who=ADMIN)
    assert jobs.cancel(ws, job.id, who=ADMIN)  # at once: the child is still importing its libraries
    final = _wait(ws, job.id, timeout=30)
    assert final.state == "cancelled"


def test_ctrl_c_that_breaks_an_import_on_its_way_reads_cancelled_not_failed(tmp_path, capsys):
    """A C extension's import interrupted by Ctrl-C raises ImportError("initialization failed"), not
    KeyboardInterrupt: the job still ends "cancelled" (exit 130), as the user asked."""
    import json

    from lib.jobs.runner import run_as_job

    ws = Workspace.create(tmp_path / "ws", kind="demo")
    job_id = "20990101-000000-ctrlc1"
    (ws.jobs_dir / job_id).mkdir(parents=True)
    (ws.jobs_dir / job_id / "status.json").write_text(json.dumps({"id": job_id, "state": "queued"}))

    def work(progress):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        except KeyboardInterrupt:
            raise ImportError("initialization failed") from None

    before = signal.getsignal(signal.SIGINT)
    assert run_as_job(ws, job_id, work) == 130
    assert jobs.get(ws, job_id).state == "cancelled"
    assert "cancelled" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) is before   # the caller's handler is back

    def broken(progress):   # without Ctrl-C the same error is a failure
        raise ImportError("initialization failed")

    assert run_as_job(ws, job_id, broken) == 1
