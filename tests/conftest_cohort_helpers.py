"""Shared builders for the cohort and validation tests: small scans on a coarse template grid."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from lib.data.templates import Grid, template  # noqa: E402
from lib.data.workspace import Workspace  # noqa: E402

RES = 6.0
COLIN27 = Path("/usr/share/mricron/templates/ch2.nii.gz")


def grid() -> Grid:
    return Grid(RES)


def good_data(seed: int = 0, res: float = RES) -> np.ndarray:
    """The template plus a little noise: a scan that passes every check."""
    rng = np.random.default_rng(seed)
    tpl = np.asarray(template(res).dataobj, dtype=np.float32)
    return (tpl * 100 + rng.normal(0, 2, tpl.shape)).astype(np.float32)


def save(path: Path, data, affine=None, dtype=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(data, grid().affine if affine is None else affine, dtype=dtype)
    nib.save(img, str(path))
    return path


def good_scan(path: Path, seed: int = 0) -> Path:
    return save(path, good_data(seed))


def truncate(path: Path, keep: float = 0.5) -> Path:
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * keep)])
    return path


def write_csv(path: Path, rows: list[dict], sep: str = ",") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False, sep=sep)
    return path


def colin27() -> nib.Nifti1Image:
    """The Colin27 single-subject T1 from mricron-data; fails (not skips) when absent."""
    if not COLIN27.exists():
        pytest.fail(f"{COLIN27} is missing: the real-T1 tests need it; run `apt-get install mricron-data` "
                    "(or set the path from `dpkg -L mricron-data | grep ch2`).")
    return nib.load(str(COLIN27))


@pytest.fixture
def ws(tmp_path) -> Workspace:
    return Workspace.create(tmp_path / "ws", resolution=RES)
