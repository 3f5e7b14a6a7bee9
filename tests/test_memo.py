"""lib.core.memo: results shared per content key, bounded, computed once under concurrency."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pandas as pd
import pytest

from lib.core import memo


def test_results_are_kept_per_key_and_bounded():
    calls = []

    @memo.memoized(2)
    def square(x, *, progress=None):
        calls.append(x)
        return x * x

    assert [square(2), square(2, progress=print), square(3)] == [4, 4, 9]
    assert calls == [2, 3]                   # progress does not change the key
    square(4)                                # evicts 2, the least recently used
    assert square(3) == 9 and calls == [2, 3, 4]
    square(2)
    assert calls == [2, 3, 4, 2] and len(square.memo._items) == 2


def test_files_are_keyed_by_their_stamp(tmp_path):
    f = tmp_path / "t.csv"
    f.write_text("a\n1\n")

    @memo.memoized(4)
    def read(path):
        return pd.read_csv(path)

    assert read(f)["a"].tolist() == [1]
    f.write_text("a\n1\n2\n")               # rewritten: another size and time, so another key
    assert read(f)["a"].tolist() == [1, 2]
    st = f.stat()
    read(f)
    assert read.memo.misses == 2           # unchanged: kept
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000))   # touched: read again
    read(f)
    assert read.memo.misses == 3


def test_tables_are_keyed_by_content_and_handed_out_as_copies():
    calls = []

    @memo.memoized(4)
    def total(df):
        calls.append(1)
        return df.assign(s=df["x"].cumsum())

    a = pd.DataFrame({"x": [1, 2, 3]})
    first = total(a)
    first.loc[0, "s"] = -99                 # a caller's change stays its own
    assert total(a.copy())["s"].tolist() == [1, 3, 6] and len(calls) == 1
    assert total(pd.DataFrame({"x": [1, 2, 4]}))["s"].tolist() == [1, 3, 7] and len(calls) == 2
    # the same values under another column name are another key
    assert memo.fingerprint(a) != memo.fingerprint(a.rename(columns={"x": "y"}))


def test_big_arrays_are_refused_and_small_ones_read_only():
    with pytest.raises(memo.Unkeyable, match="key it by its file"):
        memo.fingerprint(np.zeros(memo.MAX_HASHED + 1, dtype=np.float32))

    @memo.memoized(2)
    def double(v):
        return v * 2

    out = double(np.arange(3))
    assert out.tolist() == [0, 2, 4] and not out.flags.writeable
    big = np.ones(memo.MAX_HASHED + 1, dtype=np.float32)
    assert double(big)[0] == 2 and double.memo.misses == 1   # computed, never hashed nor kept


def test_objects_with_a_memo_key_and_failures_are_not_kept():
    class Store:
        def __init__(self, version):
            self.version = version

        def memo_key(self):
            return ("store", self.version)

    calls = []

    @memo.memoized(4)
    def read(store):
        calls.append(store.version)
        if store.version == 0:
            raise ValueError("unreadable")
        return store.version

    with pytest.raises(ValueError):
        read(Store(0))
    with pytest.raises(ValueError):
        read(Store(0))                       # a failure is not remembered: tried again
    assert read(Store(1)) == read(Store(1)) == 1 and calls == [0, 0, 1]
    with pytest.raises(memo.Unkeyable):
        memo.fingerprint(object())


def test_concurrent_callers_of_one_key_compute_it_once():
    calls = []
    gate = threading.Event()

    @memo.memoized(4)
    def slow(x):
        calls.append(x)
        gate.wait(5)
        return x + 1

    results = []
    threads = [threading.Thread(target=lambda: results.append(slow(1))) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    gate.set()
    for t in threads:
        t.join(5)
    assert results == [2] * 8 and calls == [1]
