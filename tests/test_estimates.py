"""Time left of a job, from measured rates: steady within ±30 % of the truth once a tenth of the job is done,
even when start-up and the first item are slow (a model loaded, caches filled)."""

from __future__ import annotations

import random

import pytest

from lib import jobs
from lib.core.progress import STAGE_UNITS, stages
from lib.data.workspace import Workspace


class Clock:
    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr("time.time", c)
    return c


def _job(tmp_path, clock):
    ws = Workspace(root=tmp_path, config={})
    (ws.jobs_dir / "j1").mkdir(parents=True)
    reporter = jobs.JobReporter(ws, "j1")
    reporter.start()
    return ws, reporter


def _check(ws, durations, reports, clock, first_checked: float = 0.1):
    """Run a synthetic job: item i takes ``durations[i]`` s and ``reports[i]()`` is called after it; after each
    item once ``first_checked`` of the items are done (what the bar shows), the estimate read from the job record
    is compared with the truth."""
    total_time, elapsed, worst = sum(durations), 0.0, 0.0
    for i, (d, report) in enumerate(zip(durations, reports)):
        clock.now += d
        elapsed += d
        report()
        truth = total_time - elapsed
        if i + 1 < first_checked * len(durations) or i == len(durations) - 1:
            continue
        estimate = jobs.get(ws, "j1").eta_seconds
        assert estimate is not None, f"no estimate after item {i + 1}"
        error = estimate / truth - 1
        worst = max(worst, abs(error))
        assert abs(error) <= 0.30, f"after item {i + 1}: estimate {estimate:.0f} s, truth {truth:.0f} s"
    return worst


def test_estimate_is_steady_after_a_tenth_with_a_slow_start_and_first_item(tmp_path, clock):
    ws, reporter = _job(tmp_path, clock)
    rng = random.Random(0)
    n = 120
    # 25 s of start-up before anything is reported, a first item 15× slower (warm-up), then ~2 s ± 30 % each
    durations = [25.0 + 30.0] + [2.0 * rng.uniform(0.7, 1.3) for _ in range(n - 1)]
    reporter.progress(0, n, "starting")
    reports = [lambda i=i: reporter.progress(i + 1, n, f"{i + 1}/{n} scans") for i in range(n)]
    worst = _check(ws, durations, reports, clock)
    assert worst < 0.30


def test_estimate_of_a_job_in_weighted_stages(tmp_path, clock):
    """Stages weighted by their expected seconds: one bar, one steady estimate across stages of different
    per-item speed (the first start: the cohort, predictions, heatmaps, …)."""
    ws, reporter = _job(tmp_path, clock)
    build, explain = stages(reporter.progress, [100, 60], ["cohort", "heatmaps"])
    durations = [4.0] + [2.0] * 49 + [3.0] * 20   # 50 scans at ~2 s, then 20 maps at 3 s
    reports = [lambda i=i: build(i + 1, 50, "scan") for i in range(50)] + \
              [lambda i=i: explain(i + 1, 20, "map") for i in range(20)]
    _check(ws, durations, reports, clock)
    record = jobs.get(ws, "j1").record
    assert record["total"] == STAGE_UNITS and record["done"] == STAGE_UNITS
    assert record["message"].startswith("heatmaps: ")


def test_the_old_estimate_from_the_start_would_fail_this_job(tmp_path, clock):
    """The rate since the start (start-up and warm-up included) is 3× too slow at a tenth: what the anchor fixes."""
    ws, reporter = _job(tmp_path, clock)
    n = 100
    reporter.progress(0, n)
    clock.now += 60.0
    reporter.progress(1, n)
    for i in range(2, 11):
        clock.now += 2.0
        reporter.progress(i, n)
    record = dict(jobs.get(ws, "j1").record)
    truth = 90 * 2.0
    assert jobs.get(ws, "j1").eta_seconds == pytest.approx(truth, rel=0.01)
    record.pop("rate_from")
    legacy = jobs.Job(ws.jobs_dir / "j1", record).eta_seconds
    assert legacy > 2.5 * truth
