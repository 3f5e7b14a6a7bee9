"""A job started from the command line goes through the job store like one started from a page: it has a record
the Jobs page and ``python -m lib jobs`` show, and the same key from either door runs once."""

import subprocess
import sys
import time
from pathlib import Path

from lib import jobs
from lib.cli import cli_identity, main
from lib.data.workspace import Workspace
from lib.reviews import auth

ROOT = Path(__file__).resolve().parent.parent
ADMIN = auth.Identity("tester", "admin")
SLOW_DEMO = jobs.BuildDemo(subjects=60, resolution=2.0, workers=2)


def _cli(ws, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lib", "--workspace", str(ws.root), *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait(predicate, timeout=90):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("timed out")


def _running_cli_job(ws):
    return _wait(lambda: next((j for j in jobs.list_jobs(ws) if j.state == "running" and j.record.get("total")),
                              None))


def test_a_cli_explain_leaves_a_done_job_with_its_request(demo_ws, demo_run):
    assert main(["--workspace", str(demo_ws.root), "explain", "--run", demo_run.id, "--method", "sensitivity"]) == 0
    job = jobs.list_jobs(demo_ws, "explain")[0]
    request = jobs.Explain(run_id=demo_run.id, method="sensitivity")
    assert job.state == "done" and job.fraction == 1.0
    assert job.request == request and job.record["key"] == request.key(demo_ws)
    assert job.record["owner"] == cli_identity().username and job.record["executor"] == "inprocess"
    assert jobs.for_request(demo_ws, request).id == job.id
    assert "run in a terminal" in job.log_tail()


def test_a_page_asking_for_the_key_of_a_running_cli_job_attaches_to_it_and_may_cancel_it(tmp_path):
    ws = Workspace.create(tmp_path / "ws", kind="demo")
    proc = _cli(ws, "demo", "--subjects", "60", "--resolution", "2", "--workers", "2")
    try:
        job = _running_cli_job(ws)
        assert job.record["pid"] == proc.pid and job.active
        assert jobs.for_request(ws, SLOW_DEMO, active=True).id == job.id
        assert jobs.submit(ws, SLOW_DEMO, who=ADMIN).id == job.id
        assert len(jobs.list_jobs(ws)) == 1
        assert jobs.cancel(ws, job.id, who=ADMIN)
        assert proc.wait(60) == 130
    finally:
        proc.kill()
    assert jobs.get(ws, job.id).state == "cancelled"


def test_a_killed_cli_job_reads_failed(tmp_path):
    ws = Workspace.create(tmp_path / "ws", kind="demo")
    proc = _cli(ws, "demo", "--subjects", "60", "--resolution", "2", "--workers", "2")
    try:
        job = _running_cli_job(ws)
    finally:
        proc.kill()
        proc.wait(30)
    assert _wait(lambda: jobs.get(ws, job.id).state == "failed", timeout=30)
    assert jobs.for_request(ws, SLOW_DEMO, active=True) is None


def test_the_cli_follows_a_running_job_of_the_same_key_instead_of_starting_another(tmp_path):
    ws = Workspace.create(tmp_path / "ws", kind="demo")
    job = jobs.submit(ws, SLOW_DEMO, who=ADMIN)
    proc = _cli(ws, "demo", "--subjects", "60", "--resolution", "2")
    try:
        line = proc.stderr.readline()
        assert line.startswith(f"already running as job {job.id} (started by tester)"), line
        assert [j.id for j in jobs.list_jobs(ws)] == [job.id]
        assert jobs.cancel(ws, job.id, who=ADMIN)
        assert proc.wait(60) == 130
    finally:
        proc.kill()
    assert "cancelled" in proc.stderr.read()
