"""Background jobs: long work runs in its own process and reports through the workspace.

A job is ``python -m lib <command> … --job-id ID`` started detached from the
caller (a Streamlit rerun, a browser tab). Its record lives in
``<workspace>/jobs/<ID>/status.json`` (written atomically) next to ``log.txt``::

    {"id", "command", "args", "key", "owner", "pid", "state", "done", "total", "message",
     "error", "created", "started", "updated", "finished"}

``state`` is one of ``queued``, ``running``, ``done``, ``failed``, ``cancelled``.
A record that says ``running`` but whose process is gone is reported as
``failed`` ("the job's process ended without finishing"), so a killed job never
looks alive. Any page or user reads the same records, so progress survives a
browser reload; a second request with the same ``key`` while one runs returns
the running job instead of starting a duplicate.

Starting and cancelling are checked here, at the point of the action, against the role of ``who``
(:data:`lib.reviews.auth.ACTIONS`; the job command's action is :func:`action_of`); the record keeps the
submitter's user name as ``owner``. ``who`` is a required keyword, so no caller can forget it; pages
pass the identity re-read from the account database at the click (``pages.login.current_actor``), the
command line its local user (someone with a shell on the server owns the files and processes anyway).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import traceback
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from lib.core import atomic
from lib.reviews import auth
from lib.core.progress import Cancelled  # noqa: F401  (raised in jobs)
from lib.data.workspace import REPO_ROOT, Workspace, default_workspace_path

ACTIVE = ("queued", "running")
# job command -> action of lib.reviews.auth.ACTIONS; a command not listed needs "change_workspace" (admins)
COMMAND_ACTIONS = {
    "train": "train",
    **dict.fromkeys(("explain", "regions", "group-means", "means", "predict", "biomarker", "evaluate-maps",
                     "evaluate", "report"), "compute"),
    **dict.fromkeys(("init", "validate", "split", "demo"), "change_workspace"),
}
CANCEL_MARKER = "cancel-requested"


@dataclass
class Job:
    """A snapshot of one job record."""

    path: Path
    record: dict

    @property
    def id(self) -> str:
        return self.record["id"]

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
        started, done, total = self.record.get("started"), self.record.get("done"), self.record.get("total")
        if not (started and done and total) or done >= total:
            return None
        elapsed = (self.record.get("updated") or time.time()) - started
        return elapsed / done * (total - done)

    def log_tail(self, n_lines: int = 30) -> str:
        try:
            lines = (self.path / "log.txt").read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return ""
        return "\n".join(lines[-n_lines:])


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child (finished, not yet reaped) is not alive
    with contextlib.suppress(OSError):
        with open(f"/proc/{pid}/stat") as f:
            if f.read().split(") ", 1)[1].startswith("Z"):
                return False
    return True


def _load(path: Path) -> Job | None:
    record = atomic.read_json(path / "status.json")
    if record is None:
        return None
    job = Job(path, record)
    if job.active and not _pid_alive(record.get("pid")) and (
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
    """All jobs of the workspace, newest first."""
    if not ws.jobs_dir.exists():
        return []
    jobs = [j for j in (_load(p) for p in ws.jobs_dir.iterdir() if p.is_dir()) if j is not None]
    if command:
        jobs = [j for j in jobs if j.record.get("command") == command]
    return sorted(jobs, key=lambda j: j.record.get("created", 0), reverse=True)


def get(ws: Workspace, job_id: str) -> Job | None:
    return _load(ws.jobs_dir / job_id)


def find_active(ws: Workspace, key: str) -> Job | None:
    return next((j for j in list_jobs(ws) if j.record.get("key") == key and j.active), None)


def action_of(ws: Workspace, command: str) -> str | None:
    """The action (a key of ``auth.ACTIONS``) that starting ``command`` in ``ws`` needs.

    None for building the default demo workspace: a system action that any signed-in identity may start,
    since a fresh server needs it before any page can be shown and its content is deterministic. A demo
    built in another folder changes that folder, like ``init``.
    """
    if command == "demo" and ws.root.resolve() == default_workspace_path():
        return None
    return COMMAND_ACTIONS.get(command, "change_workspace")


def may_submit(who: auth.Identity | None, ws: Workspace, command: str) -> bool:
    action = action_of(ws, command)
    return who is not None if action is None else auth.allowed(who, action)


def submit(ws: Workspace, command: str, args: list[str] | None = None, *, key: str | None = None,
           who: auth.Identity | None) -> Job:
    """Start ``python -m lib <command> <args>`` for ``ws`` in a detached process, as ``who``.

    Raises ``auth.PermissionDenied`` (nothing written) unless ``who``'s role allows the command's
    action (:func:`action_of`). If a job with the same ``key`` (default: command and args) is still
    active, that job is returned and nothing new starts.
    """
    action = action_of(ws, command)
    if action is None:
        if who is None:
            raise auth.PermissionDenied("Sign in to build the demo cohort.")
    else:
        auth.require(who, action)
    args = [str(a) for a in (args or [])]
    key = key or " ".join([command, *args])
    ws.jobs_dir.mkdir(parents=True, exist_ok=True)
    lock = ws.jobs_dir / ".submit.lock"
    with _file_lock(lock):
        running = find_active(ws, key)
        if running is not None:
            return running
        job_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        path = ws.jobs_dir / job_id
        path.mkdir()
        record = {"id": job_id, "command": command, "args": args, "key": key, "owner": who.username,
                  "state": "queued",
                  "done": 0, "total": 0, "message": "starting", "error": None, "pid": None,
                  "created": time.time(), "started": None, "updated": time.time(), "finished": None}
        atomic.write_json(path / "status.json", record)
        cmd = [sys.executable, "-m", "lib", "--workspace", str(ws.root), command, *args, "--job-id", job_id]
        with open(path / "log.txt", "ab") as log:
            proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    env={**os.environ, "PYTHONUNBUFFERED": "1"})
        record["pid"] = proc.pid
        # the child may already have written "running"; only fill in the pid
        current = atomic.read_json(path / "status.json", default=record)
        current["pid"] = proc.pid
        atomic.write_json(path / "status.json", current)
    return Job(path, current)


def cancel_action(who: auth.Identity | None, job: Job) -> str:
    """``cancel_own_job`` for the job's owner, ``cancel_any_job`` for anyone else (a job without owner too)."""
    own = who is not None and job.record.get("owner") is not None and job.record.get("owner") == who.username
    return "cancel_own_job" if own else "cancel_any_job"


def may_cancel(who: auth.Identity | None, job: Job) -> bool:
    return auth.allowed(who, cancel_action(who, job))


def cancel(ws: Workspace, job_id: str, *, who: auth.Identity | None) -> bool:
    """Ask a running job to stop (SIGTERM to its process group), as ``who``. Returns whether it was active.

    Raises ``auth.PermissionDenied`` unless ``who`` may cancel it: their own job needs
    ``cancel_own_job``, anyone else's ``cancel_any_job``.
    """
    job = get(ws, job_id)
    if job is None:
        return False
    auth.require(who, cancel_action(who, job))
    if not job.active:
        return False
    (job.path / CANCEL_MARKER).touch()
    pid = job.record.get("pid")
    if pid and _pid_alive(pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(os.getpgid(pid), signal.SIGTERM)
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


class JobReporter:
    """Used inside the job's process: records state and progress in ``status.json``.

    Progress writes are throttled (at most every ``interval`` seconds) so a fast
    loop does not spend its time rewriting the record.
    """

    def __init__(self, ws: Workspace, job_id: str, interval: float = 0.5):
        self.path = ws.jobs_dir / job_id / "status.json"
        self.record = atomic.read_json(self.path) or {"id": job_id, "created": time.time()}
        self.interval = interval
        self._last = 0.0

    def _write(self, **changes) -> None:
        self.record.update(changes, updated=time.time(), pid=os.getpid())
        atomic.write_json(self.path, self.record)

    def start(self) -> None:
        self._write(state="running", started=time.time(), message="running")

    def progress(self, done: int, total: int, message: str = "") -> None:
        now = time.time()
        if now - self._last >= self.interval or done >= total:
            self._last = now
            self._write(done=int(done), total=int(total), message=message)

    def finish(self, message: str = "done") -> None:
        self._write(state="done", finished=time.time(), message=message,
                    done=self.record.get("total") or self.record.get("done", 0))

    def fail(self, error: str) -> None:
        self._write(state="failed", finished=time.time(), error=error)

    def cancelled(self) -> None:
        self._write(state="cancelled", finished=time.time(), message="cancelled")


def run_as_job(ws: Workspace, job_id: str | None, fn: Callable[[Callable[[int, int, str], None]], str | None],
               *, desc: str = "") -> int:
    """Run ``fn(progress)`` with a terminal progress bar, and record it as job ``job_id`` if given.

    Returns the process exit code: 0 done, 1 failed, 130 cancelled. SIGTERM
    (the cancel button) becomes a clean "cancelled" record.
    """
    from tqdm import tqdm

    reporter = JobReporter(ws, job_id) if job_id else None
    # in a terminal a live bar; in a log file (cluster jobs, CI) a line every 10 s at most
    bar = tqdm(total=0, desc=desc, unit="item", dynamic_ncols=True, file=sys.stderr,
               mininterval=0.5 if sys.stderr.isatty() else 10.0)

    def on_term(signum, frame):
        raise Cancelled()

    previous = signal.signal(signal.SIGTERM, on_term)

    def progress(done: int, total: int, message: str = "") -> None:
        if bar.total != total:
            bar.total = total
        bar.n = done
        bar.set_postfix_str(message[:60], refresh=False)
        bar.refresh()
        if reporter:
            reporter.progress(done, total, message)

    if reporter:
        reporter.start()
    try:
        message = fn(progress)
    except (Cancelled, KeyboardInterrupt):
        bar.close()
        if reporter:
            reporter.cancelled()
        print("cancelled", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - every failure is recorded for the page
        bar.close()
        # the log is complete before the record says the job ended, so a page never shows a short log
        traceback.print_exc()
        sys.stderr.flush()
        if reporter and (reporter.path.parent / CANCEL_MARKER).exists():
            # the stop was asked for; whatever it broke on the way out is not a failure
            reporter.cancelled()
            return 130
        if reporter:
            reporter.fail(f"{type(exc).__name__}: {exc}")
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    bar.close()
    if reporter:
        reporter.finish(message or "done")
    return 0
