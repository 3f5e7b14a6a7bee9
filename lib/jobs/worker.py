"""The one entry point that runs any submitted job: ``python -m lib.jobs.worker WORKSPACE JOB_ID``.

It reads the job's request from its record, runs it with progress and cancellation recorded there
(:func:`lib.jobs.runner.run_as_job`), and exits 0 done, 1 failed, 130 cancelled. Every executor starts this,
locally or on another machine that sees the workspace.
"""

from __future__ import annotations

import contextlib
import os
import sys

from lib.data.workspace import Workspace
from lib.jobs import kinds  # noqa: F401  (registers every kind of job)
from lib.jobs.request import Request
from lib.jobs.runner import JobReporter, run_as_job


# A background job yields the CPU to the dashboard's page renders (a 2-core team server serves pages and runs
# jobs side by side); it still takes every idle cycle.
NICENESS = 10


def run(workspace_root: str, job_id: str) -> int:
    ws = Workspace.open(workspace_root)
    reporter = JobReporter(ws, job_id)
    try:
        request = Request.from_dict(reporter.record["request"])
    except Exception as exc:  # noqa: BLE001 - a record the worker cannot read is a failed job, not a live one
        reporter.fail(f"the job's request cannot be read: {type(exc).__name__}: {exc}")
        return 1
    print(f"{request.describe()}  (job {job_id}, workspace {ws.root})", file=sys.stderr)
    return run_as_job(ws, job_id, lambda progress: request.run(ws, progress), desc=request.kind)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m lib.jobs.worker WORKSPACE JOB_ID", file=sys.stderr)
        return 2
    with contextlib.suppress(OSError):
        os.nice(NICENESS)
    return run(*args)


if __name__ == "__main__":
    sys.exit(main())
