"""Results computed once per content key and shared by every session of the server process.

A page's warm rerun must not redo statistics, re-read tables or rebuild figures that nothing changed.
:func:`memoized` keeps a function's results in a bounded, thread-safe LRU keyed by a *fingerprint* of its
arguments: scalars and strings as they are, paths by (path, size, mtime, inode) so a rewritten file is a new
key, small pandas objects and arrays by a hash of their values. Arrays larger than :data:`MAX_HASHED` are
refused: big data is keyed by the file it comes from, never hashed on every rerun.

Concurrent callers of one key wait for the first (one computation, not ten). Results are shared, so
DataFrames and Series come back as copies and arrays read-only: a caller cannot alter another's result.
Other objects (plotly figures, lists of densities) are handed out as they are: callers only read them.
A failed computation is not kept (the next caller tries again).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np

MAX_HASHED = 1_000_000   # elements of an array (or cells of a frame) hashed as a key; larger ones are refused

_registry: list["Memo"] = []


class Unkeyable(TypeError):
    """An argument has no cheap content key (a big array, an open file): key it by its file instead."""


def stamp(path: str | os.PathLike) -> tuple:
    """A file's identity for a key: (path, size, mtime, ctime, inode), as :mod:`lib.core.cache` stamps a verified
    file (a rewrite that keeps the size and restores the mtime still changes the ctime); a missing file is
    (path, None)."""
    try:
        st = os.stat(path)
    except OSError:
        return (str(path), None)
    return (str(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def _hash_frame(obj) -> str:
    import pandas as pd

    h = hashlib.blake2b(digest_size=16)
    names = obj.columns if hasattr(obj, "columns") else [obj.name]
    h.update(repr((type(obj).__name__, obj.shape, tuple(map(str, names)), tuple(map(str, obj.dtypes)
                                                                                if hasattr(obj, "columns") else [obj.dtype]))).encode())
    h.update(pd.util.hash_pandas_object(obj, index=True).to_numpy().tobytes())
    h.update(repr(sorted((str(k), str(v)) for k, v in obj.attrs.items())).encode())
    return h.hexdigest()


def fingerprint(obj):
    """A small hashable key of ``obj``'s content (raises :class:`Unkeyable` when there is none cheap)."""
    if obj is None or isinstance(obj, (bool, int, float, str, bytes, complex)):
        return obj
    if isinstance(obj, Path):
        return ("path",) + stamp(obj)
    if isinstance(obj, (tuple, list)):
        return (type(obj).__name__,) + tuple(fingerprint(x) for x in obj)
    if isinstance(obj, (set, frozenset)):
        return ("set",) + tuple(sorted(map(repr, (fingerprint(x) for x in obj))))
    if isinstance(obj, dict):
        return ("dict",) + tuple(sorted((str(k), fingerprint(v)) for k, v in obj.items()))
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        if obj.size > MAX_HASHED:
            raise Unkeyable(f"an array of {obj.size} elements is too large to key by content; key it by its file")
        return ("ndarray", obj.shape, str(obj.dtype), hashlib.blake2b(np.ascontiguousarray(obj).tobytes(),
                                                                      digest_size=16).hexdigest())
    if type(obj).__module__.startswith("pandas") and hasattr(obj, "shape"):
        if int(np.prod(obj.shape)) > MAX_HASHED:
            raise Unkeyable(f"a table of {obj.shape} is too large to key by content; key it by its file")
        return ("frame", _hash_frame(obj))
    key = getattr(obj, "memo_key", None)
    if callable(key):
        return (type(obj).__name__, fingerprint(key()))
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):   # a value object (Classes): its fields
        return (type(obj).__name__,) + tuple((f.name, fingerprint(getattr(obj, f.name)))
                                             for f in dataclasses.fields(obj))
    raise Unkeyable(f"no content key for a {type(obj).__name__}")


def _shared(value):
    """What a caller gets: frames copied, arrays read-only (the stored result stays as computed)."""
    if hasattr(value, "copy") and type(value).__module__.startswith("pandas"):
        return value.copy()
    if isinstance(value, np.ndarray):
        value.flags.writeable = False
        return value
    if isinstance(value, tuple):
        return tuple(_shared(v) for v in value)
    if isinstance(value, dict):
        return {k: _shared(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shared(v) for v in value]
    return value


class Memo:
    """A bounded LRU of results with one computation per key at a time."""

    def __init__(self, name: str, maxsize: int):
        self.name, self.maxsize = name, maxsize
        self._items: OrderedDict = OrderedDict()
        self._running: dict = {}
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key, compute: Callable):
        while True:
            with self._lock:
                if key in self._items:
                    self._items.move_to_end(key)
                    self.hits += 1
                    return _shared(self._items[key])
                event = self._running.get(key)
                if event is None:
                    event = self._running[key] = threading.Event()
                    self.misses += 1
                    break
            event.wait()   # another session computes this key; take its result (or retry if it failed)
        try:
            value = compute()
            with self._lock:
                self._items[key] = value
                self._items.move_to_end(key)
                while len(self._items) > self.maxsize:
                    self._items.popitem(last=False)
            return _shared(value)
        finally:
            with self._lock:
                self._running.pop(key, None)
            event.set()

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.hits = self.misses = 0


def memoized(maxsize: int = 32, *, ignore: tuple[str, ...] = ("progress",)):
    """Decorator: the function's results shared by every caller of the process, keyed by its arguments'
    :func:`fingerprint` (``ignore``: keyword arguments that do not change the result, such as progress)."""
    def wrap(fn):
        memo = Memo(f"{fn.__module__}.{fn.__qualname__}", maxsize)
        _registry.append(memo)

        @functools.wraps(fn)
        def inner(*args, **kwargs):
            keyed = {k: v for k, v in kwargs.items() if k not in ignore}
            try:
                key = (fingerprint(args), fingerprint(keyed))
            except Unkeyable:   # an argument without a cheap key (a generator, a big array): computed, not kept
                return fn(*args, **kwargs)
            return memo.get(key, lambda: fn(*args, **kwargs))

        inner.memo = memo
        return inner
    return wrap


def clear_all() -> None:
    """Forget every memoized result (tests; a server keeps them, bounded)."""
    for memo in _registry:
        memo.clear()
