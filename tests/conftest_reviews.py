"""Review-database fixtures: one throwaway PostgreSQL cluster per test session, a fresh database per test.

``review_url`` is parametrised, so a test that takes it runs on SQLite (a file in the test's temporary
folder) and on PostgreSQL, connected as a team server's app role (the schema belongs to another role:
see :mod:`lib.reviews.pgsetup`).
"""

from __future__ import annotations

import pytest

from lib.reviews.pgcluster import ThrowawayPostgres


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server for the whole session (Debian's postgresql, installed by ./setup.sh --test)."""
    pg = ThrowawayPostgres().start()
    yield pg
    pg.destroy()


@pytest.fixture(params=["sqlite", "postgresql"])
def review_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'reviews.db'}"
    return request.getfixturevalue("postgres").team_database()[1]
