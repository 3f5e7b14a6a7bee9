"""The job store: one record per job in the workspace, submitted as a typed request, started by an executor.

A job's record lives in ``<workspace>/jobs/<ID>/status.json`` (written atomically) next to ``log.txt``::

    {"id", "command", "args", "request", "description", "key", "owner", "executor", "pid", "state", "done",
     "total", "message", "error", "created", "started", "updated", "finished"}

``command`` is the request's kind (also its command name), ``request`` the request as JSON (what the worker
runs), ``description`` one line for the Jobs page; ``args`` is empty (records written before requests held
a command line there). ``state`` is one of ``queued``, ``running``, ``done``, ``failed``, ``cancelled``. A
record that says ``running`` but whose process is gone is reported as ``failed`` ("the job's process ended
without finishing"), so a killed job never looks alive. Any page or user reads the same records, so progress
survives a browser reload; a second request with the same key while one runs returns the running job instead
of starting a duplicate. A command run in a terminal is a job too (executor ``inprocess``: its record's pid
is the terminal's process), so a page asking for the same key attaches to it.

Starting and cancelling are checked here, at the point of the action, against the role of ``who``
(:data:`lib.reviews.auth.ACTIONS`; a request's action is :meth:`Request.required_action`); the record keeps
the submitter's user name as ``owner``. ``who`` is a required keyword, so no caller can forget it; pages
pass the identity re-read from the account database at the click (``pages.login.current_actor``), the
command line its local user (someone with a shell on the server owns the files and processes anyway).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from lib.core import atomic
from lib.core.progress import time_left
from lib.data.workspace import Workspace
from lib.jobs.executor import EXECUTORS, Executor, default_executor
from lib.jobs.request import Request, RequestError
from lib.jobs.runner import CANCEL_MARKER
from lib.reviews import auth

ACTIVE = ("queued", "running")



@dataclass
class Job:
    """A snapshot of one job record."""

    path: Path
    record: dict

    @property
    def id(self) -> str:
        return self.record["id"]

    @property
    def kind(self) -> str | None:
        return self.record.get("command")

    @property
    def request(self) -> Request | None:
        """The request this job runs (None for a record written before requests, or of an unknown kind)."""
        data = self.record.get("request")
        if not data:
            return None
        try:
            return Request.from_dict(data)
        except (RequestError, TypeError, ValueError):
            return None

    @property
    def description(self) -> str:
        r = self.record
        return r.get("description") or " ".join([str(r.get("command") or ""), *map(str, r.get("args") or [])])

    @property
    def state(self) -> str:
        return self.record.get("state", "queued")

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    @property
    def fraction(self) -> float:
        if self.state == "done":
            return 1.0
        total = self.record.get("total") or 0
        return min(1.0, (self.record.get("done") or 0) / total) if total else 0.0

    @property
    def message(self) -> str:
        return self.record.get("message") or ""

    @property
    def error(self) -> str | None:
        return self.record.get("error")

    @property
    def eta_seconds(self) -> float | None:
        r = self.record
        if not (r.get("done") and r.get("total")):
            return None
        return time_left(r.get("updated") or time.time(), r["done"], r["total"], r.get("rate_from"), r.get("started"))

    def log_tail(self, n_lines: int = 30) -> str:
        try:
            lines = (self.path / "log.txt").read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return ""
        return "\n".join(lines[-n_lines:])


def _executor_of(record: dict) -> Executor:
    return EXECUTORS.get(record.get("executor") or "local") or default_executor()


def _load(path: Path) -> Job | None:
    record = atomic.read_json(path / "status.json")
    if record is None:
        return None
    job = Job(path, record)
    if job.active and not _executor_of(record).alive(record) and (
            time.time() - record.get("created", 0) > 5 or (path / CANCEL_MARKER).exists()):
        if (path / CANCEL_MARKER).exists():
            # cancelled before its process could record it (e.g. while still importing)
            record = {**record, "state": "cancelled", "message": "cancelled"}
        else:
            record = {**record, "state": "failed", "error": record.get("error")
                      or "the job's process ended without finishing (killed or crashed); see its log"}
        job = Job(path, record)
    return job


def list_jobs(ws: Workspace, command: str | None = None) -> list[Job]:
    """All jobs of the workspace (of one kind, ``command``), newest first."""
    if not ws.jobs_dir.exists():
        return []
    jobs = [j for j in (_load(p) for p in ws.jobs_dir.iterdir() if p.is_dir()) if j is not None]
    if command:
        jobs = [j for j in jobs if j.record.get("command") == command]
    return sorted(jobs, key=lambda j: j.record.get("created", 0), reverse=True)


def get(ws: Workspace, job_id: str) -> Job | None:
    return _load(ws.jobs_dir / job_id)


def find_active(ws: Workspace, key: str) -> Job | None:
    """The queued or running job of ``key``, or None."""
    return next((j for j in list_jobs(ws) if j.record.get("key") == key and j.active), None)


def find(ws: Workspace, key: str) -> Job | None:
    """The newest job of ``key`` whatever its state (a page shows how the last attempt ended), or None."""
    return next((j for j in list_jobs(ws) if j.record.get("key") == key), None)


def for_request(ws: Workspace, request: Request, *, active: bool = False) -> Job | None:
    """The newest (``active``: the queued or running) job doing what ``request`` asks."""
    key = request.key(ws)
    return find_active(ws, key) if active else find(ws, key)


def of_run(ws: Workspace, run_id: str, kind: str | None = None, *, active: bool = True) -> list[Job]:
    """The (active) jobs of ``kind`` whose request works on training run ``run_id``."""
    out = []
    for job in list_jobs(ws, kind):
        if active and not job.active:
            continue
        request = job.request
        if request is not None and run_id in request.training_runs():
            out.append(job)
    return out


def may_submit(who: auth.Identity | None, ws: Workspace, request: Request) -> bool:
    action = request.required_action(ws)
    return who is not None if action is None else auth.allowed(who, action)


def submit(ws: Workspace, request: Request, *, who: auth.Identity | None, executor: Executor | None = None) -> Job:
    """Store ``request`` as a job of ``ws`` and hand it to ``executor`` (default: a local process), as ``who``.

    Raises ``auth.PermissionDenied`` (nothing written) unless ``who``'s role allows the request's action.
    If a job of the same key (:meth:`Request.key`) is still active, that job is returned and nothing new
    starts.
    """
    action = request.required_action(ws)
    if action is None:
        if who is None:
            raise auth.PermissionDenied("Sign in to build the demo cohort.")
    else:
        auth.require(who, action)
    executor = executor or default_executor()
    key = request.key(ws)
    ws.jobs_dir.mkdir(parents=True, exist_ok=True)
    with _file_lock(ws.jobs_dir / ".submit.lock"):
        running = find_active(ws, key)
        if running is not None:
            return running
        job_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        path = ws.jobs_dir / job_id
        path.mkdir()
        record = {"id": job_id, "command": request.kind, "args": [], "request": request.to_dict(),
                  "description": request.describe(), "key": key, "owner": who.username,
                  "executor": executor.name, "state": "queued", "done": 0, "total": 0, "message": "starting",
                  "error": None, "pid": None, "created": time.time(), "started": None, "updated": time.time(),
                  "finished": None}
        atomic.write_json(path / "status.json", record)
        started = executor.start(ws, job_id, request)
        # the worker may already have written "running"; only add what the executor knows (its pid)
        current = atomic.read_json(path / "status.json", default=record)
        current.update(started)
        atomic.write_json(path / "status.json", current)
    return Job(path, current)


def cancel_action(who: auth.Identity | None, job: Job) -> str:
    """``cancel_own_job`` for the job's owner, ``cancel_any_job`` for anyone else (a job without owner too)."""
    own = who is not None and job.record.get("owner") is not None and job.record.get("owner") == who.username
    return "cancel_own_job" if own else "cancel_any_job"


def may_cancel(who: auth.Identity | None, job: Job) -> bool:
    return auth.allowed(who, cancel_action(who, job))


def cancel(ws: Workspace, job_id: str, *, who: auth.Identity | None) -> bool:
    """Ask a running job to stop, as ``who``. Returns whether it was active.

    Raises ``auth.PermissionDenied`` unless ``who`` may cancel it: their own job needs
    ``cancel_own_job``, anyone else's ``cancel_any_job``.
    """
    job = get(ws, job_id)
    if job is None:
        return False
    auth.require(who, cancel_action(who, job))
    if not job.active:
        return False
    # the marker first: whatever the executor manages, the job ends as "cancelled", not "failed"
    (job.path / CANCEL_MARKER).touch()
    _executor_of(job.record).cancel(job.record)
    return True


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    import fcntl

    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
