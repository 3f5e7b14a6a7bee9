"""How long work reports progress and learns it was cancelled, shared by every layer."""

from __future__ import annotations

from collections.abc import Callable, Sequence

# progress(done, total, message): called by long work; a job writes it where the pages read it
Progress = Callable[[int, int, str], None]

STAGE_UNITS = 10_000
"""Units of a job made of stages (:func:`stages`): fine enough for a smooth bar and estimate."""


class Cancelled(BaseException):
    """Raised by SIGTERM in a job. A BaseException, like KeyboardInterrupt, so that library code's
    ``except Exception`` handlers cannot swallow or re-wrap it."""


def stages(progress: Progress, weights: Sequence[float], labels: Sequence[str]) -> list[Progress]:
    """One progress report for work done in stages: stage ``i`` fills its share ``weights[i] / sum(weights)``
    of one bar (weights in expected seconds keep the estimate of time left honest), its messages prefixed
    with ``labels[i]``. A stage that reports nothing (a cached result) jumps to its end when the next reports."""
    total = float(sum(weights)) or 1.0
    starts = [sum(weights[:i]) / total for i in range(len(weights))]

    def part(i: int) -> Progress:
        def report(done: int, of: int, message: str = "") -> None:
            share = min(done / of, 1.0) if of else 0.0
            fraction = starts[i] + share * weights[i] / total
            progress(round(fraction * STAGE_UNITS), STAGE_UNITS, f"{labels[i]}: {message}" if message else labels[i])
        return report

    return [part(i) for i in range(len(weights))]


def time_left(now: float, done: float, total: float, anchor: tuple[float, float] | None,
              started: float | None = None) -> float | None:
    """Seconds left at the rate measured since ``anchor`` = (time, done) of the first report with work done.

    Measuring from the first finished item rather than from the start leaves start-up and a slow first item
    (imports, loading a model, filling caches) out of the rate, so the estimate does not start several times
    too high and then drift. Without an anchor (a record written before there was one) the rate since
    ``started`` is used. None while nothing can be measured."""
    if not total or done >= total:
        return None
    t0, d0 = anchor if anchor else (started, 0.0) if started else (None, None)
    if t0 is None or done <= d0 or now <= t0:
        return None
    return (now - t0) / (done - d0) * (total - done)
