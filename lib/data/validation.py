"""Validation of a cohort table and its scans, reporting every problem at once.

:func:`validate_table` never raises for bad input: a table that cannot be read
becomes a report with one error, and every bad row or scan adds its own
:class:`Issue` (a distinct ``code`` per kind of problem, a message that names
the row and file). Each image is read once, one volume at a time, and
summarised in a per-scan QC table.

Issue codes
-----------
Table: ``table_not_found``, ``unparsable_table``, ``missing_columns``, ``empty_table``,
``read_warning``, ``missing_value``, ``unknown_diagnosis``, ``ambiguous_diagnosis`` (a generic word such as
"patient" the task does not declare), ``not_in_task`` (warning: MCI and other groups outside the task), ``unknown_sex`` (warning), ``non_numeric``, ``age_out_of_range``
(warning), ``mmse_out_of_range`` (warning), ``duplicate_scan_id``, ``duplicate_path``
(warning), ``subject_sex_conflict``, ``subject_diagnosis_conflict``, ``path_outside_workspace``,
``missing_file``, ``not_a_file``.

Image: the codes of :func:`lib.data.images.inspect_image`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from lib.data import cohort
from lib.data.classes import DEFAULT_CLASSES
from lib.data.cohort import CohortError
from lib.data.images import ImageError, exc_text, inspect_image, load_on_grid  # noqa: F401  (where pages load scans)
from lib.data.templates import Grid
from lib.core.progress import Progress

AGE_RANGE = (18.0, 110.0)
MMSE_RANGE = (0.0, 30.0)
QC_COLUMNS = ["scan_id", "row", "path", "readable", "shape", "voxel_size_mm", "on_grid", "dtype",
              "min", "max", "mean", "std", "nonzero_fraction", "template_corr", "fov_overlap",
              "n_errors", "n_warnings", "flags"]


@dataclass
class Issue:
    severity: str  # "error" | "warning"
    code: str
    message: str
    row: int | None = None
    scan_id: str | None = None
    path: str | None = None


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


@dataclass
class ValidationReport:
    issues: list[Issue] = field(default_factory=list)
    qc: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=QC_COLUMNS))

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def codes(self) -> set[str]:
        return {i.code for i in self.issues}

    def summary(self) -> str:
        return (f"{_plural(len(self.errors), 'error')}, {_plural(len(self.warnings), 'warning')} "
                f"in {_plural(len(self.qc), 'scan')}")

    def to_frame(self) -> pd.DataFrame:
        cols = ["severity", "code", "message", "row", "scan_id", "path"]
        df = pd.DataFrame([asdict(i) for i in self.issues], columns=cols)
        df["row"] = pd.array(df["row"], dtype="Int64")
        return df

    def to_json(self) -> str:
        qc = json.loads(self.qc.to_json(orient="split", index=False)) if len(self.qc.columns) else \
            {"columns": [], "data": []}
        return json.dumps({"summary": self.summary(), "ok": self.ok,
                           "issues": [asdict(i) for i in self.issues], "qc": qc}, indent=1)

    @classmethod
    def from_json(cls, text: str | bytes) -> "ValidationReport":
        obj = json.loads(text)
        issues = [Issue(**i) for i in obj.get("issues", [])]
        qc = obj.get("qc") or {"columns": QC_COLUMNS, "data": []}
        return cls(issues=issues, qc=pd.DataFrame(qc.get("data", []), columns=qc.get("columns", QC_COLUMNS)))


# --- helpers ---------------------------------------------------------------------------------------
def _na(v) -> bool:
    if v is None or v is pd.NA:
        return True
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def _join_rows(rows: list[int]) -> str:
    rows = [str(r) for r in rows]
    return rows[0] if len(rows) == 1 else ", ".join(rows[:-1]) + " and " + rows[-1]


# --- loading ------------------------------------------------------------------------------------------


# --- one image -------------------------------------------------------------------------------------------


# --- the table ---------------------------------------------------------------------------------------------
class _Collector:
    def __init__(self, df: pd.DataFrame, workspace, source: str = "the cohort table"):
        self.df = df
        self.workspace = workspace
        self.classes = workspace.classes if workspace is not None else DEFAULT_CLASSES
        self.source = source
        self.issues: list[Issue] = []
        self.by_pos: dict[int, list[Issue]] = {}

    def row(self, pos: int) -> int | None:
        v = self.df["row"].iat[pos]
        return None if _na(v) else int(v)

    def scan(self, pos: int) -> str | None:
        v = self.df["scan_id"].iat[pos]
        return None if _na(v) else str(v)

    def path(self, pos: int) -> str | None:
        v = self.df["path"].iat[pos]
        return None if _na(v) else str(v)

    def where(self, pos: int) -> str:
        row, scan = self.row(pos), self.scan(pos)
        head = f"Row {row}" if row is not None else "A BIDS scan"
        return f"{head} (scan {scan})" if scan else head

    def show(self, path: str | None) -> str:
        if path is None:
            return "(no path)"
        if self.workspace is not None:
            try:
                return str(self.workspace.resolve(path).relative_to(self.workspace.root))
            except ValueError:
                pass
        return str(path)

    def add(self, severity: str, code: str, message: str, positions=(), *, pos: int | None = None) -> Issue:
        positions = list(positions) if positions else ([pos] if pos is not None else [])
        main = positions[-1] if code.startswith("duplicate") and positions else (positions[0] if positions else None)
        issue = Issue(severity, code, message,
                      row=self.row(main) if main is not None else None,
                      scan_id=self.scan(main) if main is not None else None,
                      path=self.path(main) if main is not None else None)
        self.issues.append(issue)
        for p in positions:
            self.by_pos.setdefault(p, []).append(issue)
        return issue


def _known_labels_text(classes) -> str:
    return "; ".join(f"{n}: " + ", ".join(classes.labels_of(n)[:8]) for n in (classes.positive, classes.negative))


def _table_checks(c: _Collector) -> None:
    for text in c.df.attrs.get(cohort.READ_WARNINGS, []) or []:
        c.add("warning", "read_warning", str(text))
    for i in range(len(c.df)):
        _row_checks(c, i)
    _duplicates(c)
    _subject_conflicts(c)


def _row_checks(c: _Collector, i: int) -> None:
    """Required values, labels, numbers and plausible ranges of row ``i``."""
    df = c.df
    w = c.where(i)
    missing = [col for col in ("subject_id", "scan_id", "path") if _na(df[col].iat[i])]
    if _na(df["diagnosis_raw"].iat[i]):
        missing.append("diagnosis")
    if missing:
        c.add("error", "missing_value", f"{w}: required value missing in column(s) {', '.join(missing)}.", pos=i)

    raw = df["diagnosis_raw"].iat[i]
    k = c.classes
    if not _na(raw) and _na(df["diagnosis"].iat[i]):
        if cohort.is_ambiguous(raw, k):
            c.add("error", "ambiguous_diagnosis",
                  f'{w} of {c.source}: diagnosis "{raw}" is ambiguous: it does not say which diagnosis. Write the class '
                  f'({k.positive} or {k.negative}) or declare the label when creating the workspace '
                  f'(python -m lib init --positive-labels {raw} ...).', pos=i)
        elif cohort.is_other_group(raw, k):
            c.add("warning", "not_in_task",
                  f'{w}: diagnosis "{raw}" is not part of the {k.positive}/{k.negative} task; this scan is kept but '
                  f'not used as {k.positive} or {k.negative}.', pos=i)
        else:
            guess = cohort.suggest_diagnosis(raw, k)
            hint = (f' Did you mean "{guess}" ({cohort.map_diagnosis(guess, k)})?' if guess
                    else f" Known labels: {_known_labels_text(k)}.")
            c.add("error", "unknown_diagnosis", f'{w}: unknown diagnosis label "{raw}".{hint}', pos=i)

    if "sex" in df.columns and "sex_raw" in df.columns:
        raw = df["sex_raw"].iat[i]
        if not _na(raw) and _na(df["sex"].iat[i]):
            c.add("warning", "unknown_sex",
                  f'{w}: sex "{raw}" is not recognised (use F/Female/W/2 or M/Male/1); it is treated as unknown.',
                  pos=i)

    for col in cohort.NUMERIC:
        raw_col = f"{col}_raw"
        if raw_col in df.columns and col in df.columns:
            raw = df[raw_col].iat[i]
            if not _na(raw) and _na(df[col].iat[i]):
                c.add("error", "non_numeric", f'{w}: {col} "{raw}" is not a number.', pos=i)

    if "age" in df.columns:
        age = df["age"].iat[i]
        if not _na(age) and not (AGE_RANGE[0] <= float(age) <= AGE_RANGE[1]):
            c.add("warning", "age_out_of_range",
                  f"{w}: age {float(age):g} is outside the plausible range "
                  f"{AGE_RANGE[0]:g}–{AGE_RANGE[1]:g} years.", pos=i)
    if "mmse" in df.columns:
        mmse = df["mmse"].iat[i]
        if not _na(mmse) and not (MMSE_RANGE[0] <= float(mmse) <= MMSE_RANGE[1]):
            c.add("warning", "mmse_out_of_range",
                  f"{w}: MMSE {float(mmse):g} is outside the scale's range 0–30.", pos=i)


def _duplicates(c: _Collector) -> None:
    """Scan IDs (an error) and files (a warning) listed more than once."""
    df = c.df
    for col, code, sev, what in (("scan_id", "duplicate_scan_id", "error", "scan ID"),
                                 ("path", "duplicate_path", "warning", "file")):
        values = df[col]
        keyed = values[values.notna()]
        if col == "path" and c.workspace is not None:
            keyed = keyed.map(lambda p: str(c.workspace.resolve(p)))
        for key, grp in keyed.groupby(keyed, sort=False):
            if len(grp) > 1:
                pos = list(grp.index)
                rows = [c.row(p) for p in pos]
                shown = key if col == "scan_id" else c.show(str(key))
                tail = ("; scan IDs must be unique" if col == "scan_id"
                        else "; the same scan would be counted more than once")
                c.add(sev, code, f"Rows {_join_rows(rows)} share the same {what} {shown}{tail}.", positions=pos)


def _subject_conflicts(c: _Collector) -> None:
    """Subjects whose sex or diagnosis differs between rows."""
    df = c.df
    subj = df["subject_id"]
    for col, code in (("sex", "subject_sex_conflict"), ("diagnosis", "subject_diagnosis_conflict")):
        if col not in df.columns:
            continue
        sub = df.loc[subj.notna() & df[col].notna(), ["subject_id", col]]
        for sid, grp in sub.groupby("subject_id", sort=False):
            vals = grp[col].unique()
            if len(vals) > 1:
                parts = []
                for v in vals:
                    rows = [c.row(p) for p in grp.index[grp[col] == v]]
                    parts.append(f"{v} in {'row' if len(rows) == 1 else 'rows'} {_join_rows(rows)}")
                c.add("error", code, f"Subject {sid} has conflicting {col} across rows: {'; '.join(parts)}.",
                      positions=list(grp.index))


def _empty_qc_row(c: _Collector, i: int) -> dict:
    return {"scan_id": c.scan(i), "row": c.row(i), "path": c.path(i), "readable": False, "shape": None,
            "voxel_size_mm": None, "on_grid": None, "dtype": None, "min": np.nan, "max": np.nan,
            "mean": np.nan, "std": np.nan, "nonzero_fraction": np.nan, "template_corr": np.nan,
            "fov_overlap": np.nan}


def validate_table(source, workspace, *, check_images: bool = True, progress: Progress | None = None
                   ) -> ValidationReport:
    """Check a cohort table (a path, or a DataFrame) and, with ``check_images``, every scan it lists.

    ``workspace`` gives the template grid and the folders scans may live in
    (``None``: 2 mm grid, no folder restriction). ``progress(done, total,
    message)`` is called once per scan. Never raises for bad input.
    """
    def tick(done: int, total: int, message: str) -> None:
        if progress is not None:
            try:
                progress(done, total, message)
            except Exception:
                pass

    classes = workspace.classes if workspace is not None else DEFAULT_CLASSES
    src_name = str(source) if not isinstance(source, pd.DataFrame) else source.attrs.get("source", "the cohort table")
    try:
        if isinstance(source, pd.DataFrame):
            df = cohort.canonicalize(source, source=f"Cohort table {src_name}", classes=classes)
        else:
            df = cohort.read_table(source, classes)
    except CohortError as exc:
        return ValidationReport([Issue("error", exc.code, str(exc), None, None, src_name)])
    except Exception as exc:  # an unexpected parser failure is still a bad table, not a crash
        return ValidationReport([Issue("error", "unparsable_table",
                                       f"Cohort table {src_name} could not be read ({exc_text(exc)}).",
                                       None, None, src_name)])

    grid = workspace.grid if workspace is not None else Grid(2.0)
    c = _Collector(df, workspace, src_name)
    total = len(df)
    tick(0, total, "checking the table")
    if total == 0:
        c.add("error", "empty_table", f"Cohort table {src_name} has no rows.")
    _table_checks(c)

    qc_rows = []
    for i in range(total):
        qc = _empty_qc_row(c, i)
        w = c.where(i)
        p = c.path(i)
        checkable = False
        if p is not None:
            shown = c.show(p)
            abs_path = workspace.resolve(p) if workspace is not None else Path(p).expanduser().resolve()
            if workspace is not None and not workspace.is_inside_data_roots(p):
                c.add("error", "path_outside_workspace",
                      f"{w}: {shown}: path escapes the workspace; add its folder to data_roots in workspace.json.",
                      pos=i)
            elif not abs_path.exists():
                c.add("error", "missing_file", f"{w}: file {shown} does not exist.", pos=i)
            elif not abs_path.is_file():
                c.add("error", "not_a_file", f"{w}: {shown} is a folder, not a NIfTI file.", pos=i)
            else:
                checkable = True
        if checkable and check_images:
            try:
                values, found = inspect_image(abs_path, grid)
            except Exception as exc:  # keep going: one bad scan must not hide the others
                values, found = {"readable": False}, [("error", "unreadable_image",
                                                       f"could not be checked ({exc_text(exc)})")]
            qc.update(values)
            for sev, code, text in found:
                c.add(sev, code, f"{w}: file {shown} {text}.", pos=i)
        tick(i + 1, total, f"checked {c.scan(i) or f'row {c.row(i)}'}")
        qc_rows.append(qc)

    for i, qc in enumerate(qc_rows):
        own = c.by_pos.get(i, [])
        qc["n_errors"] = sum(1 for x in own if x.severity == "error")
        qc["n_warnings"] = sum(1 for x in own if x.severity == "warning")
        qc["flags"] = ",".join(dict.fromkeys(x.code for x in own))
    qc_df = pd.DataFrame(qc_rows, columns=QC_COLUMNS)
    if len(qc_df):
        qc_df["row"] = pd.array(qc_df["row"], dtype="Int64")
    issues = sorted(c.issues, key=lambda x: (-1 if x.row is None else x.row))
    return ValidationReport(issues=issues, qc=qc_df)


def format_report(report: ValidationReport) -> str:
    """Terminal text: one line per issue (``error   row 5  scan s005  missing_file: ...``) and a summary."""
    lines = []
    order = sorted(report.issues, key=lambda x: (-1 if x.row is None else x.row, x.severity != "error"))
    for it in order:
        where = f"row {it.row}" if it.row is not None else "table"
        scan = f"scan {it.scan_id}  " if it.scan_id else ""
        message = " ".join(str(it.message).split())
        lines.append(f"{it.severity:<8}{where:<8} {scan}{it.code}: {message}")
    lines.append(report.summary())
    return "\n".join(lines)
