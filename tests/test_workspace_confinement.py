"""Workspaces confined to the server's roots: no folder, host or file outside them reachable from the browser.

The dashboard opens a workspace through :func:`lib.data.workspace.open_confined`, reads tables through
:meth:`Workspace.readable_path`, and the review database through :func:`lib.reviews.db.database_url`;
these are the library halves of what ``tests/test_browser_confine.py`` checks in a browser.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from lib.reviews import auth
from lib import jobs
from lib.reviews.db import DatabaseNotAllowed, DatabaseUnavailable, database_url
from lib.data.workspace import (REFUSED, Workspace, WorkspaceError, WorkspaceRefused, allowed_roots, discover,
                           open_confined)

from test_cli import _good_table

ADMIN = auth.Identity("tester", "admin")


@pytest.fixture()
def server(tmp_path, monkeypatch):
    """A server whose default workspace is ``<tmp>/served/demo`` and whose settings add ``<tmp>/labs``."""
    served, labs = tmp_path / "served", tmp_path / "labs"
    (served / "demo").mkdir(parents=True)
    labs.mkdir()
    monkeypatch.setenv("RELEVANCE_ATLAS_WORKSPACE", str(served / "demo"))
    monkeypatch.setenv("RELEVANCE_ATLAS_CONFIG", str(tmp_path / "server.toml"))
    monkeypatch.setenv("RELEVANCE_ATLAS_WORKSPACE_ROOTS", str(labs))
    monkeypatch.delenv("RELEVANCE_ATLAS_DB", raising=False)
    return tmp_path


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_allowed_roots_are_the_settings_and_the_default_parent(server):
    assert allowed_roots() == ((server / "served").resolve(), (server / "labs").resolve())


@pytest.mark.parametrize("asked", ["/etc", "/", "../..", "..", "/proc/self/cwd", "~", "/etc/../etc/passwd",
                                   "{served}/../outside", "{served}/demo/../../outside", "a\x00b"])
def test_a_folder_outside_the_roots_is_refused_without_saying_whether_it_exists(server, asked):
    (server / "outside").mkdir()
    (server / "outside" / "workspace.json").write_text("{}")
    asked = asked.format(served=server / "served")
    with pytest.raises(WorkspaceRefused) as exc:
        open_confined(asked)
    assert REFUSED in str(exc.value)
    # the same words for a folder that exists and one that does not
    with pytest.raises(WorkspaceRefused) as missing:
        open_confined("/no/such/folder/anywhere")
    assert str(exc.value).split("` refused")[1] == str(missing.value).split("` refused")[1]


def test_a_symlink_out_of_the_roots_is_refused(server):
    (server / "outside").mkdir()
    Workspace.create(server / "outside" / "ws")
    (server / "labs" / "link").symlink_to(server / "outside" / "ws")
    with pytest.raises(WorkspaceRefused):
        open_confined(server / "labs" / "link")
    assert (server / "outside" / "ws").resolve() not in discover()


def test_inside_the_roots_only_existing_workspaces_open_and_nothing_is_created(server):
    before = _tree(server)
    for asked in (server / "labs" / "new", server / "labs" / "new" / "deeper", server / "labs"):
        with pytest.raises(WorkspaceError, match="holds no workspace") as exc:
            open_confined(asked)
        assert not isinstance(exc.value, WorkspaceRefused)
    assert _tree(server) == before
    study = Workspace.create(server / "labs" / "study", name="Study")
    assert open_confined(str(server / "labs" / "study")).name == "Study"
    # the default workspace opens even before it is built (the demo is built there)
    assert open_confined(server / "served" / "demo").root == (server / "served" / "demo").resolve()
    assert discover() == [(server / "served" / "demo").resolve(), study.root]


def test_data_roots_outside_the_server_roots_are_ignored(server):
    ws = Workspace.create(server / "labs" / "study", data_roots=["/", str(server / "labs" / "scans")])
    assert ws.data_roots == [ws.root, (server / "labs" / "scans").resolve()]
    assert ws.ignored_data_roots == [Path("/")]
    assert not ws.is_inside_data_roots("/etc/passwd")
    # a workspace the dashboard cannot open (command line only) keeps what its owner configured
    own = Workspace.create(server / "elsewhere", data_roots=["/srv/scans"])
    assert own.data_roots == [own.root, Path("/srv/scans").resolve()] and own.ignored_data_roots == []


def test_a_table_path_outside_the_roots_is_refused_whether_or_not_it_exists(server):
    ws = Workspace.create(server / "labs" / "study", data_roots=["/etc"])
    messages = set()
    for asked in ("/etc/passwd", "/etc/no-such-file", "../../../../../../etc/passwd", "/root/.ssh/id_rsa"):
        with pytest.raises(WorkspaceRefused) as exc:
            ws.readable_path(asked)
        messages.add(str(exc.value).split("` refused")[1])
    assert len(messages) == 1
    assert ws.readable_path("cohort.csv") == ws.root / "cohort.csv"
    assert ws.readable_path(server / "served" / "t.csv") == (server / "served" / "t.csv").resolve()


@pytest.mark.parametrize("text, problem", [
    ("{not json", "not valid JSON"), ("", "not valid JSON"), ("[1, 2]", "expected a JSON object"),
    ("null", "expected a JSON object"), ('{"resolution": "fine"}', "resolution must be a positive number"),
    ('{"data_roots": "/"}', "data_roots must be a list"), (b"\xff\xfe{", "not a text file")])
def test_a_garbled_workspace_json_is_one_clear_error_naming_the_file(tmp_path, text, problem):
    (tmp_path / "workspace.json").write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(WorkspaceError) as exc:
        Workspace.open(tmp_path)
    assert str(tmp_path / "workspace.json") in str(exc.value) and problem in str(exc.value)


def test_the_cli_reports_a_garbled_workspace_json_without_a_traceback(tmp_path, capsys):
    from lib.cli import main

    (tmp_path / "workspace.json").write_text("{oops")
    assert main(["--workspace", str(tmp_path), "jobs"]) == 1
    err = capsys.readouterr().err
    assert "not valid JSON" in err and "Traceback" not in err


def test_reviews_db_naming_a_foreign_host_is_refused(server):
    ws = Workspace.create(server / "labs" / "study")
    for foreign in ("postgresql://attacker@evil.example/x", "postgresql://lab@db.internal/reviews?host=evil",
                    "/etc/shadow", "sqlite:////tmp/elsewhere.db", "../other/reviews.db",
                    "sqlite:///" + str(ws.root / "r.db") + "?uri=true"):
        ws.update_config(reviews_db=foreign)
        with pytest.raises(DatabaseNotAllowed) as exc:
            database_url(ws)
        assert isinstance(exc.value, DatabaseUnavailable)  # the pages' existing handlers catch it
        assert "review_databases" in str(exc.value)
    # a SQLite file inside the workspace is its own business
    ws.update_config(reviews_db="sub/reviews.db")
    assert database_url(ws) == f"sqlite:///{ws.root / 'sub' / 'reviews.db'}"
    # a database the server lists is allowed (the password does not choose the database)
    (server / "server.toml").write_text('review_databases = ["postgresql://lab@db.internal/reviews"]\n')
    ws.update_config(reviews_db="postgresql://lab:secret@db.internal/reviews")
    assert database_url(ws) == "postgresql+psycopg://lab:secret@db.internal/reviews"
    ws.update_config(reviews_db="postgresql://lab@db.internal/other")
    with pytest.raises(DatabaseNotAllowed):
        database_url(ws)


def _wait(ws: Workspace, job_id: str, timeout: float = 120) -> jobs.Job:
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = jobs.get(ws, job_id)
        if job is not None and not job.active:
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} still running: {jobs.get(ws, job_id).record}")


def test_the_init_job_of_another_folder_reports_done(tmp_path):
    """The Cohort page submits ``init TARGET`` as a job of the current workspace: the record must end done."""
    asking = Workspace.create(tmp_path / "asking")
    target = tmp_path / "study"
    table = _good_table(target, n=6)
    job = jobs.submit(asking, jobs.CreateWorkspace(table=str(table), directory=str(target), resolution=4.0), who=ADMIN)
    done = _wait(asking, job.id)
    assert done.state == "done", (done.record, done.log_tail())
    assert "workspace ready" in done.message
    assert json.loads((target / "workspace.json").read_text())["n_scans"] == 6
    assert not (target / "jobs").exists()  # the record stayed with the workspace that asked


def test_a_refused_init_job_reports_failed_with_the_reason(tmp_path):
    asking = Workspace.create(tmp_path / "asking")
    target = tmp_path / "study"
    table = _good_table(target, n=4)
    table.write_text(table.read_text().replace("scans/p1.nii.gz", "scans/absent.nii.gz"))
    job = jobs.submit(asking, jobs.CreateWorkspace(table=str(table), directory=str(target), resolution=4.0), who=ADMIN)
    done = _wait(asking, job.id)
    assert done.state == "failed" and "not initialised" in done.error and "1 error" in done.error
    assert not (target / "workspace.json").exists()
    assert os.path.exists(done.path / "log.txt") and "missing_file" in done.log_tail(100)
