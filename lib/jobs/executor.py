"""Executors: where a submitted job runs. The job store hands each request to one; nothing else knows which.

An executor only starts the generic worker (:mod:`lib.jobs.worker`) for a job whose record, request included,
is already written, says whether that job is still alive, and stops it. The worker reads the request from the
record and reports progress, outcome and cancellation into the same record, so pages and requests are the
same whichever executor ran the job.

:class:`LocalProcessExecutor` starts ``python -m lib.jobs.worker WORKSPACE JOB_ID`` as a
detached process on this machine (its own session, so the browser tab or Streamlit rerun that asked can go
away) and records its pid.

:class:`RayExecutor` starts the same worker with the record naming a Ray cluster: the worker stays the driver
here and sends the job's per-scan chunks (and repeated trainings, one task per run) to the cluster
(:mod:`lib.jobs.cluster`); no request and no page knows. Records name their executor (:data:`EXECUTORS`), so
each job is watched and stopped by the one that started it; :func:`default_executor` picks Ray where the
settings name a cluster.
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

    def __init__(self, cluster: str | None = None):
        self.cluster = cluster   # the command's --cluster: recorded, so the Jobs page says where it runs

    def start(self, ws: Workspace, job_id: str, request) -> dict:
        return {"pid": os.getpid(), **({"cluster": self.cluster} if self.cluster else {})}

    def _terminate(self, pid: int) -> None:
        os.kill(pid, signal.SIGTERM)


class RayExecutor(LocalProcessExecutor):
    """A job whose per-scan work runs on a Ray cluster (:mod:`lib.jobs.cluster`). Its worker is the driver: a
    detached process here like a local job's (so it is alive, cancelled and resumed the same way), told the
    cluster's address by its record; it sends its chunks to the cluster and cancels them when stopped."""

    name = "ray"

    def __init__(self, address: str | None = None):
        self.address = address

    def start(self, ws: Workspace, job_id: str, request) -> dict:
        return {**super().start(ws, job_id, request), "cluster": self.address}

    def lost(self, record: dict) -> str:
        return (f"the job's driver process ended without finishing (killed, or the Ray cluster at "
                f"{record.get('cluster')} went away); see its log. Finished chunks are kept: submit it again")


EXECUTORS: dict[str, Executor] = {"local": LocalProcessExecutor(), "inprocess": InProcessExecutor(),
                                  "ray": RayExecutor()}
"""Executors by the name job records keep."""


def default_executor(ws: Workspace | None = None, given: str | None = None) -> Executor:
    """A Ray executor when a cluster is named (``given``: the command line's ``--cluster``, else
    ``$RELEVANCE_ATLAS_CLUSTER``, else ``workspace.json``), else a local process."""
    from lib.jobs.cluster import cluster_address

    address = cluster_address(ws, given)
    return RayExecutor(address) if address else EXECUTORS["local"]
