"""Jobs on the cohort: build the demo, validate a table, create a workspace, the overview's mean images."""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from lib.core import atomic
from lib.core.progress import stages
from lib.data.workspace import Workspace, default_workspace_path
from lib.jobs.request import Request, RequestError, Task, option, register

# seconds per scan of the raw copy (2 mm demo, 2 processes), weighing its part of the progress bar
RAW_SECONDS_PER_SCAN = 2.5
DEMO_ENV = "RELEVANCE_ATLAS_DEMO"


def save_report(ws: Workspace, report) -> None:
    """The workspace's last validation: per-scan QC table and the report."""
    atomic.write_csv(ws.qc_csv, report.qc)
    atomic.write_text(ws.validation_json, report.to_json())


def task_classes(request):
    """The task a request declares in its fields (TaskError for an unusable one); AD vs HC when none."""
    from lib.data.classes import DEFAULT_CLASSES, Classes

    given = {f: getattr(request, f, None) for f in ("positive", "negative", "positive_labels", "negative_labels",
                                                    "positive_title", "negative_title")}
    given = {k: v for k, v in given.items() if v}
    return Classes(**{**DEFAULT_CLASSES.to_json(), **given}) if given else DEFAULT_CLASSES


@dataclass(frozen=True, kw_only=True)
class TaskOptions:
    """The task a new workspace declares (``init``, ``preprocess``): its classes, their table labels and
    display names, and the Biomarkers page's default measure."""

    positive: str | None = option(None, "the diagnosis the models detect (default AD)")
    negative: str | None = option(None, "the control class (default HC)")
    positive_labels: str | None = option(None, "table labels meaning the positive class, comma-separated "
                                               "(default: its name and usual spellings)")
    negative_labels: str | None = option(None, "table labels meaning the negative class, comma-separated")
    positive_title: str | None = option(None, "long name of the positive class (e.g. 'multiple sclerosis')")
    negative_title: str | None = option(None, "long name of the negative class")
    biomarker_measure: str | None = option(None, "cohort column the Biomarkers page correlates relevance with by "
                                                 "default (default hippocampal_volume for AD)")

    def declared_task(self) -> tuple:
        """(classes, what workspace.json stores of the task); TaskError for an unusable task."""
        classes = task_classes(self)
        task = {} if classes.is_default else {"task": classes.to_json()}
        if self.biomarker_measure:
            task["biomarker_measure"] = self.biomarker_measure
        return classes, task


@register
@dataclass(frozen=True)
class BuildDemo(Request):
    kind = "demo"
    action = "change_workspace"
    summary = ("build a synthetic demo cohort (AD vs HC, or MS vs HC with --disease ms); for AD then install and "
               "apply the shipped model with its default heatmaps and region metrics (what is there is kept)")

    subjects: int = option(80, "subjects")
    resolution: float = option(2.0, "voxel size in mm (1 = the paper's grid)")
    visits: int = option(3, "maximum visits per subject")
    seed: int = option(0)
    workers: int = option(0, "processes (default: up to 2)")
    force: bool = option(False, "rebuild even if complete")
    results: bool = option(True, "the cohort only (default: also install and apply the shipped model and compute "
                                 "its LRP β = 0 and guided-backprop heatmaps, group means and region metrics)",
                           flag="no-results")
    raw: bool = option(False, "also write every scan in scanner space with its true transform (raw/)")
    disease: str = option("ad", "ad: Alzheimer's atrophy (the paper's task); ms: multiple sclerosis lesions and "
                                "atrophy, in its own workspace (default data/demo-ms)", choices=("ad", "ms"))

    @classmethod
    def configured(cls, **fixed) -> BuildDemo:
        """The demo the dashboard builds on first open: the defaults, or the fields given as ``NAME=VALUE`` in
        ``$RELEVANCE_ATLAS_DEMO`` (``subjects=16 resolution=3``: a small demo for a quick look or a test);
        ``fixed`` fields win (a demo is rebuilt as its own disease)."""
        given = {}
        for pair in os.environ.get(DEMO_ENV, "").split():
            name, _, value = pair.partition("=")
            default = next((f.default for f in dataclasses.fields(cls) if f.name == name), None)
            if default is None or not value:
                raise RequestError(f"${DEMO_ENV}: {pair!r} is not NAME=VALUE of a demo setting "
                                   "(subjects, resolution, visits, seed, workers)")
            given[name] = value == "true" if isinstance(default, bool) else value if isinstance(default, str) \
                else type(default)(float(value))
        return cls(**{**given, **fixed})

    def root(self, ws: Workspace) -> Path:
        """The folder built: the workspace's, except that the MS demo never replaces the default AD demo."""
        default = default_workspace_path()
        return default.parent / "demo-ms" if self.disease == "ms" and ws.root.resolve() == default else ws.root

    def required_action(self, ws: Workspace) -> str | None:
        """None for the default demo workspace: a system action any signed-in identity may start, since a
        fresh server needs it before any page can be shown and its content is deterministic (the shipped
        model's results too: files shipped with the app, applied the same way for everyone). A demo built in
        another folder changes that folder, like ``init``."""
        return None if ws.root.resolve() == default_workspace_path() else self.action

    def key(self, ws: Workspace) -> str:
        return "demo"   # one build of a folder at a time, whatever its settings

    def prepare(self, ws: Workspace) -> Task:
        if self.disease == "ms":
            if self.raw:
                raise RequestError("--raw is built for the Alzheimer's demo only (its labels are the ground truth)")
            return self._prepare_ms(Workspace.open(self.root(ws)))
        from lib.data import demo, raw_demo
        from lib.jobs.kinds import demo_results

        build = self.force or not demo.is_complete(ws)
        raw = self.raw and (build or not raw_demo.is_complete(ws))
        cfg = demo.DemoConfig(n_subjects=self.subjects, resolution=self.resolution, seed=self.seed,
                              max_visits=self.visits)
        if self.workers:
            cfg.workers = self.workers

        def work(progress):
            # one bar for the whole first start: the cohort (if missing), then the shipped model's results
            n_scans = ws.config.get("n_scans") if not build else demo.expected_scans(cfg)
            weights, labels = ([demo_results.SECONDS_PER_SCAN["cohort"] * n_scans], ["demo cohort"]) if build \
                else ([], [])
            if raw:
                weights, labels = weights + [RAW_SECONDS_PER_SCAN * n_scans], labels + ["raw copy"]
            if self.results:
                models = 1 if build else len(demo_results.applicable_models(ws))   # before the build: the shipped one
                more, more_labels = demo_results.weights(n_scans, models)
                weights, labels = weights + more, labels + more_labels
            parts = stages(progress, weights or [1], labels or ["demo cohort"])
            if build:
                message = self._build(ws, cfg, parts.pop(0))
            else:
                message = f"demo cohort already complete at {ws.root} ({ws.config.get('n_scans')} scans)"
                print(f"{message}; --force rebuilds it")
            if raw:
                message += f"; {self._raw(Workspace.open(ws.root), parts.pop(0))}"
            if self.results:
                results = demo_results.compute(Workspace.open(ws.root), parts)
                print(results)
                message += f"; {results}"
            return message

        return Task(work)

    @staticmethod
    def _build(ws: Workspace, cfg, progress) -> str:
        from lib.data import demo
        from lib.data.validation import validate_table

        if ws.cohort_csv.exists():
            # an outdated or partial build: remove what the generator owns so no stale file survives
            for owned in ("scans", "ground_truth", "cache", "raw"):
                shutil.rmtree(ws.root / owned, ignore_errors=True)
        # one part for both phases: generating n scans, then validating them (much faster)
        built = demo.generate(ws.root, cfg, progress=lambda d, t, m: progress(d, t + t // 10, m))
        n = built.config["n_scans"]
        report = validate_table(built.cohort_csv, built, check_images=True,
                                progress=lambda d, t, m: progress(n + d // 10, n + n // 10, m))
        if built.exists:
            save_report(built, report)
        return f"{built.config['n_scans']} scans of {cfg.n_subjects} subjects"


    def _raw(self, ws: Workspace, progress) -> str:
        """The scanner-space copy of a complete demo, with its ground-truth transforms."""
        from lib.data import raw_demo

        workers = self.workers or max(1, min(2, os.cpu_count() or 1))
        table = raw_demo.generate_raw(ws, seed=int(ws.config.get("demo_config", {}).get("seed", self.seed)),
                                      workers=workers, progress=progress)
        return f"raw scans and true transforms in {table.parent}"

    def _prepare_ms(self, ws: Workspace) -> Task:
        from lib.data import demo_ms

        if demo_ms.is_complete(ws) and not self.force:
            return Task(lambda progress: f"MS demo cohort already complete at {ws.root} "
                                         f"({ws.config.get('n_scans')} scans); --force rebuilds it")
        cfg = demo_ms.MSDemoConfig(n_subjects=self.subjects, resolution=self.resolution, seed=self.seed,
                                   max_visits=self.visits)
        if self.workers:
            cfg.workers = self.workers

        def work(progress):
            from lib.data.validation import validate_table

            if ws.exists and ws.is_demo:   # an outdated build: what the generator owns goes, no stale file survives
                for owned in ("scans", "ground_truth", "cache"):
                    shutil.rmtree(ws.root / owned, ignore_errors=True)
            built = demo_ms.generate(ws.root, cfg, progress=lambda d, t, m: progress(d, t + t // 10, m))
            n = built.config["n_scans"]
            report = validate_table(built.cohort_csv, built, check_images=True,
                                    progress=lambda d, t, m: progress(n + d // 10, n + n // 10, m))
            save_report(built, report)
            return f"MS demo: {n} scans of {cfg.n_subjects} subjects in {built.root}"

        return Task(work)


@register
@dataclass(frozen=True)
class Validate(Request):
    kind = "validate"
    action = "change_workspace"
    summary = "validate a cohort table and its scans"

    table: str | None = option(None, "CSV/TSV table, ADNIMERGE file or BIDS folder (default: the workspace's)",
                               positional=True)
    no_images: bool = option(False, "check the table only")
    report: str | None = option(None, "write the report (JSON) here instead of into the workspace")
    positive: str | None = option(None, "check against this task (default: the workspace's; see init)")
    negative: str | None = option(None, "the task's negative class")
    positive_labels: str | None = option(None, "table labels meaning the positive class, comma-separated")
    negative_labels: str | None = option(None, "table labels meaning the negative class, comma-separated")

    def key(self, ws: Workspace) -> str:
        return "validate" if self.table is None else f"validate {self._table(ws)}"

    def _table(self, ws: Workspace) -> Path:
        return Path(self.table).expanduser().resolve() if self.table else ws.cohort_csv

    def prepare(self, ws: Workspace) -> Task:
        from lib.data.validation import validate_table

        table = self._table(ws)
        own_table = table == ws.cohort_csv
        # a table outside the workspace is checked against its own folder (relative paths, path escapes)
        base = table if table.is_dir() else table.parent
        check_ws = ws if ws.exists and (own_table or base.is_relative_to(ws.root)) else Workspace.open(base)
        if any((self.positive, self.negative, self.positive_labels, self.negative_labels)):
            from lib.data.classes import TaskError
            try:
                task = task_classes(self).to_json()
            except TaskError as exc:
                raise RequestError(str(exc)) from exc
            check_ws = Workspace(root=check_ws.root, config={**check_ws.config, "task": task})
        result = {}

        def work(progress):
            report = validate_table(table, check_ws, check_images=not self.no_images, progress=progress)
            if self.report:
                Path(self.report).parent.mkdir(parents=True, exist_ok=True)
                atomic.write_text(self.report, report.to_json())
            elif own_table and ws.exists:
                save_report(ws, report)
            result["report"] = report
            return report.summary()

        return Task(work, result)


@register
@dataclass(frozen=True)
class CreateWorkspace(TaskOptions, Request):
    """Create a workspace; as a dashboard job its record lives in the workspace that asked, which may be
    another folder than the one created."""

    kind = "init"
    action = "change_workspace"
    summary = "create a workspace from a cohort table"

    table: str = option(help="cohort table, ADNIMERGE file or BIDS folder")
    directory: str | None = option(None, "workspace folder (default: the table's folder)", positional=True)
    resolution: float = option(2.0)
    data_root: tuple[str, ...] = option((), "extra folder scans may live in (repeatable)", append=True)
    no_images: bool = option(False)

    def classes(self):
        return task_classes(self)

    def target(self) -> Path:
        table = Path(self.table).expanduser().resolve()
        return Path(self.directory).expanduser().resolve() if self.directory else (
            table if table.is_dir() else table.parent)

    def key(self, ws: Workspace) -> str:
        return f"init {self.target()}"

    def prepare(self, ws: Workspace) -> Task:
        return Task(self._create)

    def _create(self, progress) -> str:
        from lib.data.classes import TaskError
        from lib.data.cohort import CohortError, read_table
        from lib.data.splits import make_splits, save_splits
        from lib.data.validation import format_report, validate_table

        table = Path(self.table).expanduser().resolve()
        root = self.target()
        try:
            classes, task = self.declared_task()
        except TaskError as exc:
            raise RequestError(f"not initialised: {exc}") from exc
        # validated in memory first: a refused table leaves no workspace.json behind
        ws = Workspace(root=root, config={"kind": "study", "resolution": float(self.resolution),
                                          "data_roots": list(self.data_root), **task})
        try:
            cohort = read_table(table, classes)
        except CohortError as exc:
            raise RequestError(str(exc)) from exc
        base = table if table.is_dir() else table.parent
        cohort["path"] = [str(p if Path(p).is_absolute() else (base / p).resolve()) for p in cohort["path"]]
        cohort["path"] = [str(Path(p).relative_to(root)) if Path(p).is_relative_to(root) else p
                          for p in cohort["path"]]
        report = validate_table(cohort, ws, check_images=not self.no_images, progress=progress)
        print(format_report(report))
        sys.stdout.flush()
        if not report.ok:
            raise RequestError(f"not initialised: {report.summary()}; fix the errors in {table}")
        ws = Workspace.create(root, kind="study", resolution=self.resolution, data_roots=list(self.data_root), **task)
        save_report(ws, report)
        save_splits(ws, make_splits(cohort))
        atomic.write_csv(ws.cohort_csv, cohort.drop(columns=[c for c in ("row",) if c in cohort]))
        ws.update_config(complete=True, n_scans=len(cohort))
        print(f"workspace ready at {root}")
        return f"workspace ready at {root} ({len(cohort)} scans)"


@register
@dataclass(frozen=True)
class CohortMeans(Request):
    kind = "means"
    action = "compute"
    summary = "mean images of the two classes of the cohort (dataset overview)"

    def key(self, ws: Workspace) -> str:
        return "means"

    def prepare(self, ws: Workspace) -> Task:
        from lib.data.cohort_means import compute_group_means

        return Task(lambda progress: str(compute_group_means(ws, progress)))
