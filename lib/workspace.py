"""A workspace: one folder holding a study's whole state.

::

    <root>/workspace.json      name, kind (demo|study), template resolution, allowed data roots
    <root>/cohort.csv          canonical cohort table (one row per scan; paths relative to <root>)
    <root>/splits.json         subject-level train/validation/test split and k folds
    <root>/qc.csv              per-scan quality control from the last validation
    <root>/validation.json     the last validation report
    <root>/ground_truth/       demo cohort only: atrophy applied and region volumes per scan
    <root>/jobs/<id>/          status.json + log.txt of each background job
    <root>/runs/ , cache/      training runs and content-keyed result caches

A lab points the app (or ``python -m lib --workspace DIR``) at the folder and
everything is found there.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from . import atomic
from .templates import Grid

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_WORKSPACE = REPO_ROOT / "data" / "demo"
WORKSPACE_ENV = "RELEVANCE_ATLAS_WORKSPACE"


def default_workspace_path() -> Path:
    return Path(os.environ.get(WORKSPACE_ENV, DEFAULT_WORKSPACE)).expanduser().resolve()


@dataclass
class Workspace:
    root: Path
    config: dict = field(default_factory=dict)

    @classmethod
    def open(cls, root: str | os.PathLike | None = None) -> "Workspace":
        root = Path(root).expanduser().resolve() if root else default_workspace_path()
        return cls(root=root, config=atomic.read_json(root / "workspace.json", default={}) or {})

    @classmethod
    def create(cls, root: str | os.PathLike, *, name: str | None = None, kind: str = "study",
               resolution: float = 2.0, data_roots: list[str] | None = None, **extra) -> "Workspace":
        root = Path(root).expanduser().resolve()
        root.mkdir(parents=True, exist_ok=True)
        config = {"name": name or root.name, "kind": kind, "resolution": float(resolution),
                  "data_roots": list(data_roots or []), **extra}
        atomic.write_json(root / "workspace.json", config)
        return cls(root=root, config=config)

    # --- state -------------------------------------------------------------
    @property
    def exists(self) -> bool:
        return (self.root / "workspace.json").exists()

    @property
    def name(self) -> str:
        return self.config.get("name", self.root.name)

    @property
    def kind(self) -> str:
        return self.config.get("kind", "study")

    @property
    def is_demo(self) -> bool:
        return self.kind == "demo"

    @property
    def grid(self) -> Grid:
        return Grid(float(self.config.get("resolution", 2.0)))

    @property
    def data_roots(self) -> list[Path]:
        """Folders scan paths may point into: the workspace itself plus any configured roots."""
        return [self.root] + [Path(p).expanduser().resolve() for p in self.config.get("data_roots", [])]

    def update_config(self, **changes) -> None:
        self.config.update(changes)
        atomic.write_json(self.root / "workspace.json", self.config)

    # --- well-known paths ----------------------------------------------------
    @property
    def cohort_csv(self) -> Path:
        return self.root / self.config.get("cohort_table", "cohort.csv")

    @property
    def splits_json(self) -> Path:
        return self.root / "splits.json"

    @property
    def qc_csv(self) -> Path:
        return self.root / "qc.csv"

    @property
    def validation_json(self) -> Path:
        return self.root / "validation.json"

    @property
    def ground_truth_dir(self) -> Path:
        return self.root / "ground_truth"

    @property
    def jobs_dir(self) -> Path:
        return self.root / "jobs"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    def resolve(self, path: str | os.PathLike) -> Path:
        """A scan path from the cohort table, made absolute (relative paths are relative to the root)."""
        p = Path(path).expanduser()
        return (p if p.is_absolute() else self.root / p).resolve()

    def is_inside_data_roots(self, path: str | os.PathLike) -> bool:
        p = self.resolve(path)
        return any(p == r or r in p.parents for r in self.data_roots)
