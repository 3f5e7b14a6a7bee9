"""Commands that are jobs: each builds a request (:mod:`lib.jobs.kinds`) from options derived from the request's
fields, then runs it here with a progress bar, or with ``--submit`` hands it to the job store like a page does.
Run here, it is a job of the workspace too (executor ``inprocess``: this process), so the Jobs page and
``python -m lib jobs`` show it with its progress and may cancel it; if a job of the same key is already active,
the command follows that one instead of computing the same thing again.

A field becomes ``--field-name`` (or its ``flag``): its type gives the option's type, a tuple takes several
values, a bool is a switch (its flag a ``--no-…`` one when it is on by default; ``--x/--no-x`` when None
means "the method's default"), a field without default is required. A new field is a new option, with no
change here. What a command prints afterwards (and options only for that, like ``--export``) is in
:data:`AFTER`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
import time
import types
import typing
from dataclasses import MISSING
from pathlib import Path

from lib import jobs
from lib.core import atomic
from lib.data.workspace import Workspace
from lib.jobs import Request, RequestError
from lib.jobs.request import request_fields
from lib.jobs.cluster import ClusterError, cluster_address, session

# the order of the commands in --help; a kind not listed comes after them
ORDER = ("demo", "validate", "init", "preprocess", "train", "predict", "explain", "evaluate-maps", "regions", "means",
         "group-means", "biomarker", "report")


def _scalar(hint) -> tuple[type, bool]:
    """(element type, takes several values) of a field's type: ``tuple[float, ...] | None`` → (float, True)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    if typing.get_origin(hint) is tuple:
        return typing.get_args(hint)[0], True
    return typing.get_origin(hint) or hint, False


def add_options(parser: argparse.ArgumentParser, cls: type[Request]) -> None:
    """One option (or positional argument) per field of ``cls``."""
    hints = typing.get_type_hints(cls)
    for f in request_fields(cls):
        meta = f.metadata.get("cli", {})
        base, many = _scalar(hints[f.name])
        required = f.default is MISSING and f.default_factory is MISSING
        kw = {"help": meta.get("help") or None, "metavar": meta.get("metavar")}
        if meta.get("positional"):
            parser.add_argument(f.name, nargs=None if required else "?", **kw)
            continue
        flag = "--" + (meta.get("flag") or f.name.replace("_", "-"))
        kw.update(dest=f.name, required=required)
        if base is bool:
            if f.default is None:
                kw.update(action=argparse.BooleanOptionalAction, default=None)
            else:
                kw.update(action="store_false" if f.default else "store_true")   # on by default: a --no-… flag
            kw.pop("metavar")
        elif meta.get("append"):
            kw.update(action="append", default=None)
        else:
            kw.update(type=base, choices=meta.get("choices"), default=None if required else f.default)
            if many:
                kw["nargs"] = "+"
        parser.add_argument(flag, **kw)


def request_from_args(cls: type[Request], args: argparse.Namespace) -> Request:
    """The request the parsed options describe (a malformed value raises ValueError)."""
    values = {}
    for f in request_fields(cls):
        meta = f.metadata.get("cli", {})
        value = getattr(args, f.name)
        if meta.get("parse"):
            value = meta["parse"](value or [])
        elif meta.get("append"):
            value = tuple(value or ())
        elif isinstance(value, list):
            value = tuple(value)
        values[f.name] = value
    return cls(**values)


def command_line(request: Request, ws: Workspace | None = None) -> str:
    """The command that runs ``request`` from a terminal (fields at their defaults left out): what a page
    shows next to its button, the inverse of :func:`request_from_args`."""
    parts = ["python", "-m", "lib", *(["--workspace", str(ws.root)] if ws else []), request.kind]
    for f in request_fields(request):
        meta = f.metadata.get("cli", {})
        value = getattr(request, f.name)
        default = f.default if f.default is not MISSING else (
            f.default_factory() if f.default_factory is not MISSING else MISSING)
        if value == default or value is None:
            continue
        flag = "--" + (meta.get("flag") or f.name.replace("_", "-"))
        if meta.get("positional"):
            parts.append(str(value))
        elif isinstance(value, bool):
            parts.append(flag if value or f.default is not None else "--no-" + flag[2:])
        elif isinstance(value, dict):
            for k, v in value.items():
                parts += [flag, f"{k}={json.dumps(v)}"]
        elif isinstance(value, tuple):   # a repeated option, or one option with several values
            parts += [x for v in value for x in (flag, str(v))] if meta.get("append") else [flag, *map(str, value)]
        else:
            parts += [flag, str(value)]
    return shlex.join(parts)


def run_command(args, ws: Workspace) -> int:
    """Build the command's request, then run it here as a job of the workspace (or submit it); then print what
    the command shows. If a job of the same key is already active (started by a page or another terminal),
    follow that one instead of computing the same thing twice."""
    from lib.cli.admin import cli_identity

    cls = jobs.REGISTRY[args.command]
    try:
        request = request_from_args(cls, args)
        address = cluster_address(ws, getattr(args, "cluster", None))
        if args.submit:
            job = jobs.submit(ws, request, who=cli_identity(), executor=jobs.default_executor(ws, address or "local"))
            print(f"job {job.id} ({job.state}); follow it with: python -m lib --workspace {ws.root} jobs")
            return 0
        task = request.prepare(ws)
        # init may be asked for a folder that is no workspace yet: nothing to record the job in
        recorded = ws.exists or cls.kind != "init"
        job = jobs.submit(ws, request, who=cli_identity(), executor=jobs.InProcessExecutor(address)) \
            if recorded else None
    except (RequestError, ValueError, ClusterError) as exc:
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 1
    if job is not None and job.record.get("pid") != os.getpid():
        code = _follow(ws, job)
        if code != 0:
            return code
        code = jobs.run_as_job(ws, None, task.work, desc=request.describe()[:40]) if cls.kind in AFTER else 0
    else:
        if job is not None:
            with open(job.path / "log.txt", "a") as log:
                log.write(f"{request.describe()}  (job {job.id}, run in a terminal by {job.record['owner']}, "
                          f"pid {os.getpid()}; its output is there)\n")
        with session(address):
            code = jobs.run_as_job(ws, job.id if job else None, task.work, desc=request.describe()[:40])
    after = AFTER.get(cls.kind)
    return after[0](args, ws, request, task.result) if code == 0 and after else code


def _follow(ws: Workspace, job: jobs.Job, interval: float = 1.0) -> int:
    """Print the progress of someone else's job of the same key until it ends; its exit code (0 done, 1 failed,
    130 cancelled). Ctrl-C stops following only: the job is not ours to cancel."""
    from tqdm import tqdm

    print(f"already running as job {job.id} (started by {job.record.get('owner')}); following it",
          file=sys.stderr)
    bar = tqdm(total=0, desc=job.description[:40], dynamic_ncols=True, file=sys.stderr,
               mininterval=0.5 if sys.stderr.isatty() else 10.0, bar_format="{l_bar}{bar}| {n}/{total} {postfix}")
    try:
        while job.active:
            bar.total, bar.n = job.record.get("total") or 0, job.record.get("done") or 0
            bar.set_postfix_str(job.message[:60], refresh=False)
            bar.refresh()
            time.sleep(interval)
            job = jobs.get(ws, job.id) or job
    except KeyboardInterrupt:
        bar.close()
        print(f"stopped following; job {job.id} keeps running", file=sys.stderr)
        return 130
    bar.close()
    if job.state == "done":
        return 0
    print(f"job {job.id} {job.state}" + (f": {job.error}" if job.error else ""), file=sys.stderr)
    return 130 if job.state == "cancelled" else 1


# --- what commands print when their job is done ---------------------------------------------------------------------
def _after_validate(args, ws, request, result) -> int:
    from lib.data.validation import format_report

    report = result["report"]
    print(format_report(report))
    return 0 if report.ok else 1


def _after_explain(args, ws, request, result) -> int:
    from lib.explain import heatmaps

    store, run = result["store"], result["run"]
    print(f"cached: {store.folder}" if result.get("cached") else f"computed {len(store)} heatmaps: {store.folder}")
    if not args.export:
        return 0
    scan = args.export
    if scan not in store:
        print(f"error: scan {scan!r} is not in run {run.id}'s cohort", file=sys.stderr)
        return 1
    out = Path(args.out or f"{scan}_{request.method}.nii.gz")
    if args.native:
        from lib.data.scans import load_cohort

        path = load_cohort(ws).set_index("scan_id").loc[scan, "path"]
        img = heatmaps.to_native_space(store.get(scan), store.grid, ws.resolve(path))
    else:
        img = store.to_nifti(scan)
    atomic.write_nifti(out, img)
    print(f"wrote {out.resolve()} ({scan}, {'the scan' if args.native else 'template'} grid)")
    return 0


def _explain_options(sp) -> None:
    sp.add_argument("--export", metavar="SCAN", help="write this scan's map as NIfTI afterwards")
    sp.add_argument("--out", help="file for --export (default SCAN_METHOD.nii.gz)")
    sp.add_argument("--native", action="store_true", help="export on the scan's own grid and affine")


def _after_regions(args, ws, request, result) -> int:
    print("\n".join(str(p) for p in result["paths"]))
    return 0


def _after_evaluate_maps(args, ws, request, result) -> int:
    from lib.analysis.evaluation import format_report

    print(format_report(result["evaluation"], result["results"]))
    return 0


def _after_biomarker(args, ws, request, result) -> int:
    import pandas as pd

    from lib.analysis import biomarker

    rows = result["rows"]
    if args.json:
        print(json.dumps(pd.DataFrame(rows).to_dict(orient="records"), indent=1, default=float))
        return 0
    print(f"hippocampal relevance ({request.side}, {request.metric}) vs {result['volume'].attrs['label']}; "
          f"{request.split} split; {request.permutations} permutations")
    for r in rows:
        print(f"{r['method']:<18} {r['group']}: " + biomarker.stats_caption(r, request.permutations))
    return 0


def _after_report(args, ws, request, result) -> int:
    from lib.views import report

    files = result["files"]
    paths = report.export(files, Path(args.out)) if args.out else [p for k, p in files.items()
                                                                   if k in ("html", "pdf", "figures")]
    print("\n".join(str(p) for p in paths))
    return 0


AFTER = {
    "validate": (_after_validate, None),
    "explain": (_after_explain, _explain_options),
    "regions": (_after_regions, None),
    "evaluate-maps": (_after_evaluate_maps, None),
    "biomarker": (_after_biomarker, lambda sp: sp.add_argument("--json", action="store_true",
                                                               help="print the results as JSON")),
    "report": (_after_report, lambda sp: sp.add_argument(
        "--out", help="write the HTML here (the PDF and a _figures folder beside it); default: print the cached "
                      "files' paths")),
}
"""Per command: what it prints when done (returning the exit status), and options only for that."""


def add_commands(add) -> None:
    """One command per kind of job; ``add(name, fn, help)`` returns the command's parser."""
    for kind in [*ORDER, *sorted(set(jobs.REGISTRY) - set(ORDER))]:
        cls = jobs.REGISTRY[kind]
        sp = add(kind, run_command, cls.summary)
        add_options(sp, cls)
        extra = AFTER.get(kind, (None, None))[1]
        if extra:
            extra(sp)
        sp.add_argument("--submit", action="store_true",
                        help="start it as a background job of the workspace (listed by `jobs`) instead of here")
