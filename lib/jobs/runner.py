"""Running work as a job: the process side of a job record (state, progress, outcome, cancellation)."""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback
from typing import Callable

from lib.core import atomic
from lib.core.distribute import ClusterError
from lib.core.progress import Cancelled
from lib.data.workspace import Workspace
from lib.jobs.request import RequestError

CANCEL_MARKER = "cancel-requested"


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
        self._total = None

    def _write(self, **changes) -> None:
        self.record.update(changes, updated=time.time(), pid=os.getpid())
        atomic.write_json(self.path, self.record)

    def start(self) -> None:
        self._write(state="running", started=time.time(), message="running")

    def progress(self, done: int, total: int, message: str = "") -> None:
        now = time.time()
        if done > 0 and (not self.record.get("rate_from") or self._total != total):
            # the time left is measured from the first finished item on (lib.core.progress.time_left)
            self.record["rate_from"], self._total = [now, int(done)], total
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


class JobProgress:
    """The ``progress(done, total, message)`` a job's work is given: a terminal bar, and the job's record when
    it runs as job ``job_id`` (work that names its job in what it writes, like a training run, reads it).

    The bar appears at the first report, so work that has nothing to do (a cached result) prints none; it shows
    a percentage, not the work's own units (region tables count per mille, not items)."""

    def __init__(self, desc: str, reporter: JobReporter | None):
        self.desc, self.reporter, self.bar = desc, reporter, None
        self.job_id = reporter.path.parent.name if reporter else None

    def __call__(self, done: int, total: int, message: str = "") -> None:
        if self.bar is None:
            from tqdm import tqdm

            # in a terminal a live bar; in a log file (cluster jobs, CI) a line every 10 s at most
            self.bar = tqdm(total=total, desc=self.desc, dynamic_ncols=True, file=sys.stderr,
                            mininterval=0.5 if sys.stderr.isatty() else 10.0,
                            bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining}{postfix}")
        if self.bar.total != total:
            self.bar.total = total
        self.bar.n = done
        self.bar.set_postfix_str(message[:60], refresh=False)
        self.bar.refresh()
        if self.reporter:
            self.reporter.progress(done, total, message)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_as_job(ws: Workspace, job_id: str | None, fn: Callable[[JobProgress], str | None], *, desc: str = "") -> int:
    """Run ``fn(progress)`` with a terminal progress bar, and record it as job ``job_id`` if given.

    Returns the process exit code: 0 done, 1 failed, 130 cancelled. SIGTERM
    (the cancel button) becomes a clean "cancelled" record. A :class:`RequestError` (a request that cannot
    run as asked) or a ``ClusterError`` (the cluster went away) is recorded and printed as its message alone;
    any other failure with its traceback.
    """
    reporter = JobReporter(ws, job_id) if job_id else None
    bar = JobProgress(desc, reporter)

    interrupted = []

    def on_term(signum, frame):
        raise Cancelled()

    def on_int(signum, frame):   # Ctrl-C: remembered, since inside a C extension's import it surfaces as an
        interrupted.append(signum)   # ImportError ("initialization failed"), not as KeyboardInterrupt
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    previous_int = signal.signal(signal.SIGINT, on_int)
    if reporter:
        reporter.start()
    try:
        message = fn(bar)
    except (Cancelled, KeyboardInterrupt):
        bar.close()
        if reporter:
            reporter.cancelled()
        print("cancelled", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - every failure is recorded for the page
        bar.close()
        # the log is complete before the record says the job ended, so a page never shows a short log
        if isinstance(exc, (RequestError, ClusterError)):
            print(f"error: {exc}", file=sys.stderr)
        else:
            traceback.print_exc()
        sys.stderr.flush()
        if interrupted or (reporter and (reporter.path.parent / CANCEL_MARKER).exists()):
            # the stop was asked for; whatever it broke on the way out is not a failure
            if reporter:
                reporter.cancelled()
            print("cancelled", file=sys.stderr)
            return 130
        if reporter:
            plain = isinstance(exc, (RequestError, ClusterError))
            reporter.fail(str(exc) if plain else f"{type(exc).__name__}: {exc}")
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
    bar.close()
    if reporter:
        reporter.finish(message or "done")
    return 0
