"""Jobs that analyse a run's heatmaps: the biomarker correlation, the evaluation of maps, the run's report."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from lib.data.atlases import DEFAULT_ATLAS, segmentation_labels
from lib.data.workspace import Workspace
from lib.jobs.kinds.common import SPLITS, given, load_run, parse_params
from lib.jobs.request import Request, RequestError, Task, option, register


@register
@dataclass(frozen=True)
class Biomarker(Request):
    kind = "biomarker"
    action = "compute"
    summary = "hippocampal relevance vs hippocampal volume per outcome group (Böhle et al. 2019 Fig 9)"

    run_id: str = option(help="training run", flag="run")
    method: str = option("lrp")
    betas: tuple[float, ...] | None = option(None, "LRP β values (one result per β)", flag="beta")
    params: dict = option(dict, "any method parameter (repeatable)", flag="param", metavar="KEY=VALUE",
                          append=True, parse=parse_params)
    stores: tuple[str, ...] | None = option(None, "finished heatmap stores by folder name, instead of --method",
                                            flag="store")
    split: str = option("test", choices=SPLITS)
    groups: tuple[str, ...] = option(("TP", "FP"), "outcome groups (default TP FP)", flag="group")
    side: str = option("both", choices=("both", "left", "right"))
    metric: str = option("sum", choices=("sum", "density"))
    absolute: bool | None = option(None, "relevance of |h| (default: for gradient methods, as the paper's GB "
                                         "susceptibility)")
    volume: str = option("auto", choices=("auto", "cohort", "segmentation", "ground_truth"))
    segmentation_column: str | None = option(None, "cohort column with per-scan label NIfTI files")
    labels: str = option(DEFAULT_ATLAS, f"segmentation labels: {' or '.join(segmentation_labels())}")
    icv: bool = option(False, "volume as %% of the intracranial volume")
    atlas: str = option(DEFAULT_ATLAS)
    one_per_subject: bool = option(False, "first visit of each subject only")
    permutations: int = option(10_000, "permutations and bootstrap resamples")
    seed: int = option(0)

    def _stores(self, ws: Workspace, run) -> list:
        from lib.explain import heatmaps

        if self.stores:
            by_name = {s.folder.name: s for s in heatmaps.list_stores(ws, run)}
            missing = [k for k in self.stores if k not in by_name]
            if missing:
                raise RequestError(f"no finished heatmap store {missing} of run {run.id}")
            return [by_name[k] for k in self.stores]
        params = dict(self.params)
        betas = list(self.betas) if self.betas is not None else [params.pop("beta", None)]
        stores = []
        for b in betas:
            p = given(params, beta=b)
            store = heatmaps.find_store(ws, run, self.method, **p)
            if store is None:
                raise RequestError(f"no heatmaps of run {run.id} with {self.method} {p or ''}: compute them first "
                                   "with python -m lib explain")
            stores.append(store)
        return stores

    def prepare(self, ws: Workspace) -> Task:
        from lib.analysis import biomarker
        from lib.data.scans import load_cohort

        run = load_run(ws, self.run_id)
        preds = run.predictions()
        if preds is None:
            raise RequestError(f"run {run.id} has no predictions yet")
        stores = self._stores(ws, run)
        try:
            volume = biomarker.hippocampal_volumes(ws, load_cohort(ws), self.volume, side=self.side,
                                                   segmentation_column=self.segmentation_column,
                                                   labels=self.labels, normalise=self.icv)
        except (KeyError, ValueError) as exc:
            raise RequestError(exc.args[0] if exc.args else str(exc)) from exc
        result = {"rows": [], "volume": volume}

        def work(progress):
            for store in stores:
                _, st = biomarker.hippocampus_analysis(
                    ws, store, preds, volume, atlas=self.atlas, side=self.side, metric=self.metric,
                    absolute=self.absolute, split=self.split, groups=list(self.groups),
                    one_per_subject=self.one_per_subject, n_permutations=self.permutations,
                    n_boot=self.permutations, seed=self.seed, progress=progress)
                for g, row in st.iterrows():
                    result["rows"].append({"method": biomarker.method_label(store.params),
                                           "store": store.folder.name, "group": g, **row.to_dict()})
            return f"{len(result['rows'])} correlations"

        return Task(work, result)


def _settings_field(flag: str | None = None, help: str = "", choices: tuple | None = None):
    return option(None, help, flag=flag, choices=choices)


@register
@dataclass(frozen=True)
class EvaluateMaps(Request):
    """Fields after ``checks`` are :class:`lib.analysis.evaluation.Settings`' (None: its default)."""

    kind = "evaluate-maps"
    action = "compute"
    summary = "evaluate explanation methods on a run: region perturbation (AOPC), sanity check, localisation"

    run_id: str = option(help="training run", flag="run")
    methods: tuple[str, ...] | None = option(None, "e.g. lrp:beta=0.5 guided_backprop gradcam (default: LRP β "
                                                   "0/0.5/1, guided backprop, gradient×input, occlusion, Grad-CAM)",
                                             metavar="METHOD[:K=V,…]")
    checks: tuple[str, ...] | None = option(None, "default: all three", choices=("aopc", "sanity", "localisation"))
    split: str | None = _settings_field(None, "scans from (default test)", SPLITS)
    n_scans: int | None = _settings_field("scans", "scans for region perturbation and localisation (default 8)")
    sanity_scans: int | None = _settings_field(None, "scans for the randomisation check (default 2)")
    seed: int | None = _settings_field()
    target: str | None = _settings_field(None, "explained class (default: the run's positive class)")
    regions: str | None = _settings_field(None, "perturbed regions (default cubes)", ("cubes", "atlas"))
    cube_mm: float | None = _settings_field(None, "cube edge in mm (default 15)")
    atlas: str | None = _settings_field(None, f"atlas for --regions atlas (default {DEFAULT_ATLAS})")
    steps: int | None = _settings_field(None, "perturbation steps L (default 50)")
    replacement: str | None = _settings_field(None, "default uniform noise", ("zero", "mean", "uniform", "blur"))
    blur_mm: float | None = _settings_field(None, "σ of the blur replacement in mm (default 6)")
    order_score: str | None = _settings_field(None, "region score: relevance sum or |relevance| sum", ("sum", "abs"))
    output: str | None = _settings_field(None, "f of AOPC (default probability)", ("probability", "logit"))
    random_repeats: int | None = _settings_field(None, "random orders per scan (default 1)")
    top_fraction: float | None = _settings_field(None, "top-k overlap as a share of brain voxels (default 0.02)")
    sanity_threshold: float | None = _settings_field("threshold", "sanity check passes below this rank "
                                                                  "correlation (0.5)")
    truth: str | None = _settings_field(None, "ground-truth mask (default atrophy)", ("atrophy", "regions"))
    min_loss: float | None = _settings_field(None, "local volume loss in the atrophy mask (default 0.05)")
    min_mm: float | None = _settings_field(None, "displacement of a region in the regions mask (default 0.5)")
    tolerance_mm: float | None = _settings_field(None, "pointing-game tolerance (default 0)")
    batch_size: int | None = _settings_field(None, "volumes per forward pass (default 8)")

    @classmethod
    def of(cls, evaluation, checks=None) -> EvaluateMaps:
        """The request of an :class:`~lib.analysis.evaluation.Evaluation` (settings at their defaults left out)."""
        from lib.analysis.evaluation import Settings

        given, default = evaluation.settings, Settings()
        changed = {f.name: getattr(given, f.name) for f in dataclasses.fields(Settings)
                   if getattr(given, f.name) != getattr(default, f.name)}
        return cls(run_id=evaluation.run.id, methods=tuple(m.spec for m in evaluation.methods),
                   checks=tuple(checks) if checks is not None else None, **changed)

    def settings(self):
        from lib.analysis.evaluation import Settings

        names = {f.name for f in dataclasses.fields(Settings)}
        return Settings(**{k: v for k, v in dataclasses.asdict(self).items() if k in names and v is not None})

    def evaluation(self, ws: Workspace):
        from lib.analysis.evaluation import DEFAULT_METHODS, Evaluation

        run = load_run(ws, self.run_id)
        try:
            return Evaluation(ws, run, list(self.methods or DEFAULT_METHODS), self.settings())
        except (ValueError, TypeError, KeyError) as exc:
            raise RequestError(exc.args[0] if exc.args else str(exc)) from exc

    def all_checks(self) -> list[str]:
        from lib.analysis.evaluation import CHECKS

        return list(self.checks or CHECKS)

    def key(self, ws: Workspace) -> str:
        """The evaluation's own job key (``evaluate-maps:`` and the run's checkpoint, methods, settings, checks)."""
        try:
            return self.evaluation(ws).job_key(self.all_checks())
        except RequestError:   # the job fails saying so; its key is the request's own
            return super().key(ws)

    def prepare(self, ws: Workspace) -> Task:
        import sys

        ev = self.evaluation(ws)
        checks = self.all_checks()
        if "localisation" in checks and not ev.has_truth():
            print("no ground truth in this workspace (demo cohorts only): localisation is skipped", file=sys.stderr)
        result = {"evaluation": ev}

        def work(progress):
            result["results"] = ev.run_checks(checks, progress=progress)
            return f"{len(ev.methods)} method(s) evaluated: {', '.join(checks)}"

        return Task(work, result)


@register
@dataclass(frozen=True)
class Report(Request):
    kind = "report"
    action = "compute"
    summary = ("a run's report: one self-contained HTML file (and a PDF), every figure also as SVG; built from the "
               "cached results, cached by its content")

    run_id: str = option(help="training run", flag="run")
    pdf: bool = option(False, "also the PDF")

    def key(self, ws: Workspace) -> str:
        """``report:``, the run and the report's content key: a changed input is a new report."""
        from lib.views import report

        try:
            return report.job_key(ws, load_run(ws, self.run_id))
        except RequestError:   # the job fails saying so; its key is the request's own
            return super().key(ws)

    def prepare(self, ws: Workspace) -> Task:
        from lib.views import report

        run = load_run(ws, self.run_id)
        result = {}

        def work(progress):
            result["files"] = report.write(ws, run, pdf=self.pdf, progress=progress)
            return f"report of {run.id} in {result['files']['html'].parent}"

        return Task(work, result)
