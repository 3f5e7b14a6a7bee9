"""The two classes a workspace's models tell apart: its task, from one place.

A workspace declares its task in ``workspace.json`` (``"task": {"positive": "MS", "negative": "HC",
"positive_labels": ["MS", "RRMS"], "negative_labels": ["control", "HC"], ...}``); without one it separates
Alzheimer's disease (AD, the positive class: the explained one by default, logit index 1) from healthy
controls (HC, index 0), as in Böhle et al. 2019. Code reads the names from a :class:`Classes` value
(``ws.classes``, or :data:`DEFAULT_CLASSES` where no workspace is at hand) rather than spelling them.
Column names of existing caches (``ad_score``: the positive class's probability) keep their spelling.

Table labels: each class maps the labels declared for it; a class without declared labels maps its own name
and, for the well-known names (AD, HC), their usual spellings. Generic words that name no diagnosis
("patient", "1", "0") map to nothing unless a task declares them, so a table cannot be read as
"patient = AD" silently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# the usual spellings of the default task's classes in clinical tables (compared case-insensitively)
KNOWN_LABELS: dict[str, tuple[str, ...]] = {
    "AD": ("AD", "Dementia", "DEM", "Alzheimer", "Alzheimer's disease", "ALZ", "Alzheimers", "Alzheimer's",
           "Alzheimer disease", "Alzheimers disease", "Alzheimer's dementia"),
    "HC": ("HC", "CN", "NC", "Control", "Healthy", "Normal", "CTL", "Controls", "Healthy control",
           "Cognitively normal"),
}
KNOWN_TITLES = {"AD": "Alzheimer's disease", "HC": "healthy controls", "MS": "multiple sclerosis",
                "pMCI": "progressive MCI", "sMCI": "stable MCI"}
# words that say a subject is (not) a case, but not of which disease: never mapped unless declared
GENERIC_LABELS = ("patient", "patients", "case", "cases", "disease", "diseased", "positive", "negative",
                  "1", "0", "yes", "no", "true", "false", "subject", "proband")

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9+\-]{0,23}")


class TaskError(ValueError):
    """A task declaration that cannot be used; the message names the field and the problem."""


def _labels(value) -> tuple[str, ...]:
    """Labels from a list or a comma-separated string, stripped, empty ones dropped, order kept."""
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(dict.fromkeys(str(x).strip() for x in items if str(x).strip()))


@dataclass(frozen=True)
class Classes:
    """``positive``: the diagnosis a model detects (explained by default, logit index 1); ``negative``: the
    control group (index 0). Both are short names shown everywhere (``MS``, ``HC``); the ``*_title`` are the
    long names; the ``*_labels`` the table spellings of each (empty: see the module docstring)."""

    positive: str = "AD"
    negative: str = "HC"
    positive_labels: tuple[str, ...] = ()
    negative_labels: tuple[str, ...] = ()
    positive_title: str = ""
    negative_title: str = ""

    def __post_init__(self):
        for field in ("positive", "negative"):
            name = getattr(self, field)
            if not isinstance(name, str) or not _NAME.fullmatch(name):
                raise TaskError(f"{field} class {name!r}: use a short name of letters, digits, + or - "
                                "starting with a letter (e.g. MS, pMCI)")
        if self.positive.lower() == self.negative.lower():
            raise TaskError(f"the positive and the negative class are both {self.positive!r}")
        for field in ("positive_labels", "negative_labels"):
            object.__setattr__(self, field, _labels(getattr(self, field)))
        both = {x.lower() for x in self.labels_of(self.positive)} & {x.lower() for x in self.labels_of(self.negative)}
        if both:
            raise TaskError(f"label(s) {', '.join(sorted(both))} declared for both {self.positive} and {self.negative}")

    @property
    def names(self) -> tuple[str, str]:
        """In logit order: ``(negative, positive)``."""
        return self.negative, self.positive

    @property
    def task(self) -> str:
        """``"MS vs HC"``: how figures and reports name the task."""
        return f"{self.positive} vs {self.negative}"

    def title(self, name: str) -> str:
        """The long name of a class (``"multiple sclerosis"``), its short name when none is known."""
        own = self.positive_title if name == self.positive else self.negative_title
        return own or KNOWN_TITLES.get(name, name)

    def index(self, name: str) -> int:
        """Logit index of a class name (ValueError naming the classes otherwise)."""
        if name not in self.names:
            raise ValueError(f"unknown class {name!r}; use one of {self.names} or a class index")
        return self.names.index(name)

    def other(self, name: str) -> str:
        """The other class of ``name``."""
        return self.names[1 - self.index(name)]

    def labels_of(self, name: str) -> tuple[str, ...]:
        """The table labels that mean class ``name``: the declared ones, else its name and known spellings."""
        declared = self.positive_labels if name == self.positive else self.negative_labels
        return declared or KNOWN_LABELS.get(name, (name,))

    @property
    def is_default(self) -> bool:
        return self == DEFAULT_CLASSES

    def to_json(self) -> dict:
        out = {"positive": self.positive, "negative": self.negative}
        for field in ("positive_labels", "negative_labels"):
            if getattr(self, field):
                out[field] = list(getattr(self, field))
        for field in ("positive_title", "negative_title"):
            if getattr(self, field):
                out[field] = getattr(self, field)
        return out

    @classmethod
    def from_json(cls, data) -> "Classes":
        """From workspace.json's ``task`` (TaskError for anything unusable)."""
        if not isinstance(data, dict):
            raise TaskError(f"task must be an object with positive and negative, not {type(data).__name__}")
        unknown = set(data) - {"positive", "negative", "positive_labels", "negative_labels", "positive_title",
                               "negative_title"}
        if unknown:
            raise TaskError(f"task has unknown field(s) {', '.join(sorted(unknown))}")
        for field in ("positive_labels", "negative_labels"):
            if field in data and not (isinstance(data[field], list) and all(isinstance(x, str) for x in data[field])):
                raise TaskError(f"task {field} must be a list of labels")
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()})


DEFAULT_CLASSES = Classes()
"""AD against HC, the paper's classes and every workspace's without a declared task."""
