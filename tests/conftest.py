"""Shared fixtures: one small demo workspace built once per test session through the CLI."""

from __future__ import annotations

import pytest

from lib.cli import main
from lib.data.workspace import Workspace

from conftest_reviews import postgres, review_url  # noqa: F401  (review databases: SQLite and PostgreSQL)

SMALL_DEMO = ["--subjects", "16", "--resolution", "3", "--visits", "2", "--seed", "1"]


@pytest.fixture(scope="session")
def demo_ws(tmp_path_factory) -> Workspace:
    """A 16-subject demo cohort on a 3 mm grid, built with ``python -m lib demo`` (validation included)."""
    root = tmp_path_factory.mktemp("demo_ws")
    assert main(["--workspace", str(root), "demo", *SMALL_DEMO]) == 0
    return Workspace.open(root)


@pytest.fixture(scope="session")
def demo_run(demo_ws):
    """A briefly trained run on the small demo workspace (3 epochs; enough for shapes, caches and plumbing)."""
    from lib.learn.runs import load_run

    assert main(["--workspace", str(demo_ws.root), "train", "--epochs", "3", "--batch-size", "6",
                 "--lr", "1e-3", "--run-id", "fixture-run"]) == 0
    return load_run(demo_ws, "fixture-run")
