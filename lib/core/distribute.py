"""Work split into chunks that may run on other machines (a Ray cluster) without the work knowing where.

Work that repeats one computation over many scans (heatmaps) or many runs (repeated trainings) is written as a
module-level function of plain arguments (a workspace folder, a run id, row numbers), called once per chunk;
each call writes its own result into the shared workspace atomically and returns something small. The caller
hands the calls to the current :class:`Distributor` and absorbs each result as it arrives.

With no distributor (the default: a laptop, one GPU server) callers keep their in-process loops and nothing of a
cluster is imported. The job worker installs one (:func:`using`) for a job submitted to a cluster
(:mod:`lib.jobs.cluster`).
"""

from __future__ import annotations

import contextlib
import math
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Protocol, Sequence


class ClusterError(Exception):
    """The cluster cannot run the work (unreachable, its head gone); the message says what was kept and that
    submitting the job again computes only what is missing."""


@dataclass(frozen=True)
class Call:
    """One chunk: ``fn(*args)`` on some worker. ``fn`` is a module-level function (importable where it runs);
    ``gpu``: it wants a GPU where the cluster has one."""

    fn: Callable
    args: tuple = ()
    gpu: bool = False
    label: str = ""
    kwargs: dict = field(default_factory=dict)


class Distributor(Protocol):
    name: str

    def workers(self, gpu: bool = False) -> int:
        """How many calls can run at once (GPUs when ``gpu`` and the cluster has any, else CPU slots)."""

    def run(self, calls: Sequence[Call], on_wait: Callable[[int], None] | None = None
            ) -> Iterator[tuple[int, Any]]:
        """Yield ``(index of the call, its result)`` as each call finishes. A call whose worker dies is run
        again; a call that raises re-raises here. ``on_wait(running)`` is called about every second while
        nothing finishes, with the number of calls running. Closing the iterator early (an exception, a
        cancel) cancels every call still queued or running."""


_current: ContextVar[Distributor | None] = ContextVar("distributor", default=None)


def current() -> Distributor | None:
    """The distributor of the running job, or None: run here."""
    return _current.get()


@contextlib.contextmanager
def using(distributor: Distributor | None):
    token = _current.set(distributor)
    try:
        yield distributor
    finally:
        _current.reset(token)


def chunk_rows(rows: Sequence[int], batch_size: int, workers: int, per_chunk: int | None = None,
               most: int = 64) -> list[list[int]]:
    """``rows`` in consecutive chunks whose sizes are multiples of ``batch_size``: every batch inside a chunk is
    the batch a local run computes (equal results), and there are about four chunks per worker, so a killed
    worker costs little and the last chunks do not leave workers idle. At most ``most`` rows (64 maps at 1 mm
    are a 1.1 GB chunk file)."""
    rows = [int(r) for r in rows]
    if not rows:
        return []
    batch_size = max(1, int(batch_size))
    size = per_chunk or max(batch_size, min(most, math.ceil(len(rows) / (4 * max(1, workers)))))
    size = math.ceil(size / batch_size) * batch_size
    return [rows[i:i + size] for i in range(0, len(rows), size)]


def busy(n: int) -> str:
    """``"2 workers busy"``: the progress message's part that says how many workers a job uses now."""
    return f"{n} worker{'s' if n != 1 else ''} busy"
