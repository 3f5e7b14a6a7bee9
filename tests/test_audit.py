"""The review audit against its own database role: hash chain, verify, SQLite triggers, PostgreSQL roles."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from lib.reviews import auth
from lib.cli import main
from lib.reviews import DatabaseUnavailable, ReviewStore, db
from lib.reviews.audit import canonical, canonical_around_id, chain_hash

ALICE = auth.Identity("alice", "reviewer")
ADMIN = auth.Identity("ada", "admin")
SCAN = {"kind": "scan", "scan_id": "sub-001"}


def _history(store: ReviewStore) -> list[int]:
    """Three reviews, seven audit rows; returns the review ids."""
    a = store.create(ALICE, SCAN, {}, verdict="plausible", text="first")
    store.edit(ALICE, a.id, 1, text="first, edited")
    store.resolve(ADMIN, a.id, 2)
    b = store.create(ALICE, {"kind": "scan", "scan_id": "sub-002"}, {}, verdict="unsure", text="second")
    store.delete(ALICE, b.id, 1)
    c = store.reply(ADMIN, a.id, "a reply")
    store.edit(ADMIN, c.id, 1, text="a reply, edited")
    return [a.id, b.id, c.id]


def _superuser_url(url: str) -> str:
    return url.replace("//atlas_app@", "//postgres@", 1)


class Tamper:
    """Raw SQL as someone who got past the database's protection (dropped triggers / a superuser)."""

    def __init__(self, url: str):
        self.sqlite = url.startswith("sqlite")
        if self.sqlite:
            self.conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
            for (name,) in self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
                self.conn.execute(f"DROP TRIGGER {name}")
        else:
            self.engine = sa.create_engine(_superuser_url(url))

    def __call__(self, sql: str, **params) -> None:
        if self.sqlite:
            self.conn.execute(sql, params)
            return
        with self.engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE review_audit DISABLE TRIGGER USER")
            conn.execute(sa.text(sql), params)
            conn.exec_driver_sql("ALTER TABLE review_audit ENABLE TRIGGER USER")

    def row(self, id_: int) -> dict:
        q = ("SELECT id, review_id, version, action, actor, at, snapshot, prev_hash, row_hash FROM review_audit "
             "WHERE id = :id")
        if self.sqlite:
            self.conn.row_factory = sqlite3.Row
            return dict(self.conn.execute(q, {"id": id_}).fetchone())
        with self.engine.connect() as conn:
            return dict(conn.execute(sa.text(q), {"id": id_}).mappings().one())


def _verify(url: str) -> tuple[int, str]:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(["audit", "verify", "--db", url])
    return rc, out.getvalue()


def test_chain_links_every_row_and_verify_says_ok(review_url, capsys):
    store = ReviewStore(review_url, workspace="test")
    _history(store)
    with store.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT prev_hash, row_hash FROM review_audit ORDER BY id")).all()
    assert len(rows) == 7 and rows[0][0] == "0" * 64
    assert all(rows[i][0] == rows[i - 1][1] for i in range(1, 7))
    rc, out = _verify(review_url)
    assert rc == 0 and "OK: 7 audit rows" in out and rows[-1][1] in out


# strings that look like the id key, quotes, backslashes, control characters, non-ASCII and non-BMP text
_AWKWARD = ['x","id":0,"', '"id":0,', "Ärztin \\ 你好 🧠", "tab\tnew\nline\u001fend"]


def test_canonical_around_id_is_canonical_with_the_id_left_out():
    at = datetime(2026, 12, 5, 4, 0, 0, 7, tzinfo=timezone.utc)
    for s in [*_AWKWARD, "NUL\u0000"]:
        snap = {"text": s, "tags": [s], "id": 5, s: None}
        prefix, suffix = canonical_around_id(3, 2, s, s, at, snap)
        for id_ in (1, 12345678901):
            assert (prefix + str(id_) + suffix).encode() == canonical(id_, 3, 2, s, s, at, snap)


def test_awkward_text_chains_and_verifies(review_url):
    """On PostgreSQL the server hashes the row: its bytes must be the ones verify recomputes."""
    store = ReviewStore(review_url, workspace="test")
    for s in _AWKWARD:
        who = auth.Identity(s, "reviewer")
        r = store.create(who, {"kind": "scan", "scan_id": s}, {"note": s}, verdict="plausible", text=s, tags=[s])
        store.edit(who, r.id, 1, text=s + " 🧠")
    v = store.verify_audit()
    assert v.ok and v.rows == 2 * len(_AWKWARD), v.problem
    with store.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT prev_hash, row_hash FROM review_audit ORDER BY id")).all()
    assert all(rows[i][0] == rows[i - 1][1] for i in range(1, len(rows)))


@pytest.mark.parametrize("attack", ["alter", "delete_middle", "replace", "delete_tail", "review_edit"])
def test_verify_reports_the_first_broken_link(review_url, attack):
    store = ReviewStore(review_url, workspace="test")
    a, b, c = _history(store)
    tamper = Tamper(review_url)
    if attack == "alter":  # rewrite what an earlier version said
        tamper("UPDATE review_audit SET actor = 'mallory' WHERE id = 2")
        expect = ("audit row #2", "altered")
    elif attack == "delete_middle":
        tamper("DELETE FROM review_audit WHERE id = 3")
        expect = ("audit row #4", "does not link to row #2")
    elif attack == "replace":  # a forged row with a hash that fits its own content
        r = tamper.row(4)
        at = r["at"] if isinstance(r["at"], datetime) else datetime.fromisoformat(r["at"]).replace(tzinfo=timezone.utc)
        snap = {"verdict": "implausible", "text": "forged", "tags": [], "status": "open", "deleted": False,
                "parent_id": None, "target_key": "scan:sub-002", "author": "alice"}
        h = chain_hash(r["prev_hash"], canonical(4, r["review_id"], r["version"], r["action"], r["actor"], at, snap))
        tamper("UPDATE review_audit SET snapshot = :snap, row_hash = :h WHERE id = 4",
               snap=json.dumps(snap), h=h)
        expect = ("audit row #5", "row #4 was replaced")
    elif attack == "delete_tail":
        tamper("DELETE FROM review_audit WHERE id = 7")
        expect = (f"review #{c}", "no row for version 2")
    else:  # the review itself rewritten, no audit row: the app role may UPDATE reviews
        with store.engine.begin() as conn:
            conn.execute(sa.text("UPDATE reviews SET text = 'rewritten' WHERE id = :i"), {"i": a})
        expect = (f"review #{a}", "changed outside the application")
    verdict = store.verify_audit()
    assert not verdict.ok
    assert expect[0] in verdict.problem and expect[1] in verdict.problem, verdict.problem
    rc, out = _verify(review_url)
    assert rc == 1 and "BROKEN" in out and expect[0] in out


def test_sqlite_insert_or_replace_cannot_overwrite_an_audit_row(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    store = ReviewStore(url, workspace="test")
    a, _, _ = _history(store)
    conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    before = conn.execute("SELECT * FROM review_audit ORDER BY id").fetchall()
    for values in ("(1, :a, 1, 'create', 'mallory', '2020-01-01', '{}', 'x', 'y')",    # same id
                   "(100, :a, 1, 'create', 'mallory', '2020-01-01', '{}', 'x', 'y')",  # same review+version
                   "(100, :a, 50, 'create', 'mallory', '2020-01-01', '{}', :p, 'y')"):  # same predecessor
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("INSERT OR REPLACE INTO review_audit (id, review_id, version, action, actor, at, snapshot, "
                         f"prev_hash, row_hash) VALUES {values}", {"a": a, "p": before[1][7]})
    for stmt in ("UPDATE review_audit SET actor = 'mallory'", "DELETE FROM review_audit"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute(stmt)
    assert conn.execute("SELECT * FROM review_audit ORDER BY id").fetchall() == before
    assert store.verify_audit().ok


def test_postgres_app_role_cannot_rewrite_the_audit_but_works(postgres):
    owner_url, app_url = postgres.team_database()
    store = ReviewStore(app_url, workspace="test")
    ids = _history(store)
    auth.add_user(store, "bob", "reviewer", "a long enough password")  # accounts work as the app role
    attacks = ["UPDATE review_audit SET actor = 'mallory'", "DELETE FROM review_audit", "TRUNCATE review_audit",
               "ALTER TABLE review_audit DISABLE TRIGGER ALL",
               "ALTER TABLE review_audit DISABLE TRIGGER review_audit_append_only",
               "DROP TRIGGER review_audit_append_only ON review_audit",
               "DROP TABLE review_audit CASCADE",
               "ALTER TABLE review_audit OWNER TO atlas_app",
               "CREATE OR REPLACE FUNCTION review_audit_append_only() RETURNS trigger LANGUAGE plpgsql "
               "AS $$ BEGIN RETURN NEW; END $$",
               "INSERT INTO review_audit SELECT * FROM review_audit WHERE id = 1 "
               "ON CONFLICT (id) DO UPDATE SET actor = 'mallory'",
               # the append function may be called, not replaced (say, by one that writes any hash)
               "CREATE OR REPLACE FUNCTION review_audit_append(integer, integer, text, text, timestamptz, json, "
               "text, text) RETURNS integer LANGUAGE sql AS $$ SELECT 0 $$",
               "DROP FUNCTION review_audit_append",
               "ALTER FUNCTION review_audit_append OWNER TO atlas_app"]
    for stmt in attacks:
        with pytest.raises(DBAPIError, match="permission denied|must be owner"):
            with store.engine.begin() as conn:
                conn.exec_driver_sql(stmt)
    with store.engine.begin() as conn:
        conn.exec_driver_sql("GRANT UPDATE, DELETE, TRUNCATE ON review_audit TO atlas_app")  # only a warning
        rights = conn.exec_driver_sql("SELECT privilege_type FROM information_schema.table_privileges WHERE "
                                      "grantee = 'atlas_app' AND table_name = 'review_audit'").scalars().all()
    assert sorted(rights) == ["INSERT", "SELECT"]
    with store.engine.connect() as conn:
        owner, definer, may_run = conn.exec_driver_sql(
            "SELECT pg_get_userbyid(proowner), prosecdef, has_function_privilege(oid, 'EXECUTE') FROM pg_proc "
            "WHERE proname = 'review_audit_append'").one()
    assert owner != "atlas_app" and not definer and may_run  # runs with the app role's own rights
    # even the owner cannot empty it by TRUNCATE while the triggers stand
    with pytest.raises(DBAPIError, match="append-only"):
        with sa.create_engine(owner_url).begin() as conn:
            conn.exec_driver_sql("TRUNCATE review_audit")
    v = store.verify_audit()
    assert v.ok and v.rows == 7 and len(store.history(ids[0])) == 3


def _at_revision_0001(url: str) -> None:
    """The schema as before the chain, with a review and two audit rows written the old way."""
    from alembic import command

    engine = db.make_engine(db.normalise_url(url))
    cfg = db._alembic_config()
    now = datetime(2026, 11, 30, 12, 0, 0, 123456, tzinfo=timezone.utc)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
        conn.execute(sa.text(
            "INSERT INTO reviews (id, uid, workspace, target_kind, target_key, target, settings, verdict, text, tags, "
            "author, created_at, updated_at, updated_by, status, deleted, blinded, version) VALUES (1, 'u1', "
            "'test', 'scan', 'scan:s1', '{\"kind\": \"scan\", \"scan_id\": \"s1\"}', '{}', 'plausible', 'v2', '', "
            "'alice', :t, :t, 'alice', 'open', false, false, 2)"), {"t": now})
        for v, txt in ((1, "v1"), (2, "v2")):
            snap = ('{"verdict": "plausible", "text": "%s", "tags": [], "status": "open", "deleted": false, '
                    '"parent_id": null, "target_key": "scan:s1", "author": "alice"}' % txt)
            conn.execute(sa.text("INSERT INTO review_audit (review_id, version, action, actor, at, snapshot) "
                                 "VALUES (1, :v, :a, 'alice', :t, :s)"),
                         {"v": v, "a": "create" if v == 1 else "edit", "t": now, "s": snap})
    engine.dispose()


def test_migration_chains_existing_rows(tmp_path, postgres):
    sqlite_url = f"sqlite:///{tmp_path / 'old.db'}"
    _at_revision_0001(sqlite_url)
    store = ReviewStore(sqlite_url, workspace="test")  # opening migrates
    v = store.verify_audit()
    assert v.ok and v.rows == 2
    store.edit(ALICE, 1, 2, text="v3")
    assert store.verify_audit().ok and [h.snapshot["text"] for h in store.history(1)] == ["v1", "v2", "v3"]
    conn = sqlite3.connect(str(tmp_path / "old.db"))
    assert {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")} == {
        "review_audit_no_update", "review_audit_no_delete", "review_audit_no_replace"}

    # PostgreSQL: an app role meets an old schema it may not upgrade, and is told who can
    postgres.create_role("atlas_owner")
    postgres.create_role("atlas_app")
    owner_url = postgres.create_database(owner="atlas_owner")
    app_url = owner_url.replace("//atlas_owner@", "//atlas_app@", 1)
    _at_revision_0001(owner_url)
    from lib.reviews import pgsetup

    with sa.create_engine(owner_url).begin() as conn:
        for stmt in pgsetup.grants("atlas_app", owner_url.rsplit("/", 1)[1]):
            conn.exec_driver_sql(stmt)
    with pytest.raises(DatabaseUnavailable) as err:
        ReviewStore(app_url, workspace="test")
    msg = str(err.value)
    assert "revision 0001" in msg and "needs 0003" in msg and "reviews migrate --owner-url" in msg
    assert main(["reviews", "migrate", "--owner-url", owner_url]) == 0
    store = ReviewStore(app_url, workspace="test")
    store.edit(ALICE, 1, 2, text="v3")
    v = store.verify_audit()
    assert v.ok and v.rows == 3


def test_setup_postgres_refuses_an_app_role_that_could_disable_triggers(postgres, capsys):
    owner_url, _ = postgres.team_database(owner="own2", app="app2")
    assert main(["reviews", "setup-postgres", "--owner-url", owner_url, "--app-role", "postgres"]) == 1
    assert "superuser" in capsys.readouterr().err
    assert main(["reviews", "setup-postgres", "--owner-url", owner_url, "--app-role", "nobody_here"]) == 1
    assert "createuser" in capsys.readouterr().err
    assert main(["reviews", "setup-postgres", "--owner-url", owner_url, "--app-role", "app2"]) == 0  # idempotent
    assert "GRANT SELECT, INSERT ON review_audit TO \"app2\"" in capsys.readouterr().out


def test_audit_verify_reads_the_workspace_database(tmp_path, monkeypatch, capsys):
    from lib.data.workspace import Workspace

    monkeypatch.delenv("RELEVANCE_ATLAS_DB", raising=False)
    ws = Workspace.create(tmp_path / "ws")
    assert main(["--workspace", str(ws.root), "audit", "verify"]) == 0
    assert "OK: 0 audit rows" in capsys.readouterr().out
    store = ReviewStore.for_workspace(ws)
    _history(store)
    assert main(["--workspace", str(ws.root), "audit", "verify"]) == 0
    out = capsys.readouterr().out
    assert "reviews.db" in out and "OK: 7 audit rows" in out
    Tamper(store.url)("UPDATE review_audit SET snapshot = '{}' WHERE id = 5")
    assert main(["--workspace", str(ws.root), "audit", "verify"]) == 1
    assert "BROKEN: audit row #5" in capsys.readouterr().out


def test_postgres_appends_stay_chained_with_and_without_the_early_lock_release(postgres):
    from concurrent.futures import ThreadPoolExecutor

    for revoke in (False, True):
        _, app_url = postgres.team_database()
        if revoke:  # an administrator may have revoked it: every append then commits synchronously
            with sa.create_engine(_superuser_url(app_url)).begin() as conn:
                conn.exec_driver_sql("REVOKE EXECUTE ON FUNCTION pg_logical_emit_message(boolean, text, text) "
                                     "FROM PUBLIC")
        store = ReviewStore(app_url, workspace="test")
        assert store._flush_later is not revoke

        def write(w: int) -> None:
            who = auth.Identity(f"u{w}", "reviewer")
            for j in range(10):
                r = store.create(who, SCAN, {}, verdict="unsure", text=f"{w}-{j}")
                store.edit(who, r.id, 1, text=f"{w}-{j} edited")

        with ThreadPoolExecutor(6) as pool:
            list(pool.map(write, range(6)))
        v = store.verify_audit()
        assert v.ok and v.rows == 120, v.problem
