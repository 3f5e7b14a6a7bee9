"""A workspace: one folder holding a study's whole state.

::

    <root>/workspace.json      name, kind (demo|study), template resolution, allowed data roots, the task
                               (positive and negative class and their table labels; AD vs HC if absent)
    <root>/cohort.csv          canonical cohort table (one row per scan; paths relative to <root>)
    <root>/splits.json         subject-level train/validation/test split and k folds
    <root>/qc.csv              per-scan quality control from the last validation
    <root>/validation.json     the last validation report
    <root>/ground_truth/       demo cohort only: atrophy applied and region volumes per scan
    <root>/jobs/<id>/          status.json + log.txt of each background job
    <root>/runs/ , cache/      training runs and content-keyed result caches

A lab points the app (or ``python -m lib --workspace DIR``) at the folder and
everything is found there.

The dashboard opens workspaces only inside the server's roots (:func:`allowed_roots`: ``workspace_roots``
of the server settings and the default workspace's parent folder) and only folders that already hold a
``workspace.json`` (:func:`open_confined`); a workspace inside the roots cannot widen what the server
reads through its ``data_roots`` (those outside the roots are ignored). The command line opens any folder.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from lib.core import atomic, memo
from lib.data.classes import DEFAULT_CLASSES, Classes, TaskError
from lib.data.templates import Grid

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_WORKSPACE = REPO_ROOT / "data" / "demo"
WORKSPACE_ENV = "RELEVANCE_ATLAS_WORKSPACE"


REFUSED = ("it is not inside the folders this server opens workspaces from (the server's workspace_roots "
           "and the default workspace's folder)")


class WorkspaceError(ValueError):
    """A workspace cannot be opened: its workspace.json is unreadable, or the folder is refused or holds none.

    The message names the file or folder and the problem, and is safe to show in the browser."""


class WorkspaceRefused(WorkspaceError):
    """A path asked for from the browser lies outside the allowed folders (nothing is said about whether it
    exists)."""


def default_workspace_path() -> Path:
    return Path(os.environ.get(WORKSPACE_ENV, DEFAULT_WORKSPACE)).expanduser().resolve()


def allowed_roots() -> tuple[Path, ...]:
    """Folders the dashboard may open workspaces and read tables in: the server settings' ``workspace_roots``
    plus the default workspace's parent folder. Unreadable settings leave only the latter (fail closed)."""
    from lib.core import settings

    try:
        configured = settings.load().workspace_roots
    except settings.SettingsError:
        configured = ()
    return tuple(dict.fromkeys([default_workspace_path().parent, *configured]))


def is_inside(path: Path, roots) -> bool:
    """``path`` (already resolved) is one of ``roots`` or lies below one."""
    return any(path == r or r in path.parents for r in roots)


def _shown(text) -> str:
    """A path as typed, for a message: one line, short, no Markdown code fence breakers."""
    text = " ".join(str(text).split()).replace("`", "'")
    return text if len(text) <= 160 else text[:157] + "..."


def _resolve_typed(path, base: Path | None = None) -> Path:
    """A path typed in the browser, made absolute (relative to ``base``) with symlinks and ``..`` resolved."""
    try:
        p = Path(str(path)).expanduser()
        if not p.is_absolute():
            p = (base or REPO_ROOT) / p
        return p.resolve()
    except (OSError, RuntimeError, ValueError):  # unknown ~user, NUL byte, symlink loop
        raise WorkspaceRefused(f"`{_shown(path)}` refused: {REFUSED}.") from None


def open_confined(path: str | os.PathLike) -> "Workspace":
    """The workspace at a folder asked for from the browser (``?workspace=``, the sidebar).

    Refused (:class:`WorkspaceRefused`, the same message whether or not the folder exists) outside
    :func:`allowed_roots`; a folder inside them without a workspace.json is a :class:`WorkspaceError`, as is
    a garbled workspace.json. Nothing is created. The default workspace is always allowed (a fresh server
    builds the demo cohort there).
    """
    root = _resolve_typed(path)
    default = default_workspace_path()
    if root == default:
        return Workspace.open(root)
    if not is_inside(root, allowed_roots()):
        raise WorkspaceRefused(f"`{_shown(path)}` refused: {REFUSED}.")
    if not (root / "workspace.json").is_file():
        raise WorkspaceError(f"`{_shown(root)}` holds no workspace (no workspace.json). Create one from a cohort "
                             "table on the Cohort & validation page, or `python -m lib init --table TABLE`.")
    return Workspace.open(root)


def discover(roots=None, *, depth: int = 2, limit: int = 200) -> list[Path]:
    """Workspace folders (holding a workspace.json) in ``roots`` (default :func:`allowed_roots`) and up to
    ``depth`` levels below them, the default workspace first; hidden folders are skipped."""
    default = default_workspace_path()
    found: dict[Path, None] = {default: None}
    roots = [Path(r).resolve() for r in (roots if roots is not None else allowed_roots())]
    level = list(roots)
    for _ in range(depth + 1):
        below = []
        for folder in level:
            if len(found) >= limit:
                return list(found)
            try:
                if (folder / "workspace.json").is_file():
                    found.setdefault(folder, None)
                # symlinks are not followed: one could lead out of the roots (open_confined refuses those)
                below += sorted(p for p in folder.iterdir()
                                if not p.is_symlink() and p.is_dir() and not p.name.startswith("."))
            except OSError:  # unreadable folder
                continue
        level = below
    return list(found)


def _read_config(path: Path) -> dict:
    """workspace.json as a dict; a clear :class:`WorkspaceError` for anything else."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except json.JSONDecodeError as exc:
        raise WorkspaceError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
                             "fix or restore the file") from None
    except UnicodeDecodeError:
        raise WorkspaceError(f"{path}: not a text file (not UTF-8); fix or restore the file") from None
    except OSError as exc:
        raise WorkspaceError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if not isinstance(config, dict):
        raise WorkspaceError(f"{path}: expected a JSON object (name, kind, resolution, ...), found "
                             f"{type(config).__name__ if config is not None else 'null'}; fix or restore the file")
    problems = []
    if "resolution" in config and (isinstance(config["resolution"], bool)
                                   or not isinstance(config["resolution"], (int, float))
                                   or not config["resolution"] > 0):
        problems.append(f"resolution must be a positive number of mm, not {config['resolution']!r}")
    roots = config.get("data_roots", [])
    if not isinstance(roots, list) or not all(isinstance(r, str) for r in roots):
        problems.append("data_roots must be a list of folder names")
    for key in ("name", "kind", "cohort_table", "reviews_db", "biomarker_measure"):
        if key in config and not isinstance(config[key], str):
            problems.append(f"{key} must be a string")
    if "task" in config:
        try:
            Classes.from_json(config["task"])
        except TaskError as exc:
            problems.append(str(exc))
    if problems:
        raise WorkspaceError(f"{path}: {'; '.join(problems)}")
    return config


def _under_root(name: str) -> property:
    """A workspace path that is always ``<root>/<name>``."""
    return property(lambda self: self.root / name, doc=f"``<root>/{name}``")


@dataclass
class Workspace:
    root: Path
    config: dict = field(default_factory=dict)

    # set when workspace.json could not be read (the dashboard then shows this and offers no action)
    problem: str | None = field(default=None, compare=False)

    @classmethod
    def open(cls, root: str | os.PathLike | None = None) -> "Workspace":
        """The workspace at ``root`` (nothing is created); :class:`WorkspaceError` for a garbled workspace.json."""
        root = Path(root).expanduser().resolve() if root else default_workspace_path()
        return cls(root=root, config=_read_config(root / "workspace.json"))

    @classmethod
    def create(cls, root: str | os.PathLike, *, name: str | None = None, kind: str = "study",
               resolution: float = 2.0, data_roots: list[str] | None = None, **extra) -> "Workspace":
        root = Path(root).expanduser().resolve()
        root.mkdir(parents=True, exist_ok=True)
        config = {"name": name or root.name, "kind": kind, "resolution": float(resolution),
                  "data_roots": list(data_roots or []), **extra}
        atomic.write_json(root / "workspace.json", config)
        return cls(root=root, config=config)

    def memo_key(self) -> tuple:
        """The workspace's identity for :mod:`lib.core.memo`: its folder, settings, cohort table, QC table and
        splits (what :func:`lib.data.scans.load_cohort` reads)."""
        return (str(self.root), memo.stamp(self.root / "workspace.json"), memo.stamp(self.cohort_csv),
                memo.stamp(self.qc_csv), memo.stamp(self.splits_json))

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
    def classes(self) -> Classes:
        """The classes this workspace's models tell apart: its declared task, else AD against HC."""
        task = self.config.get("task")
        return DEFAULT_CLASSES if task is None else Classes.from_json(task)

    @property
    def biomarker_measure(self) -> str | None:
        """The cohort column the Biomarkers page correlates relevance with by default: the workspace's
        ``biomarker_measure``, else hippocampal volume for AD (Böhle et al. 2019, Fig 9), else None."""
        own = self.config.get("biomarker_measure")
        return own or ("hippocampal_volume" if self.classes.positive == DEFAULT_CLASSES.positive else None)

    @property
    def grid(self) -> Grid:
        return Grid(float(self.config.get("resolution", 2.0)))

    @functools.cached_property
    def _server_roots(self) -> tuple[Path, ...] | None:
        """The server's roots when the dashboard can open this workspace (it lies in them), else None."""
        roots = allowed_roots()
        return roots if is_inside(self.root, roots) else None

    def _configured_data_roots(self) -> list[Path]:
        return [Path(p).expanduser().resolve() for p in self.config.get("data_roots", [])]

    @property
    def data_roots(self) -> list[Path]:
        """Folders scan paths may point into: the workspace itself plus its configured roots.

        For a workspace the dashboard can open, configured roots outside the server's roots are ignored
        (see :attr:`ignored_data_roots`): a workspace.json cannot widen what the server reads."""
        roots = self._server_roots
        return [self.root] + [p for p in self._configured_data_roots() if roots is None or is_inside(p, roots)]

    @property
    def ignored_data_roots(self) -> list[Path]:
        roots = self._server_roots
        return [] if roots is None else [p for p in self._configured_data_roots() if not is_inside(p, roots)]

    def readable_path(self, path: str | os.PathLike) -> Path:
        """A file or folder typed in the browser (a cohort table), resolved, if it lies in this workspace's
        data roots or the server's roots; otherwise :class:`WorkspaceRefused`, whether or not it exists."""
        p = _resolve_typed(path, self.root)
        if not is_inside(p, [*self.data_roots, *allowed_roots()]):
            raise WorkspaceRefused(f"`{_shown(path)}` refused: it is not inside the folders this server reads "
                                   "tables from (this workspace, its data_roots and the server's workspace_roots).")
        return p

    def update_config(self, **changes) -> None:
        self.config.update(changes)
        atomic.write_json(self.root / "workspace.json", self.config)

    # --- well-known paths ----------------------------------------------------
    @property
    def cohort_csv(self) -> Path:
        return self.root / self.config.get("cohort_table", "cohort.csv")

    # files and folders at fixed places under the root
    splits_json = _under_root("splits.json")
    qc_csv = _under_root("qc.csv")
    validation_json = _under_root("validation.json")
    ground_truth_dir = _under_root("ground_truth")
    jobs_dir = _under_root("jobs")
    runs_dir = _under_root("runs")
    cache_dir = _under_root("cache")

    def resolve(self, path: str | os.PathLike) -> Path:
        """A scan path from the cohort table, made absolute (relative paths are relative to the root)."""
        p = Path(path).expanduser()
        return (p if p.is_absolute() else self.root / p).resolve()

    def is_inside_data_roots(self, path: str | os.PathLike) -> bool:
        p = self.resolve(path)
        return any(p == r or r in p.parents for r in self.data_roots)
