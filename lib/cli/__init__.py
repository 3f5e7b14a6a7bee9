"""Command line: every job of the dashboard, headless.

    python -m lib demo                    build the demo cohort (data/demo)
    python -m lib init --table T [DIR]    make a workspace from a cohort table, BIDS folder or ADNIMERGE file
    python -m lib validate [TABLE]        check a cohort table and its scans; exit 1 on any error
    python -m lib split                   recompute the subject-level split
    python -m lib means                   mean images of the two classes (dataset overview)
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

Every command that is a job (demo, init, validate, means, group-means, biomarker, train, predict, explain,
evaluate-maps, regions, report) runs here with a progress bar, or with ``--submit`` in the background; either
way it is a job of the workspace (listed by ``jobs`` and on the Jobs page, cancellable there), and a job of the
same request already running, from the dashboard or another terminal, is followed instead of started again.

``--workspace DIR`` (or $RELEVANCE_ATLAS_WORKSPACE) picks the workspace; the
default is the demo workspace under ``data/demo``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lib.cli import admin, requests
from lib.cli.admin import cli_identity
from lib.core.cache import CacheError
from lib.data.workspace import Workspace, WorkspaceError, default_workspace_path

__all__ = ["build_parser", "cli_identity", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lib", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workspace", help=f"workspace folder (default {default_workspace_path()})")
    sub = p.add_subparsers(dest="command", required=True)

    def add(name, fn, help_):
        sp = sub.add_parser(name, help=help_)
        sp.set_defaults(fn=fn)
        return sp

    requests.add_commands(add)
    admin.add_commands(add)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        ws = Workspace.open(args.workspace)
    except WorkspaceError as exc:
        # init creates the workspace it is given; run here, it may be asked from a folder that is none yet
        if args.command != "init" or args.submit:
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
