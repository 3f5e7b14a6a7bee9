"""Integrity of cached results: a checksum of every file and a completeness marker written last.

Two kinds of entry:

* a folder (heatmap store, volume store, one grouping of group means, one evaluation result): its
  top-level files are listed with size and SHA-256 in ``<folder>/complete.json``, written after them
  (subfolders, such as a store's ``group_means/``, are entries of their own);
* a single file (region table, overview means, segmentation volumes, a run's predictions): its size
  and SHA-256 in ``<file>.ok`` beside it, written after it.

An entry without its marker (interrupted, or written by an older version), with a missing or
truncated file or with altered bytes is *bad*: readers treat it as absent and recompute it, or raise
:class:`CacheError` naming it and the command that repairs it. Whole files are hashed (SHA-256, about
1.4 GB/s with the CPU's SHA extensions) once per process and file version: the verdict is kept by
(path, size, mtime, ctime, inode), so re-reading an entry costs one ``stat`` per file.

``python -m lib cache verify [--repair]`` walks every entry of a workspace (:func:`scan`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from lib.core import atomic

MARKER = "complete.json"
SUFFIX = ".ok"
REPAIR = "python -m lib cache verify --repair"

_verified: dict[str, tuple] = {}
_lock = threading.Lock()


class CacheError(ValueError):
    """A cache entry is corrupted or incomplete (the message names it and the command that repairs it)."""


def _stamp(st: os.stat_result) -> tuple:
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino


def sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, read in chunks (also the checkpoint hash of :mod:`lib.learn.runs`)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(4 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _describe(path: Path) -> dict:
    return {"size": path.stat().st_size, "sha256": sha256(path)}


def marker_of(entry: str | os.PathLike) -> Path:
    entry = Path(entry)
    return entry / MARKER if entry.is_dir() else entry.with_name(entry.name + SUFFIX)


def seal(entry: str | os.PathLike, **meta) -> None:
    """Write ``entry``'s completeness marker (after its data): checksums of its file(s) and ``meta``."""
    entry = Path(entry)
    if entry.is_dir():
        files = {p.name: _describe(p) for p in sorted(entry.iterdir())
                 if p.is_file() and p.name != MARKER and not p.name.startswith(".")}
        atomic.write_json(entry / MARKER, {"version": 1, "files": files, "meta": meta, "sealed": time.time()})
    else:
        atomic.write_json(marker_of(entry), {"version": 1, **_describe(entry), "meta": meta, "sealed": time.time()})
    _remember(entry)


def _remember(entry: Path) -> None:
    for f in ([p for p in entry.iterdir() if p.is_file()] if entry.is_dir() else [entry]):
        with contextlib.suppress(OSError):
            with _lock:
                _verified[str(f)] = _stamp(f.stat())


def _check_file(path: Path, size: int, digest: str, name: str) -> str | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return f"{name} is missing"
    if st.st_size != size:
        return f"{name} has {st.st_size} bytes, {size} were written (truncated or replaced)"
    key = str(path)
    with _lock:
        if _verified.get(key) == _stamp(st):
            return None
    if sha256(path) != digest:
        return f"{name} does not match its checksum (altered or corrupted)"
    with _lock:
        _verified[key] = _stamp(st)
    return None


def problem(entry: str | os.PathLike) -> str | None:
    """What is wrong with a cache entry (a sentence), or None when it is whole."""
    entry = Path(entry)
    marker = marker_of(entry)
    if not entry.exists():
        return "missing"
    try:
        info = json.loads(marker.read_text())
    except FileNotFoundError:
        return f"no completeness marker {marker.name} (unfinished, or written by an older version)"
    except (OSError, ValueError):
        return f"completeness marker {marker.name} is unreadable"
    try:
        if entry.is_dir():
            for name, f in info["files"].items():
                bad = _check_file(entry / name, int(f["size"]), str(f["sha256"]), name)
                if bad:
                    return bad
            return None
        return _check_file(entry, int(info["size"]), str(info["sha256"]), entry.name)
    except (KeyError, TypeError, ValueError, AttributeError):
        return f"completeness marker {marker.name} is unreadable"


def meta(entry: str | os.PathLike) -> dict:
    """The parameters recorded in an entry's marker ({} without one)."""
    try:
        return json.loads(marker_of(entry).read_text()).get("meta", {}) or {}
    except (OSError, ValueError, AttributeError):
        return {}


def ok(entry: str | os.PathLike) -> bool:
    return problem(entry) is None


def discard(entry: str | os.PathLike) -> None:
    """Remove a bad entry and its marker, so the next reader recomputes it.

    A folder is first renamed aside (one step), so no reader sees it half removed; memory maps of it
    that are open elsewhere stay valid until closed.
    """
    entry = Path(entry)
    with _lock:
        for key in [k for k in _verified if k == str(entry) or k.startswith(str(entry) + os.sep)]:
            _verified.pop(key, None)
    if entry.is_dir():
        aside = entry.with_name(f".{entry.name}.bad-{time.time_ns()}")
        try:
            os.rename(entry, aside)
        except OSError:
            return
        shutil.rmtree(aside, ignore_errors=True)
    else:
        for p in (marker_of(entry), entry):
            with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                p.unlink()


def require(entry: str | os.PathLike, what: str, recompute: str) -> None:
    """Raise :class:`CacheError` naming ``what`` (at ``entry``) when it is bad; ``recompute``: the command."""
    bad = problem(entry)
    if bad:
        raise CacheError(f"{what} at {entry} is not usable ({bad}). Remove it with `{REPAIR}` and recompute it "
                         f"with `{recompute}`.")


# --- python -m lib cache verify ------------------------------------------------------------------------------
@dataclass
class Finding:
    path: Path
    kind: str
    problem: str
    recompute: str


KINDS = {
    "heatmaps": ("heatmap store", "python -m lib explain --run RUN --method M (or the Heatmaps page)"),
    "volumes": ("volume store", "any job that reads the scans (rebuilt on its next use)"),
    "group_means": ("group means", "python -m lib group-means --run RUN --store KEY (or the Heatmaps page)"),
    "regions": ("region table", "python -m lib regions --run RUN … (or the Atlas metrics page)"),
    "overview": ("cohort mean images", "python -m lib means (or the Overview page)"),
    "biomarker": ("segmentation volumes", "python -m lib biomarker … (recomputed on its next use)"),
    "evaluation": ("evaluation result", "python -m lib evaluate-maps --run RUN … (or the Evaluation page)"),
    "predictions": ("predictions", "python -m lib predict --run RUN"),
}


def entries(root: str | os.PathLike) -> list[tuple[str, Path]]:
    """Every cache entry of the workspace at ``root`` as ``(kind, path)`` (a kind of :data:`KINDS`)."""
    root = Path(root)
    cache = root / "cache"
    out: list[tuple[str, Path]] = []

    def visible(folder: Path):
        return sorted(p for p in folder.iterdir() if not p.name.startswith(".")) if folder.is_dir() else []

    for p in visible(cache / "heatmaps"):
        if p.is_dir() and not p.name.endswith(".partial"):
            out.append(("heatmaps", p))
            out += [("group_means", g) for g in visible(p / "group_means") if g.is_dir()]
    out += [("volumes", p) for p in visible(cache / "volumes") if p.is_dir()]
    out += [("evaluation", p) for p in visible(cache / "evaluation") if p.is_dir()]
    out += [("regions", p) for p in visible(cache / "regions") if p.suffix == ".parquet"]
    out += [("overview", p) for p in visible(cache / "overview") if p.name.endswith(".nii.gz")]
    out += [("biomarker", p) for p in visible(cache / "biomarker" / "volumes") if p.suffix == ".csv"]
    for run in visible(root / "runs"):
        if (run / "predictions.csv").exists():
            out.append(("predictions", run / "predictions.csv"))
    return out


def orphans(root: str | os.PathLike) -> list[tuple[str, Path]]:
    """Markers whose entry is gone, and files of a finished region table without their table."""
    out = []
    cache = Path(root) / "cache"
    for folder in (cache / "regions", cache / "overview", cache / "biomarker" / "volumes", Path(root) / "runs"):
        if folder.is_dir():
            for m in folder.rglob("*" + SUFFIX) if folder.name == "runs" else folder.glob("*" + SUFFIX):
                if not m.with_name(m.name[:-len(SUFFIX)]).exists():
                    out.append(("marker", m))
    return out


def scan(root: str | os.PathLike, progress=None, *, checks: dict | None = None) -> tuple[list[Finding], int]:
    """``(bad entries, entries checked)``: every entry's files re-hashed (``cache verify``).

    ``checks`` maps a kind to its own ``problem(path)`` where the owning layer knows more than the checksum
    (predictions written before markers existed are checked by content); passed in so this layer stays at
    the bottom.
    """
    found = entries(root)
    bad = []
    for i, (kind, path) in enumerate(found):
        why = (checks or {}).get(kind, problem)(path)
        if why:
            bad.append(Finding(path, KINDS[kind][0], why, KINDS[kind][1]))
        if progress:
            progress(i + 1, len(found), str(path))
    for _kind, m in orphans(root):
        bad.append(Finding(m, "marker", "marker without its entry", "nothing (the marker is removed)"))
    return bad, len(found)


def repair(findings: list[Finding]) -> None:
    for f in findings:
        if f.kind == "marker":
            with contextlib.suppress(FileNotFoundError):
                f.path.unlink()
        else:
            discard(f.path)
