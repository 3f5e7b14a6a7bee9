"""Raw scans to the template: a cohort table of scanner-space T1 scans preprocessed into a new workspace."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from lib.data.workspace import Workspace
from lib.jobs.kinds.cohort import TaskOptions
from lib.jobs.request import Request, RequestError, Task, option, register

REGISTRATIONS = ("none", "linear", "nonlinear")


@register
@dataclass(frozen=True)
class Preprocess(TaskOptions, Request):
    """Per scan: RAS, N4, registration to ICBM152 2009c (ANTsPy), brain extraction, normalisation, QC
    (:mod:`lib.data.preprocess`). Every scan is cached by its content and the settings, so running the same
    request again (after a cancel or a crash) redoes only what is missing."""

    kind = "preprocess"
    action = "change_workspace"
    summary = "register raw scans to the ICBM152 template (ANTsPy) into a new workspace, with per-scan QC"

    table: str = option(help="raw cohort table (CSV/TSV, ADNIMERGE file or BIDS folder) of scanner-space scans")
    out: str = option(help="folder of the new workspace (its table points at the registered scans)")
    registration: str = option("nonlinear", "none = pad/crop (Eitel's baseline), linear = affine, "
                               "nonlinear = affine + SyN (Böhle et al. 2019)", choices=REGISTRATIONS)
    resolution: int = option(2, "voxel size of the template grid in mm", choices=(1, 2, 3))
    brain_extraction: bool = option(True, "keep the skull (no template brain mask)", flag="no-brain-extraction")
    workers: int = option(2, "scans at a time, each in its own process")
    threads: int = option(1, "ITK threads per process")

    def target(self) -> Path:
        return Path(self.out).expanduser().resolve()

    def key(self, ws: Workspace) -> str:
        return f"preprocess {self.target()}"   # one job per new workspace, whatever its settings

    def settings(self):
        from lib.data.preprocess import Settings

        try:
            return Settings(registration=self.registration, resolution=int(self.resolution),
                            brain_extraction=self.brain_extraction, threads=int(self.threads))
        except ValueError as exc:
            raise RequestError(str(exc)) from None

    def declared_task(self) -> tuple:
        """The classes and what the new workspace stores of them (as :class:`CreateWorkspace` does)."""
        from lib.data.classes import TaskError

        try:
            return super().declared_task()
        except TaskError as exc:
            raise RequestError(f"not preprocessed: {exc}") from None

    def prepare(self, ws: Workspace) -> Task:
        table = Path(self.table).expanduser().resolve()
        if not table.exists():
            raise RequestError(f"{table}: no such table or folder")
        settings = self.settings()
        classes, task = self.declared_task()
        if self.workers < 1:
            raise RequestError("workers must be at least 1")
        result = {}

        def work(progress) -> str:
            import pandas as pd

            from lib.data.preprocess import preprocess_table
            from lib.data.preprocess.table import PreprocessError

            try:
                out = preprocess_table(table, settings, self.target(), progress=progress, workers=self.workers,
                                       classes=classes, task=task)
            except PreprocessError as exc:
                raise RequestError(str(exc)) from None
            report = pd.read_csv(out / "preprocessed" / "qc.csv", keep_default_na=False)
            for message in report.loc[report["status"].isin(("flagged", "failed")), "message"]:
                print(message)   # each left-out scan, one line saying why
            counts = Counter(report["status"])
            result["workspace"] = out
            parts = ", ".join(f"{n} {s.replace('_', ' ')}" for s, n in sorted(counts.items()))
            message = f"workspace ready at {out} ({parts}; QC in {out / 'preprocessed' / 'qc.csv'})"
            print(message)
            return message

        return Task(work, result)
