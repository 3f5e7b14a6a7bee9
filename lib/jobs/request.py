"""Typed job requests: one frozen dataclass per kind of work.

A request says what to compute, not how to start it: the same object is run in-process by the command line,
stored as JSON in a job record by :func:`lib.jobs.submit`, and rebuilt from that record by the worker. Its
fields are the whole interface: the command line derives its options from them (type, default and help from
the field's metadata, see :func:`option`), and :meth:`Request.key` names the result the job produces, so
pages ask the job store for the job of a key instead of searching command lines.

Adding a kind: a frozen dataclass subclassing :class:`Request`, decorated with :func:`register`, with its
``kind`` (also its command name), ``action`` (a key of :data:`lib.reviews.auth.ACTIONS`), ``summary`` and a
:meth:`Request.prepare` that checks the request and returns the :class:`Task` doing the work.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field
from typing import Any, ClassVar

from lib.core.progress import Progress
from lib.data.workspace import Workspace

REGISTRY: dict[str, type[Request]] = {}
"""Every kind of job by name; the worker runs exactly these."""


class RequestError(Exception):
    """A request that cannot run as asked (an unknown run, a missing store, a refused table): the message says
    why and what to do; the command line prints it, a job records it as its error, without a traceback."""


@dataclass
class Task:
    """A checked request ready to run: ``work(progress)`` returns the job's final message; what it produces
    for the caller (a store, report files, a table) is put in ``result``."""

    work: Callable[[Progress], str]
    result: dict = field(default_factory=dict)


def option(default: Any = MISSING, help: str = "", *, flag: str | None = None, positional: bool = False,
           choices: tuple | None = None, metavar: str | None = None, append: bool = False,
           parse: Callable[[list[str]], Any] | None = None) -> Any:
    """A request field with what the command line needs to offer it as an option.

    ``flag``: the option's name when it differs from the field's (``--beta`` for ``betas``); a boolean
    field whose flag starts with ``no-`` is switched off by it. ``append``: a repeatable option (each use
    adds one value). ``parse``: turns the option's strings into the field's value (``KEY=VALUE`` pairs).
    Mutable defaults (dict) are given as a factory by passing the type itself, e.g. ``option(dict)``.
    """
    meta = {"help": help, "flag": flag, "positional": positional, "choices": choices, "metavar": metavar,
            "append": append, "parse": parse}
    if default in (dict, list):
        return field(default_factory=default, metadata={"cli": meta})
    return field(default=default, metadata={"cli": meta})


def register(cls: type[Request]) -> type[Request]:
    if not cls.kind or cls.kind in REGISTRY:
        raise ValueError(f"job kind {cls.kind!r} is empty or registered twice")
    REGISTRY[cls.kind] = cls
    return cls


def request_fields(request) -> tuple:
    """A request's fields in the order a user reads them: its own first, then groups shared between kinds
    (keyword-only dataclass mixins such as :class:`lib.jobs.kinds.cohort.TaskOptions`), whose fields a
    dataclass would otherwise put first."""
    return tuple(sorted(dataclasses.fields(request), key=lambda f: f.kw_only is True))


def digest(payload: Any, n: int = 16) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:n]


@dataclass(frozen=True)
class Request:
    """Base of every kind of job."""

    kind: ClassVar[str] = ""
    action: ClassVar[str] = "change_workspace"
    """What starting it needs (:data:`lib.reviews.auth.ACTIONS`); a kind that says nothing needs an admin."""
    summary: ClassVar[str] = ""
    """One line: what this kind of job does (the command's help)."""

    def required_action(self, ws: Workspace) -> str | None:
        """The action starting this request in ``ws`` needs; None: any signed-in identity may start it."""
        return self.action

    def key(self, ws: Workspace) -> str:
        """The content key of what this request produces: equal keys are the same work (one job at a time),
        and the caches use the same key. Reads the workspace (a run's checkpoint, a store), writes nothing.
        By default the request's own fields."""
        return f"{self.kind}:{digest(self.to_dict())}"

    def describe(self) -> str:
        """One line for the Jobs page: the kind and the fields that differ from their defaults."""
        parts = []
        for f in request_fields(self):
            value = getattr(self, f.name)
            default = f.default if f.default is not MISSING else (
                f.default_factory() if f.default_factory is not MISSING else MISSING)
            if value == default or value in (None, (), {}, []):
                continue
            name = f.metadata.get("cli", {}).get("flag") or f.name.replace("_", "-")   # as on the command line
            if isinstance(value, bool):
                parts.append(name if value or name.startswith("no-") else f"no-{name}")
            else:
                parts.append(f"{name}={' '.join(map(str, value)) if isinstance(value, tuple) else value}")
        return " ".join([self.kind, *parts])

    def training_runs(self) -> tuple[str, ...]:
        """The training runs this request works on (pages list a run's jobs with it)."""
        out = []
        for name in ("run_id", "run_ids", "resume", "name"):
            value = getattr(self, name, None)
            if value:
                out += [value] if isinstance(value, str) else list(value)
        return tuple(out)

    def prepare(self, ws: Workspace) -> Task:
        """Check the request against ``ws`` and load what the work needs; raises :class:`RequestError` (or the
        library's own error) before any work starts."""
        raise NotImplementedError

    def run(self, ws: Workspace, progress: Progress) -> str:
        """Do the work, reporting ``progress``; returns the job's final message."""
        return self.prepare(ws).work(progress)

    # --- JSON round-trip (the job record keeps the request) -------------------------------------------
    def to_dict(self) -> dict:
        out = {"kind": self.kind}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> Request:
        data = dict(data)
        kind = data.pop("kind", cls.kind)
        target = REGISTRY.get(kind) if cls is Request else cls
        if target is None or target.kind != kind:
            raise RequestError(f"unknown kind of job {kind!r} (known: {', '.join(sorted(REGISTRY))})")
        hints = typing.get_type_hints(target)
        names = {f.name for f in dataclasses.fields(target)}
        unknown = set(data) - names
        if unknown:
            raise RequestError(f"{kind} has no field {', '.join(sorted(unknown))}")
        return target(**{k: tuple(v) if isinstance(v, list) and is_tuple(hints[k]) else v for k, v in data.items()})

    @classmethod
    def from_json(cls, text: str | dict) -> Request:
        return cls.from_dict(json.loads(text) if isinstance(text, str) else text)


def is_tuple(hint) -> bool:
    """Whether a field's type is a tuple (``tuple[int, ...]`` or ``tuple[int, ...] | None``)."""
    if typing.get_origin(hint) is tuple:
        return True
    return any(typing.get_origin(a) is tuple for a in typing.get_args(hint))
