"""Commands that are not jobs: the split, test metrics, runs, jobs, the cache check, accounts and the review
database. Each is a function ``(args, workspace) -> exit status`` with its options in :func:`add_commands`."""

from __future__ import annotations

import sys

from lib import jobs
from lib.core import settings
from lib.data.workspace import Workspace
from lib.reviews import auth


def _cmd_split(args, ws: Workspace) -> int:
    import pandas as pd

    from lib.data.splits import assign, check_leakage, make_splits, save_splits

    cohort = pd.read_csv(ws.cohort_csv)
    splits = make_splits(cohort, test_fraction=args.test_fraction, validation_fraction=args.validation_fraction,
                         k_folds=args.k_folds, seed=args.seed)
    check_leakage(cohort, splits)
    save_splits(ws, splits)
    table = assign(cohort, splits).groupby(["split", "diagnosis"])["subject_id"].nunique().unstack(fill_value=0)
    print(table.to_string())
    return 0


def _cmd_evaluate(args, ws: Workspace) -> int:
    import json

    from lib.learn.training import TrainingError, evaluate, load_run

    try:
        run = load_run(ws, args.run) if args.run else None
        print(json.dumps(evaluate(ws, run=run, checkpoint=args.checkpoint, split=args.split), indent=2))
    except TrainingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _cmd_ship(args, ws: Workspace) -> int:
    from lib.learn.training import TrainingError, export_run, load_run
    from lib.data.workspace import REPO_ROOT

    try:
        print(export_run(load_run(ws, args.run), args.dest or REPO_ROOT / "models"))
    except TrainingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _cmd_runs(args, ws: Workspace) -> int:
    """One line per run from its small JSON files only: no model library is loaded (that took seconds), and
    epochs are counted from 1 as on the Training page."""
    from lib.core import atomic
    from lib.core.process import pid_alive

    runs = []
    for d in sorted(ws.runs_dir.iterdir()) if ws.runs_dir.exists() else []:
        cfg = atomic.read_json(d / "config.json") if d.is_dir() else None
        if cfg:
            runs.append((cfg.get("created", 0), d))
    for _, d in sorted(runs, key=lambda r: r[0], reverse=True):
        st = atomic.read_json(d / "state.json", default={}) or {}
        status = st.get("status", "created")
        if status == "running" and not pid_alive(st.get("pid")):
            status = "interrupted"
        test = (atomic.read_json(d / "summary.json") or {}).get("test", {})
        bacc = f"test bacc {test['balanced_accuracy']:.3f}" if "balanced_accuracy" in test else ""
        best = "best -" if st.get("best_epoch") is None else f"best {st['best_epoch'] + 1}"
        print(f"{d.name}  {status:<11} epoch {st.get('epoch', -1) + 1}/{st.get('max_epochs', '?')}  {best}  {bacc}")
    return 0


def _cmd_jobs(args, ws: Workspace) -> int:
    for job in jobs.list_jobs(ws):
        r = job.record
        print(f"{job.id}  {job.state:<9}  {r.get('command'):<10} {job.fraction:6.1%}  {job.error or job.message}")
    return 0


def cli_identity():
    """Who acts from the command line: the local user, with every role. Whoever has a shell on the server
    owns the workspace files and the job processes (could edit or kill them directly), so a role check there
    would protect nothing; roles guard what the dashboard lets a browser do."""
    import getpass

    from lib.reviews import auth

    return auth.Identity(getpass.getuser(), "admin", "cli")


def _cmd_cancel(args, ws: Workspace) -> int:
    ok = jobs.cancel(ws, args.id, who=cli_identity())
    print("cancel requested" if ok else f"job {args.id} is not running")
    return 0 if ok else 1


def _cmd_cache(args, ws: Workspace) -> int:
    from lib.core import cache
    from lib.learn.training import predictions_problem

    bad, checked = cache.scan(ws.root, checks={"predictions": lambda path: predictions_problem(path.parent)})
    for f in bad:
        print(f"BAD {f.kind}: {f.path}: {f.problem}")
    if not bad:
        print(f"{checked} cache entries checked in {ws.root}: all intact")
        return 0
    print(f"{len(bad)} of {checked} cache entries are bad in {ws.root}")
    if not args.repair:
        print(f"remove them with: python -m lib --workspace {ws.root} cache verify --repair")
        return 1
    cache.repair(bad)
    print(f"removed {len(bad)} bad entries; they are recomputed by:")
    for how in sorted({f.recompute for f in bad}):
        print(f"  {how}")
    return 0


def _read_password(args, username: str) -> str:
    """From stdin (``--password-stdin``, for scripts) or typed twice at a prompt; never from argv."""
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    import getpass

    first = getpass.getpass(f"password for {username}: ")
    if first != getpass.getpass("again: "):
        raise ValueError("the two passwords differ")
    return first


def _cmd_users(args, ws: Workspace) -> int:
    from lib.reviews import auth
    from lib.reviews import DatabaseUnavailable, ReviewStore

    try:
        store = ReviewStore.for_workspace(ws)
        if args.action == "list":
            users = auth.list_users(store)
            for u in users:
                state = "" if u["active"] else "  (deactivated)"
                print(f"{u['username']:<30} {u['role']:<9} {u['login']}{state}")
            now = settings.load()
            if now.accounts_required:
                print('the dashboard requires a sign-in (accounts = "required")')
                if not any(u["active"] and u["role"] == "admin" for u in users):
                    print("no active administrator: add one with `python -m lib users add NAME --role admin` "
                          "or `python -m lib users activate NAME`")
            elif not users:
                print(f"no accounts in {store.display_url}: the app is open to everyone (names typed in)")
        elif args.action == "add":
            password = None if args.no_password else _read_password(args, args.username)
            auth.add_user(store, args.username, args.role, password, email=args.email)
            print(f"added {args.username} ({args.role}) to {store.display_url}")
        elif args.action == "passwd":
            auth.set_password(store, args.username, _read_password(args, args.username))
            print(f"password of {args.username} changed")
        elif args.action == "role":
            auth.set_role(store, args.username, args.role)
            print(f"{args.username} is now {args.role}")
        elif args.action in ("deactivate", "activate"):
            getattr(auth, args.action)(store, args.username)
            print(f"{args.username} {args.action}d")
        if args.action != "list":
            _require_accounts()
    except (auth.AccountError, ValueError, DatabaseUnavailable, settings.SettingsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # a replaced or damaged database file: say which, not a traceback
        print(f"error: the account database cannot be used ({exc.__class__.__name__}: {exc})", file=sys.stderr)
        return 1
    return 0


def _require_accounts() -> None:
    """Once accounts are managed, the server asks for a sign-in whatever its account database holds."""
    import os

    now = settings.load()
    if now.accounts_required:
        return
    path = settings.update(accounts="required")
    print(f'accounts = "required" written to {path}: the dashboard now asks everyone to sign in, even if the '
          "account database goes missing or every account is deactivated")
    if os.environ.get(settings.ACCOUNTS_ENV):
        print(f"warning: ${settings.ACCOUNTS_ENV}={os.environ[settings.ACCOUNTS_ENV]} in this environment "
              "overrides the file", file=sys.stderr)


def _cmd_audit(args, ws: Workspace) -> int:
    from lib.reviews import DatabaseUnavailable, ReviewStore, db

    try:
        store = ReviewStore(args.db) if args.db else ReviewStore.for_workspace(ws)
        try:
            verdict = store.verify_audit()
        finally:
            store.close()
    except (DatabaseUnavailable, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{db.describe(store.url)}: {verdict.message()}")
    return 0 if verdict.ok else 1


def _cmd_reviews(args, ws: Workspace) -> int:
    from lib.reviews import DatabaseUnavailable, db, pgsetup

    try:
        if args.action == "migrate":
            rev = pgsetup.migrate_as_owner(args.owner_url)
            print(f"{db.describe(db.normalise_url(args.owner_url))}: schema at revision {rev}")
        else:
            password = sys.stdin.readline().rstrip("\n") if args.app_password_stdin else None
            for stmt in pgsetup.setup_postgres(args.owner_url, args.app_role, app_password=password):
                print(stmt)
            print(f"done: the app connects as {args.app_role} (e.g. RELEVANCE_ATLAS_DB=postgresql://"
                  f"{args.app_role}:PASSWORD@HOST/DATABASE); schema upgrades run as the owner with "
                  "`python -m lib reviews migrate --owner-url ...`")
    except (pgsetup.SetupError, DatabaseUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # a refused connection or statement: one line, not a traceback
        from sqlalchemy.exc import DBAPIError

        if not isinstance(exc, DBAPIError):
            raise
        print(f"error: {str(exc.orig).strip().splitlines()[0]}", file=sys.stderr)
        return 1
    return 0


def add_commands(add) -> None:
    """Declare the commands of this module; ``add(name, fn, help)`` returns the command's parser."""
    sp = add("split", _cmd_split, "recompute the subject-level train/validation/test split")
    sp.add_argument("--test-fraction", type=float, default=0.2)
    sp.add_argument("--validation-fraction", type=float, default=0.15)
    sp.add_argument("--k-folds", type=int, default=5)
    sp.add_argument("--seed", type=int, default=0)
    sp = add("evaluate", _cmd_evaluate, "metrics of a run's best checkpoint on the test split, as JSON")
    sp.add_argument("--run")
    sp.add_argument("--checkpoint", help="a checkpoint file instead of a run (uses the workspace split)")
    sp.add_argument("--split", default="test", choices=["train", "validation", "test"])
    add("runs", _cmd_runs, "list training runs")
    sp = add("ship", _cmd_ship, "copy a finished run (checkpoint, config, metrics) to models/ for other machines")
    sp.add_argument("--run", required=True)
    sp.add_argument("--dest", help="folder (default: the repository's models/)")
    sp = add("cache", _cmd_cache, "check every cached result against its checksum; --repair removes bad ones")
    sp.add_argument("action", choices=["verify"])
    sp.add_argument("--repair", action="store_true", help="remove bad entries (recomputed on their next use)")
    add("jobs", _cmd_jobs, "list background jobs")
    sp = add("cancel", _cmd_cancel, "cancel a background job")
    sp.add_argument("id")

    sp = add("users", _cmd_users, "accounts and roles for the review database")
    users = sp.add_subparsers(dest="action", required=True)
    users.add_parser("list", help="list accounts")
    u = users.add_parser("add", help="add an account (password prompted, or --password-stdin)")
    u.add_argument("username")
    u.add_argument("--role", choices=list(auth.ROLES), default="reviewer")
    u.add_argument("--email")
    u.add_argument("--no-password", action="store_true",
                   help="no local login: only a role for this OpenID Connect user name or e-mail")
    u.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    u = users.add_parser("passwd", help="set an account's password")
    u.add_argument("username")
    u.add_argument("--password-stdin", action="store_true")
    u = users.add_parser("role", help="change an account's role")
    u.add_argument("username")
    u.add_argument("role", choices=list(auth.ROLES))
    for name in ("deactivate", "activate"):
        users.add_parser(name, help=f"{name} an account (accounts are never deleted)").add_argument("username")

    sp = add("audit", _cmd_audit, "check the review audit (hash chain, one row per version)")
    audit = sp.add_subparsers(dest="action", required=True)
    audit.add_parser("verify", help="print OK and the row count, or the first broken link (exit 1)").add_argument(
        "--db", help="review database URL (default: the workspace's)")

    sp = add("reviews", _cmd_reviews, "PostgreSQL review database: migrations and roles, as the owner role")
    rv = sp.add_subparsers(dest="action", required=True)
    rv.add_parser("migrate", help="upgrade the schema as the owner role").add_argument("--owner-url", required=True)
    u = rv.add_parser("setup-postgres", help="migrate, then grant an app role only what the app needs")
    u.add_argument("--owner-url", required=True, help="URL connecting as the role that owns the database")
    u.add_argument("--app-role", required=True, help="role the app connects as (must exist, or see below)")
    u.add_argument("--app-password-stdin", action="store_true",
                   help="create the app role with the password on stdin's first line (owner needs CREATEROLE)")
