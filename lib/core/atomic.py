"""Atomic file writes: results appear whole or not at all.

Every writer puts its bytes in a temporary file in the destination folder and
renames it over the target (``os.replace`` is atomic on POSIX), so a reader or
a crash never sees a half-written table, volume or status record.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator

import nibabel as nib
import pandas as pd


_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` on success.

    The temporary name keeps the target's suffix (``.nii.gz`` included) so
    libraries that pick a format from the extension write the right one.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if suffix is None:
        suffix = "".join(target.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=suffix, dir=target.parent)
    # mkstemp creates 0600; results are shared by the lab's users, so use the ordinary umask mode
    os.fchmod(fd, 0o666 & ~_UMASK)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def write_text(target: str | os.PathLike, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text)


def write_json(target: str | os.PathLike, obj) -> None:
    write_text(target, json.dumps(obj, indent=2, sort_keys=True, default=_json_default))


def write_csv(target: str | os.PathLike, df: pd.DataFrame, **kwargs) -> None:
    kwargs.setdefault("index", False)
    with atomic_path(target) as tmp:
        df.to_csv(tmp, **kwargs)


def write_nifti(target: str | os.PathLike, img: nib.Nifti1Image) -> None:
    with atomic_path(target) as tmp:
        nib.save(img, tmp)


def read_json(path: str | os.PathLike, default=None):
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return default


def _json_default(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
