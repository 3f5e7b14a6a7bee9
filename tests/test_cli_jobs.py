"""A job started from the command line goes through the job store like one started from a page: it has a record
the Jobs page and ``python -m lib jobs`` show, and the same key from either door runs once."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lib import jobs
from lib.cli import cli_identity, main
from lib.data.scans import load_cohort
from lib.data.workspace import Workspace
from lib.explain import heatmaps
from lib.reviews import auth

ROOT = Path(__file__).resolve().parent.parent
ADMIN = auth.Identity("tester", "admin")
SLOW_DEMO = jobs.BuildDemo(subjects=60, resolution=2.0, workers=2)


def _cli(ws, *args, output=subprocess.PIPE) -> subprocess.Popen:
    """The command line in a process. A test that does not read its output passes ``output=DEVNULL``: an
    unread pipe fills up with the progress bar's updates (64 KB), and the process then blocks writing to it."""
    return subprocess.Popen([sys.executable, "-m", "lib", "--workspace", str(ws.root), *args], cwd=ROOT,
                            stdout=output, stderr=output, text=True)


def _wait(predicate, timeout: float = 90, what: str = "the condition"):
    """``predicate()``'s first true value, polled every 0.2 s; AssertionError after ``timeout`` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


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
    proc = _cli(ws, "demo", "--subjects", "60", "--resolution", "2", "--workers", "2", output=subprocess.DEVNULL)
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


@pytest.mark.parametrize("sig, state", [(signal.SIGKILL, "failed"), (signal.SIGINT, "cancelled")])
def test_a_killed_cli_job_reads_failed_and_ctrl_c_cancelled(tmp_path, sig, state):
    ws = Workspace.create(tmp_path / "ws", kind="demo")
    proc = _cli(ws, "demo", "--subjects", "60", "--resolution", "2", "--workers", "2", output=subprocess.DEVNULL)
    try:
        job = _running_cli_job(ws)
        proc.send_signal(sig)
        proc.wait(60)
    finally:
        proc.kill()
    assert _wait(lambda: jobs.get(ws, job.id).state == state, timeout=30)
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


def test_cli_outputs_say_what_they_did_in_one_line(demo_ws, demo_run, tmp_path, capsys):
    args = ["--workspace", str(demo_ws.root), "explain", "--run", demo_run.id, "--method", "sensitivity"]
    assert main(args) == 0   # computed here or by an earlier test: cached from now on
    capsys.readouterr()
    assert main(args) == 0
    out, err = capsys.readouterr()
    store = heatmaps.find_store(demo_ws, demo_run, "sensitivity")
    assert out.splitlines() == [f"cached: {store.folder}"]
    assert "item" not in err and "%" not in err   # no progress bar for work that was not done

    scan = load_cohort(demo_ws)["scan_id"].iat[0]
    assert main([*args, "--export", scan, "--out", str(tmp_path / "m.nii.gz")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("cached: ") and out[1].startswith(f"wrote {tmp_path / 'm.nii.gz'} ({scan}, template grid)")
    assert main(["--workspace", str(demo_ws.root), "regions", "--run", demo_run.id, "--method", "sensitivity"]) == 0
    out, err = capsys.readouterr()
    assert "1000" not in err and "item" not in err and out.strip().endswith(".parquet")


def test_runs_counts_epochs_from_one_without_loading_the_model_library(tmp_path):
    ws = Workspace.create(tmp_path / "ws", kind="study")
    (ws.runs_dir / "r1").mkdir(parents=True)
    (ws.runs_dir / "r1" / "config.json").write_text('{"created": 1}')
    (ws.runs_dir / "r1" / "state.json").write_text('{"status": "done", "epoch": 59, "max_epochs": 100, '
                                                   '"best_epoch": 50}')
    code = ("import sys; from lib.cli import main; main(['--workspace', sys.argv[1], 'runs']); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(ws.root)], cwd=ROOT, capture_output=True, text=True,
                         timeout=120).stdout.splitlines()
    assert out[0].split() == ["r1", "done", "epoch", "60/100", "best", "51"]
    assert out[1] == "False"
