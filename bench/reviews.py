"""Review store throughput on SQLite and PostgreSQL, measured side by side in one run.

    .venv/bin/python bench/reviews.py [--writers 8 --per-writer 100 --postgres URL]

Writes: concurrent writers each creating reviews (one transaction per review, its hash-chained audit row
included; the chain is verified afterwards).
Reads: the Reviews page's query (all top-level reviews with reply counts) and a one-target lookup (the
review panel). Without ``--postgres`` a throwaway local PostgreSQL server is started (durable settings:
fsync on, as a real server). SQLite runs in WAL mode with synchronous=NORMAL. The machine is shared, so
compare the ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lib.reviews import auth# noqa: E402
from lib.reviews import ReviewStore  # noqa: E402
from lib.reviews.pgcluster import ThrowawayPostgres  # noqa: E402


def measure(url: str, writers: int, per_writer: int, reads: int) -> dict:
    ReviewStore(url, workspace="bench").close()  # schema first
    start = threading.Barrier(writers)

    def writer(w: int) -> None:
        store = ReviewStore(url, workspace="bench")
        who = auth.Identity(f"rater{w}", "reviewer")
        start.wait()
        for j in range(per_writer):
            store.create(who, {"kind": "scan", "scan_id": f"sub-{j % 50:03d}"}, {"run": "r1", "method": "lrp"},
                         verdict="plausible", text=f"review {j} by rater {w}: *hippocampus* relevance", tags=["mtl"])
        store.close()

    t0 = time.perf_counter()
    with ThreadPoolExecutor(writers) as pool:
        list(pool.map(writer, range(writers)))
    write_s = time.perf_counter() - t0
    store = ReviewStore(url, workspace="bench")
    n = writers * per_writer
    assert len(store.find()) == n, "lost or duplicated reviews"
    verdict = store.verify_audit()
    assert verdict.ok and verdict.rows == n, verdict.message()
    t0 = time.perf_counter()
    for _ in range(reads):
        store.find()
    list_s = (time.perf_counter() - t0) / reads
    t0 = time.perf_counter()
    for i in range(reads * 20):
        store.find(target={"kind": "scan", "scan_id": f"sub-{i % 50:03d}"})
    target_s = (time.perf_counter() - t0) / (reads * 20)
    store.close()
    return {"writes_per_s": n / write_s, "list_all_ms": list_s * 1e3, "one_target_ms": target_s * 1e3, "n": n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--writers", type=int, default=8)
    ap.add_argument("--per-writer", type=int, default=100)
    ap.add_argument("--reads", type=int, default=10)
    ap.add_argument("--postgres", help="an empty PostgreSQL database URL (default: a throwaway local server)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        pg = None
        try:
            if args.postgres:
                pg_url = args.postgres
            else:
                pg = ThrowawayPostgres(durable=True).start()
                pg_url = pg.create_database("bench")
            res = {}
            for name, url in (("SQLite", f"sqlite:///{Path(tmp) / 'reviews.db'}"), ("PostgreSQL", pg_url)):
                res[name] = measure(url, args.writers, args.per_writer, args.reads)
        finally:
            if pg is not None:
                pg.destroy()
    s, p = res["SQLite"], res["PostgreSQL"]
    print(f"{args.writers} concurrent writers × {args.per_writer} reviews = {s['n']} reviews; "
          f"reads over all {s['n']} reviews")
    print(f"{'':<34}{'SQLite':>12}{'PostgreSQL':>12}{'SQLite/PG':>11}")
    print(f"{'writes (reviews/s, higher better)':<34}{s['writes_per_s']:>12.0f}{p['writes_per_s']:>12.0f}"
          f"{s['writes_per_s'] / p['writes_per_s']:>10.2f}×")
    print(f"{'list all (ms, lower better)':<34}{s['list_all_ms']:>12.1f}{p['list_all_ms']:>12.1f}"
          f"{s['list_all_ms'] / p['list_all_ms']:>10.2f}×")
    print(f"{'one target (ms, lower better)':<34}{s['one_target_ms']:>12.2f}{p['one_target_ms']:>12.2f}"
          f"{s['one_target_ms'] / p['one_target_ms']:>10.2f}×")


if __name__ == "__main__":
    main()
