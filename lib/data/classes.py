"""The two classes a workspace's models tell apart, from one place.

Today every workspace separates Alzheimer's disease (AD, the positive class: the explained one by default,
logit index 1) from healthy controls (HC, index 0), as in Böhle et al. 2019. Code reads the names from a
:class:`Classes` value (``ws.classes``, or :data:`DEFAULT_CLASSES` where no workspace is at hand) rather
than spelling them, so that a workspace can later name its own classes. Column names of existing caches
(``ad_score``) keep their spelling.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Classes:
    """``positive``: the diagnosis a model detects (explained by default, logit index 1); ``negative``: the
    control group (index 0)."""

    positive: str = "AD"
    negative: str = "HC"

    @property
    def names(self) -> tuple[str, str]:
        """In logit order: ``(negative, positive)``."""
        return self.negative, self.positive

    def index(self, name: str) -> int:
        """Logit index of a class name (ValueError naming the classes otherwise)."""
        if name not in self.names:
            raise ValueError(f"unknown class {name!r}; use one of {self.names} or a class index")
        return self.names.index(name)

    def other(self, name: str) -> str:
        """The other class of ``name``."""
        return self.names[1 - self.index(name)]


DEFAULT_CLASSES = Classes()
"""AD against HC, the paper's classes and every workspace's today."""
