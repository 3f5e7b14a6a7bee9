"""Executors: where a submitted job runs. The job store hands each request to one; nothing else knows which.

An executor only starts the generic worker (:mod:`lib.jobs.worker`) for a job whose record, request included,
is already written, says whether that job is still alive, and stops it. The worker reads the request from the
record and reports progress, outcome and cancellation into the same record, so pages and requests are the
same whichever executor ran the job.

:class:`LocalProcessExecutor` (today's only one) starts ``python -m lib.jobs.worker WORKSPACE JOB_ID`` as a
detached process on this machine (its own session, so the browser tab or Streamlit rerun that asked can go
away) and records its pid.

Adding a distributed executor (e.g. Ray) touches no request and no page: write a class with the same
``name``/``start``/``alive``/``cancel``, where ``start`` submits a remote task that calls
``lib.jobs.worker.run(workspace_root, job_id)`` on a node that mounts the workspace, and returns what
identifies the task (``{"ray_task": ...}``, stored in the record); ``alive`` asks the cluster about that
task and ``cancel`` cancels it (the worker turns the stop into a "cancelled" record, as it does SIGTERM
here). Register it in :data:`EXECUTORS` (records name their executor, so each job is watched and stopped by
the one that started it) and make :func:`default_executor` return it where the settings ask for it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from typing import Protocol

from lib.core.process import pid_alive
from lib.data.workspace import REPO_ROOT, Workspace


class Executor(Protocol):
    name: str

    def start(self, ws: Workspace, job_id: str, request) -> dict:
        """Start the worker for job ``job_id`` of ``ws`` (its record, with ``request``, is written); returns
        the fields to add to the record that identify what was started."""

    def alive(self, record: dict) -> bool:
        """Whether the job of ``record`` still runs (a dead one still marked running is reported failed)."""

    def cancel(self, record: dict) -> None:
        """Ask the job of ``record`` to stop; it records itself as cancelled."""


class _ProcessExecutor:
    """A job that is one process on this machine, named by the record's ``pid``: alive while it is, cancelled
    by a SIGTERM (``_terminate``)."""

    def alive(self, record: dict) -> bool:
        return pid_alive(record.get("pid"))

    def cancel(self, record: dict) -> None:
        pid = record.get("pid")
        if pid and pid_alive(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                self._terminate(pid)

    def _terminate(self, pid: int) -> None:
        raise NotImplementedError


class LocalProcessExecutor(_ProcessExecutor):
    """Each job in its own detached process on this machine, its output appended to the job's ``log.txt``."""

    name = "local"

    def start(self, ws: Workspace, job_id: str, request) -> dict:
        cmd = [sys.executable, "-m", "lib.jobs.worker", str(ws.root), job_id]
        with open(ws.jobs_dir / job_id / "log.txt", "ab") as log:
            proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    env={**os.environ, "PYTHONUNBUFFERED": "1"})
        return {"pid": proc.pid}

    def _terminate(self, pid: int) -> None:
        """SIGTERM to the job's process group (its own worker processes too)."""
        os.killpg(os.getpgid(pid), signal.SIGTERM)


class InProcessExecutor(_ProcessExecutor):
    """The job runs in the process that submitted it (a command in a terminal): ``start`` only records that
    process, which then runs the request itself under the record (:func:`lib.jobs.runner.run_as_job`). The job
    is alive while that process is, and a cancel from a page is a SIGTERM to it (only to it: a terminal's
    process group holds the shell too)."""

    name = "inprocess"

    def start(self, ws: Workspace, job_id: str, request) -> dict:
        return {"pid": os.getpid()}

    def _terminate(self, pid: int) -> None:
        os.kill(pid, signal.SIGTERM)


EXECUTORS: dict[str, Executor] = {"local": LocalProcessExecutor(), "inprocess": InProcessExecutor()}
"""Executors by the name job records keep."""


def default_executor() -> Executor:
    return EXECUTORS["local"]
