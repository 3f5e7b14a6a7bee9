"""Jobs on models: train (or resume) runs, and a run's predictions for every scan."""

from __future__ import annotations

from dataclasses import dataclass

from lib.core import atomic
from lib.data.workspace import Workspace
from lib.jobs.request import Request, RequestError, Task, digest, option, register


@register
@dataclass(frozen=True)
class Train(Request):
    kind = "train"
    action = "train"
    summary = "train the CNN (one run per fold × seed) or resume a run"

    resume: str | None = option(None, "continue this run from its last finished epoch", metavar="RUN")
    name: str | None = option(None, "name of the run (default: date-model-seed)", flag="run-id")
    model: str = option("boehle2019", "boehle2019 (default), rieke2018 or pif2021")
    resolution: float | None = option(None, "grid in mm (default: the workspace's)")
    epochs: int = option(100, "maximum epochs (default 100)")
    batch_size: int = option(8)
    lr: float = option(1e-4)
    weight_decay: float = option(1e-4)
    patience: int = option(8, "early stopping patience in epochs")
    flip_p: float = option(0.5)
    shift: int | None = option(None, "left-right translation range in voxels (default: 2 mm, the paper's 2 voxels "
                                     "at 1 mm)")
    normalisation: str = option("zscore", choices=("zscore", "none"))
    class_weighted: bool = option(True, "an unweighted loss (default: classes weighted by inverse frequency)",
                                 flag="no-class-weights")
    seeds: tuple[int, ...] | None = option(None, "one run per seed (default 0)")
    folds: tuple[int, ...] | None = option(None, "cross-validation folds to run (fold k validates)")
    init_from: str | None = option(None, "transfer learning: start from this run, run folder, model of models/ or "
                                         "checkpoint (convolution weights copied; the head re-initialised when its "
                                         "classes differ)", metavar="RUN_OR_CHECKPOINT")
    freeze: int = option(0, "with --init-from: convolution blocks, from the input, kept as the source trained them")

    def key(self, ws: Workspace) -> str:
        # a resumed run is one job at a time; a new training is its settings
        return f"train:{self.resume}" if self.resume else f"train:{digest(self.to_dict())}"

    def config(self):
        from lib.learn.training import TrainConfig

        return TrainConfig(model=self.model, resolution=self.resolution, max_epochs=self.epochs,
                           batch_size=self.batch_size, lr=self.lr, weight_decay=self.weight_decay,
                           patience=self.patience, flip_p=self.flip_p, shift_voxels=self.shift,
                           normalisation=self.normalisation, seed=self.seeds[0] if self.seeds else 0,
                           class_weighted=self.class_weighted, init_from=self.init_from, freeze=self.freeze)

    def prepare(self, ws: Workspace) -> Task:
        import sys

        from lib.learn.training import TrainingError, create_run, load_run, plan, train_many

        try:
            if self.resume:
                runs = [load_run(ws, self.resume)]
                if runs[0].status == "done":
                    print(f"run {runs[0].id} already finished", file=sys.stderr)
                    return Task(lambda progress: f"run {runs[0].id} already finished")
            else:
                configs = plan(self.config(), seeds=list(self.seeds) if self.seeds else None,
                               folds=list(self.folds) if self.folds else None)
                one = self.name if self.name and len(configs) == 1 else None
                group = self.name if len(configs) > 1 else None
                runs = [create_run(ws, c, run_id=one, group=group) for c in configs]
        except (TrainingError, ValueError) as exc:
            raise RequestError(str(exc)) from exc

        def work(progress):
            for run in runs:
                print(f"run {run.id}", file=sys.stderr)
                # the Training page finds a run's job through its config
                if getattr(progress, "job_id", None):
                    run.config["job_id"] = progress.job_id
                    atomic.write_json(run.dir / "config.json", run.config)
            summaries = train_many(ws, runs, progress)
            return "; ".join(f"{s['run']}: test balanced accuracy "
                             f"{s.get('test', {}).get('balanced_accuracy', float('nan')):.3f}" for s in summaries)

        return Task(work)


@register
@dataclass(frozen=True)
class Predict(Request):
    kind = "predict"
    action = "compute"
    summary = "recompute a run's predictions for every scan"

    run_id: str = option(help="training run", flag="run")

    def key(self, ws: Workspace) -> str:
        return f"predict:{self.run_id}"

    def prepare(self, ws: Workspace) -> Task:
        from lib.learn.training import TrainingError, finish_run, load_run

        try:
            run = load_run(ws, self.run_id)
        except TrainingError as exc:
            raise RequestError(str(exc)) from exc

        def work(progress):
            progress(0, 1, "predicting every scan")
            summary = finish_run(ws, run, progress=progress)
            atomic.write_json(run.dir / "summary.json", {**(run.summary() or {}), **summary})
            return f"predictions for {run.id}"

        return Task(work)


@register
@dataclass(frozen=True)
class RegistrationStudy(Request):
    """Eitel's study 4 on the raw demo: preprocess it without, with linear and with non-linear registration,
    train the same model with the same split and seeds on each, tabulate balanced accuracy beside the thesis."""

    kind = "registration-study"
    action = "train"
    summary = "registration study (Eitel study 4) on the raw demo: none / linear / nonlinear"

    registrations: tuple[str, ...] = option(("none", "linear", "nonlinear"), "registration types",
                                            choices=("none", "linear", "nonlinear"))
    seeds: tuple[int, ...] = option((0, 1, 2), "one training per seed and registration type")
    epochs: int = option(80, "maximum epochs per training (the demo model's)")
    batch_size: int = option(4, "scans per optimiser step")
    resolution: int = option(3, "grid in mm", choices=(1, 2, 3))
    workers: int = option(2, "preprocessing processes")

    def key(self, ws: Workspace) -> str:
        return "registration-study"   # one study per workspace at a time; every step is cached, so a re-run resumes

    def settings(self):
        from lib.learn.registration_study import StudySettings

        return StudySettings(registrations=tuple(self.registrations), seeds=tuple(self.seeds),
                             resolution=self.resolution, epochs=self.epochs, batch_size=self.batch_size,
                             workers=self.workers)

    def prepare(self, ws: Workspace) -> Task:
        from lib.learn import registration_study as study

        if not (ws.root / "raw" / "participants.csv").exists():
            raise RequestError(f"{ws.root / 'raw'} holds no raw demo: build it with "
                               f"python -m lib --workspace {ws.root} demo --raw")

        def work(progress):
            try:
                path = study.run_study(ws, self.settings(), progress)
            except study.StudyError as exc:
                raise RequestError(str(exc)) from exc
            return f"wrote {path}"

        return Task(work)
