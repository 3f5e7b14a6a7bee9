"""A background job yields the CPU to the dashboard: the worker lowers its own priority before it runs."""

from __future__ import annotations

from lib.jobs import worker


def test_the_worker_runs_its_job_at_a_lower_priority(monkeypatch):
    order = []
    monkeypatch.setattr(worker.os, "nice", lambda inc: order.append(("nice", inc)))
    monkeypatch.setattr(worker, "run", lambda root, job: order.append(("run", root, job)) or 0)
    assert worker.main(["/ws", "job-1"]) == 0
    assert order == [("nice", worker.NICENESS), ("run", "/ws", "job-1")] and worker.NICENESS >= 5
    order.clear()
    assert worker.main(["only-one"]) == 2 and order == []   # a wrong call runs nothing and stays as it was
