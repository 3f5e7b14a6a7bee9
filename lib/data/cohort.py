"""Cohort tables: CSV/TSV, BIDS folders and ADNIMERGE exports read into one canonical DataFrame.

Canonical columns (one row per scan)::

    row                 1-based line of the row in the source table as a spreadsheet shows it
                        (header = line 1, first data row = line 2); for BIDS, the line of the
                        subject in participants.tsv (NA for scans of unlisted subjects)
    subject_id          str, required
    scan_id             str, required
    path                str, required; relative paths in a table file are made absolute
                        against the table's own folder, BIDS paths are always absolute
    diagnosis           the task's class name ("AD" | "HC" by default) | NA (a label of another group,
                        unknown or ambiguous; the original is in diagnosis_raw)
    diagnosis_raw       the label as written in the table
    session, site       str, optional
    age, mmse, cdr,     float, optional; a value that is not a number becomes NA and the
    hippocampal_volume  original is kept in ``<column>_raw`` (mm³ for the volume)
    sex, sex_raw        "F" | "M" | NA, and the value as written

Every other column of the source is kept (columns whose values are all numbers
become numeric). Nothing here raises for bad *values*: the reader only raises
:class:`CohortError` when the table itself cannot be used (file missing,
unparsable, required columns absent). Bad values are reported all at once by
:func:`lib.data.validation.validate_table`.

Sex codes: besides F/Female/W/woman and M/Male/man, the numbers follow the ADNI
and SPSS convention **1 = male, 2 = female**.
"""

from __future__ import annotations

import csv
import difflib
import functools
import gzip
import io
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from lib.data.classes import DEFAULT_CLASSES, GENERIC_LABELS, KNOWN_LABELS, Classes

REQUIRED = ("subject_id", "scan_id", "path", "diagnosis")
OPTIONAL = ("session", "age", "sex", "mmse", "cdr", "site", "hippocampal_volume")
CANONICAL = REQUIRED + OPTIONAL
NUMERIC = ("age", "mmse", "cdr", "hippocampal_volume")
STRING = ("subject_id", "scan_id", "path", "session", "site")

# Column aliases (compared after lower-casing and turning spaces/dashes into "_").
ALIASES: dict[str, tuple[str, ...]] = {
    "subject_id": ("subject_id", "subject", "participant_id", "participant", "ptid", "subj_id", "subjectid"),
    "scan_id": ("scan_id", "scan", "image_id", "imageuid", "scanid", "imageid"),
    "path": ("path", "file", "filename", "nifti", "file_path", "filepath", "image_path", "nifti_path"),
    "diagnosis": ("diagnosis", "dx", "group", "label", "diagnosis_group"),
    "session": ("session", "ses", "session_id", "visit", "viscode"),
    "age": ("age", "age_years"),
    "sex": ("sex", "gender", "ptgender"),
    "mmse": ("mmse",),
    "cdr": ("cdr", "cdr_global", "cdrsb"),
    "site": ("site", "site_id"),
    "hippocampal_volume": ("hippocampal_volume", "hippocampus", "hippocampal_vol", "hippocampus_volume"),
}

# Diagnosis labels of the default task, compared lower-case with collapsed whitespace (see lib.data.classes).
AD_LABELS = KNOWN_LABELS["AD"]
HC_LABELS = KNOWN_LABELS["HC"]
# Labels of other groups (mild cognitive impairment and friends): valid, but not part of the task.
OTHER_GROUP_LABELS = ("MCI", "EMCI", "LMCI", "SMC", "aMCI", "naMCI", "Mild cognitive impairment",
                      "MCI to Dementia", "Dementia to MCI", "NL to MCI", "prodromal AD", "SCD", "pMCI", "sMCI",
                      "MS", "RRMS", "SPMS", "PPMS", "CIS")

FEMALE_LABELS = ("F", "Female", "W", "woman", "women", "2")
MALE_LABELS = ("M", "Male", "man", "men", "1")

READ_WARNINGS = "read_warnings"


class CohortError(ValueError):
    """The table as a whole cannot be used; the message names the file and the problem."""

    def __init__(self, message: str, code: str = "unreadable_table"):
        super().__init__(message)
        self.code = code


# --- label mapping -------------------------------------------------------------------------------
def _norm_label(value) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return None
    if isinstance(value, (bool, np.bool_)):
        value = int(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        f = float(value)
        text = str(int(f)) if f.is_integer() else str(f)
    else:
        text = str(value)
    text = re.sub(r"\s+", " ", text.replace("\u2019", "'").strip()).lower()
    if re.fullmatch(r"[+-]?\d+\.0+", text):
        text = text.split(".")[0]
    return text or None


@functools.lru_cache(maxsize=32)
def _label_map(classes: Classes) -> dict[str, str]:
    """Normalised table label → the task's class name."""
    return {_norm_label(x): name for name in classes.names for x in classes.labels_of(name)}


_GENERIC = {_norm_label(x) for x in GENERIC_LABELS}
_KNOWN_DISPLAY = {_norm_label(x): x for labels in KNOWN_LABELS.values() for x in labels}
_OTHER = {_norm_label(x) for x in OTHER_GROUP_LABELS} | set(_KNOWN_DISPLAY)
_SEX_MAP = {**{_norm_label(x): "F" for x in FEMALE_LABELS}, **{_norm_label(x): "M" for x in MALE_LABELS}}


def map_diagnosis(value, classes: Classes = DEFAULT_CLASSES) -> str | None:
    """The task's positive or negative class name ("AD", "HC") or None (empty, unknown, another group's or
    ambiguous label)."""
    return _label_map(classes).get(_norm_label(value))


def is_ambiguous(value, classes: Classes = DEFAULT_CLASSES) -> bool:
    """True for a generic word ("patient", "1") the task does not declare: it names no diagnosis."""
    label = _norm_label(value)
    return label in _GENERIC and label not in _label_map(classes)


def is_other_group(value, classes: Classes = DEFAULT_CLASSES) -> bool:
    """True for labels of known groups outside the task (MCI, EMCI, ...; AD or HC when the task is another)."""
    label = _norm_label(value)
    return label in _OTHER and label not in _label_map(classes)


def suggest_diagnosis(value, classes: Classes = DEFAULT_CLASSES) -> str | None:
    """The closest label of the task, e.g. ``'Contrl'`` → ``'Control'`` (None if nothing is close)."""
    label = _norm_label(value)
    if label is None:
        return None
    display = {_norm_label(x): x for name in classes.names for x in classes.labels_of(name)}
    words = [k for k in display if not k.isdigit()]
    match = difflib.get_close_matches(label, words, n=1, cutoff=0.6)
    return display[match[0]] if match else None


def map_sex(value) -> str | None:
    """"F", "M" or None. Numbers: 1 = male, 2 = female (ADNI/SPSS convention)."""
    return _SEX_MAP.get(_norm_label(value))


# --- column names ----------------------------------------------------------------------------------
def _norm_col(name) -> str:
    return re.sub(r"[\s\-]+", "_", str(name).strip().lower())


def _alias_renames(columns) -> dict[str, str]:
    """{source column: canonical name}; an exact canonical name beats an alias, earlier aliases win."""
    normed = {c: _norm_col(c) for c in columns}
    renames: dict[str, str] = {}
    for canon, aliases in ALIASES.items():
        if canon in columns:
            continue
        for alias in aliases:
            hit = next((c for c in columns if normed[c] == alias and c not in renames), None)
            if hit is not None:
                renames[hit] = canon
                break
    return renames


def _suggest_columns(missing: str, columns) -> list[str]:
    cols = [str(c) for c in columns]
    lower = {_norm_col(c): c for c in cols}
    found: list[str] = []
    for alias in ALIASES.get(missing, (missing,)):
        for m in difflib.get_close_matches(alias, list(lower), n=3, cutoff=0.6):
            if lower[m] not in found:
                found.append(lower[m])
    return found[:3]


def _missing_columns_error(missing: list[str], columns, where: str) -> CohortError:
    parts = []
    for m in missing:
        close = _suggest_columns(m, columns)
        hint = f" (closest existing: {', '.join(repr(c) for c in close)})" if close else ""
        parts.append(f"{m}{hint}")
    accepted = "; ".join(f"{m}: {', '.join(ALIASES[m])}" for m in missing if m in ALIASES)
    return CohortError(
        f"{where} is missing required column(s) {', '.join(parts)}. "
        f"Accepted names (any case): {accepted}.",
        code="missing_columns",
    )


# --- value helpers ---------------------------------------------------------------------------------
def _as_text(value):
    if value is None or value is pd.NA:
        return pd.NA
    if isinstance(value, (float, np.floating)):
        if np.isnan(value):
            return pd.NA
        return str(int(value)) if float(value).is_integer() else str(value)
    text = str(value).strip()
    return text if text else pd.NA


def _text_column(series: pd.Series) -> pd.Series:
    return pd.Series([_as_text(v) for v in series], index=series.index, dtype=object)


def _maybe_numeric(series: pd.Series) -> pd.Series:
    """Numeric if every non-empty value is a number, else unchanged."""
    if pd.api.types.is_numeric_dtype(series) or series.isna().all():
        return series
    try:
        return pd.to_numeric(series)
    except (ValueError, TypeError):
        return series


def _mapped_label(df: pd.DataFrame, col: str, mapper) -> tuple[pd.Series, pd.Series]:
    """(mapped, raw) for a label column; idempotent on canonical frames.

    The value in ``col`` wins when present (so an edited canonical table is
    honoured); the original spelling in ``<col>_raw`` is kept when it still
    maps to the same label. An empty ``col`` falls back to ``<col>_raw``.
    """
    cur = _text_column(df[col])
    old = _text_column(df[f"{col}_raw"]) if f"{col}_raw" in df.columns else pd.Series(pd.NA, index=df.index,
                                                                                          dtype=object)
    mapped, raw = [], []
    for c, o in zip(cur, old):
        if c is not pd.NA:
            m = mapper(c)
            r = o if (o is not pd.NA and m is not None and mapper(o) == m) else c
        else:
            m = mapper(o) if o is not pd.NA else None
            r = o
        mapped.append(pd.NA if m is None else m)
        raw.append(r)
    return (pd.Series(mapped, index=df.index, dtype=object), pd.Series(raw, index=df.index, dtype=object))


# --- canonical form ---------------------------------------------------------------------------------
def canonicalize(df: pd.DataFrame, *, source: str = "the table", base_dir: str | os.PathLike | None = None,
                 classes: Classes = DEFAULT_CLASSES) -> pd.DataFrame:
    """Bring a DataFrame to the canonical columns (idempotent).

    Renames aliases, maps diagnosis labels to the ``classes`` and sex labels (keeping the originals in
    ``diagnosis_raw``/``sex_raw``), converts numeric columns, adds ``row``
    (line numbers as in a spreadsheet) if absent, and makes relative paths
    absolute against ``base_dir`` when given. Raises :class:`CohortError`
    when a required column is missing.
    """
    attrs = dict(df.attrs)
    df = df.copy()
    df.columns = [str(c).strip() for c in df.columns]
    df = df.rename(columns=_alias_renames(list(df.columns)))
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise _missing_columns_error(missing, [c for c in df.columns if c != "row"], source)

    if "row" not in df.columns:
        df.insert(0, "row", np.arange(len(df)) + 2)
    df["row"] = pd.array(pd.to_numeric(df["row"], errors="coerce"), dtype="Int64")

    for col in STRING:
        if col in df.columns:
            df[col] = _text_column(df[col])
    if base_dir is not None:
        base = Path(base_dir)
        df["path"] = [p if p is pd.NA or os.path.isabs(os.path.expanduser(p))
                      else str((base / p).resolve(strict=False)) for p in df["path"]]
        df["path"] = df["path"].astype(object)

    df["diagnosis"], df["diagnosis_raw"] = _mapped_label(df, "diagnosis",
                                                         functools.partial(map_diagnosis, classes=classes))
    if "sex" in df.columns:
        df["sex"], df["sex_raw"] = _mapped_label(df, "sex", map_sex)

    for col in NUMERIC:
        if col not in df.columns:
            continue
        raw_col = f"{col}_raw"
        values = df[col]
        if pd.api.types.is_bool_dtype(values):
            values = values.astype(object)
        if raw_col in df.columns:  # an edited value wins over the kept original
            values = values.astype(object).where(values.notna(), df[raw_col])
        if pd.api.types.is_numeric_dtype(values):
            df[col] = values.astype(float)
            df = df.drop(columns=[raw_col], errors="ignore")
            continue
        text = _text_column(values)
        num = pd.to_numeric(text, errors="coerce").astype(float)
        df[col] = num
        bad = text.notna() & num.isna()
        if bad.any():
            df[raw_col] = text.where(bad, pd.NA)
        else:
            df = df.drop(columns=[raw_col], errors="ignore")

    first = ["row", *[c for c in CANONICAL if c in df.columns]]
    raws = [c for c in df.columns if c.endswith("_raw") and c[:-4] in CANONICAL and c not in first]
    rest = [c for c in df.columns if c not in first and c not in raws]
    df = df[first + raws + rest].reset_index(drop=True)
    df.attrs.update(attrs)
    df.attrs.setdefault(READ_WARNINGS, [])
    return df


# --- readers --------------------------------------------------------------------------------------------
def read_table(path: str | os.PathLike, classes: Classes = DEFAULT_CLASSES) -> pd.DataFrame:
    """Read a cohort table (CSV/TSV, ADNIMERGE export, or BIDS folder) into the canonical form.

    ``df.attrs["source"]`` holds the file, ``df.attrs["read_warnings"]`` any
    warnings (e.g. BIDS participants without scans). Raises :class:`CohortError`.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise CohortError(f"Cohort table {p} does not exist.", code="table_not_found")
    if p.is_dir():
        df = read_bids(p, classes)
    else:
        raw = _read_delimited(p)
        if _is_adnimerge(raw.columns):
            df = _from_adnimerge(raw, p, classes)
        else:
            df = canonicalize(raw, source=f"Cohort table {p}", base_dir=p.parent.resolve(), classes=classes)
    df.attrs["source"] = str(p)
    return df


def _sniff_delimiter(p: Path, text: str) -> str:
    header = next((line for line in text.splitlines() if line.strip()), "")
    counts = {d: header.count(d) for d in (",", "\t", ";", "|")}
    by_ext = {".tsv": "\t", ".tab": "\t", ".csv": ","}.get(p.suffix.lower())
    best = max(counts, key=counts.get)
    if counts[best] == 0:
        return by_ext or ","
    if by_ext and counts[by_ext] > 0 and counts[by_ext] >= counts[best]:
        return by_ext
    if by_ext is None:
        try:
            return csv.Sniffer().sniff(text[:20000], delimiters=",\t;|").delimiter
        except csv.Error:
            return best
    return best


def _read_delimited(p: Path, *, na_values=("n/a",)) -> pd.DataFrame:
    """Read a delimited text file as strings; blank lines become empty rows so `row` stays the line number."""
    suffix = "".join(p.suffixes[-2:]).lower()
    if p.suffix.lower() in (".xlsx", ".xls", ".ods"):
        raise CohortError(f"Cohort table {p} is a spreadsheet; save it as CSV or TSV.", code="unparsable_table")
    try:
        opener = gzip.open if suffix.endswith(".gz") else open
        with opener(p, "rt", encoding="utf-8-sig") as fh:
            text = fh.read()
    except (UnicodeDecodeError, OSError, EOFError) as exc:
        raise CohortError(f"Cohort table {p} is not a readable text table ({exc}).", code="unparsable_table") from exc
    if "\x00" in text:
        raise CohortError(f"Cohort table {p} is a binary file, not a CSV/TSV table.", code="unparsable_table")
    if not text.strip():
        raise CohortError(f"Cohort table {p} is empty.", code="unparsable_table")
    sep = _sniff_delimiter(p, text)
    try:
        df = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, skip_blank_lines=False,
                         na_values=list(na_values), keep_default_na=True)
    except (pd.errors.ParserError, ValueError) as exc:
        raise CohortError(f"Cohort table {p} could not be parsed ({str(exc).strip()}).",
                          code="unparsable_table") from exc
    if len(df.columns) < 2:
        raise CohortError(
            f"Cohort table {p} has a single column {list(df.columns)[0]!r}; expected comma- or tab-separated "
            "columns subject_id, scan_id, path, diagnosis.", code="unparsable_table")
    df.columns = [str(c).strip() for c in df.columns]
    if "row" in df.columns:
        df = df.rename(columns={"row": "row_in_table"})
    df.insert(0, "row", np.arange(len(df)) + 2)
    blank = df.drop(columns="row").isna().all(axis=1)
    df = df[~blank]
    for col in df.columns:
        if col != "row" and _norm_col(col) not in {a for al in ALIASES.values() for a in al}:
            df[col] = _maybe_numeric(df[col])
    return df.reset_index(drop=True)


# --- ADNIMERGE --------------------------------------------------------------------------------------------------
def _is_adnimerge(columns) -> bool:
    upper = {str(c).strip().upper() for c in columns}
    return {"PTID", "VISCODE"} <= upper


def _from_adnimerge(raw: pd.DataFrame, p: Path, classes: Classes = DEFAULT_CLASSES) -> pd.DataFrame:
    cols = {str(c).strip().upper(): c for c in raw.columns}
    exact = {str(c).strip(): c for c in raw.columns}
    where = f"ADNIMERGE table {p}"
    path_col = next((cols[k] for k in ("PATH", "FILE", "FILENAME", "NIFTI") if k in cols), None)
    if path_col is None:
        raise CohortError(
            f"{where} has no column with the scan files; add a column 'path' (or 'file'/'filename') "
            "with each visit's NIfTI file.", code="missing_columns")
    dx_col = cols.get("DX") if "DX" in cols else cols.get("DX_BL")
    if dx_col is None:
        raise _missing_columns_error(["diagnosis"], raw.columns, where)

    df = raw.copy()
    renames = {cols["PTID"]: "subject_id", cols["VISCODE"]: "session", path_col: "path", dx_col: "diagnosis"}
    for src, dst in (("AGE", "age"), ("PTGENDER", "sex"), ("MMSE", "mmse"), ("SITE", "site")):
        if src in cols:
            renames[cols[src]] = dst
    cdr = cols.get("CDR") or cols.get("CDRSB")
    if cdr is not None:
        renames[cdr] = "cdr"
    hippo = exact.get("Hippocampus") or cols.get("HIPPOCAMPUS")
    if hippo is not None:
        renames[hippo] = "hippocampal_volume"
    # Canonical names that already exist as other columns would collide: keep those as extras.
    clash = {c: f"{c}_original" for c in df.columns if c in renames.values() and c not in renames}
    df = df.rename(columns=clash).rename(columns=renames)

    subj = _text_column(df["subject_id"])
    ses = _text_column(df["session"])
    fallback = pd.Series([f"{s}_{v}" if s is not pd.NA and v is not pd.NA else pd.NA for s, v in zip(subj, ses)],
                         index=df.index, dtype=object)
    if "IMAGEUID" in cols:
        uid = _text_column(df[cols["IMAGEUID"]])
        scan = uid.where(uid.notna(), fallback)
    else:
        scan = fallback
    df.insert(1, "scan_id", scan)
    return canonicalize(df, source=where, base_dir=p.parent.resolve(), classes=classes)


# --- BIDS ---------------------------------------------------------------------------------------------------------
def _nifti_stem(name: str) -> str:
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def read_bids(root: str | os.PathLike, classes: Classes = DEFAULT_CLASSES) -> pd.DataFrame:
    """One row per T1w scan at ``sub-*/[ses-*/]anat/*_T1w.nii[.gz]`` with participants.tsv joined in.

    Paths are absolute (so the table can be saved anywhere); ``scan_id`` is the
    file name without extension, ``session`` the ``ses-*`` folder name, ``row``
    the subject's line in participants.tsv. Participants without scans, and
    scans of subjects not listed in participants.tsv, are reported in
    ``df.attrs["read_warnings"]``.
    """
    root = Path(root).expanduser().resolve()
    ptsv = root / "participants.tsv"
    subdirs = sorted(d for d in root.glob("sub-*") if d.is_dir())
    if not ptsv.exists():
        if subdirs:
            raise CohortError(
                f"BIDS folder {root} has no participants.tsv; it must list participant_id and the diagnosis "
                "(column diagnosis, group or dx).", code="missing_columns")
        raise CohortError(
            f"Folder {root} is not a BIDS dataset (no participants.tsv and no sub-* folders); "
            "choose a CSV/TSV table or a BIDS folder.", code="unparsable_table")
    parts = _read_delimited(ptsv)
    parts = parts.rename(columns=_alias_renames([c for c in parts.columns if c != "row"]))
    missing = [c for c in ("subject_id", "diagnosis") if c not in parts.columns]
    if missing:
        raise _missing_columns_error(missing, [c for c in parts.columns if c != "row"], f"BIDS participants file {ptsv}")
    parts["subject_id"] = [pd.NA if s is pd.NA else (s if s.startswith("sub-") else f"sub-{s}")
                           for s in _text_column(parts["subject_id"])]

    scans = []
    for f in sorted(root.glob("sub-*/anat/*_T1w.nii*")) + sorted(root.glob("sub-*/ses-*/anat/*_T1w.nii*")):
        if not (f.name.endswith(".nii") or f.name.endswith(".nii.gz")):
            continue
        rel = f.relative_to(root).parts
        scans.append({"subject_id": rel[0], "session": rel[1] if rel[1].startswith("ses-") else pd.NA,
                      "scan_id": _nifti_stem(f.name), "path": str(f)})
    scans_df = pd.DataFrame(scans, columns=["subject_id", "session", "scan_id", "path"])
    warnings: list[str] = []
    listed = set(parts["subject_id"].dropna())
    with_scans = set(scans_df["subject_id"])
    for _, prow in parts.iterrows():
        sid = prow["subject_id"]
        if sid is not pd.NA and sid not in with_scans:
            warnings.append(f"{ptsv.name} line {prow['row']}: participant {sid} has no T1w scan "
                            f"(looked for {sid}/[ses-*/]anat/*_T1w.nii[.gz]).")
    for sid in sorted(with_scans - listed):
        warnings.append(f"{root.name}/{sid}: subject has T1w scans but is not listed in {ptsv.name}, "
                        "so it has no diagnosis.")

    extra = [c for c in parts.columns if c not in ("session", "scan_id", "path")]
    df = scans_df.merge(parts[extra], on="subject_id", how="left")
    df = canonicalize(df, source=f"BIDS folder {root}", classes=classes)
    df.attrs[READ_WARNINGS] = warnings
    df.attrs["source"] = str(root)
    return df
