"""Reviews on SQLite and PostgreSQL: concurrency, version conflicts, audit, restarts, roles, search, export."""

from __future__ import annotations

import io
import re
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from lib import auth
from lib.reviews import (DatabaseUnavailable, EditConflict, InvalidReview, NotFound, ReviewStore, database_url,
                         export_csv, safe_markdown, target_key)
from lib.reviews.agreement import agreement, cohen_kappa, fleiss_kappa
from lib.workspace import Workspace

ALICE = auth.Identity("alice", "reviewer")
BOB = auth.Identity("bob", "reviewer")
VIEWER = auth.Identity("vera", "viewer")
ADMIN = auth.Identity("ada", "admin")
SCAN = {"kind": "scan", "scan_id": "sub-001_ses-1"}
SETTINGS = {"page": "heatmaps", "run": "run-7", "checkpoint": "ab12", "method": "lrp",
            "params": {"beta": 1.0}, "vmin": -0.5, "vmax": 0.5}


def _store(url: str, **kw) -> ReviewStore:
    return ReviewStore(url, workspace="test", **kw)


def test_concurrent_writers_lose_and_duplicate_nothing(review_url):
    _store(review_url)  # schema first, as the app does on open
    n_writers, per_writer = 20, 50
    start = threading.Barrier(n_writers)

    def writer(w: int) -> list[int]:
        store = _store(review_url)  # each writer its own engine and pool, like separate server processes
        who = auth.Identity(f"user{w}", "reviewer")
        start.wait()
        ids = [store.create(who, {"kind": "scan", "scan_id": f"s{j % 7}"}, SETTINGS, verdict="plausible",
                            text=f"w{w}-r{j}").id for j in range(per_writer)]
        store.close()
        return ids

    with ThreadPoolExecutor(n_writers) as pool:
        ids = [i for chunk in pool.map(writer, range(n_writers)) for i in chunk]
    store = _store(review_url)
    found = store.find()
    assert len(ids) == len(set(ids)) == n_writers * per_writer
    assert sorted(r.id for r in found) == sorted(ids)
    assert sorted(r.text for r in found) == sorted(f"w{w}-r{j}" for w in range(n_writers) for j in range(per_writer))
    with store.engine.connect() as conn:
        audit = conn.execute(text("SELECT review_id, version FROM review_audit")).all()
    assert sorted(a[0] for a in audit) == sorted(ids) and {a[1] for a in audit} == {1}
    # 1000 appends from 20 writers at once still form one unbroken chain
    verdict = store.verify_audit()
    assert verdict.ok and verdict.rows == n_writers * per_writer, verdict.problem


def test_conflicting_edit_is_refused_and_tells_who_changed_it(review_url):
    store = _store(review_url)
    r = store.create(ALICE, SCAN, SETTINGS, verdict="unsure", text="first")
    store.edit(ALICE, r.id, r.version, text="second")          # another tab of alice's saves first
    with pytest.raises(EditConflict) as err:
        store.edit(ALICE, r.id, r.version, text="stale edit")  # based on version 1
    msg = str(err.value)
    assert "changed by alice" in msg and "version 2" in msg and "not saved" in msg
    assert err.value.current.text == "second" and store.get(r.id).text == "second"


def test_simultaneous_edits_exactly_one_wins(review_url):
    store = _store(review_url)
    r = store.create(ALICE, SCAN, SETTINGS, verdict="unsure", text="v1")
    start = threading.Barrier(8)

    def edit(i: int) -> str:
        start.wait()
        try:
            store.edit(ADMIN, r.id, 1, text=f"edit {i}")
            return "ok"
        except EditConflict:
            return "conflict"

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(edit, range(8)))
    assert outcomes.count("ok") == 1 and outcomes.count("conflict") == 7
    history = store.history(r.id)
    assert [h.version for h in history] == [1, 2]
    assert history[-1].snapshot["text"] == store.get(r.id).text


def test_audit_holds_every_version_and_is_append_only(review_url):
    store = _store(review_url)
    r = store.create(ALICE, SCAN, SETTINGS, verdict="plausible", text="looks right", tags=["hippocampus"])
    texts = ["looks right", "looks right, left side stronger", "artefact at the skull?"]
    v = store.edit(ALICE, r.id, 1, text=texts[1]).version
    v = store.edit(ALICE, r.id, v, text=texts[2], verdict="artefact", tags="skull, Motion").version
    v = store.resolve(ADMIN, r.id, v).version
    v = store.reopen(ALICE, r.id, v).version
    v = store.delete(ALICE, r.id, v).version
    v = store.restore(ADMIN, r.id, v).version
    history = store.history(r.id)
    assert [h.version for h in history] == list(range(1, v + 1)) == list(range(1, 8))
    assert [h.action for h in history] == ["create", "edit", "edit", "resolve", "reopen", "delete", "restore"]
    assert [h.snapshot["text"] for h in history[:3]] == texts
    assert history[2].snapshot["tags"] == ["skull", "motion"] and history[2].snapshot["verdict"] == "artefact"
    assert [h.actor for h in history] == ["alice", "alice", "alice", "ada", "alice", "alice", "ada"]
    assert history[5].snapshot["deleted"] and not history[6].snapshot["deleted"]
    # the database itself refuses to rewrite or drop history (PostgreSQL: the app role has no right to)
    for stmt in ("UPDATE review_audit SET actor = 'mallory'", "DELETE FROM review_audit"):
        with pytest.raises(DBAPIError, match="append-only|permission denied"):
            with store.engine.begin() as conn:
                conn.execute(text(stmt))
    assert len(store.history(r.id)) == 7


def test_database_restart_gives_a_clear_message_then_recovers(review_url, request, tmp_path):
    if review_url.startswith("sqlite"):
        store = _store(review_url, busy_timeout=0.3)
        store.create(ALICE, SCAN, SETTINGS, verdict="plausible", text="before")
        # SQLite has no server to restart: the same failure is another process holding the write lock
        path = review_url.removeprefix("sqlite:///")
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")
        try:
            with pytest.raises(DatabaseUnavailable) as err:
                store.create(ALICE, SCAN, SETTINGS, verdict="plausible", text="during")
            assert "busy" in str(err.value)
        finally:
            other.execute("ROLLBACK")
            other.close()
    else:
        pg = request.getfixturevalue("postgres")
        store = _store(review_url)
        store.create(ALICE, SCAN, SETTINGS, verdict="plausible", text="before")
        pg.stop("fast")
        try:
            with pytest.raises(DatabaseUnavailable) as err:
                store.create(ALICE, SCAN, SETTINGS, verdict="plausible", text="during")
            with pytest.raises(DatabaseUnavailable):
                store.find()
        finally:
            pg.start()
        assert "cannot be reached" in str(err.value) and "password" not in str(err.value)
    msg = str(err.value)
    assert "review database" in msg and "Nothing was saved" in msg
    # the same store (its pool held connections to the old server) works again without intervention
    after = store.create(ALICE, SCAN, SETTINGS, verdict="plausible", text="after")
    assert [r.text for r in store.find()] == ["after", "before"] and store.get(after.id).version == 1


def test_retried_write_is_stored_once(review_url):
    store = _store(review_url)
    r = store.create(ALICE, SCAN, SETTINGS, verdict="plausible", text="once")
    row = {c: getattr(store.get(r.id), c) for c in ("uid", "workspace", "target_kind", "target_key", "target",
                                                    "settings", "verdict", "text", "author")}
    # a retry after a commit whose acknowledgement was lost carries the same uid
    again = store._insert({**row, "parent_id": None, "tags": "", "created_at": r.created_at,
                           "updated_at": r.updated_at, "updated_by": "alice", "status": "open",
                           "deleted": False, "blinded": False, "version": 1, "page": None, "run_id": None,
                           "checkpoint": None, "method": None}, ALICE)
    assert again.id == r.id and len(store.find()) == 1 and len(store.history(r.id)) == 1


def test_role_rules(review_url):
    store = _store(review_url)
    with pytest.raises(auth.PermissionDenied, match="viewers can read"):
        store.create(VIEWER, SCAN, SETTINGS, verdict="plausible", text="no")
    with pytest.raises(auth.PermissionDenied, match="Sign in"):
        store.create(None, SCAN, SETTINGS, verdict="plausible", text="no")
    r = store.create(ALICE, SCAN, SETTINGS, verdict="plausible", text="alice's")
    for action in (lambda: store.edit(BOB, r.id, 1, text="bob was here"), lambda: store.delete(BOB, r.id, 1),
                   lambda: store.resolve(BOB, r.id, 1), lambda: store.edit(VIEWER, r.id, 1, text="x")):
        with pytest.raises(auth.PermissionDenied):
            action()
    assert store.get(r.id).version == 1 and store.get(r.id).text == "alice's"
    with pytest.raises(auth.PermissionDenied, match="viewers"):
        store.reply(VIEWER, r.id, "a viewer's reply")
    reply = store.reply(BOB, r.id, "bob disagrees")  # any reviewer may answer
    with pytest.raises(auth.PermissionDenied, match="Only bob"):
        store.edit(ALICE, reply.id, 1, text="alice rewrites bob")
    # an admin moderates
    store.edit(ADMIN, r.id, 1, text="moderated")
    deleted = store.delete(ADMIN, r.id, 2)
    assert store.find() == [] and [x.id for x in store.find(include_deleted=True)] == [r.id]
    assert deleted.deleted_by == "ada" and store.get(r.id).text == "moderated"  # soft: still readable
    with pytest.raises(InvalidReview, match="restore it first"):
        store.edit(ALICE, r.id, 3, text="edit a deleted one")
    store.restore(ALICE, r.id, 3)
    assert [x.id for x in store.find()] == [r.id]


def test_find_filters_search_and_threads(review_url):
    store = _store(review_url)
    a = store.create(ALICE, SCAN, SETTINGS, verdict="plausible", text="Hippocampus **bright**", tags=["mtl"])
    b = store.create(BOB, {"kind": "group", "group": "FP"}, {**SETTINGS, "method": "gradcam"},
                     verdict="artefact", text="skull edge", tags=["skull", "edge"])
    c = store.create(BOB, {"kind": "coordinate", "mni": [-26.2, -22, -14]}, {"run": "run-8"}, verdict="unsure",
                     text="100%_sure? no")
    store.reply(ALICE, b.id, "Agreed: the ventricles too")
    store.resolve(BOB, c.id)
    ids = lambda rs: sorted(r.id for r in rs)  # noqa: E731
    assert ids(store.find(verdict="artefact")) == [b.id]
    assert ids(store.find(verdict=["artefact", "unsure"])) == [b.id, c.id]
    assert ids(store.find(status="resolved")) == [c.id] and ids(store.find(status="open")) == [a.id, b.id]
    assert ids(store.find(author="bob")) == [b.id, c.id] and ids(store.find(tag="SKULL")) == [b.id]
    assert ids(store.find(tag="sku")) == []  # whole tags only
    assert ids(store.find(target_kind="coordinate")) == [c.id]
    assert ids(store.find(target={"kind": "coordinate", "mni": [-26, -22, -14]})) == [c.id]
    assert ids(store.find(run_id="run-7")) == [a.id, b.id] and ids(store.find(method="gradcam")) == [b.id]
    assert ids(store.find(search="HIPPO")) == [a.id]
    assert ids(store.find(search="ventricles")) == [b.id]  # found through its reply
    assert ids(store.find(search="%_")) == [c.id]         # LIKE wildcards are literal
    assert {r.id: r.n_replies for r in store.find()} == {a.id: 0, b.id: 1, c.id: 0}
    thread = store.thread(b.id)
    assert [t.text for t in thread] == ["skull edge", "Agreed: the ventricles too"]
    assert thread[1].parent_id == b.id and thread[1].verdict is None and thread[1].target_key == "group:FP"
    assert store.get(a.id).settings == SETTINGS and store.get(a.id).checkpoint == "ab12"
    assert store.tags() == ["edge", "mtl", "skull"] and store.authors() == ["alice", "bob"]
    assert sorted(store.reviewed_targets("alice")) == ["sub-001_ses-1"]
    other = ReviewStore(review_url, workspace="another study")
    assert other.find() == []
    with pytest.raises(NotFound):
        other.get(a.id)
    with pytest.raises(InvalidReview, match="verdict"):
        store.create(ALICE, SCAN, SETTINGS, verdict="great", text="x")
    with pytest.raises(InvalidReview, match="kind"):
        store.create(ALICE, {"kind": "planet"}, SETTINGS, verdict="unsure", text="x")


def test_models_match_the_migrations(review_url):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from lib.reviews.models import Base

    store = _store(review_url)
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_agreement_matches_references(review_url):
    from sklearn.metrics import cohen_kappa_score

    rng = np.random.default_rng(3)
    a = list(rng.choice(["plausible", "implausible", "artefact"], 40))
    b = [x if rng.random() < 0.6 else str(rng.choice(["plausible", "unsure"])) for x in a]
    assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b))
    # Fleiss (1971) as worked in the literature: 10 subjects, 14 raters, 5 categories → κ ≈ 0.210
    table = np.array([[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
                      [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]])
    assert fleiss_kappa(table) == pytest.approx(0.2099, abs=5e-4)
    # two raters: Fleiss' κ is Scott's π (pooled marginals)
    cats = sorted(set(a) | set(b))
    pooled = np.array([(a.count(c) + b.count(c)) / 80 for c in cats])
    p_o = np.mean([x == y for x, y in zip(a, b)])
    scott = (p_o - (pooled**2).sum()) / (1 - (pooled**2).sum())
    counts = np.array([[[x, y].count(c) for c in cats] for x, y in zip(a, b)])
    assert fleiss_kappa(counts) == pytest.approx(scott)
    # from the store: the latest verdict of each rater per scan, scans rated by one person left out
    store = _store(review_url)
    carl = auth.Identity("carl", "reviewer")
    verdicts = {"alice": "pppa", "bob": "ppia", "carl": "pp"}
    name = {"p": "plausible", "i": "implausible", "a": "artefact"}
    for who in (ALICE, BOB, carl):
        for i, v in enumerate(verdicts[who.username]):
            store.create(who, {"kind": "scan", "scan_id": f"s{i}"}, {}, verdict="unsure", text="first look")
            store.create(who, {"kind": "scan", "scan_id": f"s{i}"}, {}, verdict=name[v], text="")
    store.create(ALICE, {"kind": "scan", "scan_id": "lonely"}, {}, verdict="artefact", text="")
    res = agreement(store.ratings())
    assert res["n_targets"] == 4 and res["n_raters"] == 3 and list(res["table"].index) == ["s0", "s1", "s2", "s3"]
    ab = res["pairs"].set_index(["rater_a", "rater_b"]).loc[("alice", "bob")]
    assert ab["n"] == 4 and ab["cohen_kappa"] == pytest.approx(cohen_kappa_score(list("pppa"), list("ppia")))
    counts = [[3, 0, 0], [3, 0, 0], [1, 1, 0], [0, 0, 2]]
    assert res["fleiss"] == pytest.approx(fleiss_kappa(np.array(counts)))


def test_export_csv_round_trips_and_defuses_formulas(review_url):
    store = _store(review_url)
    store.create(ALICE, SCAN, SETTINGS, verdict="plausible", text='=HYPERLINK("http://x","y")', tags=["a"])
    # the tags column too: a first tag like a formula
    store.create(ADMIN, SCAN, SETTINGS, verdict="unsure", text="tagged", tags=["=cmd|'/c calc'!A1", "b"])
    store.create(BOB, SCAN, SETTINGS, verdict="unsure", text="tagged", tags=["@sum(1+1)"])
    store.create(BOB, {"kind": "region", "region": "Left Hippocampus"}, {}, verdict="unsure",
                 text="line one,\nline \"two\"")
    df = pd.read_csv(io.StringIO(export_csv(store.find())), keep_default_na=False)
    assert sorted(df.loc[df.text == "tagged", "tags"]) == ["'=cmd|'/c calc'!a1, b", "'@sum(1+1)"]
    for col in df.columns:  # no cell of any column starts like a formula
        assert not df[col].astype(str).str.match(r"[=+\-@\t\r]").any(), col
    df = df[df.text != "tagged"]
    assert len(df) == 2 and set(df["author"]) == {"alice", "bob"}
    assert df.loc[df.author == "alice", "text"].item().startswith("'=")
    assert df.loc[df.author == "bob", "text"].item() == "line one,\nline \"two\""
    assert df.loc[df.author == "bob", "target_key"].item() == "region:Left Hippocampus"


def test_safe_markdown_leaves_no_html():
    from markdown_it import MarkdownIt

    payload = ('Look **here** <script>window.__xss=1</script> <img src=x onerror="window.__xss=2"> '
               '<a href="javascript:alert(1)">x</a> [click](javascript:alert(1)) [c2](JaVa\tScRiPt:alert(1)) '
               '![pixel](https://tracker.example/p.png) <!-- hidden --> &lt;b&gt;\n\n> a quote\n\n'
               '[ok](https://example.org/a?b=1)\n\n[ref]: javascript:alert(3)\n')
    safe = safe_markdown(payload)
    # even a renderer that passes raw HTML through produces no element from the payload
    html = MarkdownIt("commonmark", {"html": True}).render(safe)
    for bad in ("<script", "<img", "<a href=\"javascript", "<!--", "onerror=\"window"):
        assert bad not in html.lower()
    assert [h for h in re.findall(r'href="([^"]*)"', html) if not h.startswith(("https:", "#"))] == []
    assert "&lt;script&gt;" in html and "<strong>here</strong>" in html and "<blockquote>" in html
    assert '<a href="https://example.org/a?b=1">ok</a>' in html
    assert '<a href="https://tracker.example/p.png">pixel</a>' in html  # images become links
    assert "&amp;lt;b&amp;gt;" in html  # the writer's own entity is shown as typed


def test_target_keys_and_database_url(tmp_path, monkeypatch):
    assert target_key({"kind": "region", "region": " Left Hippocampus "}) == "region:Left Hippocampus"
    assert target_key({"kind": "coordinate", "mni": [-26.4, -21.6, 0]}) == "coordinate:-26,-22,0"
    with pytest.raises(InvalidReview):
        target_key({"kind": "coordinate", "mni": [1, 2]})
    ws = Workspace.create(tmp_path / "ws")
    monkeypatch.delenv("RELEVANCE_ATLAS_DB", raising=False)
    assert database_url(ws) == f"sqlite:///{ws.root / 'reviews.db'}"
    # a database named in workspace.json is used only when the server's settings list it
    monkeypatch.setenv("RELEVANCE_ATLAS_CONFIG", str(tmp_path / "server.toml"))
    (tmp_path / "server.toml").write_text('review_databases = ["postgresql://lab@db.internal/reviews"]\n')
    ws.update_config(reviews_db="postgresql://lab@db.internal/reviews")
    assert database_url(ws) == "postgresql+psycopg://lab@db.internal/reviews"
    monkeypatch.setenv("RELEVANCE_ATLAS_DB", "postgres://team@server/atlas")
    assert database_url(ws) == "postgresql+psycopg://team@server/atlas"
