"""Atomic writes: whole or nothing, and readable by the lab's other users (umask mode, not mkstemp's 0600)."""

import os
import stat

import pytest

from lib.core import atomic


def test_written_files_get_the_umask_mode(tmp_path):
    target = tmp_path / "result.json"
    atomic.write_json(target, {"a": 1})
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask


def test_a_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "table.csv"
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []
