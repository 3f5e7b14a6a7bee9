"""Command line: every job of the dashboard, headless.

    python -m lib demo                    build the demo cohort (data/demo)
    python -m lib init --table T [DIR]    make a workspace from a cohort table, BIDS folder or ADNIMERGE file
    python -m lib validate [TABLE]        check a cohort table and its scans; exit 1 on any error
    python -m lib split                   recompute the subject-level split
    python -m lib means                   mean AD / HC images for the dataset overview
    python -m lib group-means --run RUN --store KEY [--split test --by site]   group-average heatmaps, cached
    python -m lib biomarker --run RUN --method lrp --beta 0 0.5 1   hippocampal relevance vs volume (Fig 9)
    python -m lib train [--seeds 0 1 2 --folds 0 1 2 3 4]   train the CNN (one run per fold × seed)
    python -m lib train --resume RUN      continue an interrupted run from its last finished epoch
    python -m lib evaluate --run RUN      test metrics of a run's best checkpoint as JSON (or --checkpoint FILE)
    python -m lib runs                    list training runs
    python -m lib explain --run RUN --method lrp --beta 0   heatmaps of every scan, cached on disk
    python -m lib evaluate-maps --run RUN [--methods lrp:beta=0 gradcam …]   AOPC, sanity check, localisation
    python -m lib regions --run RUN --method lrp --beta 0 [--atlas aal --merge]   region metrics table, cached
    python -m lib report --run RUN [--out report.html] [--pdf]   a run's report (HTML, PDF, SVG figures), cached
    python -m lib jobs | cancel ID        background jobs of the workspace
    python -m lib users list | add NAME --role R | passwd NAME | role NAME R | deactivate NAME | activate NAME
                                          accounts (roles viewer, reviewer, analyst, admin); any change
                                          also writes accounts = "required" to the server's settings
    python -m lib audit verify [--db URL] check the review audit's hash chain; exit 1 at the first broken link
    python -m lib reviews migrate --owner-url URL | setup-postgres --owner-url URL --app-role NAME
                                          PostgreSQL: schema upgrades and grants as the owner role
    python -m lib cache verify [--repair] check cached results against their checksums; remove bad ones

``--workspace DIR`` (or $RELEVANCE_ATLAS_WORKSPACE) picks the workspace; the
default is the demo workspace under ``data/demo``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lib.core import atomic, settings
from lib.reviews import auth
from lib import jobs
from lib.core.cache import CacheError
from lib.data.atlases import DEFAULT_ATLAS, segmentation_labels, shipped_atlases
from lib.data.classes import DEFAULT_CLASSES
from lib.data.workspace import Workspace, WorkspaceError, default_workspace_path


def _cmd_demo(args, ws: Workspace) -> int:
    from lib.data import demo

    if demo.is_complete(ws) and not args.force:
        print(f"demo cohort already complete at {ws.root} ({ws.config.get('n_scans')} scans); --force rebuilds it")
        return 0
    cfg = demo.DemoConfig(n_subjects=args.subjects, resolution=args.resolution, seed=args.seed,
                          max_visits=args.visits)
    if args.workers:
        cfg.workers = args.workers

    def work(progress):
        # one bar for both phases: generating n scans, then validating them (much faster)
        built = demo.generate(ws.root, cfg, progress=lambda d, t, m: progress(d, t + t // 10, m))
        n = built.config["n_scans"]
        _validate_into(built, built.cohort_csv, check_images=True,
                       progress=lambda d, t, m: progress(n + d // 10, n + n // 10, m))
        return f"{built.config['n_scans']} scans of {cfg.n_subjects} subjects"

    if ws.cohort_csv.exists():
        # an outdated or partial build: remove what the generator owns so no stale file survives
        import shutil

        for owned in ("scans", "ground_truth", "cache"):
            shutil.rmtree(ws.root / owned, ignore_errors=True)

    return jobs.run_as_job(ws, args.job_id, work, desc="demo cohort")


def _save_report(ws: Workspace, report) -> None:
    """The workspace's last validation: per-scan QC table and the report."""
    atomic.write_csv(ws.qc_csv, report.qc)
    atomic.write_text(ws.validation_json, report.to_json())


def _validate_into(ws: Workspace, table, *, check_images: bool, progress=None):
    from lib.data.validation import validate_table

    report = validate_table(table, ws, check_images=check_images, progress=progress)
    if ws.exists:
        _save_report(ws, report)
    return report


def _cmd_validate(args, ws: Workspace) -> int:
    from lib.data.validation import format_report, validate_table

    table = Path(args.table).expanduser().resolve() if args.table else ws.cohort_csv
    own_table = table == ws.cohort_csv
    # a table outside the workspace is checked against its own folder (relative paths, path escapes)
    base = table if table.is_dir() else table.parent
    check_ws = ws if ws.exists and (own_table or base.is_relative_to(ws.root)) else Workspace.open(base)
    result = {}

    def work(progress):
        report = validate_table(table, check_ws, check_images=not args.no_images, progress=progress)
        if args.report:
            atomic.write_text(args.report, report.to_json())
        elif own_table and ws.exists:
            _save_report(ws, report)
        result["report"] = report
        return report.summary()

    code = jobs.run_as_job(ws, args.job_id, work, desc="validate")
    if code:
        return code
    report = result["report"]
    print(format_report(report))
    return 0 if report.ok else 1


def _cmd_init(args, job_ws: Workspace) -> int:
    """Create a workspace; as a dashboard job its record lives in ``job_ws`` (the workspace that asked), which
    may be another folder than the one created, so the outcome is written there explicitly."""
    reporter = jobs.JobReporter(job_ws, args.job_id) if args.job_id else None
    if reporter:
        reporter.start()
    try:
        code, message = _init(args, reporter.progress if reporter else None)
    except Exception as exc:
        if reporter:
            reporter.fail(f"{type(exc).__name__}: {exc}")
        raise
    if reporter:
        reporter.finish(message) if code == 0 else reporter.fail(message)
    return code


def _init(args, progress) -> tuple[int, str]:
    from lib.data.cohort import CohortError, read_table
    from lib.data.splits import make_splits, save_splits
    from lib.data.validation import format_report, validate_table

    table = Path(args.table).expanduser().resolve()
    root = Path(args.directory).expanduser().resolve() if args.directory else (
        table if table.is_dir() else table.parent)
    # validated in memory first: a refused table leaves no workspace.json behind
    ws = Workspace(root=root, config={"kind": "study", "resolution": float(args.resolution),
                                      "data_roots": list(args.data_root or [])})
    try:
        cohort = read_table(table)
    except CohortError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1, str(exc)
    base = table if table.is_dir() else table.parent
    cohort["path"] = [str(p if Path(p).is_absolute() else (base / p).resolve()) for p in cohort["path"]]
    cohort["path"] = [str(Path(p).relative_to(root)) if Path(p).is_relative_to(root) else p for p in cohort["path"]]
    report = validate_table(cohort, ws, check_images=not args.no_images, progress=progress)
    print(format_report(report))
    if not report.ok:
        print(f"\nnot initialised: fix the errors above in {table}", file=sys.stderr)
        return 1, f"not initialised: {report.summary()}; fix the errors in {table}"
    ws = Workspace.create(root, kind="study", resolution=args.resolution, data_roots=args.data_root or [])
    _save_report(ws, report)
    save_splits(ws, make_splits(cohort))
    atomic.write_csv(ws.cohort_csv, cohort.drop(columns=[c for c in ("row",) if c in cohort]))
    ws.update_config(complete=True, n_scans=len(cohort))
    print(f"workspace ready at {root}")
    return 0, f"workspace ready at {root} ({len(cohort)} scans)"


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


def _cmd_means(args, ws: Workspace) -> int:
    from lib.data.cohort_means import compute_group_means

    return jobs.run_as_job(ws, args.job_id, lambda progress: str(compute_group_means(ws, progress)),
                           desc="group means")


def _cmd_group_means(args, ws: Workspace) -> int:
    from lib.explain import heatmaps
    from lib.views import viewer
    from lib.learn.training import TrainingError, load_run

    try:
        run = load_run(ws, args.run)
        if args.store:
            store = viewer.store_by_key(ws, run, args.store)
        else:
            params = heatmaps.parse_params(args.param)
            if args.beta is not None:
                params["beta"] = args.beta
            store = heatmaps.find_store(ws, run, args.method, **params)
            if store is None:
                raise KeyError(f"no heatmaps of run {run.id} with {args.method} {params or ''}: "
                               "compute them first with python -m lib explain")
    except (TrainingError, KeyError, ValueError) as exc:
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 1

    def work(progress):
        means = viewer.run_group_means(ws, run, store, split=args.split, by=args.by, progress=progress)
        return f"{sum(e.count > 0 for e in means.entries)} group means in {means.folder}"

    return jobs.run_as_job(ws, args.job_id, work, desc="group means")


def _cmd_biomarker(args, ws: Workspace) -> int:
    import json

    import pandas as pd

    from lib.analysis import biomarker
    from lib.explain import heatmaps
    from lib.data.scans import load_cohort
    from lib.learn.training import TrainingError, load_run

    try:
        run = load_run(ws, args.run)
        preds = run.predictions()
        if preds is None:
            raise ValueError(f"run {run.id} has no predictions yet")
        if args.store:
            by_name = {s.folder.name: s for s in heatmaps.list_stores(ws, run)}
            missing = [k for k in args.store if k not in by_name]
            if missing:
                raise KeyError(f"no finished heatmap store {missing} of run {run.id}")
            stores = [by_name[k] for k in args.store]
        else:
            params = heatmaps.parse_params(args.param)
            betas = args.beta if args.beta is not None else [params.pop("beta", None)]
            stores = []
            for b in betas:
                p = {**params, **({"beta": b} if b is not None else {})}
                store = heatmaps.find_store(ws, run, args.method, **p)
                if store is None:
                    raise KeyError(f"no heatmaps of run {run.id} with {args.method} {p or ''}: compute them first "
                                   "with python -m lib explain")
                stores.append(store)
        cohort = load_cohort(ws)
        volume = biomarker.hippocampal_volumes(ws, cohort, args.volume, side=args.side,
                                               segmentation_column=args.segmentation_column,
                                               labels=args.labels, normalise=args.icv)
    except (TrainingError, KeyError, ValueError) as exc:
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 1
    rows = []

    def work(progress):
        for store in stores:
            _, st = biomarker.hippocampus_analysis(
                ws, store, preds, volume, atlas=args.atlas, side=args.side, metric=args.metric,
                absolute=args.absolute, split=args.split, groups=args.group, one_per_subject=args.one_per_subject,
                n_permutations=args.permutations, n_boot=args.permutations, seed=args.seed, progress=progress)
            for g, row in st.iterrows():
                rows.append({"method": biomarker.method_label(store.params), "store": store.folder.name,
                             "group": g, **row.to_dict()})
        return f"{len(rows)} correlations"

    code = jobs.run_as_job(ws, args.job_id, work, desc="biomarker")
    if code == 0:
        table = pd.DataFrame(rows)
        if args.json:
            print(json.dumps(table.to_dict(orient="records"), indent=1, default=float))
        else:
            print(f"hippocampal relevance ({args.side}, {args.metric}) vs {volume.attrs['label']}; "
                  f"{args.split} split; {args.permutations} permutations")
            for r in rows:
                print(f"{r['method']:<18} {r['group']}: " + biomarker.stats_caption(r, args.permutations))
    return code


def _train_config(args):
    from lib.learn.training import TrainConfig

    return TrainConfig(model=args.model, resolution=args.resolution, max_epochs=args.epochs,
                       batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                       patience=args.patience, flip_p=args.flip_p, shift_voxels=args.shift,
                       normalisation=args.normalisation, seed=args.seeds[0] if args.seeds else 0,
                       class_weighted=not args.no_class_weights)


def _cmd_train(args, ws: Workspace) -> int:
    from lib.learn.training import TrainingError, create_run, load_run, plan, train_many

    try:
        if args.resume:
            runs = [load_run(ws, args.resume)]
            if runs[0].status == "done":
                print(f"run {runs[0].id} already finished", file=sys.stderr)
                return 0
        else:
            configs = plan(_train_config(args), seeds=args.seeds, folds=args.folds)
            group = args.run_id or None
            runs = [create_run(ws, c, run_id=(args.run_id if args.run_id and len(configs) == 1 else None),
                               group=group if len(configs) > 1 else None) for c in configs]
    except (TrainingError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for run in runs:
        print(f"run {run.id}", file=sys.stderr)
        if args.job_id:
            run.config["job_id"] = args.job_id
            atomic.write_json(run.dir / "config.json", run.config)

    def work(progress):
        summaries = train_many(ws, runs, progress)
        return "; ".join(f"{s['run']}: test balanced accuracy {s.get('test', {}).get('balanced_accuracy', float('nan')):.3f}"
                         for s in summaries)

    return jobs.run_as_job(ws, args.job_id, work, desc="train")


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


def _cmd_predict(args, ws: Workspace) -> int:
    from lib.learn.training import finish_run, load_run

    run = load_run(ws, args.run)

    def work(progress):
        progress(0, 1, "predicting every scan")
        summary = finish_run(ws, run, progress=progress)
        atomic.write_json(run.dir / "summary.json", {**(run.summary() or {}), **summary})
        return f"predictions for {run.id}"

    return jobs.run_as_job(ws, args.job_id, work, desc="predict")


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
    from lib.learn.training import list_runs

    for run in list_runs(ws):
        st = run.state
        test = (run.summary() or {}).get("test", {})
        bacc = f"test bacc {test['balanced_accuracy']:.3f}" if "balanced_accuracy" in test else ""
        print(f"{run.id}  {run.status:<11} epoch {st.get('epoch', -1) + 1}/{st.get('max_epochs', '?')}  "
              f"best {st.get('best_epoch')}  {bacc}")
    return 0


def _cmd_explain(args, ws: Workspace) -> int:
    from lib.explain import heatmaps
    from lib.learn.training import TrainingError, load_run

    try:
        run = load_run(ws, args.run)
        params = heatmaps.parse_params(args.param)
        if args.beta is not None:
            params["beta"] = args.beta
        if args.atlas:
            params["atlas"] = args.atlas
    except (TrainingError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    result = {}

    def work(progress):
        store = heatmaps.compute_store(ws, run, args.method, target=args.target, batch_size=args.batch_size,
                                       progress=progress, **params)
        result["store"] = store
        return f"{len(store)} heatmaps in {store.folder}"

    code = jobs.run_as_job(ws, args.job_id, work, desc=f"explain {args.method}")
    if code == 0 and args.export:
        store = result["store"]
        scan = args.export
        if scan not in store:
            print(f"error: scan {scan!r} is not in run {run.id}'s cohort", file=sys.stderr)
            return 1
        out = Path(args.out or f"{scan}_{args.method}.nii.gz")
        if args.native:
            from lib.data.scans import load_cohort

            path = load_cohort(ws).set_index("scan_id").loc[scan, "path"]
            img = heatmaps.to_native_space(store.get(scan), store.grid, ws.resolve(path))
        else:
            img = store.to_nifti(scan)
        atomic.write_nifti(out, img)
        print(f"wrote {out}")
    elif code == 0:
        print(result["store"].folder)
    return code


def _cmd_evaluate_maps(args, ws) -> int:
    """``python -m lib evaluate-maps``: evaluate methods on a run as a job, then print the report."""
    from lib.analysis.evaluation import (CHECKS, CLI_FIELDS, DEFAULT_METHODS, Evaluation, Settings,
                                         format_report)
    from lib.learn.training import TrainingError, load_run

    try:
        run = load_run(ws, args.run)
        given = {CLI_FIELDS[k]: v for k, v in vars(args).items() if k in CLI_FIELDS and v is not None}
        settings = Settings(**given)
        ev = Evaluation(ws, run, args.methods or list(DEFAULT_METHODS), settings)
    except (TrainingError, ValueError, TypeError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    checks = args.checks or list(CHECKS)
    if "localisation" in checks and not ev.has_truth():
        print("no ground truth in this workspace (demo cohorts only): localisation is skipped", file=sys.stderr)
    out = {}

    def work(progress):
        out["results"] = ev.run_checks(checks, progress=progress)
        return f"{len(ev.methods)} method(s) evaluated: {', '.join(checks)}"

    code = jobs.run_as_job(ws, args.job_id, work, desc="evaluate maps")
    if code == 0:
        print(format_report(ev, out["results"]))
    return code


def _cmd_regions(args, ws: Workspace) -> int:
    from lib.explain import heatmaps
    from lib.analysis import region_tables
    from lib.data.atlas import AtlasError
    from lib.learn.training import TrainingError, load_run

    try:
        runs = [load_run(ws, r) for r in args.run]
        atlas = region_tables.get_atlas(ws, args.atlas, runs[0].grid.resolution, args.merge)
        if args.store:
            by_name = {s.folder.name: s for s in heatmaps.list_stores(ws, runs[0])}
            missing = [k for k in args.store if k not in by_name]
            if missing:
                raise KeyError(f"no finished heatmap store {missing} of run {runs[0].id}")
            tasks = [(runs[0], by_name[k]) for k in args.store]
        else:
            params = heatmaps.parse_params(args.param)
            betas = args.beta if args.beta else [params.pop("beta")] if "beta" in params else [None]
            tasks = [(r, args.method, {**params, **({"beta": b} if b is not None else {})})
                     for r in runs for b in betas]
    except (TrainingError, AtlasError, KeyError, ValueError) as exc:
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 1
    result = {}

    def work(progress):
        result["paths"] = region_tables.compute_many(ws, tasks, atlas, progress=progress,
                                                     batch_size=args.batch_size)
        return f"{len(result['paths'])} region table(s) on {atlas.name}"

    code = jobs.run_as_job(ws, args.job_id, work, desc="region metrics")
    if code == 0:
        print("\n".join(str(p) for p in result["paths"]))
    return code


def _cmd_report(args, ws: Workspace) -> int:
    from lib.views import report
    from lib.learn.training import TrainingError, load_run

    try:
        run = load_run(ws, args.run)
    except TrainingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    result = {}

    def work(progress):
        result["files"] = report.write(ws, run, pdf=args.pdf, progress=progress)
        return f"report of {run.id} in {result['files']['html'].parent}"

    code = jobs.run_as_job(ws, args.job_id, work, desc="report")
    if code == 0:
        files = result["files"]
        paths = report.export(files, Path(args.out)) if args.out else [p for k, p in files.items()
                                                                       if k in ("html", "pdf", "figures")]
        print("\n".join(str(p) for p in paths))
    return code


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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lib", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workspace", help=f"workspace folder (default {default_workspace_path()})")
    sub = p.add_subparsers(dest="command", required=True)

    def add(name, fn, help_):
        sp = sub.add_parser(name, help=help_)
        sp.set_defaults(fn=fn)
        sp.add_argument("--job-id", help=argparse.SUPPRESS)
        return sp

    sp = add("demo", _cmd_demo, "build the synthetic demo cohort")
    sp.add_argument("--subjects", type=int, default=80)
    sp.add_argument("--resolution", type=float, default=2.0, help="voxel size in mm (1 = the paper's grid)")
    sp.add_argument("--visits", type=int, default=3, help="maximum visits per subject")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--workers", type=int, default=0, help="processes (default: up to 2)")
    sp.add_argument("--force", action="store_true", help="rebuild even if complete")

    sp = add("validate", _cmd_validate, "validate a cohort table and its scans")
    sp.add_argument("table", nargs="?", help="CSV/TSV table, ADNIMERGE file or BIDS folder (default: the workspace's)")
    sp.add_argument("--no-images", action="store_true", help="check the table only")
    sp.add_argument("--report", help="write the report (JSON) here instead of into the workspace")

    sp = add("init", _cmd_init, "create a workspace from a cohort table")
    sp.add_argument("directory", nargs="?", help="workspace folder (default: the table's folder)")
    sp.add_argument("--table", required=True)
    sp.add_argument("--resolution", type=float, default=2.0)
    sp.add_argument("--data-root", action="append", help="extra folder scans may live in (repeatable)")
    sp.add_argument("--no-images", action="store_true")

    sp = add("split", _cmd_split, "recompute the subject-level train/validation/test split")
    sp.add_argument("--test-fraction", type=float, default=0.2)
    sp.add_argument("--validation-fraction", type=float, default=0.15)
    sp.add_argument("--k-folds", type=int, default=5)
    sp.add_argument("--seed", type=int, default=0)

    sp = add("train", _cmd_train, "train the CNN (one run per fold × seed) or resume a run")
    sp.add_argument("--resume", metavar="RUN", help="continue this run from its last finished epoch")
    sp.add_argument("--run-id", help="name of the run (default: date-model-seed)")
    sp.add_argument("--model", default="boehle2019", help="boehle2019 (default), rieke2018 or pif2021")
    sp.add_argument("--resolution", type=float, default=None, help="grid in mm (default: the workspace's)")
    sp.add_argument("--epochs", type=int, default=100, help="maximum epochs (default 100)")
    sp.add_argument("--batch-size", type=int, default=8)
    sp.add_argument("--lr", type=float, default=1e-4)
    sp.add_argument("--weight-decay", type=float, default=1e-4)
    sp.add_argument("--patience", type=int, default=8, help="early stopping patience in epochs")
    sp.add_argument("--flip-p", type=float, default=0.5)
    sp.add_argument("--shift", type=int, default=None,
                    help="left-right translation range in voxels (default: 2 mm, the paper's 2 voxels at 1 mm)")
    sp.add_argument("--normalisation", default="zscore", choices=["zscore", "none"])
    sp.add_argument("--no-class-weights", action="store_true")
    sp.add_argument("--seeds", type=int, nargs="+", help="one run per seed (default 0)")
    sp.add_argument("--folds", type=int, nargs="+", help="cross-validation folds to run (fold k validates)")

    sp = add("evaluate", _cmd_evaluate, "metrics of a run's best checkpoint on the test split, as JSON")
    sp.add_argument("--run")
    sp.add_argument("--checkpoint", help="a checkpoint file instead of a run (uses the workspace split)")
    sp.add_argument("--split", default="test", choices=["train", "validation", "test"])

    sp = add("predict", _cmd_predict, "recompute a run's predictions for every scan")
    sp.add_argument("--run", required=True)
    add("runs", _cmd_runs, "list training runs")
    sp = add("ship", _cmd_ship, "copy a finished run (checkpoint, config, metrics) to models/ for other machines")
    sp.add_argument("--run", required=True)
    sp.add_argument("--dest", help="folder (default: the repository's models/)")

    sp = add("explain", _cmd_explain, "heatmaps of every scan of a run's cohort (cached; resumes if interrupted)")
    sp.add_argument("--run", required=True)
    sp.add_argument("--method", default="lrp",
                    help="an explanation method of the catalogue, lib.explain.METHODS (lrp, smoothgrad, …)")
    sp.add_argument("--beta", type=float, help="LRP β (α = 1 + β); 0 is the paper's default")
    sp.add_argument("--param", action="append", metavar="KEY=VALUE", help="any method parameter (repeatable)")
    sp.add_argument("--atlas", help=f"atlas of a method that needs one (default {DEFAULT_ATLAS})")
    sp.add_argument("--target", default=DEFAULT_CLASSES.positive,
                    help=f"explained class (default {DEFAULT_CLASSES.positive}, as in the paper)")
    sp.add_argument("--batch-size", type=int, default=4)
    sp.add_argument("--export", metavar="SCAN", help="write this scan's map as NIfTI afterwards")
    sp.add_argument("--out", help="file for --export (default SCAN_METHOD.nii.gz)")
    sp.add_argument("--native", action="store_true", help="export on the scan's own grid and affine")

    # defaults of evaluate-maps live in lib.analysis.evaluation.Settings (None = default)
    sp = add("evaluate-maps", _cmd_evaluate_maps,
             "evaluate explanation methods on a run: region perturbation (AOPC), sanity check, localisation")
    sp.add_argument("--run", required=True)
    sp.add_argument("--methods", nargs="+", metavar="METHOD[:K=V,…]",
                    help="e.g. lrp:beta=0.5 guided_backprop gradcam (default: LRP β 0/0.5/1, guided backprop, "
                         "gradient×input, occlusion, Grad-CAM)")
    sp.add_argument("--checks", nargs="+", choices=["aopc", "sanity", "localisation"], help="default: all three")
    sp.add_argument("--split", choices=["test", "validation", "train", "all"], help="scans from (default test)")
    sp.add_argument("--scans", type=int, help="scans for region perturbation and localisation (default 8)")
    sp.add_argument("--sanity-scans", type=int, help="scans for the randomisation check (default 2)")
    sp.add_argument("--seed", type=int)
    sp.add_argument("--target", help="explained class (default AD)")
    sp.add_argument("--regions", choices=["cubes", "atlas"], help="perturbed regions (default cubes)")
    sp.add_argument("--cube-mm", type=float, help="cube edge in mm (default 15)")
    sp.add_argument("--atlas", help=f"atlas for --regions atlas (default {DEFAULT_ATLAS})")
    sp.add_argument("--steps", type=int, help="perturbation steps L (default 50)")
    sp.add_argument("--replacement", choices=["zero", "mean", "uniform", "blur"], help="default uniform noise")
    sp.add_argument("--blur-mm", type=float, help="σ of the blur replacement in mm (default 6)")
    sp.add_argument("--order-score", choices=["sum", "abs"], help="region score: relevance sum or |relevance| sum")
    sp.add_argument("--output", choices=["probability", "logit"], help="f of AOPC (default probability)")
    sp.add_argument("--random-repeats", type=int, help="random orders per scan (default 1)")
    sp.add_argument("--top-fraction", type=float, help="top-k overlap as a share of brain voxels (default 0.02)")
    sp.add_argument("--threshold", type=float, help="sanity check passes below this rank correlation (0.5)")
    sp.add_argument("--truth", choices=["atrophy", "regions"], help="ground-truth mask (default atrophy)")
    sp.add_argument("--min-loss", type=float, help="local volume loss in the atrophy mask (default 0.05)")
    sp.add_argument("--min-mm", type=float, help="displacement of a region in the regions mask (default 0.5)")
    sp.add_argument("--tolerance-mm", type=float, help="pointing-game tolerance (default 0)")
    sp.add_argument("--batch-size", type=int, help="volumes per forward pass (default 8)")

    sp = add("regions", _cmd_regions,
             "relevance per atlas region (sum, density, fraction) of every scan, cached; heatmaps computed if missing")
    sp.add_argument("--run", required=True, nargs="+", help="one run, or several (e.g. the repeats of a group)")
    sp.add_argument("--method", default="lrp")
    sp.add_argument("--beta", type=float, nargs="+", help="LRP β values (one table per run × β)")
    sp.add_argument("--param", action="append", metavar="KEY=VALUE", help="any method parameter (repeatable)")
    sp.add_argument("--store", nargs="+", help="finished heatmap stores of the first run, by folder name, "
                                               "instead of --method")
    sp.add_argument("--atlas", default=DEFAULT_ATLAS,
                    help=f"{', '.join(shipped_atlases())} (the first is the default) or a workspace atlas")
    sp.add_argument("--merge", action="store_true", help="merge left and right regions")
    sp.add_argument("--batch-size", type=int, default=4, help="scans per pass when heatmaps are computed")

    add("means", _cmd_means, "mean AD and HC images of the cohort (dataset overview)")
    sp = add("group-means", _cmd_group_means,
             "average heatmaps of AD, HC, TP, FP, TN, FN (and subgroups) for the heatmap page; cached")
    sp.add_argument("--run", required=True)
    sp.add_argument("--store", help="heatmap store (its folder name under cache/heatmaps)")
    sp.add_argument("--method", default="lrp", help="or pick the store by method and parameters")
    sp.add_argument("--beta", type=float)
    sp.add_argument("--param", action="append", metavar="KEY=VALUE")
    sp.add_argument("--split", default="test", choices=["test", "validation", "train", "all"])
    sp.add_argument("--by", choices=["split", "site", "sex", "visit"], help="subgroups")
    sp = add("biomarker", _cmd_biomarker,
             "hippocampal relevance vs hippocampal volume per outcome group (Böhle et al. 2019 Fig 9)")
    sp.add_argument("--run", required=True)
    sp.add_argument("--method", default="lrp")
    sp.add_argument("--beta", type=float, nargs="+", help="LRP β values (one result per β)")
    sp.add_argument("--param", action="append", metavar="KEY=VALUE", help="any method parameter (repeatable)")
    sp.add_argument("--store", nargs="+", help="finished heatmap stores by folder name, instead of --method")
    sp.add_argument("--split", default="test", choices=["test", "validation", "train", "all"])
    sp.add_argument("--group", nargs="+", default=["TP", "FP"], help="outcome groups (default TP FP)")
    sp.add_argument("--side", default="both", choices=["both", "left", "right"])
    sp.add_argument("--metric", default="sum", choices=["sum", "density"])
    sp.add_argument("--absolute", action=argparse.BooleanOptionalAction, default=None,
                    help="relevance of |h| (default: for gradient methods, as the paper's GB susceptibility)")
    sp.add_argument("--volume", default="auto", choices=["auto", "cohort", "segmentation", "ground_truth"])
    sp.add_argument("--segmentation-column", help="cohort column with per-scan label NIfTI files")
    sp.add_argument("--labels", default=DEFAULT_ATLAS,
                    help=f"segmentation labels: {' or '.join(segmentation_labels())}")
    sp.add_argument("--icv", action="store_true", help="volume as %% of the intracranial volume")
    sp.add_argument("--atlas", default=DEFAULT_ATLAS)
    sp.add_argument("--one-per-subject", action="store_true", help="first visit of each subject only")
    sp.add_argument("--permutations", type=int, default=10_000, help="permutations and bootstrap resamples")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--json", action="store_true", help="print the results as JSON")
    sp = add("cache", _cmd_cache, "check every cached result against its checksum; --repair removes bad ones")
    sp.add_argument("action", choices=["verify"])
    sp.add_argument("--repair", action="store_true", help="remove bad entries (recomputed on their next use)")
    sp = add("report", _cmd_report, "a run's report: one self-contained HTML file (and a PDF), every figure also as "
                                    "SVG; built from the cached results, cached by its content")
    sp.add_argument("--run", required=True)
    sp.add_argument("--out", help="write the HTML here (the PDF and a _figures folder beside it); default: print "
                                  "the cached files' paths")
    sp.add_argument("--pdf", action="store_true", help="also the PDF")
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
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        ws = Workspace.open(args.workspace)
    except WorkspaceError as exc:
        if args.fn is not _cmd_init or args.job_id:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        ws = Workspace(root=Path(args.workspace or default_workspace_path()).expanduser().resolve())
    try:
        return args.fn(args, ws)
    except (FileNotFoundError, WorkspaceError, CacheError) as exc:
        # CacheError: a corrupted cache entry, named with the command that repairs it
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
